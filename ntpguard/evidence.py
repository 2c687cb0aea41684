"""Firewall logs → stored evidence → detection verdicts; the one ingest step.

`ingest(state, sources, settings)` reads each source from where the last run stopped, detects,
and stores the facts (contacts, scans with their triggers, covered time) through state.py;
`compute_verdicts(state, settings)` weighs every fact stored so far (verdict.attribute).
Keys make re-ingesting a no-op, so a lost position costs time, never double counting. Used by
`ntpguard detect --record` and `sync`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections import Counter
from dataclasses import field
from typing import TYPE_CHECKING, Iterator, Optional

from ntpguard import files
from ntpguard.config import Detect
from ntpguard.detect import Detector, detect_blocks, sieve_for
from ntpguard.errors import UnsafePathError
from ntpguard.facts import Contacts, Scan
from ntpguard.forked import run_forked
from ntpguard.logs import Logged, ReadStats
from ntpguard.logs.parse import LineParser
from ntpguard.logs.read import read_blocks
from ntpguard.logs.sources import Position, range_blocks
from ntpguard.logs.split import Share, plan_shares
from ntpguard.records import record
from ntpguard.status import DETECT, Status, Verdict
from ntpguard.verdict import Estimates, Finding, attribute

if TYPE_CHECKING:  # only the ingest needs it, and it pulls in most of ntpguard
    from ntpguard.state import State


@record(frozen=False)
class Summary:
    """What one ingest did; printed by the CLI and stored in the run summary."""

    stats: ReadStats = field(default_factory=ReadStats)
    scans: list[Scan] = field(default_factory=list)
    contacts: int = 0
    sources: list[str] = field(default_factory=list)
    sides: dict = field(default_factory=dict)  # which way packets went (detect.Sides)

    def as_dict(self) -> dict:
        s = self.stats
        return {"sources": self.sources, "lines": s.lines, "events": s.events,
                "skipped": s.skipped, "not_netfilter": s.not_netfilter, "garbled": s.garbled,
                "untimed": s.untimed, "scans": len(self.scans), "contacts": self.contacts,
                "formats": s.formats}


# A log at least this big (bytes to read) is split over the CPUs: below it, starting the
# workers costs more than they save (measured: ~30 ms per worker, ~100 MB/s per core).
PARALLEL_MIN = 32 << 20


def detect_sources(sources: list[str], settings: Detect, fmt: str = "auto",
                   boot_time: Optional[float] = None,
                   positions: Optional[dict[str, Position]] = None,
                   stats: Optional[ReadStats] = None, workers: Optional[int] = None,
                   parallel_min: int = PARALLEL_MIN) -> tuple[list[Scan], Contacts]:
    """All scans and contacts of the sources, read in order from their positions.

    One big plain file (the common `ntpguard detect /var/log/kern.log`) is split over
    `workers` processes (default: the CPUs, at most 4) at line boundaries; each also reads
    `lookback + window` seconds before its share (so triggers and windows are complete) and
    reads on after it until its scans are over, and reports only the scans that start in its
    share. The result equals a sequential read (tests/test_detect.py checks it) except for a
    scan that lasts longer than lookback + window across a boundary, and a log spanning more
    than a year (years are inferred per share).
    """
    stats = stats if stats is not None else ReadStats()
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    plan = None
    if workers > 1 and len(sources) == 1 and fmt in ("auto", "syslog", "rfc3339"):
        margin = settings.lookback + settings.window + 60.0  # a minute of disorder on top
        plan = plan_shares(sources[0], positions, workers, parallel_min, margin, fmt,
                           boot_time)
    # Millions of short-lived tuples trigger the cycle collector ~1000 times per second of
    # reading for nothing (packets, flows and deques hold no cycles): 15% of the time.
    paused = gc.isenabled()
    gc.disable()
    try:
        if plan is None:
            det = Detector(settings, tap=True)
            return detect_blocks(read_blocks(sources, fmt, boot_time, positions, stats,
                                             sieve_for(settings), det.tap), settings, det)
        # This process reads the first share itself while forked children read the others:
        # one fork fewer, and no process left waiting (~20 ms of a 1M-line file's ~0.4 s).
        parts = run_forked(_share, [(share, settings) for share in plan])
    finally:
        if paused:
            gc.enable()
    scans: list[Scan] = []
    contacts = Contacts()
    formats: dict[str, int] = {}
    for part in parts:
        scans.extend(part["scans"])
        contacts.merge(part["contacts"])
        stats.add(part["stats"])
        for k, v in part["formats"].items():
            formats[k] = formats.get(k, 0) + v
    source = sources[0]
    detected = fmt if fmt != "auto" else (max(formats.items(), key=lambda kv: kv[1])[0]
                                          if formats else "unknown")
    stats.formats = {**stats.formats, source: detected}
    if positions is not None:
        positions[source] = Position(source, os.stat(source).st_ino, parts[-1]["end_offset"])
    scans.sort(key=lambda x: x.start)
    return scans, contacts


def _share(job: tuple[Share, Detect]) -> dict:
    """One worker: detect in its share of the file (see detect_sources)."""
    share, settings = job
    path, ref, fmt, boot_time = share.path, share.reference_time, share.fmt, share.boot_time
    warm, lo, hi, t_lo, t_hi = share.warm, share.lo, share.hi, share.t_lo, share.t_hi
    det = Detector(settings, count_from=t_lo, count_until=t_hi, tap=True)
    parser = LineParser(fmt, reference_time=ref, boot_time=boot_time,
                        sieve=sieve_for(settings), tap=det.tap)
    marks: list[ReadStats] = []
    end = [lo]

    def snapshot() -> None:
        s = parser.stats
        marks.append(ReadStats(s.lines, s.events, s.not_netfilter, s.garbled, s.untimed))

    def blocks() -> Iterator[list[Logged]]:
        if warm < lo:
            yield from parser.packet_blocks(range_blocks(path, warm, lo))
        snapshot()
        yield from parser.packet_blocks(range_blocks(path, lo, hi, end))
        snapshot()
        if hi is None:
            return
        # Read on until every scan that started in this share is over.
        horizon = t_hi + settings.window
        for block in parser.packet_blocks(range_blocks(path, hi)):
            if block and block[-1][0] > horizon and not det.scanning_since(t_hi):
                return
            yield block

    scans = [s for s in det.feed_blocks(blocks()) if t_lo <= s.start < t_hi]
    scans += [s for s in det.finish() if t_lo <= s.start < t_hi]
    a, b = marks[0], marks[1]
    stats = ReadStats(b.lines - a.lines, b.events - a.events,
                      b.not_netfilter - a.not_netfilter, b.garbled - a.garbled,
                      b.untimed - a.untimed)
    return {"scans": scans, "contacts": det.contacts, "stats": stats,
            "formats": parser.format_counts, "end_offset": end[0]}


def ingest(state: State, sources: list[str], settings: Detect, fmt: str = "auto",
           boot_time: Optional[float] = None, now: Optional[float] = None) -> Summary:
    """Read sources from their saved positions, detect, store facts; one transaction."""
    now = time.time() if now is None else now
    positions = state.positions()
    summary = Summary(sources=list(sources))
    summary.scans, contacts = detect_sources(sources, settings, fmt, boot_time, positions,
                                             summary.stats)
    summary.contacts = len(contacts.runs)
    summary.sides = contacts.sides
    state.save_detection([p for p in positions.values() if p.source != "-"], contacts,
                         summary.scans, ",".join(sorted(sources)), now)
    return summary


# Beside state.db: the evidence key (State.evidence_key) and the detection settings the
# verdicts were last recorded under, with how many servers each status had then.
MEMO_NAME = "verdicts-memo.json"


def record_verdicts(state: State, settings: Detect, now: Optional[float] = None
                    ) -> dict[str, int]:
    """compute_verdicts(record=True) for `sync`, which only reports how many servers have
    each status: skipped when nothing it weighs changed since it last ran (the findings are a
    pure function of the stored evidence and the settings, and were recorded then). Weighing
    a year of a 50-host gateway's evidence takes ~3 s; a sync with nothing new, ~20 ms."""
    path = os.path.join(state.directory, MEMO_NAME)
    key = f"{settings!r} {state.evidence_key()}"
    try:
        memo = json.loads(files.read_regular(path, 1 << 20))
        if isinstance(memo, dict) and memo.get("key") == key and isinstance(
                memo.get("counts"), dict):
            return {str(k): int(v) for k, v in memo["counts"].items()}
    except (OSError, ValueError, TypeError, UnsafePathError):
        pass  # none yet, or damaged: weigh the evidence
    verdicts, _ = compute_verdicts(state, settings, record=True, now=now)
    counts = {str(k): n for k, n in Counter(v.status for v in verdicts.values()).items()}
    # The key after recording: the detect verdicts just added are part of it.
    body = {"key": f"{settings!r} {state.evidence_key()}", "counts": counts}
    with contextlib.suppress(OSError):  # without it the next sync only weighs again
        files.atomic_write(path, json.dumps(body).encode())
    return counts


