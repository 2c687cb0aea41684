"""What the detector finds in the logs, the state keeps and the verdicts weigh: scans, the
packets that may have triggered them, and every contact of a local address with a server.

Records only, with no imports of their own beyond the standard library: the state stores
them without importing the detector and the log readers (~3.5 ms of every command that opens
the state, `rules apply` among them).
"""

from __future__ import annotations

from dataclasses import field
from typing import Optional

from ntpguard.records import record


@record
class Trigger:
    """An outbound packet that may have made a harvester call the scanner."""

    server: str
    proto: str
    sport: Optional[int]
    dport: Optional[int]
    time: float
    lag: float  # seconds from this packet to the scan's start


@record
class Scan:
    """One source (or its /64) probing ports of one local address, and the packets that
    address sent in the lookback before it."""

    start: float
    end: float
    src: str          # the scanner's address, or its /64 when several of its addresses took part
    dst: str          # the scanned (local) address
    ports: int        # distinct (protocol, port) pairs probed
    packets: int
    protocols: tuple[str, ...]
    triggers: tuple[Trigger, ...] = ()


@record(frozen=False)
class Contacts:
    """Every contact of each local address with each server, as a run of packets
    [first time, last time, packets], plus the time span the log covers. A run per pair (not
    a row per packet) keeps months of polls small; the verdicts need the first contact, the
    spread of the later ones and the exact times in the lookback of a scan (its triggers)."""

    runs: dict[tuple[str, str], list] = field(default_factory=dict)  # (address, server) → run
    start: Optional[float] = None
    end: Optional[float] = None
    sides: dict[str, object] = field(default_factory=dict)  # Sides.describe() of the read

    @property
    def first(self) -> dict[tuple[str, str], float]:
        """(address, server) → first contact."""
        return {k: r[0] for k, r in self.runs.items()}

    def merge(self, other: Contacts) -> None:
        """Add another read's contacts (a later file, a parallel share)."""
        runs = self.runs
        for key, (a, b, n) in other.runs.items():
            r = runs.get(key)
            if r is None:
                runs[key] = [a, b, n]
            else:
                r[0], r[1], r[2] = min(r[0], a), max(r[1], b), r[2] + n
        if not self.sides:
            self.sides = other.sides
        if other.start is not None:
            self.start = other.start if self.start is None else min(self.start, other.start)
        if other.end is not None:
            self.end = other.end if self.end is None else max(self.end, other.end)
