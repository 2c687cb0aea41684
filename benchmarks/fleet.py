#!/usr/bin/env python3
"""Collector figures: the verdicts over a fleet's pooled evidence, by fleet size.

A collector recomputes every verdict from all stored contacts at each sync (evidence.
compute_verdicts), so this is its per-sync cost as the fleet and the kept history grow. Each
host uses one address a day (RFC 4941's default lifetime) that polls 6 servers of 400 all day;
8 of the servers harvest 80% of the addresses they see. Usage: python3 benchmarks/fleet.py
[HOSTS ...] (default 50 500 2000), DAYS=7 in the environment for the history kept.
"""

from __future__ import annotations

import os
import random
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ntpguard import config
from ntpguard.facts import Scan, Trigger
from ntpguard.verdict import attribute

T0 = 1_760_000_000.0


def fleet_evidence(hosts: int, days: int, seed: int = 1) -> tuple[dict, list[Scan], set[str]]:
    rng = random.Random(seed)
    servers = [f"2001:db8:1000::{i:x}" for i in range(400)]
    harvesters = set(servers[:8])
    runs: dict = {}
    scans = []
    for h in range(hosts):
        for day in range(days):
            address = f"2001:db8:{h:x}:{day:x}::1"
            t = T0 + day * 86400 + rng.uniform(0, 3600)
            for s in rng.sample(servers, 6):
                runs[(address, s)] = [t, t + 86000, 300]  # a day of polls every ~5 min
                if s in harvesters and rng.random() < 0.8:
                    scans.append(Scan(t + 20, t + 21, "2604:a880:800:10::1", address, 100, 100,
                                      ("TCP",), (Trigger(s, "UDP", 123, 123, t, 20.0),)))
    return runs, scans, harvesters


def main() -> None:
    days = int(os.environ.get("DAYS", "7"))
    settings = config.Detect()
    for hosts in [int(a) for a in sys.argv[1:]] or [50, 500, 2000]:
        runs, scans, harvesters = fleet_evidence(hosts, days)
        started = time.process_time()
        found, _ = attribute(runs, scans, T0 + (days + 1) * 86400, settings)
        cpu = time.process_time() - started
        # The whole process's peak (the evidence as the state hands it over included).
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        convicted = {a for a, f in found.items() if f.status == "harvester"}
        print(f"{hosts} hosts x {days} days: {len(runs)} contacts, {len(scans)} scans: "
              f"verdicts in {cpu:.1f} s CPU ({cpu / len(runs) * 1e6:.0f} us a contact), "
              f"process peak {peak:.0f} MiB; {len(convicted & harvesters)}/{len(harvesters)} "
              f"harvesters, {len(convicted - harvesters)} clean servers convicted")


if __name__ == "__main__":
    main()
