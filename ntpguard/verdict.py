"""Contacts + scans → harvester verdicts: a lag-aware attribution model, fitted by EM (pure).

What a harvester does: it sees a client address in an NTP packet and, some lag later, its
scanner sweeps that address, once per harvester (each harvester feeds the scanner on its own;
the scanner cools down per harvester). It may let an address pass (it samples, skips,
rate-limits): harvester s takes a given address with probability h_s, its *harvest rate*, at
the first packet (with probability u) or at a later poll (uniformly). Scans also come for other
reasons (the *background*: scanners that learned the address elsewhere) at a rate per address
and second, beta.

So every scan of a local address at time T is explained either by the background (intensity
beta) or by one of the contacts that address made before it: server s's contact explains it
with intensity p_s h_s g_s(T), where g_s sums the lag density f over the packets of that
contact (u at the first one, (1-u)/(n-1) at each of the n-1 later ones), p_s being the
probability that s harvests. Every scan counts (an address met by three harvesters is scanned
three times), and every packet is a possible trigger.

For server s (the others held at their current p, h: mean field), the evidence of one contact
(address a, server s) is the likelihood ratio of "s harvests at rate h" to "s is clean":
    (1 - h G) + h * sum over the scans k that followed it of g_s(T_k) / lambda_k(-s)
where G is the share of s's possible scan times the log has covered since the contact (the lag
distribution's CDF: a contact minutes before the log ends is weak negative evidence), and
lambda_k(-s) is the intensity of scan k from everything but s. A scan well explained by another
server (a consistent lag after a likely harvester) adds little to s; a contact with no scan
after it (or one explained by others) counts against s in proportion to the lag distribution
it covered. Per server the rate h_s is the best on a grid; its evidence is the likelihood
ratio averaged over the grid under a prior (half even, half near the common rate the likely
harvesters show), so a server that fits only at one rate pays for that choice (Bayes' Occam
factor), the more so far from the other harvesters' rate; one that fits across rates hardly.

The lag distribution f (a histogram over [0, lookback]), u, beta and the common harvest rate
are estimated from the data by EM: each scan's responsibilities (background, or each candidate
contact and packet) re-estimate them, and the loop repeats. A long lookback therefore costs
only time: contacts long before a scan get the little weight the fitted f gives such lags.

Probe addresses (`ntpguard probe`) were given to one server only: their background is the
floor PROBE_BACKGROUND per lookback, so a scan of one is exact evidence against that server.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from ntpguard.config import Detect
from ntpguard.facts import Scan
from ntpguard.records import record
from ntpguard.status import Status

# An unrelated scan of a probe address: it was never used for anything but one packet to one
# server, so only that server (or its path) can have passed it on. Chance per lookback.
PROBE_BACKGROUND = 0.001
# Harvest rates a server may have: its evidence is the mean of its likelihood ratios at them
# (_marginal) under the prior below, its reported rate the best. A fixed 0.5-nat penalty for
# picking the best rate let a clean server that fits only at 0.1 (unrelated scans of addresses
# in use, met at common lags) win: 6 clean servers called harvester on 20 journal-active logs,
# 4 with the mean, and 142 of 155 gateway harvesters named where the penalty named 140.
GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# The prior over GRID (_rate_prior): half of it spread evenly, half a normal of this width in
# log odds around the common rate the likely harvesters show. Harvesters feed scanners that
# work alike, so a server's rate is likelier near theirs than at a rate none of them has, and
# a clean server fitting only at a far rate gains less; the even half keeps a harvester with a
# rate of its own from being missed. Over 30 logs each (burst rotation), against every rate
# equally likely: journal-active 2 clean servers called harvester, not 3, and 1,490 clean
# servers called clean, not 1,428; gateway 215 of 234 harvesters named, not 213.
RATE_SPREAD = 1.0
RATE_EVEN = 0.5
# How many scans' weight the shared lag distribution has in each server's own.
OWN_PRIOR = 3.0
# Two servers the log cannot tell apart (see _rivals) are both suspects when the weaker is at
# least this likely, relative to the stronger, to be the one that harvests: twins come out near
# 1:1 (~1.8:1 with lags 1 s apart either side of a bin's edge, the fitted lags leaning to the
# one credited first); a factor of 2 either side of that is still "cannot tell".
RIVAL_ODDS = 0.5
# A server followed by scans at two or more of its contacts is clean only if a harvester at
# the common rate would have been followed by so few at most this often (see _shortfall).
CLEAN_TAIL = 0.001
# The most likely servers _claimed weighs one unlikely server against (2^(n+1) sets of them).
MAX_CLAIMANTS = 4
# The most servers _contested weighs together (2^n sets of them), half of them at most rivals.
MAX_GROUP = 8


@record
class Finding:
    """What the attribution model found about one server: its status and the evidence."""

    address: str
    status: Status
    probability: float      # that it harvests
    positive: int           # scans that followed a contact with it (within the lookback)
    negative: int           # contacts with it that the log covered and no scan followed
    sole: int               # scans whose address had contacted only it in the lookback
    harvest_rate: float     # its best-fitting rate (meaningful for harvesters and suspects)
    explained: float = 0.0  # scans the model attributes to it (expected count)

    def evidence(self) -> dict[str, Any]:
        """The evidence stored with a `detect` verdict."""
        return {"positive": self.positive, "negative": self.negative, "sole": self.sole,
                "probability": self.probability, "harvest_rate": self.harvest_rate,
                "explained": self.explained}


@record
class Estimates:
    """What the data says about the harvesters (reported, and used by the verdicts)."""

    harvest_rate: float           # common rate of the likely harvesters
    first_contact_share: float    # u: harvests at an address's first packet to the server
    background_rate: float        # unrelated scans per address and hour
    lag_median: Optional[float]   # of the fitted lag distribution
    lag_p90: Optional[float]
    lag_max: Optional[float]      # its 99th percentile
    lag_bins: tuple[tuple[float, float, float], ...]  # (from, to, share)
    scans: int
    explained: float              # scans attributed to harvesters (expected count)
    unattributed_scans: int       # scans with no contact in the lookback before them
    contacts: int                 # (address, server) pairs weighed
    rounds: int = 0               # the fit's rounds; its limit (100) when it did not settle


def lag_edges(lookback: float) -> list[float]:
    """Histogram bins for lags: 5 s wide to a minute (2016 lags: 6-47 s), 15 s to five
    minutes, a minute beyond (a queueing harvester)."""
    edges, x = [0.0], 0.0
    while x < lookback:
        x += 5.0 if x < 60 else 15.0 if x < 300 else 60.0
        edges.append(min(x, lookback))
    return edges


class _Lags:
    """The fitted lag distribution: masses per bin, density and CDF lookups."""

    def __init__(self, edges: list[float], mass: Sequence[float]) -> None:
        self.edges = edges
        self.mass = list(mass)
        self.density = [m / (edges[i + 1] - edges[i]) for i, m in enumerate(self.mass)]
        self.cum = [0.0]
        for m in self.mass:
            self.cum.append(self.cum[-1] + m)

    def bin(self, lag: float) -> int:
        return min(max(bisect.bisect_right(self.edges, lag) - 1, 0), len(self.mass) - 1)

    def cdf(self, lag: float) -> float:
        if lag <= 0:
            return 0.0
        if lag >= self.edges[-1]:
            return 1.0
        b = self.bin(lag)
        lo, hi = self.edges[b], self.edges[b + 1]
        return self.cum[b] + self.mass[b] * (lag - lo) / (hi - lo)

    def quantile(self, q: float) -> float:
        for b, m in enumerate(self.mass):
            if self.cum[b + 1] >= q and m > 0:
                lo, hi = self.edges[b], self.edges[b + 1]
                return lo + (hi - lo) * (q - self.cum[b]) / m
        return self.edges[-1]


@record(frozen=False)
class _Candidate:
    """One contact that may explain one scan: its pair, and the bins of its packets' lags."""

    pair: int
    first_bin: Optional[int]      # the first packet's lag bin, if in the lookback
    later_bins: Optional[list[int]]  # exact later packets (from the scan's triggers)
    span: Optional[tuple[float, float]]  # else: lags covered by the later polls of the run


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-_clamp(x, -50, 50)))


