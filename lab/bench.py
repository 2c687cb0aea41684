"""Lab figures: world build, time to sync, contact→scan, teardown. Prints numbers, asserts none.

Run (root): python3 -m lab.bench [--runs N] [--topology host|gateway]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lab.netns import list_namespaces
from lab.world import World, WorldSpec


def one(seed: int, topology: str, workdir: Path) -> dict[str, float]:
    spec = WorldSpec(seed=seed, prefix="ntpg-l-bench-", topology=topology, lag_min=1.0,
                     lag_max=1.0)
    t0 = time.monotonic()
    world = World(spec, workdir).start()
    try:
        built = time.monotonic() - t0
        world.wait_synced(timeout=60)
        synced = time.monotonic() - t0
        t1 = time.time()
        world.poke(world.harvesters[:1])

        def fresh() -> list[dict]:
            # A chronyd client may have picked a harvester already: only scans after the poke.
            return [s for s in world.scans() if s["t_start"] > t1]

        while not fresh() and time.time() - t1 < 20:
            time.sleep(0.05)
        scans = fresh()
        nan = float("nan")
        to_scan = scans[0]["t_end"] - t1 if scans else nan  # nan: source was in cooldown
        scan_took = scans[0]["t_end"] - scans[0]["t_start"] if scans else nan
    finally:
        t2 = time.monotonic()
        world.stop()
        teardown = time.monotonic() - t2
    assert not [n for n in list_namespaces() if n.startswith(spec.prefix)]
    return {"build": built, "sync": synced, "poke_to_scan_done": to_scan,
            "nmap": scan_took, "teardown": teardown}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--topology", default="host", choices=("host", "gateway"))
    args = p.parse_args()
    rows = []
    for seed in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as d:
            rows.append(one(seed, args.topology, Path(d) / "w"))
    print(f"lab world ({args.topology}), {args.runs} runs, median (min-max) seconds:")
    for key in rows[0]:
        vals = [r[key] for r in rows if r[key] == r[key]] or [float("nan")]
        print(f"  {key:18s} {statistics.median(vals):6.2f} ({min(vals):.2f}-{max(vals):.2f})")
    print("  (poke_to_scan_done includes the lab's fixed 1.0 s harvester lag)")


if __name__ == "__main__":
    main()
