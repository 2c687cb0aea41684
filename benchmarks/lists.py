#!/usr/bin/env python3
"""Shared-list figures: validating a 100k-entry list (text and JSON), time and peak memory.

A list is re-validated every time it is used (`rules apply`, `sync`), so this is a cost paid
on every run with a large subscription. Usage: python3 benchmarks/lists.py [ENTRIES]
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ntpguard import addr, lists


def make_entries(count: int, seed: int = 1) -> list[str]:
    """Distinct global prefixes, 80% IPv6 (/32-/128), 20% IPv4 (/16-/32), as lists carry."""
    rng = random.Random(seed)
    seen: set = set()
    out = []
    while len(out) < count:
        if rng.random() < 0.8:
            length = rng.randint(32, 128)
            value = (0x2400 << 112 | rng.getrandbits(100)) >> (128 - length) << (128 - length)
            net = ipaddress.IPv6Network((value, length))
        else:
            length = rng.randint(16, 32)
            value = (rng.randint(1, 223) << 24 | rng.getrandbits(24)) >> (32 - length)
            net = ipaddress.IPv4Network((value << (32 - length), length))
        if net in seen or addr.nonglobal_reason(net.network_address) \
                or addr.nonglobal_reason(net.broadcast_address):
            continue
        seen.add(net)
        out.append(str(net))
    return out


def measure(raw: bytes) -> tuple[float, float, int]:
    """Best of 3 untraced runs (tracemalloc slows parsing ~5x), then one traced for memory."""
    seconds = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        parsed = lists.parse(raw, "bench")
        seconds = min(seconds, time.perf_counter() - start)
    tracemalloc.start()
    lists.parse(raw, "bench")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 2**20, len(parsed.entries)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    entries = make_entries(count)
    text = "".join(f"{e} scanner # bench\n" for e in entries).encode()
    doc = json.dumps({"format": "ntpguard-list", "version": 1, "entries": [
        {"address": e, "kind": "scanner"} for e in entries]}).encode()
    print(f"load average {os.getloadavg()[0]:.2f}; {count} entries")
    for name, raw in (("text", text), ("json", doc)):
        best = measure(raw)
        print(f"{name}: {len(raw) / 2**20:.1f} MiB validated in {best[0]:.2f} s "
              f"({best[2] / best[0]:,.0f} entries/s), peak traced memory {best[1]:.0f} MiB")


if __name__ == "__main__":
    main()