def _settled(now: Sequence[float], beta: float, then: Sequence[float], beta_then: float
             ) -> bool:
    """Whether a round of the fit left it where `then` was: every value within 1e-4, the
    background rate beta within 1e-4 of itself."""
    return bool(then) and abs(beta - beta_then) < 1e-4 * beta_then and max(
        abs(a - b) for a, b in zip(now, then)) < 1e-4


def _rate_values(plain: int, terms: Iterable[tuple[float, float]]) -> list[float]:
    """A server's log likelihood ratio at each rate of GRID: `plain` contacts the log covered
    with no scan after them, and (G, x) for each of the others (see the module docstring)."""
    terms = list(terms)
    return [plain * math.log(1 - hv) + sum(
        math.log(max(1 - hv * g + hv * xv, 1e-300)) for g, xv in terms) for hv in GRID]


def _rate_prior(h: float) -> tuple[float, ...]:
    """The prior probability of each rate of GRID, given the common rate h (see RATE_SPREAD)."""
    centre = math.log(h / (1 - h))
    near = [math.exp(-0.5 * ((math.log(r / (1 - r)) - centre) / RATE_SPREAD) ** 2) for r in GRID]
    total = sum(near)
    return tuple(RATE_EVEN / len(GRID) + (1 - RATE_EVEN) * n / total for n in near)


def _marginal(values: Sequence[float], prior: Sequence[float]) -> float:
    """The log of the mean of exp(values) under `prior`: log likelihood ratios at each rate of
    GRID → that of the server whose rate is any of them, as likely as the prior says."""
    top = max(values)
    return top + math.log(sum(w * math.exp(v - top) for w, v in zip(prior, values)))


def _rivals(p: dict[str, float], h_s: dict[str, float], cands: Sequence[Sequence[_Candidate]],
            cands_of: Mapping[str, Sequence[tuple[int, int]]], gs: Sequence[Sequence[float]],
            g_shared: Callable[[int, int], float], background: Sequence[float],
            pairs_of: Mapping[str, Sequence[int]], with_scan: set[int],
            coverage: Sequence[float], server_of: Sequence[str], prior_logit: float,
            rate_prior: Sequence[float], likely: float) -> set[str]:
    """Correct p, in place, where the mean field is overconfident: rivals it cannot tell apart.
    Returns the servers that are suspects on that account.

    The mean field weighs each server against the others' *average* state, and the servers are
    updated the likeliest first, so when two servers were both in the groups of the same
    scanned addresses, whichever is updated first claims the scans and the other is explained
    away (p near the prior, harvest rate 0.05), however alike their evidence. On the sparse
    scenario (two hosts polling every 1024 s, the harvester met twice) 3 logs in 30 had a clean
    server in both groups of the harvester's two scans and in no other: the exact posterior
    (enumerating every set of harvesters) is 0.47 for each; the mean field said 0.9985 for one
    of them (a clean server called harvester) and 0.03 for the other.

    So every likely server s (p >= `likely`) is weighed again against each rival r: an
    unlikely server that was a candidate for at least two of the same scans and at least half
    of s's (with fewer, r needs other harvesters for the rest of s's scans, which the mean
    field charges already; two likely servers each stand on their own evidence, else one
    would have been explained away). The half also keeps the cost down: on the journal
    scenario (~730 scans) 264 rivals sharing two scans cost 0.1 s, a third of the fit; with
    the half, none (the rivals' step takes ~1 ms there).

    Given that one of the two harvests, the pair's three states (s, r, both) are weighed
    exactly, every other server held at its fitted p and rate, each rate the best on GRID and
    its evidence the mean over GRID, as in the fit. When r is at least RIVAL_ODDS as likely as
    s to be the one, the log cannot tell them apart: s keeps its share of its fitted p, r gets
    its share (never more than s keeps), and both are suspects (sparse's twins: about 0.5
    each, so neither is a harvester, both are blocked). A weaker rival changes nothing: the
    mean field already weighed it. Likely servers are few (a handful a log), so this costs little.

    The mean field can also split such scans between rivals so that none of them is likely,
    the harvester unknown (not blocked) though the log says one of them harvests. On sparse
    seed 12 (burst) three servers were in both scanned groups, the harvester and a clean
    server with the same two contacts among them: the exact posterior (every source of the
    two scans enumerated, the rates averaged as here) is 0.51, 0.34 and 0.14, the mean field
    said 0.34, 0.14 and 0.06. So a server
    the fit raised above the prior is weighed too, against each weaker rival alike: with the
    fourth state (neither harvests, at the prior) the pair's probability of holding a
    harvester, and when that is at least `likely` and the weaker at least RIVAL_ODDS as likely
    the one, both are suspects; their probabilities stay as fitted. On 20 sparse logs this
    made the one unknown harvester a suspect, and its twin; no other verdict changed.
    """
    shared: dict[tuple[str, str], int] = defaultdict(int)
    # Each scan's candidates by server, and its intensity from all of them.
    at: list[dict[str, tuple[int, int, float]]] = []  # scan → server → (pair, ci, g)
    lam: list[float] = []
    for k, row in enumerate(cands):
        mine: dict[str, tuple[int, int, float]] = {}
        total = background[k]
        for ci, (c, g) in enumerate(zip(row, gs[k])):
            srv = server_of[c.pair]
            mine[srv] = (c.pair, ci, g)
            total += p[srv] * h_s[srv] * g
        at.append(mine)
        lam.append(total)
    # Centres: the likely servers, and those the fit raised above the prior without making
    # them likely (their scans split between rivals: neither alone is likely, the pair may
    # well be; see below).
    prior = _sigmoid(prior_logit)
    centres = sorted((s for s in p if p[s] >= likely or (
        p[s] > prior and len(cands_of.get(s, ())) >= 2)), key=lambda s: (-p[s], s))
    for s in centres:
        for k, _ in cands_of.get(s, ()):
            for r in at[k]:
                if r != s:
                    shared[(s, r)] += 1
    split: dict[str, float] = {}   # s → the smallest share of the pair it keeps
    tied: set[str] = set()
    keep: dict[str, list[tuple[str, float]]] = defaultdict(list)  # r → (s, r's share)
    for s in centres:
        least = max(2, len(cands_of.get(s, ())) / 2)
        weak = p[s] < likely
        for r in sorted(r for (c, r), n in shared.items()
                        if c == s and n >= least and p[r] < likely
                        and not (weak and (p[r], r) > (p[s], s))):
            share_s, share_r, joint = _pair(s, r, p, h_s, at, lam, g_shared, cands_of,
                                            pairs_of, with_scan, coverage, prior_logit,
                                            rate_prior)
            if weak:
                # Neither likely: both suspects only when the log says one of the two
                # harvests (the pair at least `likely`) and cannot tell which. Their
                # probabilities stay as fitted (each below `likely`).
                if joint >= likely and share_r >= RIVAL_ODDS * share_s:
                    tied.update((s, r))
                continue
            if share_r >= RIVAL_ODDS * share_s:
                split[s] = min(split.get(s, 1.0), share_s)
                tied.update((s, r))
                keep[r].append((s, share_r))
    fitted = dict(p)
    for s, share in split.items():
        p[s] = fitted[s] * share
    for r, got in keep.items():
        p[r] = max(p[r], *(min(fitted[s] * share, p[s]) for s, share in got))
    return tied


