"""Harvester attribution on generated logs with ground truth: precision and recall per scenario.

Four scenarios (the generator's knobs, tests/loggen.py), many seeds each; every log is written
to a file and read the way `ntpguard detect FILE` reads it (evidence.detect_sources, then the
attribution model). A harvester counts when the log shows it: at least two scans it triggered.
Targets: no clean server called harvester over all seeds; at least 95% of the harvesters
that triggered two or more scans called harvester, the rest suspect, none clean.

Matched harvesters: every scan the harvester triggered reached an address that a clean server
also met within MATCH_SECONDS of it (their lags differ by less than one harvester's own
jitter) and that server has no contact left unscanned. Each such server explains that scan as
well as the harvester does, at the cost of one more harvester: a factor of the prior share
of harvesters (`[detect] prior`, 0.05). With two scans and one such server at each, the
harvester's posterior is about 1 / (1 + 0.95 * 0.05) = 0.955 at most, at the 0.95 a harvester
verdict needs; with two at one of them, 0.91. A model whose 0.95 means 95% calls such a
harvester suspect, not harvester (the sparse scenario's one harvester, met twice in bursts of
all its address's servers: two logs in three). The recall is printed over all eligible
harvesters and over the unmatched ones.

Twinned harvesters: one clean server met every address where a scan followed the harvester,
each within MATCH_SECONDS of it, and has no more contacts than it. Swapping the two explains
the log as well, so no model names the harvester without naming that server too: the recall
any model can reach without a clean server called harvester is printed beside the recall.

--rotation poll: a host's later addresses meet each server at that server's next poll (how
running chrony and ntpd move to a new temporary address), not all within seconds (a daemon
restarted with the address, as at boot: the scenarios' default).
Usage: python3 benchmarks/attribution.py [--rotation burst|poll] [SEEDS] [SCENARIO ...]
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from loggen import ATTRIBUTION, Truth, generate  # noqa: E402

from ntpguard.config import Detect  # noqa: E402
from ntpguard.evidence import detect_sources  # noqa: E402
from ntpguard.verdict import attribute  # noqa: E402

MATCH_SECONDS = 10.0


def matched(harvester: str, runs: dict, scans: list, verdicts: dict, truth: Truth,
            lookback: float) -> bool:
    """Whether every address where a scan followed `harvester`'s packets was also met, within
    MATCH_SECONDS of its first packet, by a clean server with no contact left unscanned."""
    scanned: dict[str, list[float]] = {}
    for s in scans:
        scanned.setdefault(s.dst, []).append(s.start)
    firsts = {a: run[0] for (a, srv), run in runs.items() if srv == harvester
              and any(run[0] <= t <= run[1] + lookback for t in scanned.get(a, ()))}
    rivals: dict[str, bool] = dict.fromkeys(firsts, False)
    for (a, srv), run in runs.items():
        if a in firsts and srv not in truth.harvesters and srv in verdicts \
                and verdicts[srv].negative == 0 and abs(run[0] - firsts[a]) <= MATCH_SECONDS:
            rivals[a] = True
    return bool(rivals) and all(rivals.values())


def twinned(harvester: str, runs: dict, scans: list, truth: Truth,
            lookback: float) -> bool:
    """Whether one clean server met every address where a scan followed `harvester`'s packets,
    each within MATCH_SECONDS of the harvester's first packet, and has no more contacts than the
    harvester. Swapping the two explains the log as well (their lags differ
    by less than the harvester's own jitter), so no model can find the harvester likelier than
    that clean server: at most a suspect, at about 1:1."""
    scanned: dict[str, list[float]] = {}
    for s in scans:
        scanned.setdefault(s.dst, []).append(s.start)
    firsts = {a: run[0] for (a, srv), run in runs.items() if srv == harvester
              and any(run[0] <= t <= run[1] + lookback for t in scanned.get(a, ()))}
    if not firsts:
        return False
    met: dict[str, set[str]] = {}
    for (a, srv), run in runs.items():
        if a in firsts and srv not in truth.harvesters and abs(run[0] - firsts[a]) <= MATCH_SECONDS:
            met.setdefault(srv, set()).add(a)
    contacts: dict[str, int] = {}
    for _, srv in runs:
        contacts[srv] = contacts.get(srv, 0) + 1
    return any(len(addresses) == len(firsts) and contacts[srv] <= contacts[harvester]
               for srv, addresses in met.items())


def run(job: tuple[str, int, str]) -> dict:
    name, seed, rotation = job
    sc = dataclasses.replace(ATTRIBUTION[name], rotation=rotation)
    truth = Truth()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kern.log")
        with open(path, "w") as fh:
            for line in generate(sc, seed, truth):
                fh.write(line + "\n")
        os.utime(path, (sc.start + sc.duration, sc.start + sc.duration))
        t0 = time.perf_counter()
        settings = Detect()
        scans, contacts = detect_sources([path], settings, workers=1)
        verdicts, est = attribute(contacts.runs, scans, contacts.end, settings)
        took = time.perf_counter() - t0
    status = {s: v.status for s, v in verdicts.items()}
    eligible = {s for s, n in truth.scans_by.items() if n >= 2}
    return {
        "called": {s for s, v in status.items() if v == "harvester"},
        "truth": truth.harvesters, "eligible": eligible,
        "status": {s: status.get(s, "unseen") for s in truth.harvesters},
        "clean_called": {s for s, v in status.items() if v == "clean"},
        "matched": {s for s in eligible if matched(s, contacts.runs, scans, verdicts, truth,
                                                      settings.lookback)},
        "twinned": {s for s in eligible if twinned(s, contacts.runs, scans, truth,
                                                      settings.lookback)},
        "scans": len(scans), "lines": truth.lines, "seconds": took,
        "lag": (est.lag_median, est.lag_p90), "rate": est.harvest_rate,
    }


def main() -> None:
    argv = sys.argv[1:]
    rotation = "burst"
    if argv[:1] == ["--rotation"]:
        rotation, argv = argv[1], argv[2:]
        if rotation not in ("burst", "poll"):
            sys.exit("--rotation: burst or poll")
    seeds = int(argv[0]) if argv else 10
    names = argv[1:] or list(ATTRIBUTION)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{seeds} seeds per scenario; address rotation: {rotation}")
    jobs = [(n, seed, rotation) for n in names for seed in range(seeds)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        results = pool.map(run, jobs, chunksize=1)
    ok = True
    for name in names:
        rs = [r for (n, _, _), r in zip(jobs, results) if n == name]
        tp = sum(len(r["called"] & r["truth"]) for r in rs)
        fp = sum(len(r["called"] - r["truth"]) for r in rs)
        eligible = sum(len(r["eligible"]) for r in rs)
        named = sum(sum(r["status"][s] == "harvester" for s in r["eligible"]) for r in rs)
        suspect = sum(sum(r["status"][s] == "suspect" for s in r["eligible"]) for r in rs)
        clean = sum(sum(r["status"][s] == "clean" for s in r["eligible"]) for r in rs)
        clean_any = sum(sum(r["status"][s] == "clean" for s in r["truth"]) for r in rs)
        harvesters = sum(len(r["truth"]) for r in rs)
        # Clean servers called clean: the rest are unknown (or suspect), usable all the same.
        cleared = sum(len(r["clean_called"] - r["truth"]) for r in rs)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = named / eligible if eligible else 1.0
        match = sum(len(r["matched"]) for r in rs)
        clear = sum(sum(r["status"][s] == "harvester" for s in r["eligible"] - r["matched"])
                    for r in rs)
        met = fp == 0 and recall >= 0.95 and clean == 0 and named + suspect == eligible
        ok &= met
        lags = sorted(r["lag"][0] for r in rs if r["lag"][0] is not None)
        print(f"{name}: precision {precision:.3f} ({tp} harvesters named, {fp} clean servers "
              f"named), recall {recall:.3f} ({named} of {eligible} harvesters with >= 2 scans "
              f"named, {suspect} suspect, {clean} clean; of all {harvesters}: {clean_any} "
              f"clean) {'MET' if met else 'NOT MET'}; {cleared} clean servers called clean")
        print(f"  {sum(r['lines'] for r in rs) / len(rs):,.0f} lines and "
              f"{sum(r['scans'] for r in rs) / len(rs):.0f} scans a log; detect + attribute "
              f"{min(r['seconds'] for r in rs):.1f}-{max(r['seconds'] for r in rs):.1f} s; "
              f"fitted lag median {lags[len(lags) // 2] if lags else 'n/a'} s")
        print(f"  matched by clean servers: {match} of the {eligible} (named "
              f"{sum(sum(r['status'][s] == 'harvester' for s in r['matched']) for r in rs)}); "
              f"of the others {clear} of {eligible - match} named "
              f"({clear / (eligible - match) if eligible > match else 1.0:.3f})")
        twins = sum(len(r["twinned"]) for r in rs)
        untwinned = sum(sum(r["status"][s] == "harvester" for s in r["eligible"] - r["twinned"])
                        for r in rs)
        print(f"  twinned with a clean server: {twins} of the {eligible} (the most any model "
              f"can name without naming a clean server: {eligible - twins}, "
              f"{(eligible - twins) / eligible if eligible else 1.0:.3f}); named of the others "
              f"{untwinned}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"targets {'met' if ok else 'NOT met'} on every scenario")


if __name__ == "__main__":
    main()
