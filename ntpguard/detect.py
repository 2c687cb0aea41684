"""Events → scans → triggers: pure and streaming (memory is bounded by the active window).

A scan is one source (optionally its /64) probing at least `min_ports` distinct destination
ports of one destination address within `window` seconds. Its triggers are the outbound packets
from the scanned address in the `lookback` seconds before the scan started: by default UDP to
port 123 (NTP), optionally to any port (in 2016 an empty packet to port 321 of a harvester
triggered a scan too).

Besides scans the detector keeps each address's first contact with each server: verdict.py
turns contacts and scans into group tests.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import socket
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from ntpguard.config import Detect
from ntpguard.logs import Logged


@dataclass(frozen=True)
class Trigger:
    """An outbound packet that may have made a harvester call the scanner."""

    server: str
    proto: str
    sport: Optional[int]
    dport: Optional[int]
    time: float
    lag: float  # seconds from this packet to the scan's start


@dataclass(frozen=True)
class Scan:
    start: float
    end: float
    src: str          # the scanner's address, or its /64 when several of its addresses took part
    dst: str          # the scanned (local) address
    ports: int        # distinct (protocol, port) pairs probed
    packets: int
    protocols: tuple[str, ...]
    triggers: tuple[Trigger, ...] = ()


class _Flow:
    """Probes from one source (key) to one destination while it is active."""

    __slots__ = (
        "counting",
        "dst",
        "first",
        "last",
        "packets",
        "ports",
        "protocols",
        "seen",
        "sources",
        "start",
        "triggers",
    )

    def __init__(self, dst: str) -> None:
        # True until the flow is a scan, closed or dropped: only then may the repeat cache
        # take its packets.
        self.counting = True
        self.dst = dst
        self.last = 0.0
        self.packets = 0
        # Until it is a scan: port → last time seen, and port → when it (re)appeared after
        # more than `window` of silence. A repeated port (an NTP poll, a busy service) costs a
        # dict update; the distinct ports in the window are counted only when a port appears.
        self.seen: dict[tuple[str, int], float] = {}
        self.first: dict[tuple[str, int], float] = {}
        self.ports: Optional[set] = None                        # all ports, once a scan
        self.protocols: set[str] = set()
        self.sources: set[str] = set()
        self.start = 0.0
        self.triggers: tuple[Trigger, ...] = ()


def source_key(address: str, aggregate: bool) -> str:
    """The scanner identity: the address, or with aggregation its /64 (2016: several
    scan6.shodan.io hosts in one /64 shared the work). inet_pton/ntop in C (~0.3 µs, a
    noisy log has a new source every few lines); ipaddress where they differ (dotted)."""
    if aggregate and ":" in address:
        try:
            net = socket.inet_ntop(socket.AF_INET6,
                                   socket.inet_pton(socket.AF_INET6, address)[:8] + _ZERO64)
        except (OSError, ValueError):
            net = "."
        if "." in net:
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return net + "/64"
    return address


_ZERO64 = bytes(8)


@dataclass
class Contacts:
    """First contact of each local address with each server, plus the time span the log covers."""

    first: dict[tuple[str, str], float] = field(default_factory=dict)  # (address, server) → time
    start: Optional[float] = None
    end: Optional[float] = None


class Detector:
    """Feed events in time order (a few seconds of disorder are tolerated); collect scans."""

    def __init__(self, settings: Detect) -> None:
        self.settings = settings
        self.contacts = Contacts()
        self._flows: dict[tuple[str, str], _Flow] = {}
        # Outbound packets that may trigger a scan, per source address, oldest first (each
        # packet's time is its [0]).
        self._recent: dict[str, collections.deque] = {}
        self._skey: dict[str, str] = {}
        # Repeat cache: (src, dst, dport, proto) → (flow, port key, is a trigger). Most
        # packets repeat one (an NTP poll every 64 s, a peer's service): such a packet only
        # moves its flow's and port's last time and, if a trigger, joins the recent list.
        self._hot: dict[tuple, tuple[_Flow, tuple[str, int], bool]] = {}
        self._now = 0.0
        self._swept = 0.0
        # Outbound packets must be kept for the lookback before a scan start, and a scan is
        # recognised up to `window` after it started.
        self._keep = settings.lookback + settings.window

    def feed_blocks(self, blocks: Iterable[list[Logged]]) -> Iterator[Scan]:
        """Consume lists of packets in time order (what the parser's fast path makes per 4 MiB
        read; a few seconds of disorder are tolerated); yield each scan once it is over (no
        probe for `window` seconds). The loop is the hot path of `ntpguard detect`: fields by
        index, no per-packet objects but the keys."""
        st = self.settings
        min_ports, window = st.min_ports, st.window
        any_port, trigger_port = st.trigger_any_port, st.trigger_port
        aggregate = st.aggregate_sources
        flows, recent, skeys, hot = self._flows, self._recent, self._skey, self._hot
        first_contact = self.contacts.first
        keep = self._keep
        contacts = self.contacts
        now = self._now
        swept = self._swept
        deque = collections.deque
        for ev in itertools.chain.from_iterable(blocks):
            t = ev[0]
            if t > now:
                now = t
                if contacts.start is None:
                    contacts.start = t
                if now - swept > window:
                    self._now = swept = now
                    yield from self._sweep(now)
            dport = ev[5]
            if dport is None:
                continue
            src, dst, proto = ev[1], ev[2], ev[3]
            hk = (src, dst, dport, proto)
            h = hot.get(hk)
            if h is not None:
                hot_flow, pk, trig = h
                if hot_flow.counting:
                    seen = hot_flow.seen
                    last = seen.get(pk)
                    if last is not None and last >= t - window:
                        if trig:
                            q = recent.get(src)
                            if q is None:
                                q = recent[src] = deque()
                            q.append(ev)
                            while q[0][0] < t - keep:
                                q.popleft()
                        hot_flow.last = t
                        hot_flow.packets += 1
                        seen[pk] = t
                        continue
            # Possible trigger: remember it for `keep` seconds, and the first contact for good.
            trig = any_port or (dport == trigger_port and proto == "UDP")
            if trig:
                q = recent.get(src)
                if q is None:
                    q = recent[src] = deque()
                q.append(ev)
                while q[0][0] < t - keep:
                    q.popleft()
                pair = (src, dst)
                if pair not in first_contact:
                    first_contact[pair] = t
            # Probe accounting for scan detection.
            sk = skeys.get(src)
            if sk is None:
                sk = skeys[src] = source_key(src, aggregate)
                if len(skeys) > 50_000:
                    skeys.clear()
            fkey = (dst, sk)
            flow = flows.get(fkey)
            if flow is None:
                flow = flows[fkey] = _Flow(dst)
            elif t - flow.last > window and flow.ports is not None:
                # The previous scan is over; this starts afresh.
                flow.counting = False
                done = self._close(flow)
                flow = flows[fkey] = _Flow(dst)
                if done is not None:
                    yield done
            flow.last = t
            flow.packets += 1
            flow.protocols.add(proto)
            if len(flow.sources) < 64:
                flow.sources.add(src)
            pk = (proto, dport)
            if flow.ports is not None:
                flow.ports.add(pk)
                continue
            seen = flow.seen
            last = seen.get(pk)
            seen[pk] = t
            hot[hk] = (flow, pk, trig)
            if last is not None and last >= t - window:
                continue  # a port already counted in the window
            first = flow.first
            first[pk] = t
            if len(seen) < min_ports:
                continue
            lo = t - window
            for k in [k for k, v in seen.items() if v < lo]:
                del seen[k]
                del first[k]
            if len(seen) >= min_ports:
                # Start: the earliest port that appeared inside the window (ports heard all
                # along, like a peer's NTP, do not stretch the scan back).
                flow.start = min(v for v in first.values() if v >= lo)
                flow.ports = set(seen)
                flow.counting = False
                flow.triggers = self._triggers(flow.dst, flow.start)
                flow.seen, flow.first = {}, {}
        self._now = now
        self._swept = swept
        contacts.end = now if contacts.end is None else max(contacts.end, now)

    def scanning_since(self, t: float) -> bool:
        """Whether a scan that started before t is still open (parallel reads go on until
        none is)."""
        return any(f.ports is not None and f.start < t for f in self._flows.values())

    def finish(self) -> list[Scan]:
        """Close every open scan (end of input)."""
        out = [s for s in (self._close(f) for f in self._flows.values()) if s is not None]
        for f in self._flows.values():
            f.counting = False
        self._flows.clear()
        self._hot.clear()
        return sorted(out, key=lambda s: s.start)

    def _triggers(self, address: str, start: float) -> tuple[Trigger, ...]:
        q = self._recent.get(address)
        if not q:
            return ()
        lo = start - self.settings.lookback
        return tuple(
            Trigger(ev[2], ev[3], ev[4], ev[5], ev[0], round(start - ev[0], 6))
            for ev in q if lo <= ev[0] <= start
        )

    def _close(self, flow: _Flow) -> Optional[Scan]:
        if flow.ports is None:
            return None
        srcs = flow.sources
        src = next(iter(srcs)) if len(srcs) == 1 else source_key(next(iter(srcs)), True)
        return Scan(flow.start, flow.last, src, flow.dst, len(flow.ports), flow.packets,
                    tuple(sorted(flow.protocols)), flow.triggers)

    def _sweep(self, now: float) -> Iterator[Scan]:
        """Drop idle flows and old outbound packets: what keeps memory to the active window."""
        self._swept = now
        window = self.settings.window
        dead = [k for k, f in self._flows.items() if now - f.last > window]
        for k in dead:
            flow = self._flows.pop(k)
            flow.counting = False
            done = self._close(flow)
            if done is not None:
                yield done
        hot = self._hot
        if len(hot) > 4 * len(self._flows) + 1000:  # drop entries of closed flows and scans
            kept = {k: h for k, h in hot.items() if h[0].counting}
            hot.clear()
            hot.update(kept)
        keep = self._keep
        for a in [a for a, q in self._recent.items() if q[-1][0] < now - keep]:
            del self._recent[a]


def detect(events: Iterable[Logged], settings: Detect) -> tuple[list[Scan], Contacts]:
    """All scans (by start) and the contacts of a finite event stream."""
    it = iter(events)
    return detect_blocks(iter(lambda: list(itertools.islice(it, 4096)), []), settings)


def detect_blocks(blocks: Iterable[list[Logged]], settings: Detect
                  ) -> tuple[list[Scan], Contacts]:
    """detect() for lists of packets (evidence.read_blocks)."""
    det = Detector(settings)
    scans = list(det.feed_blocks(blocks))
    scans.extend(det.finish())
    scans.sort(key=lambda s: s.start)
    return scans, det.contacts