def _pair(s: str, r: str, p: Mapping[str, float], h_s: Mapping[str, float],
          at: Sequence[Mapping[str, tuple[int, int, float]]], lam: Sequence[float],
          g_shared: Callable[[int, int], float], cands_of: Mapping[str, Sequence[tuple[int, int]]],
          pairs_of: Mapping[str, Sequence[int]], with_scan: set[int],
          coverage: Sequence[float], prior_logit: float, rate_prior: Sequence[float]
          ) -> tuple[float, float, float]:
    """The exact probabilities that s, and r, harvest, given that one of them does, over the
    pair's states (see _rivals), the other servers' intensities fixed; and the probability
    that one of them does (the fourth state, neither, at the prior)."""
    both = (s, r)
    # x[q][pair] = sum over the scans after that contact of g / lambda(-s, -r); per scan the
    # two ratios, for the "both harvest" state (two harvests, so two different scans).
    x: dict[str, dict[int, float]] = {s: defaultdict(float), r: defaultdict(float)}
    cross: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for k in {k for q in both for k, _ in cands_of.get(q, ())}:
        here = at[k]
        rest = lam[k] - sum(p[q] * h_s[q] * here[q][2] for q in both if q in here)
        rest = max(rest, 1e-300)
        ratio = {q: g_shared(k, here[q][1]) / rest for q in both if q in here}
        for q, v in ratio.items():
            x[q][here[q][0]] += v
        if len(ratio) == 2:
            cross[(here[s][0], here[r][0])].append((ratio[s], ratio[r]))
    # A contact of each with the same address: the pair's contacts there are weighed together.
    joint_s = {i for i, _ in cross}
    joint_r = {j for _, j in cross}

    def terms(q: str, skip: set[int]) -> tuple[int, list[tuple[float, float]]]:
        plain, out = 0, []
        for i in pairs_of.get(q, ()):
            if i in skip:
                continue
            if i in with_scan or coverage[i] < 1.0:
                out.append((coverage[i], x[q].get(i, 0.0)))
            else:
                plain += 1
        return plain, out

    def value(hv: float, plain: int, out: Sequence[tuple[float, float]]) -> float:
        return plain * math.log(1 - hv) + sum(
            math.log(max(1 - hv * g + hv * xv, 1e-300)) for g, xv in out)

    def best(q: str) -> tuple[float, float, float]:
        """The value at q's best rate, that rate, and the mean over the rates (_marginal)."""
        values = _rate_values(*terms(q, set()))
        top = max(values)
        return top, GRID[values.index(top)], _marginal(values, rate_prior)

    (v_s, h1, m_s), (v_r, h2, m_r) = best(s), best(r)
    # Both: the contacts at addresses only one of them met as above, the shared ones jointly
    # (neither harvested, one did and made one of the scans, or both did and made two).
    plain_s, out_s = terms(s, joint_s)
    plain_r, out_r = terms(r, joint_r)
    v_both = value(h1, plain_s, out_s) + value(h2, plain_r, out_r)
    for (i, j), ratios in cross.items():
        gi, gj = coverage[i], coverage[j]
        xi, xj = x[s].get(i, 0.0), x[r].get(j, 0.0)
        two = xi * xj - sum(a * b for a, b in ratios)
        v_both += math.log(max((1 - h1 * gi) * (1 - h2 * gj) + h1 * xi * (1 - h2 * gj)
                               + h2 * xj * (1 - h1 * gi) + h1 * h2 * two, 1e-300))
    # "Both" at the two best rates, less what each pays for its choice (best - mean).
    w_s = prior_logit + m_s
    w_r = prior_logit + m_r
    w_both = 2 * prior_logit + v_both - (v_s - m_s) - (v_r - m_r)
    top = max(w_s, w_r, w_both, 0.0)
    es, er, eb, en = (math.exp(w - top) for w in (w_s, w_r, w_both, 0.0))
    z = es + er + eb  # given that one of them harvests (a likely server's pair)
    return (es + eb) / z, (er + eb) / z, z / (z + en)


def _scan_terms(group: Sequence[str], fitted: Mapping[str, float], h_s: Mapping[str, float],
                h: float, cands_of: Mapping[str, Sequence[tuple[int, int]]],
                gs: Sequence[Sequence[float]], g_shared: Callable[[int, int], float],
                lam: Sequence[float]) -> list[list[tuple[int, float]]]:
    """For each scan a member of `group` may have made: (member, h g / rest) for each such
    member, rest being the scan's intensity from everything outside the group as fitted."""
    rest: dict[int, float] = {}
    got: dict[int, list[tuple[int, float]]] = defaultdict(list)  # scan → (member, g)
    for m, q in enumerate(group):
        for k, ci in cands_of[q]:
            rest[k] = rest.get(k, lam[k]) - fitted[q] * h_s[q] * gs[k][ci]
            got[k].append((m, g_shared(k, ci)))
    return [[(m, h * g / max(rest[k], 1e-300)) for m, g in members]
            for k, members in got.items()]


