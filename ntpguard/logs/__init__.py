"""Firewall log readers: every input format yields the same small `Event` record.

`parse.LineParser` turns lines (any supported envelope around a netfilter LOG / nft `log` /
ulogd2 message) into events; `sources` opens files, gzip-rotated files, stdin and the journal
and remembers how far each was read.
"""

from __future__ import annotations

from dataclasses import field
from typing import NamedTuple, Optional, Union

from ntpguard.records import record


class Event(NamedTuple):
    """One logged packet. A NamedTuple because millions are made per run (cheap to build).

    time is seconds since the epoch (UTC); addresses are RFC 5952 / dotted quad; ports are None
    for protocols without ports. iface_in is empty for locally generated (OUTPUT hook) packets.
    """

    time: float
    src: str
    dst: str
    proto: str
    sport: Optional[int]
    dport: Optional[int]
    iface_in: str
    iface_out: str
    prefix: str


class Packet(NamedTuple):
    """The fields the detector needs, in Event's order (an Event is a Packet plus the log
    prefix): what the fast path (`LineParser.packets`) makes, cheaper to build.

    The interfaces give the packet's direction (`direction()`): the kernel prints `IN=` empty
    for a packet the host sent (OUTPUT hook), `OUT=` empty for one it received (INPUT), both
    for one it forwarded."""

    time: float
    src: str
    dst: str
    proto: str
    sport: Optional[int]
    dport: Optional[int]
    iface_in: str
    iface_out: str


# Directions of a logged packet (detect.Sides turns FORWARDED into FORWARDED_OUT or _IN).
OUT, IN, FORWARDED, FORWARDED_OUT, FORWARDED_IN, UNKNOWN = (
    "out", "in", "forwarded", "forwarded-out", "forwarded-in", "unknown")


def direction(iface_in: str, iface_out: str) -> str:
    """What the log line itself says: sent by the host, received, forwarded, or (neither
    interface printed: a shipper that dropped them) unknown."""
    if iface_in:
        return FORWARDED if iface_out else IN
    return OUT if iface_out else UNKNOWN


class Sieve(NamedTuple):
    """What the C fast path may leave out for the detector (LineParser(sieve=...)): packets
    that came in from a source that has sent nothing else to that address within `window`
    seconds (background radiation), never a possible trigger. The detector keeps nothing
    for such a source, so its results do not change (detect.sieve_for builds this)."""

    window: float
    trigger_port: int
    any_port: bool
    aggregate: bool


# Either shape of one logged packet: the detector reads only fields 0-5, which both share.
Logged = Union[Packet, Event]


@record(frozen=False)
class ReadStats:
    """What a read saw; the report prints it so silent data loss is visible."""

    lines: int = 0
    events: int = 0
    not_netfilter: int = 0   # lines without a netfilter SRC=/DST= body (other kernel messages)
    garbled: int = 0         # netfilter-looking lines that are truncated or malformed
    untimed: int = 0         # valid netfilter bodies without any usable timestamp
    formats: dict[str, str] = field(default_factory=dict)  # source → detected format

    @property
    def skipped(self) -> int:
        return self.not_netfilter + self.garbled + self.untimed

    def add(self, other: ReadStats) -> None:
        self.lines += other.lines
        self.events += other.events
        self.not_netfilter += other.not_netfilter
        self.garbled += other.garbled
        self.untimed += other.untimed
        self.formats.update(other.formats)
