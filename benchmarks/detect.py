"""Throughput and peak memory of `ntpguard detect` on a generated 1M-line log.

Prints lines/s for parsing alone and for parse + detect + verdicts, and the peak memory the
detector's state reaches (tracemalloc, in a separate pass so it does not slow the timing).
Usage: python3 benchmarks/detect.py [LINES]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from loggen import Scenario, generate  # noqa: E402

from ntpguard.config import Detect  # noqa: E402
from ntpguard.detect import Detector  # noqa: E402
from ntpguard.evidence import read_events  # noqa: E402
from ntpguard.logs import ReadStats  # noqa: E402


def main() -> None:
    target = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    # A gateway for 40 hosts polling every 64 s with background noise: ~1M lines in 2.2 days.
    sc = Scenario(hosts=40, servers=150, harvesters=6, poll=64.0, noise_per_hour=2000,
                  duration=target / 460_000 * 86400, address_lifetime=6 * 3600, gateway=True)
    with tempfile.TemporaryDirectory() as tmp:
        for envelope in ("syslog", "rfc3339"):
            sc.envelope = envelope
            path = os.path.join(tmp, f"kern-{envelope}.log")
            t0 = time.perf_counter()
            with open(path, "w") as fh:
                for line in generate(sc, 1):
                    fh.write(line + "\n")
            os.utime(path, (sc.start + sc.duration, sc.start + sc.duration))
            gen = time.perf_counter() - t0
            size = os.path.getsize(path)
            stats = ReadStats()
            t0 = time.perf_counter()
            n = sum(1 for _ in read_events([path], stats=stats))
            parse = time.perf_counter() - t0
            stats2 = ReadStats()
            t0 = time.perf_counter()
            det = Detector(Detect())
            scans = list(det.feed(read_events([path], stats=stats2))) + det.finish()
            full = time.perf_counter() - t0
            tracemalloc.start()
            det = Detector(Detect())
            for _ in det.feed(read_events([path])):
                pass
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"{envelope}: {stats.lines} lines ({size / 1e6:.0f} MB, generated in "
                  f"{gen:.1f} s), {n} packets, {len(scans)} scans")
            print(f"  parse only:      {stats.lines / parse:>11,.0f} lines/s ({parse:.2f} s)")
            print(f"  parse + detect:  {stats2.lines / full:>11,.0f} lines/s ({full:.2f} s)")
            print(f"  peak traced memory while detecting: {peak / 1e6:.1f} MB "
                  f"(file {size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
