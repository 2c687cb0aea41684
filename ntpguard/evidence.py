"""Log evidence in the state database: ingest sources incrementally, recompute verdicts.

`ingest(state, sources, settings)` reads each source from where the last run stopped, detects,
and stores facts (first contacts, scans, covered time); `compute_verdicts(state, settings)`
builds group tests from every fact stored so far. Keys make re-ingesting a no-op, so a lost
position costs time, never double counting. Used by `ntpguard detect --record` and `sync`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from ntpguard.config import Detect
from ntpguard.detect import Contacts, Detector, Scan, Trigger
from ntpguard.logs import Event, ReadStats
from ntpguard.logs.parse import LineParser
from ntpguard.logs.sources import Position, file_lines, journal_lines, stdin_lines
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


def read_events(sources: Iterable[str], fmt: str = "auto", boot_time: Optional[float] = None,
                positions: Optional[dict[str, Position]] = None,
                stats: Optional[ReadStats] = None) -> Iterator[Event]:
    """Events of every source in turn ("-" stdin, "journal", or a path); with positions,
    each source resumes where it stopped and its position follows the read."""
    stats = stats if stats is not None else ReadStats()
    for source in sources:
        pos = positions.setdefault(source, Position(source)) if positions is not None else None
        if source == "-":
            ref, lines = time.time(), stdin_lines()
        elif source == JOURNAL:
            ref, lines = time.time(), journal_lines(pos or Position(JOURNAL))
        else:
            try:
                ref = os.stat(source).st_mtime
            except OSError:
                ref = time.time()  # file_lines reports the error
            lines = file_lines(source, pos)
        parser = LineParser(fmt, reference_time=ref, boot_time=boot_time)
        yield from parser.parse_lines(lines)
        parser.stats.formats = {source: parser.detected_format()}
        stats.add(parser.stats)


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
    det = Detector(settings)
    events = read_events(sources, fmt, boot_time, positions, summary.stats)
    summary.scans = list(det.feed(events))
    summary.scans.extend(det.finish())
    contacts = det.contacts
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
    tests, unattributed = build_tests(contacts.first, scans, contacts.end, settings.lookback)
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