def _set_shares(alone: Sequence[float], scans: Sequence[Sequence[tuple[int, float]]]
                ) -> list[float]:
    """Each member's probability of harvesting, over every set of the members that may: a
    set's log weight is the sum of its members' `alone` and, for each scan, the log of one
    plus the x (_scan_terms) of its members in the set (the Poisson form of the likelihood).
    A scan only one member may have made adds to that member alone, so the sets differ only
    in the scans two or more may have made."""
    alone = list(alone)
    joint = []
    for scan in scans:
        if len(scan) == 1:
            alone[scan[0][0]] += math.log1p(scan[0][1])
        else:
            joint.append(scan)
    values = [sum(v for m, v in enumerate(alone) if mask >> m & 1) + sum(
        math.log1p(sum(x for m, x in scan if mask >> m & 1)) for scan in joint)
        for mask in range(1 << len(alone))]
    top = max(values)
    weight = [0.0] * len(alone)
    total = 0.0
    for mask, v in enumerate(values):
        e = math.exp(v - top)
        total += e
        for m in range(len(alone)):
            if mask >> m & 1:
                weight[m] += e
    return [w / total for w in weight]


def _claimed(p: dict[str, float], h_s: Mapping[str, float], h: float,
             cands: Sequence[Sequence[_Candidate]],
             cands_of: Mapping[str, Sequence[tuple[int, int]]], gs: Sequence[Sequence[float]],
             g_shared: Callable[[int, int], float], lam: Sequence[float],
             pairs_of: Mapping[str, Sequence[int]], coverage: Sequence[float],
             server_of: Sequence[str], prior_logit: float, likely: float) -> set[str]:
    """Raise, in place, an unlikely server whose scans likely servers have split between them,
    when together the log says it is at least as likely the one. Returns the servers that are
    suspects on that account.

    The converse of _rivals: there a likely server is weighed against one unlikely server
    that shares two of its scans; here the unlikely server r was in the groups of two or more
    scans, each claimed by a different likely server whose whole case is among r's scans. The
    mean field updates the servers one at a time, so once each claimant holds one scan, r's
    gain at either is nothing (the other claimant explains it), and _pair, which holds the
    other claimant fixed, agrees (0.92 for a claimant, 0.09 for r, on a sparse log where the
    exact posterior favours r ~20:1: one harvester, prior 0.05, against two). So r and its
    claimants (at most MAX_CLAIMANTS) are weighed jointly over every set of them that may
    harvest, each at the common rate h, everything else as fitted, on the Poisson form of the
    likelihood: log(1 + h * sum g / rest) per scan, less h for each covered contact. When r
    is at least RIVAL_ODDS as likely as the likeliest claimant, the log cannot tell them
    apart, and all of them are suspects, none a harvester (as _rivals' twins), r with at most
    the probability its claimants had. So this step names no harvester and clears none; it
    keeps such a harvester from being unknown (not blocked). On 30 sparse logs it made 1 of
    the 3 unknown harvesters a suspect; the other two had no likely server claiming their
    scans (their evidence was spread over their groups).
    """
    tied: set[str] = set()
    fitted = dict(p)  # every server weighed against the fit, not against this step's raises
    for r in sorted(q for q, got in cands_of.items() if fitted[q] < likely and len(got) >= 2):
        mine = {k for k, _ in cands_of[r]}
        claimants = sorted({server_of[c.pair] for k in mine for c in cands[k]} - {r})
        claimants = [c for c in claimants if fitted[c] >= likely
                     and {k for k, _ in cands_of[c]} <= mine]
        if not claimants or len(claimants) > MAX_CLAIMANTS:
            continue
        group = [r, *claimants]
        alone = [prior_logit - h * sum(coverage[i] for i in pairs_of.get(q, ())) for q in group]
        share = _set_shares(alone, _scan_terms(group, fitted, h_s, h, cands_of, gs, g_shared,
                                               lam))
        if share[0] >= RIVAL_ODDS * max(share[1:]):
            tied.update(group)
            p[r] = max(p[r], min(share[0], max(fitted[c] for c in claimants)))
    return tied


