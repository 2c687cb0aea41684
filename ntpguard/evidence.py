"""Log evidence in the state database: ingest sources incrementally, recompute verdicts.

`ingest(state, sources, settings)` reads each source from where the last run stopped, detects,
and stores facts (first contacts, scans, covered time); `compute_verdicts(state, settings)`
builds group tests from every fact stored so far. Keys make re-ingesting a no-op, so a lost
position costs time, never double counting. Used by `ntpguard detect --record` and `sync`.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from ntpguard.config import Detect
from ntpguard.detect import Contacts, Detector, Scan, Trigger, detect_blocks
from ntpguard.logs import Packet, ReadStats
from ntpguard.logs.parse import LineParser
from ntpguard.logs.sources import (
    Position,
    _is_gzip,
    file_blocks,
    journal_lines,
    line_start,
    range_blocks,
    stdin_blocks,
)
from ntpguard.state import State
from ntpguard.verdict import Estimates, ServerVerdict, build_tests, decide

JOURNAL = "journal"


@dataclass
class Summary:
    """What one ingest did; printed by the CLI and stored in the run summary."""

    stats: ReadStats = field(default_factory=ReadStats)
    scans: list[Scan] = field(default_factory=list)
    contacts: int = 0
    sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        s = self.stats
        return {"sources": self.sources, "lines": s.lines, "events": s.events,
                "skipped": s.skipped, "not_netfilter": s.not_netfilter, "garbled": s.garbled,
                "untimed": s.untimed, "scans": len(self.scans), "contacts": self.contacts,
                "formats": s.formats}


def read_blocks(sources: Iterable[str], fmt: str = "auto", boot_time: Optional[float] = None,
                positions: Optional[dict[str, Position]] = None,
                stats: Optional[ReadStats] = None) -> Iterator[list[Packet]]:
    """Packets of every source in turn ("-" stdin, "journal", or a path), a list at a time
    (one per 4 MiB read), for Detector.feed_blocks; with positions, each source resumes where
    it stopped and its position follows the read."""
    stats = stats if stats is not None else ReadStats()
    for source in sources:
        pos = positions.setdefault(source, Position(source)) if positions is not None else None
        if source == JOURNAL:
            parser = LineParser(fmt, reference_time=time.time(), boot_time=boot_time)
            events = parser.parse_lines(journal_lines(pos or Position(JOURNAL)))
            while True:
                chunk = list(itertools.islice(events, 4096))
                if not chunk:
                    break
                yield chunk
        else:
            if source == "-":
                ref, blocks = time.time(), stdin_blocks()
            else:
                try:
                    ref = os.stat(source).st_mtime
                except OSError:
                    ref = time.time()  # file_blocks reports the error
                blocks = file_blocks(source, pos)
            parser = LineParser(fmt, reference_time=ref, boot_time=boot_time)
            yield from parser.packet_blocks(blocks)
        parser.stats.formats = {source: parser.detected_format()}
        stats.add(parser.stats)


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
        plan = _split(sources[0], positions, workers, parallel_min, settings, fmt, boot_time)
    # Millions of short-lived tuples trigger the cycle collector ~1000 times per second of
    # reading for nothing (packets, flows and deques hold no cycles): 15% of the time.
    paused = gc.isenabled()
    gc.disable()
    try:
        if plan is None:
            return detect_blocks(read_blocks(sources, fmt, boot_time, positions, stats),
                                 settings)
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(len(plan)) as pool:
            parts = pool.map(_share, plan)
    finally:
        if paused:
            gc.enable()
    scans: list[Scan] = []
    contacts = Contacts()
    first = contacts.first
    formats: dict[str, int] = {}
    for part in parts:
        scans.extend(part["scans"])
        for key, t in part["first"].items():
            if key not in first or t < first[key]:
                first[key] = t
        if part["start"] is not None:
            contacts.start = part["start"] if contacts.start is None else min(
                contacts.start, part["start"])
            contacts.end = part["end"] if contacts.end is None else max(
                contacts.end, part["end"])
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


def _split(path: str, positions: Optional[dict[str, Position]], workers: int,
           parallel_min: int, settings: Detect, fmt: str, boot_time: Optional[float]
           ) -> Optional[list[tuple]]:
    """Each worker's (path, ..., warm-up offset, share start, share end, time bounds), or
    None when the source is not worth splitting (small, gzip, stdin, journal, rotated)."""
    if path in ("-", JOURNAL):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None  # the sequential reader reports it
    start = 0
    if positions is not None and path in positions:
        pos = positions[path]
        if pos.inode and pos.inode != st.st_ino:
            return None  # rotated: file_blocks finishes the old file first
        start = pos.offset if st.st_size >= pos.offset else 0
    if st.st_size - start < parallel_min or _is_gzip(path):
        return None
    ref = st.st_mtime
    cuts = [start] + [line_start(path, start + (st.st_size - start) * i // workers)
                      for i in range(1, workers)] + [st.st_size]
    times: list[float] = [-math.inf]
    for cut in cuts[1:-1]:
        t = _first_time(path, cut, fmt, ref, boot_time)
        if t is None or t <= times[-1]:
            return None  # no packet after the cut, or out of order: not worth the risk
        times.append(t)
    times.append(math.inf)
    need = settings.lookback + settings.window + 60.0  # a minute of disorder on top
    plan = []
    for i in range(workers):
        lo, hi = cuts[i], cuts[i + 1]
        if hi <= lo:
            return None
        warm = lo if i == 0 else _warm_start(path, start, lo, times[i] - need, fmt, ref,
                                             boot_time)
        plan.append((path, ref, fmt, boot_time, settings, warm, lo,
                     hi if i < workers - 1 else None, times[i], times[i + 1]))
    return plan


def _first_time(path: str, offset: int, fmt: str, ref: float, boot_time: Optional[float],
                limit: int = 1 << 22) -> Optional[float]:
    """The time of the first packet at or after a line boundary (within `limit` bytes)."""
    parser = LineParser(fmt, reference_time=ref, boot_time=boot_time)
    stop = line_start(path, min(offset + limit, os.path.getsize(path)))
    for block in parser.packet_blocks(range_blocks(path, offset, stop)):
        if block:
            return block[0][0]
    return None


def _warm_start(path: str, floor: int, cut: int, until: float, fmt: str, ref: float,
                boot_time: Optional[float]) -> int:
    """A line boundary before cut whose first packet is no later than `until` (or floor)."""
    step = 1 << 20
    while True:
        off = max(floor, cut - step)
        off = line_start(path, off) if off > floor else floor
        if off <= floor:
            return floor
        t = _first_time(path, off, fmt, ref, boot_time, limit=cut - off)
        if t is not None and t <= until:
            return off
        step *= 2


def _share(job: tuple) -> dict:
    """One worker: detect in its share of the file (see detect_sources)."""
    path, ref, fmt, boot_time, settings, warm, lo, hi, t_lo, t_hi = job
    parser = LineParser(fmt, reference_time=ref, boot_time=boot_time)
    det = Detector(settings)
    marks: list[ReadStats] = []
    end = [lo]

    def snapshot() -> None:
        s = parser.stats
        marks.append(ReadStats(s.lines, s.events, s.not_netfilter, s.garbled, s.untimed))

    def blocks() -> Iterator[list[Packet]]:
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
    c = det.contacts
    return {"scans": scans, "first": c.first, "start": c.start, "end": c.end, "stats": stats,
            "formats": parser.format_counts, "end_offset": end[0]}


def order_sources(paths: list[str]) -> list[str]:
    """Oldest first: kern.log.3.gz, kern.log.2.gz, kern.log.1, kern.log (then the rest)."""
    def key(item: tuple[int, str]) -> tuple:
        index, path = item
        name = os.path.basename(path)
        if name.endswith(".gz"):
            name = name[:-3]
        base, _, num = name.rpartition(".")
        if base and num.isdigit():
            return (os.path.dirname(path), base, -int(num), index)
        return (os.path.dirname(path), name, 0, index)
    special = [p for p in paths if p in ("-", JOURNAL)]
    files = [p for _, p in sorted(enumerate(p for p in paths if p not in special), key=key)]
    return files + special


def ingest(state: State, sources: list[str], settings: Detect, fmt: str = "auto",
           boot_time: Optional[float] = None, now: Optional[float] = None) -> Summary:
    """Read sources from their saved positions, detect, store facts; one transaction."""
    now = time.time() if now is None else now
    positions = _load_positions(state)
    summary = Summary(sources=list(sources))
    summary.scans, contacts = detect_sources(sources, settings, fmt, boot_time, positions,
                                             summary.stats)
    summary.contacts = len(contacts.first)
    with state.transaction() as db:
        for pos in positions.values():
            if pos.source == "-":
                continue
            db.execute(
                "INSERT INTO detect_positions (source, inode, offset, cursor, updated)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET"
                " inode = excluded.inode, offset = excluded.offset, cursor = excluded.cursor,"
                " updated = excluded.updated",
                (pos.source, pos.inode, pos.offset, pos.cursor, now))
        db.executemany(
            "INSERT INTO detect_contacts (address, server, first_time) VALUES (?, ?, ?)"
            " ON CONFLICT (address, server) DO UPDATE SET"
            " first_time = min(first_time, excluded.first_time)",
            [(a, s, t) for (a, s), t in contacts.first.items()])
        db.executemany(
            "INSERT INTO detect_scans (dst, src, start, end, ports, packets, protocols, triggers)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dst, src, start) DO NOTHING",
            [(s.dst, s.src, s.start, s.end, s.ports, s.packets, ",".join(s.protocols),
              json.dumps([t.__dict__ for t in s.triggers])) for s in summary.scans])
        if contacts.start is not None and contacts.end is not None:
            key = ",".join(sorted(sources))
            db.execute(
                "INSERT INTO detect_coverage (source, first_time, last_time) VALUES (?, ?, ?)"
                " ON CONFLICT (source) DO UPDATE SET"
                " first_time = min(first_time, excluded.first_time),"
                " last_time = max(last_time, excluded.last_time)",
                (key, contacts.start, contacts.end))
    return summary


def _load_positions(state: State) -> dict[str, Position]:
    return {src: Position(src, ino, off, cur) for src, ino, off, cur in state.conn.execute(
        "SELECT source, inode, offset, cursor FROM detect_positions")}


def record_contacts(state: State, contacts: Iterable[tuple[str, str, float]]) -> None:
    """Store contacts (local address, server, time) known without a log line: `ntpguard
    probe`'s packets, so they form tests even if the firewall logged nothing. Merged like
    ingested ones (earliest time wins), so the same packet seen in the log later is no-op."""
    with state.transaction() as db:
        db.executemany(
            "INSERT INTO detect_contacts (address, server, first_time, probe)"
            " VALUES (?, ?, ?, 1) ON CONFLICT (address, server) DO UPDATE SET"
            " first_time = min(first_time, excluded.first_time), probe = 1", list(contacts))


def probe_addresses(state: State) -> set[str]:
    """The local addresses `ntpguard probe` made (each known to one server only)."""
    return {a for (a,) in state.conn.execute(
        "SELECT DISTINCT address FROM detect_contacts WHERE probe = 1")}


def stored_facts(state: State) -> tuple[list[Scan], Contacts]:
    """Every scan and first contact recorded so far."""
    scans = [
        Scan(start, end, src, dst, ports, packets, tuple(p for p in protos.split(",") if p),
             tuple(Trigger(**t) for t in json.loads(triggers)))
        for dst, src, start, end, ports, packets, protos, triggers in state.conn.execute(
            "SELECT dst, src, start, end, ports, packets, protocols, triggers FROM detect_scans"
            " ORDER BY start")
    ]
    contacts = Contacts()
    for address, server, t in state.conn.execute(
            "SELECT address, server, first_time FROM detect_contacts"):
        contacts.first[(address, server)] = t
    row = state.conn.execute(
        "SELECT min(first_time), max(last_time) FROM detect_coverage").fetchone()
    contacts.start, contacts.end = row if row else (None, None)
    return scans, contacts


def compute_verdicts(state: State, settings: Detect, record: bool = True,
                     now: Optional[float] = None
                     ) -> tuple[dict[str, ServerVerdict], Estimates]:
    """Verdicts from all stored evidence; with record, a 'detect' verdict is added for each
    server whose status changed since its last one (the history stays small)."""
    scans, contacts = stored_facts(state)
    tests, unattributed = build_tests(contacts.first, scans, contacts.end, settings.lookback,
                                      probe_addresses(state))
    verdicts, estimates = decide(tests, settings, unattributed)
    if record:
        now = time.time() if now is None else now
        latest = state.latest_verdicts()
        with state.transaction():
            for v in verdicts.values():
                prev = latest.get(v.address, {}).get("detect")
                if prev is not None and prev.status == v.status:
                    continue
                if prev is None and v.status == "unknown":
                    continue
                state.add_verdict(v.address, v.status, "detect", {
                    "positive": v.positive, "negative": v.negative, "sole": v.sole,
                    "probability": v.probability}, now)
    return verdicts, estimates
