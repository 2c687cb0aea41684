"""A collector: many hosts' forwarded firewall logs, each read on its own, judged together.

Hosts ship their kernel log with what admins already run (rsyslog's omfwd to the collector's
imtcp, written to one file per host; or systemd-journal-upload to systemd-journal-remote,
one journal file per host), and `[collector] hosts_from` names where, with a `*` for the
host's name. Each host's log is read by a detector of its own, with that host's directions
(`[[collector.hosts]]` lan_interfaces / local_prefixes, else [detect]'s, else learned from
its own log): the detector needs its packets in time order, and hosts' logs interleave. The
facts go into the one state (contacts keyed by the host's own addresses, scans by the
addresses scanned), so the verdicts weigh every host's evidence at once: a harvester one host
met twice and another once is judged on three contacts. Each address's evidence is covered
by its own host's log only (a host whose log lags is not read as "no scan came").
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from dataclasses import field
from typing import Any, Optional

from ntpguard.config import HOST_NAME, Detect
from ntpguard.errors import NtpguardError
from ntpguard.evidence import detect_sources
from ntpguard.facts import Contacts, Scan
from ntpguard.logs import ReadStats
from ntpguard.logs.sources import Position
from ntpguard.records import record

log = logging.getLogger("ntpguard")
JOURNAL = "journal:"
# systemd-journal-remote --split-mode=host writes remote-HOST.journal and, once it rotates
# it, archives remote-HOST@SEQNUM-ID.journal: the glob `[.@]*` takes both and no other host
# (remote-HOSTX.journal does not match remote-HOST[.@]*journal). journalctl --file reads it.
_JOURNAL_TAIL = "[.@]*journal"


@record
class HostLog:
    """One host's forwarded log: its name and the source string the readers take."""

    host: str
    source: str


@record(frozen=False)
class HostRead:
    """What reading one host's new lines found."""

    host: str
    source: str
    stats: ReadStats = field(default_factory=ReadStats)
    scans: list[Scan] = field(default_factory=list)
    contacts: Contacts = field(default_factory=Contacts)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "source": self.source, "lines": self.stats.lines,
                "events": self.stats.events, "scans": len(self.scans),
                "contacts": len(self.contacts.runs), "last_time": self.contacts.end,
                "error": self.error}


def discover(patterns: tuple[str, ...]) -> list[HostLog]:
    """Every host whose log is there now, by name (a new host appears when its first line
    arrives). A name that is not a plain host name (it comes from what the sender claims) is
    skipped with a warning, never used in a path or a glob."""
    found: dict[str, HostLog] = {}
    for pattern in patterns:
        journal = pattern.startswith(JOURNAL)
        path = pattern[len(JOURNAL):] if journal else pattern
        head, _, tail = path.partition("*")
        for match in sorted(glob.glob(glob.escape(head) + "*" + glob.escape(tail))):
            name = match[len(head):len(match) - len(tail)]
            if journal:
                name = name.split("@", 1)[0]  # an archive: HOST@SEQNUM-ID
            if not HOST_NAME.match(name):
                log.warning("collector: %s: %r is not a host name; skipped", match, name)
                continue
            if name in found or not os.path.isfile(match):
                continue  # named by an earlier pattern, or an archive of the same host
            if journal:
                stem = tail[:-len(".journal")] if tail.endswith(".journal") else tail
                source = JOURNAL + glob.escape(head + name + stem) + _JOURNAL_TAIL
            else:
                source = match
            found[name] = HostLog(name, source)
    return [found[n] for n in sorted(found)]


def settings_for(config: Any, host: str) -> Detect:
    """[detect] with this host's lan_interfaces / local_prefixes where it has its own."""
    base: Detect = config.detect
    for h in config.collector.hosts:
        if h.name == host:
            changes = {k: getattr(h, k) for k in ("lan_interfaces", "local_prefixes")
                       if getattr(h, k)}
            return dataclasses.replace(base, **changes) if changes else base
    return base


def read_host(host: HostLog, settings: Detect,
              positions: Optional[dict[str, Position]]) -> HostRead:
    """One host's new lines (from its saved position) through a detector of its own."""
    out = HostRead(host.host, host.source)
    try:
        out.scans, out.contacts = detect_sources([host.source], settings, positions=positions,
                                                 stats=out.stats)
    except NtpguardError as exc:
        out.error = str(exc)
    return out


def ingest(state: Any, config: Any, now: float) -> list[HostRead]:
    """Every host's new lines, each host's facts stored in a transaction of its own (its
    position with them), so a host whose log cannot be read costs only its own evidence."""
    positions = state.positions()
    out = []
    for host in discover(config.collector.hosts_from):
        got = read_host(host, settings_for(config, host.host), positions)
        if not got.error:
            state.save_detection([positions[host.source]] if host.source in positions else [],
                                 got.contacts, got.scans, coverage_key(host.host), now,
                                 host=host.host)
        out.append(got)
    return out


def coverage_key(host: str) -> str:
    """How a host's covered time is stored (detect_coverage.source)."""
    return "host:" + host
