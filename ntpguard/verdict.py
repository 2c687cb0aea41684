"""Scans + contacts → harvester verdicts, treated as group testing (pure).

A *test* is one local address: the servers it first contacted (its group) and whether it was
scanned within `lookback` of those contacts. Positive: "at least one of these harvests".
Negative (no scan while the log covers the lookback, and the address not scanned before, since
harvesters cool down per address): "probably none of these harvests".

Noisy group testing, solved by mean-field iteration: each server s has a probability p_s of
being a harvester. A harvester in a group makes a scan follow with probability h (harvesters
skip clients); an unrelated scan lands on a test with probability e. For server s:
  negative test:  P(no scan | s harvests) / P(no scan | s clean) = (1 - h)
  positive test:  (1 - (1-e) Q (1-h)) / (1 - (1-e) Q),  Q = prod over the others (1 - h p_t)
so a positive already explained by a likely harvester in the same group says little about s.
h, e and the harvester share are re-estimated from the data each round, not hard-wired.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import median
from typing import Any, Iterable, Optional

from ntpguard.config import Detect
from ntpguard.detect import Scan
from ntpguard.status import Status

# An unrelated scan of a probe address: it was never used for anything but one packet to one
# server, so only that server (or its path) can have passed it on. The estimator's floor.
PROBE_BACKGROUND = 0.001


@dataclass(frozen=True)
class Test:
    address: str
    time: float                 # first contact of the group (negative) or scan start (positive)
    servers: tuple[str, ...]
    positive: bool
    contacted: tuple[float, ...] = ()  # first-contact time of each server, same order
    probe: bool = False         # the address was an `ntpguard probe` address


@dataclass(frozen=True)
class Finding:
    """What group testing found about one server: its status and the counts behind it."""

    address: str
    status: Status
    probability: float
    positive: int
    negative: int
    sole: int

    def evidence(self) -> dict[str, Any]:
        """The evidence stored with a `detect` verdict."""
        return {"positive": self.positive, "negative": self.negative, "sole": self.sole,
                "probability": self.probability}


@dataclass(frozen=True)
class Estimates:
    """What the data says about the harvesters (reported, and used by the verdicts)."""

    harvest_rate: float          # h: P(scan | a harvester was contacted)
    background_rate: float       # e: P(an unrelated scan lands in a test's lookback)
    harvester_share: float
    lag_median: Optional[float]  # scan start - first contact of the likeliest harvester
    lag_max: Optional[float]
    tests: int
    positive_tests: int
    unattributed_scans: int      # scans of addresses with no contact in the lookback


def build_tests(first_contacts: dict[tuple[str, str], float], scans: Iterable[Scan],
                covered_until: Optional[float], lookback: float,
                probes: Iterable[str] = ()) -> tuple[list[Test], int]:
    """Group tests from first contacts (address, server) → time and scans; and the number of
    scans that had no contact before them (the background of unrelated scans). Tests of the
    addresses in `probes` are marked as probe tests."""
    probes = set(probes)
    scan_times: dict[str, list[float]] = defaultdict(list)
    for s in scans:
        scan_times[s.dst].append(s.start)
    for times in scan_times.values():
        times.sort()
    by_address: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for (address, server), t in first_contacts.items():
        by_address[address].append((t, server))
    tests: list[Test] = []
    unattributed = 0
    for address, times in scan_times.items():
        contacts = by_address.get(address, [])
        first_scan = times[0]
        if not any(first_scan - lookback <= t <= first_scan for t, _ in contacts):
            unattributed += 1
    for address, contacts in by_address.items():
        contacts.sort()
        times = scan_times.get(address, [])
        scan_at = times[0] if times else None
        group = sorted((s, t) for t, s in contacts
                       if scan_at is not None and scan_at - lookback <= t <= scan_at)
        if group and scan_at is not None:
            tests.append(Test(address, scan_at, tuple(s for s, _ in group), True,
                              tuple(t for _, t in group), address in probes))
        # Contacts not followed by a scan within the lookback, before any scan of the address
        # (afterwards a harvester's cooldown would hide it), with the log covering the lookback.
        negative = sorted({
            s for t, s in contacts
            if (scan_at is None or t + lookback < scan_at)
            and covered_until is not None and t + lookback <= covered_until
        })
        if negative:
            first = min(t for t, s in contacts if s in negative)
            tests.append(Test(address, first, tuple(negative), False, (), address in probes))
    tests.sort(key=lambda x: (x.time, x.address))
    return tests, unattributed


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def decide(tests: list[Test], settings: Detect, unattributed: int = 0,
           rounds: int = 30) -> tuple[dict[str, Finding], Estimates]:
    """Per-server verdicts and the estimates behind them."""
    servers = sorted({s for t in tests for s in t.servers})
    positive: dict[str, int] = defaultdict(int)
    negative: dict[str, int] = defaultdict(int)
    sole: dict[str, int] = defaultdict(int)
    for t in tests:
        for s in t.servers:
            if t.positive:
                positive[s] += 1
                if len(t.servers) == 1:
                    sole[s] += 1
            else:
                negative[s] += 1
    # Each harvester gets its own rate h_s (they skip different shares of clients): its
    # evidence is the profile likelihood, maximised over a grid of h_s, less a small penalty
    # for that freedom. The others in a group are weighted with the common rate h.
    prior_logit = math.log(settings.prior / (1 - settings.prior))
    grid = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    p = dict.fromkeys(servers, settings.prior)
    best_h = dict.fromkeys(servers, 0.7)
    h, e = 0.7, 0.05
    member: dict[str, list[float]] = defaultdict(list)  # server → q of each positive test
    for _ in range(rounds):
        member.clear()
        for t in tests:
            if t.positive:
                factors = [1 - h * p[s] for s in t.servers]
                total = math.prod(factors)
                bg = PROBE_BACKGROUND if t.probe else e
                for s, f in zip(t.servers, factors):
                    member[s].append(min((1 - bg) * total / f, 1 - 1e-9))
        new_p = {}
        for s in servers:
            qs, neg = member.get(s, ()), negative[s]
            best, arg = -math.inf, grid[0]
            for hs in grid:
                v = neg * math.log(1 - hs) + sum(math.log((1 - q * (1 - hs)) / (1 - q))
                                                 for q in qs)
                if v > best:
                    best, arg = v, hs
            best_h[s] = arg
            new_p[s] = 1 / (1 + math.exp(-_clamp(prior_logit + best - 0.5, -50, 50)))
        p = new_p
        # Common rate: what the likely harvesters did; background: scans on groups without one.
        likely = [s for s in servers if p[s] >= 0.5]
        if likely:
            h = _clamp(sum(p[s] * best_h[s] for s in likely) / sum(p[s] for s in likely),
                       0.1, 0.95)
        c_pos = c_all = 0.0
        for t in tests:
            if t.probe:
                continue  # probe addresses say nothing about the background of other tests
            w = math.prod(1 - p[s] for s in t.servers)
            c_all += w
            if t.positive:
                c_pos += w
        if c_all > 0.5:
            e = _clamp(c_pos / c_all, 0.001, 0.5)
    share = sum(p.values()) / len(servers) if servers else 0.0
    # "Clean" must hold against a harvester that harvests at the common rate h, not one that
    # almost never does (which no amount of negative evidence can rule out); and the server's
    # own posterior (at its own best rate) must be as low, or a harvester that scans a third of
    # its clients, its scans explained away by others in the same groups, passes as clean.
    clean_logit = {s: prior_logit + negative[s] * math.log(1 - h) + sum(
        math.log((1 - q * (1 - h)) / (1 - q)) for q in member.get(s, ())) for s in servers}
    verdicts = {}
    for s in servers:
        prob = p[s]
        if prob >= settings.harvester_probability and positive[s] >= \
                settings.harvester_min_positive:
            status = Status.HARVESTER
        elif prob >= settings.suspect_probability:
            status = Status.SUSPECT
        elif (negative[s] >= settings.clean_min_negative and prob <= settings.clean_probability
              and 1 / (1 + math.exp(-_clamp(clean_logit[s], -50, 50)))
              <= settings.clean_probability):
            status = Status.CLEAN
        else:
            status = Status.UNKNOWN
        verdicts[s] = Finding(s, status, round(prob, 4), positive[s], negative[s], sole[s])
    lags = [t.time - c for t in tests if t.positive
            for s, c in zip(t.servers, t.contacted) if verdicts[s].status == Status.HARVESTER]
    estimates = Estimates(
        harvest_rate=round(h, 3), background_rate=round(e, 4), harvester_share=round(share, 3),
        lag_median=round(median(lags), 3) if lags else None,
        lag_max=round(max(lags), 3) if lags else None,
        tests=len(tests), positive_tests=sum(1 for t in tests if t.positive),
        unattributed_scans=unattributed,
    )
    return verdicts, estimates
