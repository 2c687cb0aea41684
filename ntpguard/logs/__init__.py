"""Firewall log readers: every input format yields the same small `Event` record.

`parse.LineParser` turns lines (any supported envelope around a netfilter LOG / nft `log` /
ulogd2 message) into events; `sources` opens files, gzip-rotated files, stdin and the journal
and remembers how far each was read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Union


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
    """The six fields the detector needs, in Event's order (an Event is a Packet plus where
    it was logged): what the fast path (`LineParser.packets`) makes, ~2x cheaper to build."""

    time: float
    src: str
    dst: str
    proto: str
    sport: Optional[int]
    dport: Optional[int]


# Either shape of one logged packet: the detector reads only fields 0-5, which both share.
Logged = Union[Packet, Event]


@dataclass
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
