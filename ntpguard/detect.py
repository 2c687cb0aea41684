"""Packets → scans → triggers: pure and streaming (memory is bounded by the active window).

Every packet has a direction (`Sides`): sent by a local or LAN address (out), or received by
one (in). A scan is one source (optionally its /64) probing at least `min_ports` distinct
destination ports of one local or LAN address within `window` seconds, from packets that came
in. Its triggers are the packets the scanned address sent in the `lookback` seconds before the
scan started: by default UDP to port 123 (NTP), optionally to any port (in 2016 an empty
packet to port 321 of a harvester triggered a scan too). Inbound NTP (amplification scanners,
research probes: thousands a day at any public address) is never a contact.

Besides scans the detector keeps every contact of each address with each server as a run
(first packet, last packet, packets): verdict.py weighs contacts and scans.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import math
import socket
from typing import Iterable, Iterator, Optional

from ntpguard.config import Detect
from ntpguard.facts import Contacts, Scan, Trigger
from ntpguard.logs import (
    FORWARDED,
    FORWARDED_IN,
    FORWARDED_OUT,
    IN,
    OUT,
    Logged,
    Sieve,
    direction,
)

try:  # the C parser's tap (logs/_cut.c: tap_take); optional, same results
    from ntpguard.logs import _cut as _native

    if not hasattr(_native, "tap_runs"):  # an older build
        raise ImportError("no tap")
except ImportError:  # not built: every packet goes through feed_blocks
    _native = None


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
    # (Flows exist only for sources that probed a second port: Detector._single holds the
    # rest, one tuple each. A gateway's background radiation is mostly one packet per source.)

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

# What a packet means to the detector (Sides.code): bit 1 sent by a local or LAN address (a
# possible trigger), bit 2 received by one (a possible probe of a scan); both when nothing
# tells (legacy logs without interfaces and no local prefix known yet); 0 neither.
SENT, RECEIVED, EITHER, NEITHER = 1, 2, 3, 0


def site_prefix(address: str) -> str:
    """The /64 (IPv4: /24) an address belongs to: the unit of a site's and a LAN's prefix."""
    if ":" in address:
        return source_key(address, True)
    return address.rpartition(".")[0]


class Sides:
    """Which side of the host a packet was on, from its interfaces (pure, learned as it goes).

    IN= empty: the host sent it; OUT= empty: the host received it. A forwarded packet names
    both, and which is the LAN comes from, in order: `lan_interfaces`; `local_prefixes` (the
    source or destination inside them); else it is learned per interface from the forwarded
    packets that arrive on it: a LAN brings few hosts talking to many servers, the internet
    arriving on a WAN brings many sources (background radiation) to few destinations. An
    interface is called once one side has at least `LEARN` distinct /64s and twice the
    other's, and one interface called decides the other end of its forwarded packets (so the
    LAN's NTP, seconds into a log, names the WAN too). Until then a forwarded packet is weighed
    by the local prefixes, else as either (the few packets before the call may count wrongly).
    """

    LEARN = 8
    CAP = 64  # prefixes kept per interface and side: enough to call it, bounded for any log

    def __init__(self, lan_interfaces: Iterable[str] = (), local_prefixes: Iterable[str] = ()
                 ) -> None:
        self.lan = frozenset(lan_interfaces)
        self.local = [ipaddress.ip_network(p, strict=False) for p in local_prefixes]
        self.learned_local: set[str] = set()
        self.learned_lan: set[str] = set()
        self.learned_wan: set[str] = set()
        self._arriving: dict[str, tuple[set[str], set[str]]] = {}
        self._is_local: dict[str, bool] = {}
        # (iface_in, iface_out) → code, for pairs whose meaning is settled: what the
        # detector's hot loop reads.
        self.codes: dict[tuple[str, str], int] = {}

    def code(self, packet: Logged) -> int:
        """SENT / RECEIVED / EITHER / NEITHER for a packet whose pair is not in `codes`."""
        iface_in, iface_out = packet[6], packet[7]
        d = direction(iface_in, iface_out)
        if d == OUT:
            self.codes[(iface_in, iface_out)] = SENT
            return SENT
        if d == IN:
            self.codes[(iface_in, iface_out)] = RECEIVED
            return RECEIVED
        if d == FORWARDED:
            d = self.forwarded(iface_in, iface_out, packet[1], packet[2])
            if d == FORWARDED_OUT:
                return SENT
            if d == FORWARDED_IN:
                return RECEIVED
            return EITHER  # not learned yet: as before directions were known
        # Neither interface printed: the local prefixes decide.
        if self._local(packet[1]):
            return SENT
        if self._local(packet[2]):
            return RECEIVED
        return NEITHER if self.local or self.learned_local else EITHER

    def forwarded(self, iface_in: str, iface_out: str, src: str, dst: str) -> str:
        """FORWARDED_OUT (from the LAN), FORWARDED_IN (to it), or FORWARDED if not known yet."""
        if self.lan:
            d = FORWARDED_OUT if iface_in in self.lan else FORWARDED_IN
            self.codes[(iface_in, iface_out)] = SENT if d == FORWARDED_OUT else RECEIVED
            return d
        if self.local:
            if self._local(src):
                return FORWARDED_OUT
            return FORWARDED_IN if self._local(dst) else FORWARDED
        lan, wan = self.learned_lan, self.learned_wan
        if not (iface_in in lan or iface_in in wan or iface_out in lan or iface_out in wan):
            self._learn(iface_in, src, dst)
        # One side known decides the other (a router between a LAN and the internet).
        if (iface_in in lan or iface_out in wan) and not (iface_out in lan or iface_in in wan):
            self.codes[(iface_in, iface_out)] = SENT
            return FORWARDED_OUT
        if (iface_in in wan or iface_out in lan) and not (iface_in in lan or iface_out in wan):
            self.codes[(iface_in, iface_out)] = RECEIVED
            return FORWARDED_IN
        if self._local(src):
            return FORWARDED_OUT
        return FORWARDED_IN if self._local(dst) else FORWARDED

    def note_sender(self, address: str) -> None:
        """A local or LAN address sent a packet: its /64 is local (learned local prefixes)."""
        if not self.local and len(self.learned_local) < 4096:
            self.learned_local.add(site_prefix(address))

    def _learn(self, iface: str, src: str, dst: str) -> None:
        sides = self._arriving.get(iface)
        if sides is None:
            sides = self._arriving[iface] = (set(), set())
        srcs, dsts = sides
        if len(srcs) < self.CAP:
            srcs.add(site_prefix(src))
        if len(dsts) < self.CAP:
            dsts.add(site_prefix(dst))
        if len(dsts) >= self.LEARN and len(dsts) >= 2 * len(srcs):
            self.learned_lan.add(iface)
            for a in srcs:  # the LAN's own prefixes
                self.learned_local.add(a)
        elif len(srcs) >= self.LEARN and len(srcs) >= 2 * len(dsts):
            self.learned_wan.add(iface)

    def _local(self, address: str) -> bool:
        if self.local:
            got = self._is_local.get(address)
            if got is None:
                try:
                    a = ipaddress.ip_address(address)
                    got = any(a in net for net in self.local)
                except ValueError:
                    got = False
                if len(self._is_local) > 100_000:
                    self._is_local.clear()
                self._is_local[address] = got
            return got
        return bool(self.learned_local) and site_prefix(address) in self.learned_local

    def describe(self) -> dict[str, object]:
        """What was configured and learned (reported by `detect`)."""
        return {"lan_interfaces": sorted(self.lan or self.learned_lan),
                "wan_interfaces": sorted(self.learned_wan) if not self.lan else [],
                "lan_learned": not self.lan,
                "local_prefixes": [str(n) for n in self.local] or sorted(
                    p if "/" in p else p + ".0/24" for p in self.learned_local)[:32],
                "prefixes_learned": not self.local}


class Detector:
    """Packets in, scans out (feed_blocks).

    count_from/count_until: only packets in [count_from, count_until) make contacts (a
    parallel share reads a warm-up before its own part that another share counts).

    tap: let the C parser keep what this detector would only count (`tap` is then what to
    give the parser, LineParser(tap=...); None where the extension is not built). The results
    are the same; on a gateway's log most packets never become Python objects."""

    def __init__(self, settings: Detect, count_from: float = -math.inf,
                 count_until: float = math.inf, tap: bool = False) -> None:
        self.settings = settings
        self.sides = Sides(settings.lan_interfaces, settings.local_prefixes)
        self.contacts = Contacts()
        self._count = (count_from, count_until)
        self.tap: object = None
        if tap and _native is not None:
            self.tap = _native.tap(settings.window, settings.trigger_port,
                                   settings.trigger_any_port, count_from, count_until)
        self._tapped = 0  # how many settled codes the tap was told about
        self._at = 0  # the tap's key of the packet the loop is at (see _cut.c tap_take)
        self._flows: dict[tuple[str, str], _Flow] = {}
        # (dst, source key) → (port key, last time, source, packets) of a source that has
        # probed one port so far: background radiation costs one tuple per source, and only
        # while it is in the window.
        self._single: dict[tuple[str, str], tuple] = {}
        # Packets that may trigger a scan, per sending address, oldest first (each packet's
        # time is its [0]).
        self._recent: dict[str, collections.deque] = {}
        self._skey: dict[str, str] = {}
        # Repeat cache: (src, dst, dport, proto) → (flow, port key). Most probes of a flow
        # repeat one (a peer's service): such a packet only moves its flow's and port's
        # last time.
        self._hot: dict[tuple, tuple[_Flow, tuple[str, int]]] = {}
        self._now = 0.0
        self._swept = 0.0
        # Sent packets must be kept for the lookback before a scan start, and a scan is
        # recognised up to `window` after it started.
        self._keep = settings.lookback + settings.window

    def feed_blocks(self, blocks: Iterable[list[Logged]]) -> Iterator[Scan]:
        """Consume lists of packets in time order (what the parser's fast path makes per 1 MiB
        read; a few seconds of disorder are tolerated); yield each scan once it is over (no
        probe for `window` seconds). The loop is the hot path of `ntpguard detect`: fields by
        index, no per-packet objects but the keys."""
        st = self.settings
        min_ports, window = st.min_ports, st.window
        any_port, trigger_port = st.trigger_any_port, st.trigger_port
        aggregate = st.aggregate_sources
        flows, single, recent, skeys, hot = (self._flows, self._single, self._recent,
                                             self._skey, self._hot)
        sides = self.sides
        codes, code_of, note_sender = sides.codes, sides.code, sides.note_sender
        runs = self.contacts.runs
        count_from, count_until = self._count
        contacts = self.contacts
        now = self._now
        swept = self._swept
        deque = collections.deque
        # The last settled interface pair and its code: the parser hands the same two strs
        # for a pair (within a block), so `is` spares a tuple and a lookup most packets.
        last_in = last_out = None
        last_code = 0
        tap = self.tap
        if tap is not None:
            self._tell_tap()
        block_key = 0
        for block in blocks:
            if tap is not None:
                # The number of the block the parser cut last; a block it did not count (a
                # parser without the tap) is counted here, so keys keep the stream's order.
                k = _native.tap_block(tap, False) << 32
                block_key = k if k > block_key else _native.tap_block(tap, True) << 32
            for i, ev in enumerate(block):
                t = ev[0]
                if t > now:
                    now = t
                    if contacts.start is None:
                        contacts.start = t
                    if now - swept > window:
                        self._now = swept = now
                        self._at = block_key | (2 * i + 1)
                        yield from self._sweep(now)
                dport = ev[5]
                if dport is None:
                    continue
                iface_in, iface_out = ev[6], ev[7]
                if iface_in is last_in and iface_out is last_out:
                    code = last_code
                else:
                    settled = codes.get((iface_in, iface_out))
                    if settled is None:
                        code = code_of(ev)
                    else:  # settled codes never change
                        code = last_code = settled
                        last_in, last_out = iface_in, iface_out
                if code & SENT and (any_port or (dport == trigger_port and ev[3] == "UDP")):
                    # A possible trigger: kept for `keep` seconds (_sweep drops older ones: only
                    # those in a scan's lookback are read), and its contact for good.
                    src = ev[1]
                    if tap is None:
                        q = recent.get(src)
                        if q is None:
                            q = recent[src] = deque()
                        q.append(ev)
                    else:
                        _native.tap_add(tap, ev, block_key | (2 * i + 1))
                    if count_from <= t < count_until:
                        pair = (src, ev[2])
                        run = runs.get(pair)
                        if run is None:
                            runs[pair] = [t, t, 1]
                            note_sender(src)
                        else:
                            if t > run[1]:
                                run[1] = t
                            elif t < run[0]:
                                run[0] = t
                            run[2] += 1
                if not code & RECEIVED:
                    continue
                # A packet to a local or LAN address: probe accounting for scan detection.
                src, dst, proto = ev[1], ev[2], ev[3]
                hk = (src, dst, dport, proto)
                h = hot.get(hk)
                if h is not None:
                    hot_flow, pk = h
                    if hot_flow.counting:
                        seen = hot_flow.seen
                        last = seen.get(pk)
                        if last is not None and last >= t - window:
                            hot_flow.last = t
                            hot_flow.packets += 1
                            seen[pk] = t
                            continue
                sk = skeys.get(src)
                if sk is None:
                    sk = skeys[src] = source_key(src, aggregate)
                    if len(skeys) > 50_000:
                        skeys.clear()
                fkey = (dst, sk)
                pk = (proto, dport)
                flow = flows.get(fkey)
                if flow is None:
                    one = single.get(fkey)
                    if one is None or t - one[1] > window:
                        single[fkey] = (pk, t, src, 1)
                        continue
                    if one[0] == pk:
                        single[fkey] = (pk, t, one[2], one[3] + 1)
                        continue
                    # A second port: now it is worth a flow.
                    del single[fkey]
                    flow = flows[fkey] = _Flow(dst)
                    flow.seen[one[0]] = flow.first[one[0]] = one[1]
                    flow.packets = one[3]
                    flow.protocols.add(one[0][0])
                    flow.sources.add(one[2])
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
                if flow.ports is not None:
                    flow.ports.add(pk)
                    continue
                seen = flow.seen
                last = seen.get(pk)
                seen[pk] = t
                hot[hk] = (flow, pk)
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
                    self._at = block_key | (2 * i + 2)  # this packet's own entry too
                    flow.triggers = self._triggers(flow.dst, flow.start)
                    flow.seen, flow.first = {}, {}
            if tap is not None:
                # The block is done: the tap's packets in it count, and its newest time is
                # what the detector's would be.
                now = max(now, _native.tap_commit(tap))
                self._tell_tap()
        self._now = now
        self._swept = swept
        contacts.end = now if contacts.end is None else max(contacts.end, now)

    def scanning_since(self, t: float) -> bool:
        """Whether a scan that started before t is still open (parallel reads go on until
        none is)."""
        return any(f.ports is not None and f.start < t for f in self._flows.values())

    def finish(self) -> list[Scan]:
        """Close every open scan (end of input)."""
        if self.tap is not None:
            # The runs' packets the tap kept: the detector made each run at its first packet.
            runs = self.contacts.runs
            for src, dst, a, b, n in _native.tap_runs(self.tap):
                r = runs.get((src, dst))
                if r is None:
                    runs[(src, dst)] = [a, b, n]
                else:
                    r[0], r[1], r[2] = min(r[0], a), max(r[1], b), r[2] + n
        out = [s for s in (self._close(f) for f in self._flows.values()) if s is not None]
        for f in self._flows.values():
            f.counting = False
        self._flows.clear()
        self._single.clear()
        self._hot.clear()
        self.contacts.sides = self.sides.describe()
        return sorted(out, key=lambda s: s.start)

    def _tell_tap(self) -> None:
        """Tell the tap the interface pairs settled as sent only or received only, when there
        are new ones (the parser reads them before it cuts the next block)."""
        codes = self.sides.codes
        if len(codes) != self._tapped:
            self._tapped = len(codes)
            _native.tap_pairs(self.tap, [(f"{a} OUT={b}".encode(), len(a.encode()), code)
                                         for (a, b), code in codes.items()
                                         if code in (SENT, RECEIVED)])

    def _triggers(self, address: str, start: float) -> tuple[Trigger, ...]:
        if self.tap is not None:
            lo = start - self.settings.lookback
            return tuple(Trigger(dst, proto, sport, dport, t, round(start - t, 6))
                         for t, dst, proto, sport, dport in _native.tap_triggers(
                             self.tap, address, lo, start, self._at))
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
        """Drop idle flows, single probes and old sent packets: what keeps memory to the
        active window."""
        self._swept = now
        window = self.settings.window
        dead = [k for k, f in self._flows.items() if now - f.last > window]
        for k in dead:
            flow = self._flows.pop(k)
            flow.counting = False
            done = self._close(flow)
            if done is not None:
                yield done
        single = self._single
        for k in [k for k, v in single.items() if now - v[1] > window]:
            del single[k]
        hot = self._hot
        if len(hot) > 4 * len(self._flows) + 1000:  # drop entries of closed flows and scans
            kept = {k: h for k, h in hot.items() if h[0].counting}
            hot.clear()
            hot.update(kept)
        keep = self._keep
        if self.tap is not None:
            _native.tap_sweep(self.tap, now - keep, now - keep - window, self._at)
            return
        recent = self._recent
        for a in [a for a, q in recent.items() if q[-1][0] < now - keep]:
            del recent[a]
        # Older packets of the addresses still sending, with a window to spare for packets
        # logged out of order (a scan's lookback reaches `keep` back from its last probe).
        for q in recent.values():
            while q[0][0] < now - keep - window:
                q.popleft()


def sieve_for(settings: Detect) -> Sieve:
    """What the parser may leave out for a detector with these settings (logs.Sieve)."""
    return Sieve(settings.window, settings.trigger_port, settings.trigger_any_port,
                 settings.aggregate_sources)


def detect(events: Iterable[Logged], settings: Detect) -> tuple[list[Scan], Contacts]:
    """All scans (by start) and the contacts of a finite event stream."""
    it = iter(events)
    return detect_blocks(iter(lambda: list(itertools.islice(it, 4096)), []), settings)


def detect_blocks(blocks: Iterable[list[Logged]], settings: Detect,
                  det: Optional[Detector] = None) -> tuple[list[Scan], Contacts]:
    """detect() for lists of packets (evidence.read_blocks); det: the detector to use (one
    whose tap the blocks' parser was given)."""
    det = det if det is not None else Detector(settings)
    scans = list(det.feed_blocks(blocks))
    scans.extend(det.finish())
    scans.sort(key=lambda s: s.start)
    return scans, det.contacts