def _contested(p: dict[str, float], h_s: Mapping[str, float], h: float,
               cands: Sequence[Sequence[_Candidate]],
               cands_of: Mapping[str, Sequence[tuple[int, int]]], gs: Sequence[Sequence[float]],
               g_shared: Callable[[int, int], float], lam: Sequence[float],
               pairs_of: Mapping[str, Sequence[int]], with_scan: set[int],
               coverage: Sequence[float], server_of: Sequence[str], prior_logit: float,
               sure: float, likely: float, least: int) -> set[str]:
    """Lower, in place, a server about to be called harvester when the log holds another set
    of harvesters about as likely that leaves it out. Returns the servers that are suspects on
    that account.

    _rivals weighs a likely server against one rival sharing its scans, _claimed an unlikely
    one against the likely servers that split its scans; neither sees a swap in which each of
    the likely server's scans goes to a different rival and those rivals' other scans to
    other likely servers. On a gateway log (poll rotation, seed 57) two harvesters and two
    clean servers met the same four scanned addresses, each scan a candidate of one harvester
    and one clean server at lags 10-25 s apart within the fitted spread (median 124 s, 90%
    within 183 s): the fit gave the two clean servers the four scans (p 0.996 and 0.998,
    called harvesters) and the two harvesters rate 0.05 (unknown), though weighed over every
    set of the four the log favours the clean pair only ~4:1 (0.82 each), not the 19:1 a
    harvester verdict needs.

    So each server s at `sure` or more with `least` scans is weighed jointly with its rivals
    (unlikely servers with `least` scans that were candidates of its scans at a lag at least
    RIVAL_ODDS as dense) and with the likely servers that were candidates of the rivals' scans
    (in the other set they may not harvest), at most MAX_GROUP servers, over every set of
    them that may harvest, each at the common rate h, everything else as fitted: a contact
    the log covered with no scan after it weighs 1 - h G, as in the fit, a scan the Poisson
    form (as _claimed). When s is less than `sure` likely over those sets, it is a suspect at
    that probability, and so is each rival at least RIVAL_ODDS as likely as s, raised to at
    most s's. This step names no harvester and clears none. With the Poisson form for the
    unscanned contacts too (e^-hG: 0.39 where the fit says 0.05 at the sparse scenario's rate
    0.95), rivals with contacts no scan followed came out likelier than the fit allows, and 13
    of sparse's 29 harvesters named on 60 burst logs became suspects; with 1 - h G, 4."""
    tied: set[str] = set()
    fitted = dict(p)
    for s in sorted((q for q, got in cands_of.items() if fitted[q] >= sure and len(got) >= least),
                    key=lambda q: (-fitted[q], q)):
        shared_scans: dict[str, int] = defaultdict(int)
        for k, ci in cands_of[s]:
            mine = g_shared(k, ci)
            for cj, c in enumerate(cands[k]):
                r = server_of[c.pair]
                if r != s and fitted[r] < likely and len(cands_of.get(r, ())) >= least \
                        and g_shared(k, cj) >= RIVAL_ODDS * mine:
                    shared_scans[r] += 1
        if not shared_scans:
            continue
        rivals = sorted(shared_scans, key=lambda r: (-shared_scans[r], -fitted[r], r)
                        )[:MAX_GROUP // 2]
        group = [s, *rivals]
        for r in rivals:
            for k, ci in cands_of[r]:
                theirs = g_shared(k, ci)
                for cj, c in enumerate(cands[k]):
                    q = server_of[c.pair]
                    if q not in group and fitted[q] >= likely and len(group) < MAX_GROUP \
                            and theirs >= RIVAL_ODDS * g_shared(k, cj):
                        group.append(q)
        alone = [prior_logit + sum(-h * coverage[i] if i in with_scan else
                                   math.log(max(1 - h * coverage[i], 1e-300))
                                   for i in pairs_of.get(q, ())) for q in group]
        share = _set_shares(alone, _scan_terms(group, fitted, h_s, h, cands_of, gs, g_shared,
                                               lam))
        if share[0] >= sure:
            continue
        tied.add(s)
        p[s] = min(p[s], share[0])
        for m, r in enumerate(rivals, 1):
            if share[m] >= RIVAL_ODDS * share[0]:
                tied.add(r)
                p[r] = max(p[r], min(share[m], share[0]))
    return tied


def _shortfall(k: int, n: int, h: float) -> float:
    """P(X <= k) for X ~ Binomial(n, h): how often a harvester taking a share h of the
    addresses it sees is followed by a scan at k or fewer of n contacts (in logs: terms past
    ~250 contacts would underflow as plain powers)."""
    lh, lq, top = math.log(h), math.log1p(-h), math.lgamma(n + 1)
    return sum(math.exp(top - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lh + (n - j) * lq)
               for j in range(min(k, n) + 1))


def _cleared(scanned: int, negative: int, h: float, least: int) -> bool:
    """Whether a server whose contacts were followed by a scan at `scanned` of them and by none
    at `negative` others may be called clean, beyond what the posterior says.

    The posterior weighs a scan another server is credited with against this one: had it
    harvested too, the scanner would have swept the address again. A scanner that sweeps an
    address once whoever reported it (2016's cooldown) leaves no second scan, and which report
    it acted on the log cannot say; and a harvester taking half the addresses it sees is
    followed by a scan at 2 or fewer of 13 contacts 1.1% of the time, which at the common rate
    reads as strong evidence against it. On the gateway scenario (8 of 120 servers at 50%, one
    scan per address; 30 seeds) 4 of the 234 harvesters the log shows by two scans or more
    were called clean that way: 2 scans of 7 and of 13 contacts, 3 of 11, 4 of 8, every scan
    credited to another harvester, posteriors 0.002-0.035 at the common rate.

    So a server with at least `least` scanned contacts (what a harvester needs to be called
    one, and all a harvester the log shows can have) is granted every scan that followed it,
    whoever is credited, and stays clean only if a harvester at the common rate h would fall
    that short at most CLEAN_TAIL of the time: about one such harvester in a thousand called
    clean, where the 30 seeds hold 234. It does not rest on the prior, on the scanner's
    cooldown or on the credit. Those 4 were at 0.008-0.67. A server with fewer scanned
    contacts could not be such a harvester and keeps the posterior's verdict; one with many
    contacts stays clean (journal, ~80 contacts a server, ~30 of them scanned: 1649 of its
    1650 clean servers still clean). The price is where contacts are few: of the servers
    called clean on 30 seeds, gateway keeps 1210 of 3242, site 613 of 1089, sparse 299 of
    309; the others are unknown, which the firewall treats alike (a known server is usable
    unless a harvester or suspect) and the time daemon's configuration only ranks after.
    """
    if scanned < least:
        return True
    return _shortfall(scanned, scanned + negative, h) <= CLEAN_TAIL


def _shared_odds(srv: str, p: Mapping[str, float], h_s: Mapping[str, float],
                 cands: Sequence[Sequence[_Candidate]],
                 cands_of: Mapping[str, Sequence[tuple[int, int]]],
                 gs: Sequence[Sequence[float]], g_shared: Callable[[int, int], float],
                 lam: Sequence[float], pairs_of: Mapping[str, Sequence[int]],
                 coverage: Sequence[float], prior_logit: float, rate_prior: Sequence[float]
                 ) -> float:
    """The probability that srv harvests with its scans weighed by the shared lag
    distribution, not its own (everything else as fitted).

    A server's own lags are fitted to the scans the model credits it with, so they can make
    a clean server's verdict out of chance: with many contacts and many unrelated scans of
    addresses in use, a few scans at one lag after it are to be expected, and its own lags
    then peak there. Its own lags may sharpen a verdict, not make one: a harvester must be at
    least a suspect without them. On 20 journal-active logs this took 1 of the 4 clean servers
    called harvester (shared-lag probabilities of the rest 0.5-0.99) and none of the 142
    gateway harvesters named (the least 0.90 on 10 of the logs)."""
    x: dict[int, float] = defaultdict(float)
    for k, ci in cands_of.get(srv, ()):
        own = p[srv] * h_s[srv] * gs[k][ci]
        x[cands[k][ci].pair] += g_shared(k, ci) / max(lam[k] - own, 1e-300)
    values = _rate_values(0, ((coverage[i], x.get(i, 0.0)) for i in pairs_of.get(srv, ())))
    return _sigmoid(prior_logit + _marginal(values, rate_prior))


def attribute(runs: Mapping[tuple[str, str], Sequence[float]], scans: Iterable[Scan],
              covered_until: Optional[float], settings: Detect, probes: Iterable[str] = (),
              rounds: int = 100, covered: Optional[Mapping[str, float]] = None
              ) -> tuple[dict[str, Finding], Estimates]:
    """Per-server verdicts and the estimates behind them.

    runs: (local address, server) → (first packet, last packet, packets); scans: every scan
    (their triggers give the exact packet times in the lookback, where known); covered_until:
    the end of the log (contacts later than a lag before it are weaker negatives); covered:
    local address → the end of the log of the host it belongs to, where that is another one
    (a collector's hosts, each forwarding its own log)."""
    lookback = settings.lookback
    probes = set(probes)
    scans = sorted(scans, key=lambda s: s.start)
    # Pairs, and the contacts a scan's triggers name that the runs lack (partial facts).
    keys: list[tuple[str, str]] = []
    first: list[float] = []
    last: list[float] = []
    count: list[int] = []
    index: dict[tuple[str, str], int] = {}

    def add(key: tuple[str, str], a: float, b: float, n: int) -> None:
        index[key] = len(keys)
        keys.append(key)
        first.append(a)
        last.append(b)
        count.append(max(int(n), 1))

    for key, run in runs.items():
        add(key, float(run[0]), float(run[1]), int(run[2]))
    for s in scans:
        extra: dict[str, list[float]] = defaultdict(list)
        for t in s.triggers:
            if (s.dst, t.server) not in index:
                extra[t.server].append(t.time)
        for server, times in extra.items():
            add((s.dst, server), min(times), max(times), len(times))
    end = covered_until if covered_until is not None else max(
        [*last, *(s.start for s in scans)], default=0.0)
    covered = covered or {}
    ends = [covered.get(a, end) for a, _ in keys]  # each pair's own end of the log
    by_address: dict[str, list[int]] = defaultdict(list)
    for i, (a, _) in enumerate(keys):
        by_address[a].append(i)
    servers = sorted({srv for _, srv in keys})
    pairs_of: dict[str, list[int]] = defaultdict(list)
    for i, (_, srv) in enumerate(keys):
        pairs_of[srv].append(i)
    # Exposure of each address to background scans: from its first contact to a lookback
    # after its last (a scan later than that has no candidate and says nothing of rates).
    exposure: dict[str, tuple[float, float]] = {}
    for a, idx in by_address.items():
        lo = min(first[i] for i in idx)
        hi = min(max(last[i] for i in idx) + lookback, covered.get(a, end))
        exposure[a] = (lo, max(hi, lo))
    edges = lag_edges(lookback)
    lags = _Lags(edges, [(edges[b + 1] - edges[b]) / lookback for b in range(len(edges) - 1)])

    # Candidates of every scan.
    cands: list[list[_Candidate]] = []
    counted: list[bool] = []  # inside its address's exposure, not a probe address
    unattributed = 0
    for s in scans:
        T = s.start
        trig: dict[str, list[float]] = defaultdict(list)
        for t in s.triggers:
            trig[t.server].append(t.time)
        row = []
        for i in by_address.get(s.dst, ()):
            server = keys[i][1]
            if first[i] > T or last[i] < T - lookback:
                continue
            fb = lags.bin(T - first[i]) if T - first[i] <= lookback else None
            later_bins: Optional[list[int]] = None
            span = None
            if count[i] > 1:
                if server in trig:
                    later_bins = [lags.bin(T - t) for t in trig[server]
                                  if t != first[i] and 0 <= T - t <= lookback]
                else:
                    lo_t, hi_t = max(first[i], T - lookback), min(last[i], T)
                    span = (T - hi_t, T - lo_t) if hi_t > lo_t else None
            if fb is None and not later_bins and span is None:
                continue
            row.append(_Candidate(i, fb, later_bins, span))
        cands.append(row)
        if not row:
            unattributed += 1
        lo, hi = exposure.get(s.dst, (math.inf, -math.inf))
        counted.append(s.dst not in probes and lo <= T <= hi)
    total_exposure = sum(hi - lo for a, (lo, hi) in exposure.items() if a not in probes)
    probe_beta = PROBE_BACKGROUND / lookback

    prior_logit = math.log(settings.prior / (1 - settings.prior))
    p = dict.fromkeys(servers, settings.prior)
    h_s = dict.fromkeys(servers, 0.7)
    h, u = 0.7, 0.8
    beta = (len(scans) * 0.5 + 0.5) / max(total_exposure, lookback)
    positive: dict[str, int] = defaultdict(int)
    sole: dict[str, int] = defaultdict(int)
    for row in cands:
        for c in row:
            positive[keys[c.pair][1]] += 1
        if len(row) == 1:
            sole[keys[row[0].pair][1]] += 1
    with_scan = {c.pair for row in cands for c in row}
    # A contact made after its address was already scanned says nothing when no scan
    # follows: a scanner that cools down per address (2016's did) would not scan it again.
    scanned_at: dict[str, float] = {}
    for sc in scans:
        scanned_at.setdefault(sc.dst, sc.start)
    quiet = {i for i in range(len(keys)) if i not in with_scan
             and first[i] > scanned_at.get(keys[i][0], math.inf)}
    # Pairs whose coverage G may be below 1 (the log ends within a lookback of their last
    # packet): only these need the CDF each round.
    tail = [i for i in range(len(keys)) if ends[i] - last[i] < lookback and i not in quiet]
    explained: dict[str, float] = defaultdict(float)
    coverage = [0.0 if i in quiet else 1.0 for i in range(len(keys))]
    cands_of: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for k, row in enumerate(cands):
        for ci, c in enumerate(row):
            cands_of[keys[c.pair][1]].append((k, ci))
    is_probe = [s.dst in probes for s in scans]
    # Each server's own lag distribution: its attributed lags (spread over the neighbouring
    # bins) shrunk towards the shared one with OWN_PRIOR scans' weight. A harvester's
    # scanner keeps its pace (2016: 6-47 s), so scans at that server's usual lag count more
    # for it than scans at lags only other servers show. Leave one out: a scan is weighed
    # by the server's lags without its own part, or a clean server fits its own few
    # unrelated scans and convicts itself.
    own: dict[str, tuple[list[float], float]] = {}
    contrib: dict[tuple[int, int], list[tuple[int, float]]] = {}
    nbins = len(edges) - 1
    width = [edges[b + 1] - edges[b] for b in range(nbins)]

    def own_density(server: str, mine_k: Sequence[tuple[int, float]]
                    ) -> Callable[[int], float]:
        got = own.get(server)
        if got is None:
            shared = lags.density
            return shared.__getitem__
        raw, n = got
        n_k = sum(m for _, m in mine_k)
        mass = lags.mass

        def at(b: int) -> float:
            v = 0.5 * raw[b] + (0.25 * raw[b - 1] if b else 0.0) + (
                0.25 * raw[b + 1] if b + 1 < nbins else 0.0)
            for bb, m in mine_k:
                v -= m * (0.5 if bb == b else 0.25 if abs(bb - b) == 1 else 0.0)
            return (max(v, 0.0) + OWN_PRIOR * mass[b]) / (n - n_k + OWN_PRIOR) / width[b]
        return at
    # The state (with beta) the round before left, and the one before that.
    before: tuple[tuple[float, ...], float] = ((), 0.0)
    before_last = before
    rate_prior = _rate_prior(h)
    round_ = -1
    for round_ in range(rounds):
        rate_prior = _rate_prior(h)  # around the common rate as the last round left it
        shared = lags.density
        background = [probe_beta if pr else beta for pr in is_probe]
        for i in tail:
            g_first = lags.cdf(ends[i] - first[i])
            if count[i] > 1:
                stretch = last[i] - first[i]
                later = sum(lags.cdf(ends[i] - (first[i] + stretch * (j + 0.5) / 8))
                            for j in range(8)) / 8
                coverage[i] = u * g_first + (1 - u) * later
            else:
                coverage[i] = g_first
        # Each candidate's g (its lag density at the scan), and each scan's intensity.
        gs: list[list[float]] = []
        lam: list[float] = []
        for k, row in enumerate(cands):
            gk = []
            for ci, c in enumerate(row):
                i = c.pair
                dens = own_density(keys[i][1], contrib.get((k, ci), ()))
                g = u * dens(c.first_bin) if c.first_bin is not None else 0.0
                if c.later_bins:
                    g += (1 - u) / (count[i] - 1) * sum(dens(b) for b in c.later_bins)
                elif c.span is not None:
                    g += (1 - u) / max(last[i] - first[i], 1e-9) * (
                        lags.cdf(c.span[1]) - lags.cdf(c.span[0]))
                gk.append(g)
            gs.append(gk)
            lam.append(background[k] + sum(p[keys[c.pair][1]] * h_s[keys[c.pair][1]] * g
                                           for c, g in zip(row, gk)))
        # Servers one at a time, the likeliest first, each seeing the others' latest state
        # (Gauss-Seidel): updating all at once oscillates (every scan explained by everyone,
        # then by no one), and the likeliest claiming its scans first is what breaks the tie
        # between a server in two positive groups and the servers in only one.
        for srv in sorted(servers, key=lambda srv: (-p[srv], -positive[srv], srv)):
            x: dict[int, float] = defaultdict(float)  # pair → sum of g / lambda(-srv)
            old = p[srv] * h_s[srv]
            for k, ci in cands_of[srv]:
                g = gs[k][ci]
                x[cands[k][ci].pair] += g / max(lam[k] - old * g, 1e-300)
            plain = 0   # contacts the log covered fully, no scan after them
            terms = []  # (G, x) of the others
            for i in pairs_of[srv]:
                if i in with_scan or coverage[i] < 1.0:
                    terms.append((coverage[i], x.get(i, 0.0)))
                else:
                    plain += 1
            values = _rate_values(plain, terms)
            arg = GRID[values.index(max(values))]
            new = _sigmoid(prior_logit + _marginal(values, rate_prior))
            p[srv], h_s[srv] = new, arg
            for k, ci in cands_of[srv]:
                lam[k] += (new * arg - old) * gs[k][ci]
        # Responsibilities: the lag histogram, u, the background.
        contrib_before = dict(contrib)
        lag_mass = [0.0] * len(shared)
        own_mass: dict[str, list[float]] = defaultdict(lambda: [0.0] * (len(edges) - 1))
        first_mass = later_mass = bg_mass = 0.0
        explained.clear()
        contrib.clear()
        for k, row in enumerate(cands):
            total = background[k] + sum(p[keys[c.pair][1]] * h_s[keys[c.pair][1]] * g
                                        for c, g in zip(row, gs[k]))
            for ci, (c, g) in enumerate(zip(row, gs[k])):
                r = p[keys[c.pair][1]] * h_s[keys[c.pair][1]] * g / total
                if r <= 0:
                    continue
                explained[keys[c.pair][1]] += r
                # Split r over the packets by their share of g (a run's spread-out later
                # polls feed u only).
                i = c.pair
                server = keys[i][1]
                dens = own_density(server, contrib_before.get((k, ci), ()))
                mine = own_mass[server]
                parts = []
                at_first = u * dens(c.first_bin) / g if c.first_bin is not None else 0.0
                if c.first_bin is not None:
                    parts.append((c.first_bin, r * at_first))
                first_mass += r * at_first
                later_mass += r * (1 - at_first)
                if c.later_bins:
                    w = r * (1 - u) / (count[i] - 1) / g
                    parts += [(b, w * dens(b)) for b in c.later_bins]
                for b, m in parts:
                    lag_mass[b] += m
                    mine[b] += m
                contrib[(k, ci)] = parts
            if counted[k]:
                bg_mass += background[k] / total
        # M-step: the lag distribution (one scan's worth of uniform prior keeps every lag
        # possible), u (a weak lean to the first packet), beta, the common rate. The lags'
        # mass is spread over the neighbouring bins (0.25/0.5/0.25, as each server's own and
        # _rivals' are): every harvester's scanner has a pace of its own and jitters around
        # it, so the shared distribution is a smooth mixture, and fitted bin by bin it
        # turned spiky, with a harvester whose lags fell between the spikes explained away
        # for good and a clean server met at a spike's lag credited with its scans (10
        # gateway logs whose hosts met new addresses server by server: one clean server
        # called harvester before, none after).
        lag_mass = [0.5 * m + 0.25 * lag_mass[max(b - 1, 0)]
                    + 0.25 * lag_mass[min(b + 1, nbins - 1)] for b, m in enumerate(lag_mass)]
        z = sum(lag_mass) + 1.0
        lags = _Lags(edges, [(m + w / lookback) / z for m, w in zip(lag_mass, width)])
        # Each server's own lag distribution: its attributed lags (spread over the
        # neighbouring bins) shrunk towards the shared one with OWN_PRIOR scans' weight. A
        # harvester's scanner keeps its pace (2016: 6-47 s), so scans at that server's usual
        # lag count more for it than scans at lags only other servers show.
        own = {server: (mine, sum(mine)) for server, mine in own_mass.items()
               if sum(mine) >= 0.5}
        u = _clamp((first_mass + 2.0) / (first_mass + later_mass + 3.0), 0.01, 0.999)
        beta = (bg_mass + 0.5) / max(total_exposure, lookback)
        likely = [s for s in servers if p[s] >= 0.5]
        if likely:
            h = _clamp(sum(p[s] * h_s[s] for s in likely) / sum(p[s] for s in likely),
                       GRID[0], GRID[-1])
        # Converged when a round moved nothing the next one is computed from: the servers'
        # probabilities and rates, the lag distribution, u and the background rate. Most
        # logs settle in 3-6 rounds; every round costs ~7 ms with 150 servers and 300
        # candidates, which was a fifth of `detect`'s whole process on a 1M-line log when
        # every fit ran at least 20 rounds. Or when it swings between two states, each round
        # back where the one before last left it: on a journal log (12 hosts, a quarter of
        # the unrelated scans at addresses in use) one server's p went 0.031, 0.044, 0.031,
        # ... and the fit ran all its rounds, 3.3 s where it settles in ~0.9. A fit that runs
        # out of rounds stops on either side too; there both were below clean_probability.
        now = (h, u, *lags.mass, *(h_s[srv] for srv in servers), *(p[srv] for srv in servers))
        if round_ >= 2 and any(_settled(now, beta, then, beta_then)
                               for then, beta_then in (before, before_last)):
            break
        before_last, before = before, (now, beta)

    # A candidate's g for _rivals: under the shared lag distribution (a server's own lags are
    # those the fit credited it with, so they favour the server that won the scans), each bin
    # averaged with its neighbours. A client's first packets to its servers leave within
    # seconds (iburst), so rivals' lags are a bin apart at most, and which side of a 5 s edge
    # they fell must not decide between them: with the bins as fitted, two scans at lags of
    # 39 and 46 s leave the bin of a rival's 43 s empty; spread over the neighbouring bins
    # 0.25/0.5/0.25 (as a server's own lags are), a rival 1 s earlier is still weighed 2:1.
    mass = lags.mass
    smooth = [sum(mass[max(b - 1, 0):b + 2]) / 3 / width[b] for b in range(nbins)]

    def g_shared(k: int, ci: int) -> float:
        c = cands[k][ci]
        i = c.pair
        g = u * smooth[c.first_bin] if c.first_bin is not None else 0.0
        if c.later_bins:
            g += (1 - u) / (count[i] - 1) * sum(smooth[b] for b in c.later_bins)
        elif c.span is not None:
            g += (1 - u) / max(last[i] - first[i], 1e-9) * (
                lags.cdf(c.span[1]) - lags.cdf(c.span[0]))
        return g

    def g_at_first(k: int, ci: int) -> float:
        """g_shared of the first packet alone (see the harvester verdict below)."""
        c = cands[k][ci]
        return u * smooth[c.first_bin] if c.first_bin is not None else 0.0
    server_of = [srv for _, srv in keys]
    tied = _rivals(p, h_s, cands, cands_of, gs, g_shared, background, pairs_of, with_scan, coverage,
            server_of, prior_logit, rate_prior, settings.suspect_probability)
    def intensities(counted: Callable[[str], bool]) -> list[float]:
        """Each scan's intensity from the background and the servers `counted` says."""
        out = []
        for k, row in enumerate(cands):
            total = 0.0
            for c, g in zip(row, gs[k]):
                srv = keys[c.pair][1]
                if counted(srv):
                    total += p[srv] * h_s[srv] * g
            out.append(background[k] + total)
        return out
    lam = intensities(lambda srv: True)
    claimed = _claimed(p, h_s, h, cands, cands_of, gs, g_shared, lam, pairs_of, coverage,
                       server_of, prior_logit, settings.suspect_probability)
    tied |= _contested(p, h_s, h, cands, cands_of, gs, g_shared, lam, pairs_of, with_scan,
                       coverage, server_of, prior_logit, settings.harvester_probability,
                       settings.suspect_probability, settings.harvester_min_positive)
    # The servers that may explain another's scans away when that one's clean check asks:
    # those likely enough to be called harvesters. A tied or claimed server is a suspect
    # whatever its probability (the log cannot tell it from its rivals), so it explains
    # nothing away.
    explaining = {srv for srv in servers
                  if p[srv] >= settings.harvester_probability} - tied - claimed
    sure = intensities(explaining.__contains__)
    verdicts = {}
    for srv in servers:
        negative = sum(1 for i in pairs_of[srv] if i not in with_scan and coverage[i] >= 0.5)
        # "Clean" must hold against a harvester at the common rate h, not only one that
        # almost never harvests (which no amount of negative evidence can rule out); and its
        # scans may be explained away only by servers called harvesters: a scan another
        # uncertain server is credited with may still be this one's.
        x_sure: dict[int, float] = defaultdict(float)
        for k, ci in cands_of[srv]:
            g = gs[k][ci]
            credited = p[srv] * h_s[srv] * g if srv in explaining else 0.0
            x_sure[cands[k][ci].pair] += g / max(sure[k] - credited, 1e-300)
        at_common = _sigmoid(prior_logit + sum(
            math.log(max(1 - h * coverage[i] + h * x_sure.get(i, 0.0), 1e-300))
            for i in pairs_of[srv]))
        prob = p[srv]
        # A harvester's case rests on a share of its contacts followed by scans, not on a
        # small excess over many: the background is fitted as if unrelated scans fell on
        # addresses at random, and where some scanners learned the addresses in use
        # elsewhere every busy server's contacts are followed by more scans than that. On
        # journal logs with a quarter of the unrelated scans at addresses in use, each clean
        # server called harvester fitted a rate of 0.1 (33 of its 87 contacts followed by a
        # scan), every harvester named 0.5-0.8; on 100 logs of the five scenarios no
        # harvester named fitted less than 0.2.
        # Nor on later polls alone: a scan during an address's life has every server it
        # polls in the lookback as a weak candidate (the polls' lags spread over the run), as
        # does an unrelated scan of an address in use, and the server met at the most such
        # addresses gathers them (the fitted share of harvests at the first packet falling
        # with each, so each counts for more). On a gateway log (burst rotation, seed 50) a
        # clean server with 9 scans after 15 contacts was called harvester at 0.9997, 7 of
        # its scans candidates of later polls only and the two at its first packet made by
        # harvesters met with it. A harvester must be at least a suspect on its first packets.
        if prob >= settings.harvester_probability and positive[srv] >= \
                settings.harvester_min_positive and h_s[srv] >= settings.harvester_min_rate \
                and srv not in claimed and all(_shared_odds(
                    srv, p, h_s, cands, cands_of, gs, g_of, lam, pairs_of, coverage,
                    prior_logit, rate_prior) >= settings.suspect_probability
                    for g_of in (g_shared, g_at_first)):
            status = Status.HARVESTER
        elif prob >= settings.suspect_probability or srv in tied or srv in claimed:
            status = Status.SUSPECT
        elif (negative >= settings.clean_min_negative and prob <= settings.clean_probability
              and at_common <= settings.clean_probability
              and _cleared(sum(1 for i in pairs_of[srv] if i in with_scan), negative, h,
                           settings.harvester_min_positive)):
            status = Status.CLEAN
        else:
            status = Status.UNKNOWN
        verdicts[srv] = Finding(srv, status, round(prob, 4), positive[srv], negative, sole[srv],
                                    h_s[srv], round(explained.get(srv, 0.0), 2))
    fitted = len(scans) > unattributed
    estimates = Estimates(
        harvest_rate=round(h, 3), first_contact_share=round(u, 3),
        background_rate=round(beta * 3600, 6),
        lag_median=round(lags.quantile(0.5), 1) if fitted else None,
        lag_p90=round(lags.quantile(0.9), 1) if fitted else None,
        lag_max=round(lags.quantile(0.99), 1) if fitted else None,
        lag_bins=tuple((edges[b], edges[b + 1], round(m, 4))
                       for b, m in enumerate(lags.mass)),
        scans=len(scans), explained=round(sum(explained.values()), 2),
        unattributed_scans=unattributed, contacts=len(keys), rounds=round_ + 1)
    return verdicts, estimates