def age_out(state: State, settings: Detect, now: float) -> tuple[int, int]:
    """Contacts and scans past [detect] retention_days deleted, but never those of a server
    some source judged harvester or suspect: blocked, it meets no new evidence, and its
    verdict must not lose what it rests on. Returns (contacts, scans) deleted."""
    blocked = {a for a, by in state.latest_verdicts().items()
               if any(v.status in (Status.HARVESTER, Status.SUSPECT) for v in by.values())}
    return state.age_out(settings.retention_days, blocked, now)


def compute_verdicts(state: State, settings: Detect, record: bool = True,
                     now: Optional[float] = None
                     ) -> tuple[dict[str, Finding], Estimates]:
    """Findings from all stored evidence; with record, a 'detect' verdict is added for each
    server whose status changed since its last one (the history stays small)."""
    contacts = state.contacts()
    findings, estimates = attribute(contacts.runs, state.scans(), contacts.end, settings,
                                    state.probe_addresses(),
                                    covered=state.address_coverage())
    if record:
        now = time.time() if now is None else now
        latest = state.latest_verdicts()
        with state.transaction():
            for f in findings.values():
                prev = latest.get(f.address, {}).get(str(DETECT))
                if prev is not None and prev.status == f.status:
                    continue
                if prev is None and f.status == Status.UNKNOWN:
                    continue
                state.add_verdict(Verdict(f.address, f.status, DETECT, f.evidence(), now))
    return findings, estimates
