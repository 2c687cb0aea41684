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
it covered. Per server the rate h_s is the best on a grid (less a penalty for that freedom).

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
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from ntpguard.config import Detect
from ntpguard.detect import Scan
from ntpguard.status import Status

# An unrelated scan of a probe address: it was never used for anything but one packet to one
# server, so only that server (or its path) can have passed it on. Chance per lookback.
PROBE_BACKGROUND = 0.001
# Harvest rates a server may have (its own best is used, less PENALTY nats for the choice).
GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
PENALTY = 0.5
# How many scans' weight the shared lag distribution has in each server's own.
OWN_PRIOR = 3.0


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass
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
    for round_ in range(rounds):
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
        change = 0.0
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
            best, arg = -math.inf, GRID[0]
            for hv in GRID:
                v = plain * math.log(1 - hv) + sum(
                    math.log(max(1 - hv * g + hv * xv, 1e-300)) for g, xv in terms)
                if v > best:
                    best, arg = v, hv
            new = _sigmoid(prior_logit + best - PENALTY)
            change = max(change, abs(new - p[srv]))
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
        # possible), u (a weak lean to the first packet), beta, the common rate.
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
        if change < 1e-4 and round_ >= 20:
            break
    sure = [background[k] + sum(
        p[keys[c.pair][1]] * h_s[keys[c.pair][1]] * g for c, g in zip(row, gs[k])
        if p[keys[c.pair][1]] >= settings.harvester_probability) for k, row in enumerate(cands)]
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
            credited = p[srv] * h_s[srv] * g if p[srv] >= settings.harvester_probability else 0.0
            x_sure[cands[k][ci].pair] += g / max(sure[k] - credited, 1e-300)
        at_common = _sigmoid(prior_logit + sum(
            math.log(max(1 - h * coverage[i] + h * x_sure.get(i, 0.0), 1e-300))
            for i in pairs_of[srv]))
        prob = p[srv]
        if prob >= settings.harvester_probability and positive[srv] >= \
                settings.harvester_min_positive:
            status = Status.HARVESTER
        elif prob >= settings.suspect_probability:
            status = Status.SUSPECT
        elif (negative >= settings.clean_min_negative and prob <= settings.clean_probability
              and at_common <= settings.clean_probability):
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
        unattributed_scans=unattributed, contacts=len(keys))
    return verdicts, estimates
