"""Netfilter log lines → `Event`s, for every envelope the kernel's LOG/nft `log` text travels in.

The message the kernel prints is the same everywhere (`PREFIX IN=.. OUT=.. [MAC=..] SRC=..
DST=.. ... PROTO=.. [SPT=.. DPT=..]`); only the envelope differs: traditional syslog (no year),
RFC 3339 syslog / `journalctl -o short-iso-precise`, dmesg uptime stamps, `journalctl -o json`,
ulogd2 LOGEMU (syslog-like, no `kernel:`) and ulogd2 JSON, Proxmox pvefw-logger.

Speed matters (a gateway logs millions of lines a day; the issue asks for 1M lines/s), so the
body is cut with str.find() instead of a regex (a per-line regex reaches ~150k lines/s), and
timestamps and addresses are parsed once per distinct text and then looked up in a dict:
a log repeats each second-stamp and each address many times.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import socket
import time
from typing import Any, Callable, Iterable, Iterator, Optional

from ntpguard.errors import UsageError
from ntpguard.logs import Event, Logged, Packet, ReadStats, Sieve
from ntpguard.logs.sources import Block, Chunk, lines_of

try:  # the C copy of packet_blocks()'s fast path (setup.py); optional, same results
    from ntpguard.logs._cut import cut as _native_cut
    from ntpguard.logs._cut import hold as _native_hold
except ImportError:  # not built (no compiler) or not loadable here: the Python path below
    _native_cut = _native_hold = None

FORMATS = ("auto", "syslog", "rfc3339", "dmesg", "json", "pvefw")

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# Protocols the kernel prints SPT=/DPT= for.
_PORTED = frozenset(("TCP", "UDP", "UDPLITE", "SCTP", "DCCP"))
# Names nf_log prints after PROTO= (others are printed as numbers).
_PROTO_NAMES = _PORTED | frozenset(("ICMP", "ICMPv6", "AH", "ESP", "GRE", "IGMP"))
# ulogd2 JSON gives ip.protocol as a number; name it the way the kernel's text does.
_PROTO_B = {p.encode(): p for p in _PROTO_NAMES}
# For _native_cut, which tries them in this order: the commonest first (a set's order would
# change with each run's string hashes, and with it the speed).
_PROTO_INFO = {p.encode(): (p, p in _PORTED) for p in sorted(
    _PROTO_NAMES, key=lambda p: (p not in ("TCP", "UDP"), p))}
# Every valid port field, so the pure-Python fast path parses and range-checks a port with
# one lookup. Built on first use (_port_fields): the two tables cost ~60 ms, a third of the
# start of `ntpguard detect`, and the C path never needs them.
_PORT_FIELDS: list[dict[bytes, int]] = []


def _port_fields() -> list[dict[bytes, int]]:
    """[SPT= table, DPT= table], built once."""
    if not _PORT_FIELDS:
        _PORT_FIELDS.extend({f"{tag}={n}".encode(): n for n in range(65536)}
                            for tag in ("SPT", "DPT"))
    return _PORT_FIELDS
_PROTO_BY_NUMBER = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 33: "DCCP",
                    136: "UDPLITE", 50: "ESP", 51: "AH", 47: "GRE", 2: "IGMP"}

# A bounded cache: a month of rotating privacy addresses is far below this, a hostile log is not.
_CACHE_LIMIT = 100_000

# A stamp with its own weekday and year: OpenWrt `logread` ("Mon Dec 25 13:31:15 2017 ...")
# and `dmesg -T` ("[Thu Mar 11 20:05:08 2021] ..."). Its year is its own, not the file's.
_CTIME = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})\]? ")
_BSD_ANYWHERE = re.compile(
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d ")
_ISO_ANYWHERE = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)? ")
_PVEFW = re.compile(r"(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d) ")
_UPTIME = re.compile(r"\[ *(\d+\.\d+)(?:@\d+)?\] ?")
# A /dev/kmsg record (`cat /dev/kmsg`, what some collectors copy): "PRI,SEQ,USEC,FLAGS;msg",
# USEC microseconds since boot (Documentation/ABI/testing/dev-kmsg in the kernel's tree);
# further comma-separated fields may follow FLAGS.
_KMSG = re.compile(r"\d{1,4},\d{1,20},(\d{1,20}),[^;]{0,40};")
# `journalctl -o short-unix`: "1696841602.123456 host kernel: ..." (epoch seconds from 2001 to
# 2286 at the start of the line, nothing else looks like that there).
_EPOCH = re.compile(r"(\d{10}\.\d{1,9}) ")

# `journalctl -o json` records that the fast paths may take as RFC 3339 lines: printable
# ASCII without a backslash, so every string is plain text between two quotes and the line
# cut at its quotes is the object's text, its keys and its values in turn; a flat object of
# such strings (_records_block checks the text between them) is what json.loads reads it as.
_PRINTABLE = bytes(range(0x20, 0x7F))
# The text outside the strings of a flat object of k members, each piece after a "|": a piece
# can hold no "|" where the joined pieces are this, so each is what it must be.
_RECORD_SHAPES = {4 * k + 1: b"|".join([b"{", *[b":", b","] * (k - 1), b":", b"}"])
                  for k in range(1, 200)}

NOT_NETFILTER, GARBLED = 1, 2

_new_tuple = tuple.__new__
_NONE = (None, 0.0)
_SS = {f"{n:02d}".encode(): n for n in range(61)}  # seconds fields a stamp may have
_AF_INET6, _inet_pton, _inet_ntop = socket.AF_INET6, socket.inet_pton, socket.inet_ntop


def boot_time_now() -> float:
    """This machine's boot time (epoch), from /proc/stat: dmesg stamps are seconds since it."""
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return time.time() - time.monotonic()


# The instants a user may give and a log line may carry: 1970 to the end of 9999.
# `--boot-time nan` stamped every packet NaN (and `detect --record` stored them so); see
# _instant for a line's own stamp.
LAST_INSTANT = 253402300799.0


def parse_when(text: str) -> float:
    """A user-given instant: epoch seconds or ISO 8601 (local time unless it has an offset)."""
    raw = text.strip()
    try:
        t: Optional[float] = float(raw)
    except ValueError:
        t = _iso_to_epoch(raw.replace(" ", "T", 1), local_default=True)
    if t is None or _instant(t) is None:
        raise UsageError(f"not a time (epoch seconds or ISO 8601, 1970 to 9999): {text!r}")
    return t


def _instant(t: float) -> Optional[float]:
    """t if a log line can be stamped so (1970 to 9999), else None; NaN fails both tests.

    A stamp outside that range is a damaged line, not an event: years ahead, it moved the
    covered time so far that every real fact looked older than the retention."""
    return t if 0.0 <= t <= LAST_INSTANT else None


def _timegm(fields: tuple[int, ...]) -> int:
    """calendar.timegm, its module imported on first use: syslog stamps (the usual kern.log)
    never need it, and its import was ~1.5 ms of every `ntpguard detect`."""
    import calendar

    return calendar.timegm(fields)


def _iso_to_epoch(text: str, local_default: bool = False) -> Optional[float]:
    """`YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM|±HHMM]` → epoch; None if it is not one."""
    if len(text) < 19 or text[4] != "-" or text[7] != "-" or text[10] not in "T " \
            or text[13] != ":" or text[16] != ":":
        return None
    try:
        fields = (int(text[0:4]), int(text[5:7]), int(text[8:10]),
                  int(text[11:13]), int(text[14:16]), int(text[17:19]))
        if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] < 24
                and fields[4] < 60 and fields[5] < 61):
            return None
        rest = text[19:]
        frac = 0.0
        if rest[:1] in (".", ","):
            j = 1
            while j < len(rest) and rest[j].isdigit():
                j += 1
            frac = float("0." + rest[1:j]) if j > 1 else 0.0
            rest = rest[j:]
        if not rest:
            if local_default:
                return _instant(time.mktime((*fields, 0, 0, -1)) + frac)
            return _instant(_timegm((*fields, 0, 0, 0)) + frac)
        if rest == "Z":
            offset = 0
        elif rest[0] in "+-":
            digits = rest[1:].replace(":", "")
            if len(digits) != 4 or not digits.isdigit():
                return None
            offset = int(digits[:2]) * 3600 + int(digits[2:]) * 60
            if rest[0] == "-":
                offset = -offset
        else:
            return None
        return _instant(_timegm((*fields, 0, 0, 0)) - offset + frac)
    except (ValueError, OverflowError):
        return None


class LineParser:
    """Parses lines of one source; holds that source's caches and its year inference.

    fmt: one of FORMATS; "auto" dispatches per line on its first characters (as cheap as a
    fixed format, and right for files that mix envelopes). reference_time: when the source was
    last written (file mtime), so year-less syslog stamps get the right year; the year then
    advances when the month jumps back (Dec → Jan). boot_time: epoch of the boot that dmesg
    uptime stamps count from.
    """

    def __init__(self, fmt: str = "auto", reference_time: Optional[float] = None,
                 boot_time: Optional[float] = None, native: bool = True,
                 sieve: Optional[Sieve] = None, tap: object = None) -> None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown log format {fmt!r} (one of {', '.join(FORMATS)})")
        self.format = fmt
        # native=False: the pure-Python fast path even where the C one is built (tests
        # compare the two; the benchmark measures both).
        self._cut = _native_cut if native else None
        # The C path's sieve (only there: the Python path hands over every packet, which
        # gives the detector the same results more slowly).
        self._sieve = sieve
        self._hold = _native_hold() if sieve is not None and self._cut is not None else None
        # The detector's tap (Detector(tap=True).tap): what the C path may keep from it (the
        # other paths hand over every packet).
        self._tap = tap
        self.stats = ReadStats()
        self.format_counts: dict[str, int] = {}
        self.boot_time = boot_time
        ref = time.localtime(reference_time if reference_time is not None else time.time())
        self._ref_year, self._ref_month = ref.tm_year, ref.tm_mon
        self._year: Optional[int] = None
        self._last_month = 0
        self._addr: dict[str, str] = {}
        self._bsd: dict[str, float] = {}
        self._iso: dict[str, float] = {}
        self._addr_b: dict[bytes, str] = {}
        self._bsd_b: dict[bytes, float] = {}
        self._iso_b: dict[bytes, float] = {}
        self._iso6: dict[bytes, tuple[bytes, float]] = {}
        self._ifc: dict[bytes, tuple[str, str]] = {}
        self._bsd_min: dict[str, float] = {}
        self._bsd_min_b: dict[bytes, float] = {}
        self._iso_min: dict[str, float] = {}
        # A block of journal records the fast paths take as RFC 3339 lines (_records_block):
        # each made line → its record, for the full parser; the seconds' stamps made.
        self._records: dict[bytes, bytes] = {}
        self._record_stamps: dict[int, bytes] = {}
        self._dispatch: dict[str, Callable[[str], Any]] = {
            "syslog": self._syslog, "rfc3339": self._rfc3339, "dmesg": self._dmesg,
            "json": self._json, "pvefw": self._pvefw,
        }

    # -- public --------------------------------------------------------------------------------

    def parse_lines(self, lines: Iterable[str]) -> Iterator[Event]:
        """Events from lines (with or without their newline); counts what it skips."""
        stats = self.stats
        forced = self._dispatch.get(self.format)
        auto = self._auto
        syslog = self._syslog
        counts = self.format_counts
        for line in lines:
            stats.lines += 1
            # Fast path: the commonest envelope (traditional syslog) without the auto dispatch.
            if forced is not None:
                result = forced(line)
            elif line[3:4] == " " and line[9:10] == ":" and line[:3] in MONTHS:
                result = syslog(line)
                if type(result) is Event:
                    counts["syslog"] = counts.get("syslog", 0) + 1
            else:
                result = auto(line)
            if type(result) is Event:
                stats.events += 1
                yield result
            elif result == NOT_NETFILTER:
                stats.not_netfilter += 1
            elif result == GARBLED:
                stats.garbled += 1
            else:
                stats.untimed += 1

    def parse_line(self, line: str) -> Optional[Event]:
        """One line → Event or None (skipped, counted in stats)."""
        for ev in self.parse_lines((line,)):
            return ev
        return None

    def packets(self, blocks: Iterable[Block]) -> Iterator[Logged]:
        """Packets from blocks of raw lines (bytes, no newline)."""
        for out in self.packet_blocks(blocks):
            yield from out

    def packet_blocks(self, blocks: Iterable[Block]) -> Iterator[list[Logged]]:
        """A list of packets per block of raw lines (bytes, no newline): the detector's fast
        path (Detector.feed_blocks).

        The commonest shapes (syslog and RFC 3339 envelopes around a LOG line) are cut
        straight from the bytes: no decoding, no Event, times cached per minute, addresses
        and ports looked up in dicts. Lines without " SRC=" (most of a real kern.log) are
        counted and dropped after one search. Every other line, and every line the fast path
        would reject, goes through parse_lines(), so both paths agree on every line
        (tests/test_logs.py checks it on generated, real and random lines).
        """
        fast = self.format in ("auto", "syslog", "rfc3339")
        records = self.format in ("auto", "json")
        if not records and not fast:
            for block in blocks:
                yield list(self.parse_lines([b.decode("utf-8", "replace")
                                             for b in lines_of(block)]))
            return
        if not records:
            yield from self._cut_blocks(blocks)
            return
        for block in blocks:
            made = self._records_block(block)
            if made is not None:
                try:
                    yield from self._cut_blocks((made,), records=True)
                finally:
                    self._records.clear()
            elif fast:
                yield from self._cut_blocks((block,))
            else:
                yield list(self.parse_lines([b.decode("utf-8", "replace")
                                             for b in lines_of(block)]))

    def _records_block(self, block: Block) -> Optional[list[bytes]]:
        """A block of `journalctl -o json` records (or shippers' events) as RFC 3339 lines
        ("STAMP MESSAGE", in UTC), which the fast paths cut as they cut rsyslog's: ~2.1 µs a
        record of ~400 bytes to check and make, where json.loads alone took ~2.5 µs and the
        full parser ~6.4 µs in all (a regular expression for the whole object took ~2.3 µs
        alone). None unless every line of the block is a record (or empty). A record of
        another shape stays as it is (the full parser's), and a made line the fast paths hand
        to the full parser goes as its record (self._records): every path reads a record
        alike."""
        # The first byte before any split: a syslog chunk split here cost a third of its
        # parse (0.08 of 0.25 s on 609k lines) to learn it holds no record.
        first = (block.head or block.data[:1]) if isinstance(block, Chunk) else \
            (block[0] if block else b"")
        if first[:1] != b"{":
            return None
        lines = lines_of(block)
        stamps, made_from = self._record_stamps, self._records
        shapes, printable = _RECORD_SHAPES, _PRINTABLE
        out: list[bytes] = []
        for line in lines:
            if line[:1] != b"{":
                if line:
                    made_from.clear()
                    return None
                out.append(line)
                continue
            # The checks json.loads makes, for this shape only: outside the strings "{",
            # then ":" and "," in turn, then "}", each with spaces around it or none; the
            # stamp 16 digits (2001 to 2286).
            parts = line.split(b'"')
            if line.translate(None, printable) or b"\\" in line or \
                    shapes.get(len(parts)) != b"|".join(parts[::2]).replace(b" ", b""):
                out.append(line)
                continue
            keys = parts[1::4]
            if b"MESSAGE" in keys:
                if keys.count(b"MESSAGE") != 1 or keys.count(b"__REALTIME_TIMESTAMP") != 1:
                    out.append(line)  # no stamp, or a key twice: the full parser's
                    continue
                message = parts[4 * keys.index(b"MESSAGE") + 3]
                when = parts[4 * keys.index(b"__REALTIME_TIMESTAMP") + 3]
                if len(when) != 16 or not when.isdigit() or when[:1] == b"0":
                    out.append(line)
                    continue
                sec, us = divmod(int(when), 1_000_000)
                stamp = stamps.get(sec)
                if stamp is None:
                    if len(stamps) > _CACHE_LIMIT:
                        stamps.clear()
                    stamp = stamps[sec] = time.strftime("%Y-%m-%dT%H:%M:%S",
                                                        time.gmtime(sec)).encode()
                made = b"%s.%06d+00:00 %s" % (stamp, us, message)
            else:
                # A shipper's event (Vector, Filebeat): "message" with a stamp in
                # "@timestamp", else "timestamp", as they write it: UTC with a fraction
                # ("2025-10-09T08:53:22.061Z"). Any other stamp is the full parser's.
                key = b"@timestamp" if b"@timestamp" in keys else b"timestamp"
                if keys.count(b"message") != 1 or keys.count(key) != 1 \
                        or b"src_ip" in keys or b"oob.time.sec" in keys:
                    out.append(line)
                    continue
                when = parts[4 * keys.index(key) + 3]
                if when[19:20] != b"." or when[-1:] != b"Z" or b" " in when:
                    out.append(line)
                    continue
                made = b"%s %s" % (when, parts[4 * keys.index(b"message") + 3])
            made_from[made] = line
            out.append(made)
        return out

    def _cut_blocks(self, blocks: Iterable[Block], records: bool = False
                    ) -> Iterator[list[Logged]]:
        """packet_blocks() for blocks in the fast paths' envelopes; `records`: JSON records
        made into RFC 3339 lines (_records_block), so no syslog envelope, and counted as
        "json"."""
        if self._cut is not None:
            yield from self._native_blocks(blocks, records)
            return
        stats = self.stats
        slow = self._slow_packet
        sys_stamp, iso_stamp = self._sys_stamp_b, self._iso_stamp_b
        addr = self._addr_b
        bsd = self._bsd_b
        iso6 = self._iso6
        protos = _PROTO_B
        ported = _PORTED
        spt, dpt = _port_fields()
        new = _new_tuple
        ifaces = self._ifc
        syslog_ok = self.format != "rfc3339" and not records
        iso_ok = self.format != "syslog"
        for block in blocks:
            n_sys = n_iso = 0
            out: list[Logged] = []
            app = out.append
            for line in lines_of(block):
                s = line.find(b" SRC=")
                if s < 0:
                    # No " SRC=": not a LOG line in any envelope (the full parser agrees);
                    # only JSON (ulogd2's src_ip, or escapes) needs a closer look.
                    if b"{" in line:
                        ev = slow(line)
                        if ev is not None:
                            app(ev)
                    else:
                        stats.lines += 1
                        stats.not_netfilter += 1
                    continue
                t = bsd.get(line[:15])
                if t is not None and s > 15:  # a known stamp (only syslog ones are cached)
                    is_sys = True
                    b0 = 16
                elif line[3:4] == b" " and line[9:10] == b":" and s > 15 and syslog_ok:
                    # A new second (a busy log has one every few lines).
                    t = sys_stamp(line[:15])
                    if t is None:
                        ev = slow(line)
                        if ev is not None:
                            app(ev)
                        continue
                    is_sys = True
                    b0 = 16
                elif s > 32 and line[32:33] == b" " and line[26:27] == b"+" and iso_ok and \
                        iso6.get(line[:16], _NONE)[0] == line[26:32] and \
                        line[16:17] == b":" and line[19:20] == b"." and \
                        line[17:19] in _SS and line[20:26].isdigit():
                    # rsyslog's "2025-10-09T08:53:22.061068+00:00 ": minutes cached with their
                    # offset; int/1e6 is the same double as float(".061068").
                    t = iso6[line[:16]][1] + _SS[line[17:19]] + int(line[20:26]) / 1e6
                    is_sys = False
                    b0 = 33
                elif line[4:5] == b"-" and line[10:11] == b"T" and line[19:20] == b"." \
                        and iso_ok:
                    # RFC 3339 with a fraction and an offset: whole seconds cached, the
                    # fraction added; anything else is the full parser's.
                    if line[32:33] == b" " and line[26:27] in b"+-" and line[26:27]:
                        sp, j = 32, 26  # "2025-10-09T08:53:22.061068+00:00 " (rsyslog)
                    else:
                        sp = line.find(b" ", 20, 48)
                        j = line.find(b"+", 20, sp)
                        if j < 0:
                            j = line.find(b"-", 20, sp)
                            if j < 0:
                                j = line.find(b"Z", 20, sp)
                    if sp < 0 or j < 21 or s <= sp or not line[20:j].isdigit():
                        ev = slow(line)
                        if ev is not None:
                            app(ev)
                        continue
                    base = iso_stamp(line[:19] + line[j:sp])
                    if base is None:
                        ev = slow(line)
                        if ev is not None:
                            app(ev)
                        continue
                    if j == 26 and sp == 32 and line[26:27] == b"+" and line[17:19] in _SS:
                        iso6[line[:16]] = (line[26:32], base - _SS[line[17:19]])
                    t = base + float(line[19:j])
                    is_sys = False
                    b0 = sp + 1
                else:
                    ev = slow(line)
                    if ev is not None:
                        app(ev)
                    continue
                e = line.find(b" ", s + 5)
                e2 = line.find(b" ", e + 5)
                p = line.find(b" PROTO=", e2)
                if e < 0 or e2 < 0 or p < 0 or line[e + 1:e + 5] != b"DST=":
                    ev = slow(line)
                    if ev is not None:
                        app(ev)
                    continue
                # The interfaces, as the full parser's _ifaces() finds them: IN= is the last
                # one before the last " OUT=" (prefixes may hold either text). Cached on the
                # text from IN='s value to OUT='s end ("eth1 OUT=eth0"): a log has a few.
                o = line.rfind(b" OUT=", b0, s)
                i = line.rfind(b"IN=", b0, o) if o >= 0 else -1
                ifc = ifaces.get(line[i + 3:line.find(b" ", o + 5, s + 1)]) if i >= 0 else None
                if ifc is None:
                    ifc = self._ifaces_b(line[i + 3:line.find(b" ", o + 5, s + 1)], o - i - 3) \
                        if i >= 0 else None
                    if ifc is None:
                        ev = slow(line)
                        if ev is not None:
                            app(ev)
                        continue
                src = addr.get(line[s + 5:e]) or self._canonical_b(line[s + 5:e])
                dst = addr.get(line[e + 5:e2]) or self._canonical_b(line[e + 5:e2])
                # "UDP SPT=123 DPT=123 LEN=56": at most 28 bytes to the space after DPT.
                f = line[p + 7:p + 36].split(b" ", 3)
                proto = protos.get(f[0])
                if proto is None or not src or not dst or len(f) < 4:
                    ev = slow(line)
                    if ev is not None:
                        app(ev)
                    continue
                if proto in ported:
                    sport = spt.get(f[1])
                    dport = dpt.get(f[2])
                    if sport is None or dport is None:
                        ev = slow(line)
                        if ev is not None:
                            app(ev)
                        continue
                    app(new(Packet, (t, src, dst, proto, sport, dport, *ifc)))
                else:
                    app(new(Packet, (t, src, dst, proto, None, None, *ifc)))
                if is_sys:
                    n_sys += 1
                else:
                    n_iso += 1
            self._count(n_sys, n_iso, 0, records)
            yield out

    def _native_blocks(self, blocks: Iterable[Block], records: bool = False
                       ) -> Iterator[list[Logged]]:
        """_cut_blocks() through the C cutter: it takes the lines the loop above takes,
        asks the same caches (through the callables) and hands the rest to _slow_packet."""
        cut = self._cut
        assert cut is not None
        syslog_ok, iso_ok = self.format != "rfc3339" and not records, self.format != "syslog"
        sieve = self._sieve
        extra: tuple = () if sieve is None else (self._hold, *sieve)
        if self._tap is not None:
            extra = (*(extra or (None, 0.0, 0, False, False)), self._tap)
        for block in blocks:
            out, n_sys, n_iso, n_other = cut(block, _PROTO_INFO, self._canonical_b,
                                             self._sys_stamp_b, self._iso_stamp_b,
                                             self._slow_packet, syslog_ok, iso_ok, *extra)
            self._count(n_sys, n_iso, n_other, records)
            yield out

    def _count(self, n_sys: int, n_iso: int, n_other: int, records: bool) -> None:
        """Counts a block's lines a fast path took whole (the full parser counts its own):
        packets in syslog and RFC 3339 envelopes (JSON records, made into RFC 3339 lines,
        where `records`), and lines without a netfilter body."""
        stats, counts = self.stats, self.format_counts
        stats.lines += n_sys + n_iso + n_other
        stats.events += n_sys + n_iso
        stats.not_netfilter += n_other
        if n_sys:
            counts["syslog"] = counts.get("syslog", 0) + n_sys
        if n_iso:
            kind = "json" if records else "rfc3339"
            counts[kind] = counts.get(kind, 0) + n_iso

    def _ifaces_b(self, raw: bytes, split: int) -> Optional[tuple[str, str]]:
        """(iface_in, iface_out) of b"IN_VALUE OUT=OUT_VALUE" (OUT= at split), cached; None
        for the full parser if not ASCII (where decoding could differ)."""
        if not raw.isascii() or split < 0:
            return None
        got = (raw[:split].decode(), raw[split + 5:].decode())
        if len(self._ifc) > 1024:  # a log has a handful; a hostile one must not grow it
            self._ifc.clear()
        self._ifc[raw] = got
        return got

    def _sys_stamp_b(self, key: bytes) -> Optional[float]:
        """A syslog stamp (b"Mmm dd HH:MM:SS") → time, as the Python fast path finds it."""
        t = self._bsd_b.get(key)
        if t is not None:
            return t
        t = self._bsd_min_b.get(key[:12])
        ss = _SS.get(key[13:15])
        if t is not None and ss is not None and key[12:13] == b":":
            t += ss
            if len(self._bsd_b) > _CACHE_LIMIT:
                self._bsd_b.clear()
            self._bsd_b[key] = t
            return t
        return self._bsd_time_b(key)

    def _iso_stamp_b(self, key: bytes) -> Optional[float]:
        """Whole seconds of an RFC 3339 stamp without its fraction (b"...T08:53:22+00:00")."""
        base = self._iso_b.get(key)
        return base if base is not None else self._iso_b_time(key)

    def _slow_packet(self, raw: bytes) -> Optional[Event]:
        """One line the fast path does not take, through the full parser (counted there); a
        line made from a journal record (_records_block) as that record."""
        if self._records:
            raw = self._records.get(raw, raw)
        for ev in self.parse_lines((raw.decode("utf-8", "replace"),)):
            return ev
        return None

    def _bsd_time_b(self, key: bytes) -> Optional[float]:
        """A syslog stamp's time, from a per-minute cache (a busy log has a new second-stamp
        every few lines, and mktime costs ~2 µs)."""
        try:
            text = key.decode("ascii")
        except UnicodeDecodeError:
            return None
        if text[5:6] == " ":  # an unpadded day: the full parser pads it
            return None
        ss = text[13:15]
        if text[12:13] != ":" or not ss.isdigit() or int(ss) > 60:
            return self._bsd.get(text) or self._bsd_time(text)
        minute = self._bsd_min.get(text[:12])
        if minute is None:
            minute = self._bsd_time(text[:12] + ":00")
            if minute is None:
                return None
            if len(self._bsd_min) > _CACHE_LIMIT:
                self._bsd_min.clear()
                self._bsd_min_b.clear()
            self._bsd_min[text[:12]] = minute
        self._bsd_min_b[key[:12]] = minute
        t = minute + int(ss)
        if len(self._bsd_b) > _CACHE_LIMIT:
            self._bsd_b.clear()
        self._bsd_b[key] = t
        return t

    def _iso_b_time(self, key: bytes) -> Optional[float]:
        """Whole seconds of an RFC 3339 stamp (with its offset), cached per minute."""
        try:
            text = key.decode("ascii")
        except UnicodeDecodeError:
            return None
        ss = text[17:19]
        if text[16:17] != ":" or not ss.isdigit() or int(ss) > 60 or not (
                text[:4].isdigit() and text[5:7].isdigit() and text[8:10].isdigit()
                and text[11:13].isdigit() and text[14:16].isdigit()):
            return None
        mkey = text[:16] + text[19:]
        minute = self._iso_min.get(mkey)
        if minute is None:
            minute = _iso_to_epoch(text[:16] + ":00" + text[19:])
            if minute is None:
                return None
            if len(self._iso_min) > _CACHE_LIMIT:
                self._iso_min.clear()
            self._iso_min[mkey] = minute
        base = minute + int(ss)
        if len(self._iso_b) > _CACHE_LIMIT:
            self._iso_b.clear()
            self._iso6.clear()
        self._iso_b[key] = base
        return base

    def _canonical_b(self, raw: bytes) -> str:
        """_canonical() for bytes: inet_pton/inet_ntop (C, ~0.3 µs) where they print what
        ipaddress prints (everything but IPv4-mapped/compatible IPv6), else ipaddress."""
        got = ""
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return ""
        if ":" in text and "%" not in text:
            try:
                got = _inet_ntop(_AF_INET6, _inet_pton(_AF_INET6, text))
            except (OSError, ValueError):
                got = ""
            if "." in got or "." in text:
                got = self._canonical(text)
        else:
            got = self._canonical(text)
        if got:
            if len(self._addr_b) > _CACHE_LIMIT:
                self._addr_b.clear()
            self._addr_b[raw] = got
        return got

    def detected_format(self) -> str:
        """The envelope most lines had (the per-source answer to "auto")."""
        if self.format != "auto":
            return self.format
        if not self.format_counts:
            return "unknown"
        return max(self.format_counts.items(), key=lambda kv: kv[1])[0]

    # -- dispatch ------------------------------------------------------------------------------

    def _auto(self, line: str) -> Any:
        """Pick the envelope from the first characters; the generic search is the fallback.
        An envelope's None (a whole packet without a usable time) stands unless the generic
        search finds a time: its other answers are about the raw text, which for a ulogd2
        JSON record has no SRC= at all ("not netfilter")."""
        kind = self._kind(line)
        result = self._dispatch[kind](line) if kind else None
        if type(result) is not Event and result != NOT_NETFILTER:
            generic = self._generic(line)
            if type(generic) is Event or kind is None:
                result = generic
                kind = "other"
        if type(result) is Event and kind:
            self.format_counts[kind] = self.format_counts.get(kind, 0) + 1
        return result

    @staticmethod
    def _kind(line: str) -> Optional[str]:
        c = line[:1]
        if c == "{":
            return "json"
        if c == "<":  # <PRI> or a console level; look behind it
            end = line.find(">", 1, 6)
            rest = line[end + 1:] if end > 0 else ""
            if rest[:2] == "1 ":  # RFC 5424 version field
                rest = rest[2:]
            return LineParser._kind(rest) if rest[:1] != "<" else None
        if c == "[":
            return "dmesg" if _UPTIME.match(line) else None
        if c.isdigit():
            if line[4:5] == "-":
                return "rfc3339"
            if _KMSG.match(line):
                return "dmesg"
            return "pvefw" if " PVEFW-" in line[:40] or _PVEFW.search(line, 0, 80) else None
        if line[:3] in MONTHS and line[3:4] == " ":
            return "syslog"
        return None

    # -- envelopes ------------------------------------------------------------------------------

    def _syslog(self, line: str) -> Any:
        """`Mmm dd HH:MM:SS host kernel: [uptime] msg` (also LOGEMU: no `kernel:` tag)."""
        if line[:1] == "<":
            end = line.find(">", 1, 6)
            line = line[end + 1:]
        if line[5:6] == " ":  # "Mar 8 22:35:42": a sender that does not pad the day
            line = line[:4] + " " + line[4:]
        key = line[:15]
        t = self._bsd.get(key)
        if t is None:
            t = self._bsd_time(key)
            if t is None:
                return self._generic(line)
        return self._body(line, 16, t, True)

    def _clear_bsd(self) -> None:
        self._bsd.clear()
        self._bsd_b.clear()
        self._bsd_min.clear()
        self._bsd_min_b.clear()

    def _bsd_time(self, key: str) -> Optional[float]:
        month = MONTHS.get(key[:3])
        if month is None or len(key) < 15 or key[3] != " " or key[9] != ":" or key[12] != ":":
            return None
        try:
            day, hh, mm, ss = int(key[4:6]), int(key[7:9]), int(key[10:12]), int(key[13:15])
        except ValueError:
            return None
        if not (1 <= day <= 31 and hh < 24 and mm < 60 and ss < 61):
            return None
        if self._year is None:
            # The source was last written at the reference time: a month after it is last year's.
            self._year = self._ref_year - 1 if month > self._ref_month else self._ref_year
        elif month < self._last_month - 6:
            # Dec → Jan: the year turned. (Small steps back are reordering, not a new year.)
            self._year += 1
            self._clear_bsd()
        elif month > self._last_month + 6 and self._last_month:
            # Jan → Dec while reading on: lines from before the turn (e.g. a merged file).
            self._year -= 1
            self._clear_bsd()
        self._last_month = month
        if len(self._bsd) > _CACHE_LIMIT:
            self._bsd.clear()
        try:
            t = time.mktime((self._year, month, day, hh, mm, ss, 0, 0, -1))
        except (OverflowError, ValueError):
            return None
        self._bsd[key] = t
        return t

    def _rfc3339(self, line: str) -> Any:
        """`2015-03-07T05:09:30.045015+02:00 host kernel: msg` (rsyslog, journalctl short-iso)."""
        if line[:1] == "<":
            end = line.find(">", 1, 6)
            line = line[end + 1:]
            if line[:2] == "1 ":
                line = line[2:]
        sp = line.find(" ")
        if sp < 19:
            return self._generic(line)
        t = self._iso_time(line[:sp])
        if t is None:
            return self._generic(line)
        return self._body(line, sp + 1, t, True)

    def _iso_time(self, stamp: str) -> Optional[float]:
        # Cache on the whole-second part plus the offset; the fraction is added per line.
        dot = stamp.find(".", 19, 20)
        if dot < 0:
            key, frac = stamp, 0.0
        else:
            j = 20
            while j < len(stamp) and stamp[j].isdigit():
                j += 1
            key = stamp[:19] + stamp[j:]
            frac = float(stamp[19:j]) if j > 20 else 0.0
        base = self._iso.get(key)
        if base is None:
            base = _iso_to_epoch(key)
            if base is None:
                return None
            if len(self._iso) > _CACHE_LIMIT:
                self._iso.clear()
            self._iso[key] = base
        return base + frac

    def _dmesg(self, line: str) -> Any:
        """`[  227.015233] msg` (also `<6>[...]`, `[uptime@cpu]`) and /dev/kmsg's
        `6,1234,227015233,-;msg`: boot time + uptime."""
        if line[:1] == "<":
            end = line.find(">", 1, 6)
            line = line[end + 1:]
        m = _UPTIME.match(line)
        if m:
            uptime = float(m.group(1))
        else:
            m = _KMSG.match(line)
            if not m:
                return self._generic(line)
            uptime = int(m.group(1)) / 1e6
        if self.boot_time is None:
            return self._body_untimed(line, m.end())
        return self._body(line, m.end(), self.boot_time + uptime, False)

    def _pvefw(self, line: str) -> Any:
        """Proxmox pvefw-logger: `vmid level chain dd/Mon/yyyy:HH:MM:SS +zzzz prefix: IN=...`."""
        m = _PVEFW.search(line, 0, 80)
        if not m or m.group(2) not in MONTHS:
            return self._generic(line)
        d, mon, y, hh, mm, ss, sign, oh, om = m.groups()
        try:
            t = _timegm((int(y), MONTHS[mon], int(d), int(hh), int(mm), int(ss), 0, 0, 0))
        except (ValueError, OverflowError):
            return GARBLED
        offset = (int(oh) * 3600 + int(om) * 60) * (1 if sign == "+" else -1)
        return self._body(line, m.end(), t - offset, False)

    def _json(self, line: str) -> Any:
        """`journalctl -o json` (MESSAGE), ulogd2 JSON (src_ip, ...), Filebeat events (message)."""
        try:
            obj = json.loads(line)
        except ValueError:
            return GARBLED if "SRC=" in line or "src_ip" in line else NOT_NETFILTER
        if not isinstance(obj, dict):
            return NOT_NETFILTER
        try:
            if "MESSAGE" in obj:
                msg = obj["MESSAGE"]
                if isinstance(msg, list):
                    # journald writes a message holding a control character or bytes that are
                    # not UTF-8 as an array of byte values (a LOG prefix with a tab in it).
                    msg = bytes(msg).decode("utf-8", "replace")  # not bytes: ValueError
                if not isinstance(msg, str):
                    return NOT_NETFILTER
                stamp = obj.get("__REALTIME_TIMESTAMP")
                t = None
                if stamp is not None:
                    # Seconds plus the microseconds' fraction: the double the fast paths make
                    # of the same instant as an RFC 3339 stamp (_records_block), which
                    # int(stamp) / 1e6 may miss by one in the last place.
                    sec, us = divmod(int(stamp), 1_000_000)
                    try:
                        t = sec + us / 1e6
                    except OverflowError:  # hundreds of digits: no instant (untimed)
                        t = math.inf
                m = _UPTIME.match(msg)
                start = m.end() if m else 0
                if t is None:
                    return self._body_untimed(msg, start)
                return self._body(msg, start, t, False)
            if "src_ip" in obj or "oob.time.sec" in obj:
                return self._ulogd_json(obj)
            msg = obj.get("message")
            if isinstance(msg, str):
                # Filebeat's "@timestamp"; Vector and similar shippers' "timestamp" (RFC 3339,
                # or epoch seconds / milliseconds as a number).
                t = None
                stamp = obj.get("@timestamp", obj.get("timestamp"))
                if isinstance(stamp, str):
                    t = _iso_to_epoch(stamp)
                elif isinstance(stamp, (int, float)) and not isinstance(stamp, bool) \
                        and stamp > 0:
                    t = stamp / 1000.0 if stamp > 1e11 else float(stamp)
                if t is None:
                    return self._body_untimed(msg, 0)
                return self._body(msg, 0, t, False)
        except (TypeError, ValueError):
            return GARBLED
        return NOT_NETFILTER

    def _ulogd_json(self, obj: dict) -> Any:
        src, dst = obj.get("src_ip"), obj.get("dest_ip")
        if not isinstance(src, str) or not isinstance(dst, str):
            return NOT_NETFILTER  # e.g. ARP or a record without an IP header
        src, dst = self._canonical(src), self._canonical(dst)
        if not src or not dst:
            return GARBLED
        # No time at all is ulogd2's JSON with `timestamp=0` for a packet the kernel sent no
        # time with (oob.time.sec is then left out): untimed, once the record is known to be
        # a whole packet (a garbled one is garbled, with or without a time). The time it
        # writes itself is "timestamp", or "@timestamp" with eventv1=1 (Logstash's name).
        sec = obj.get("oob.time.sec")
        t = (_instant(float(sec) + float(obj.get("oob.time.usec", 0)) / 1e6)
             if sec is not None else _iso_to_epoch(str(obj.get("timestamp",
                                                                 obj.get("@timestamp", "")))))
        number = obj.get("ip.protocol")
        proto = _PROTO_BY_NUMBER.get(number, str(number)) if number is not None else ""
        sport, dport = obj.get("src_port"), obj.get("dest_port")
        if proto not in _PORTED:
            sport = dport = None
        elif not isinstance(sport, int) or not isinstance(dport, int):
            return GARBLED
        if t is None:
            return None
        return Event(t, src, dst, proto, sport, dport, str(obj.get("oob.in", "") or ""),
                     str(obj.get("oob.out", "") or ""), str(obj.get("oob.prefix", "")).strip())

    def _generic(self, line: str) -> Any:
        """Any line: find a stamp anywhere in its head (grep `file:` prefixes, odd hosts)."""
        head = line[:200]
        m = _EPOCH.match(head)
        if m:
            return self._body(line, m.end(), float(m.group(1)), True)
        m = _CTIME.search(head)
        if m:
            mon, day, hh, mm, ss, year = m.groups()
            try:
                t = time.mktime((int(year), MONTHS[mon], int(day), int(hh), int(mm), int(ss),
                                 0, 0, -1))
            except (OverflowError, ValueError):
                return GARBLED
            return self._body(line, m.end(), t, True)
        m = _BSD_ANYWHERE.search(head)
        if m:
            when = self._bsd.get(m.group(0)[:15]) or self._bsd_time(m.group(0)[:15])
            if when is not None:
                return self._body(line, m.end(), when, True)
        m = _ISO_ANYWHERE.search(head)
        if m:
            when = _iso_to_epoch(m.group(0).rstrip())
            if when is not None:
                return self._body(line, m.end(), when, True)
        m = _PVEFW.search(head)
        if m and m.group(2) in MONTHS:
            return self._pvefw(line)
        m = _UPTIME.search(head)
        if m and self.boot_time is not None:
            return self._body(line, m.end(), self.boot_time + float(m.group(1)), False)
        return self._body_untimed(line, m.end() if m else 0)

    def _body_untimed(self, line: str, start: int) -> Any:
        result = self._body(line, start, 0.0, False)
        return None if type(result) is Event else result

    # -- the netfilter message -------------------------------------------------------------------

    def _canonical(self, text: str) -> str:
        """RFC 5952 / dotted quad, "" if not an address; cached (ipaddress costs ~2 µs)."""
        got = self._addr.get(text)
        if got is None:
            try:
                got = str(ipaddress.ip_address(text))
            except ValueError:
                got = ""
            if len(self._addr) > _CACHE_LIMIT:
                self._addr.clear()
            self._addr[text] = got
        return got

    def _body(self, line: str, start: int, t: float, tagged: bool) -> Any:
        """Cut `PREFIX IN= OUT= ... SRC= DST= ... PROTO= [SPT= DPT=]` out of line[start:].

        tagged: the envelope may carry `host tag:` before the message (syslog); skip it when
        working out the prefix. A stamp no log line can carry (_instant) makes a whole packet
        untimed; a line that is not netfilter, or garbled, is counted as that whatever its
        stamp (_auto keeps an envelope's "untimed": it must mean a packet).
        """
        timed = _instant(t) is not None
        s = line.find(" SRC=", start)
        if s < 0:
            return NOT_NETFILTER
        e = line.find(" ", s + 5)
        if e < 0 or line[e + 1:e + 5] != "DST=":
            return GARBLED
        e2 = line.find(" ", e + 5)
        if e2 < 0:
            return GARBLED
        src = self._addr.get(line[s + 5:e]) or self._canonical(line[s + 5:e])
        dst = self._addr.get(line[e + 5:e2]) or self._canonical(line[e + 5:e2])
        if not src or not dst:
            return GARBLED
        p = line.find(" PROTO=", e2)
        if p < 0:
            return GARBLED
        pe = line.find(" ", p + 7)
        proto = line[p + 7:pe] if pe >= 0 else line[p + 7:].rstrip()
        sport = dport = None
        if proto in _PORTED:
            q = line.find(" SPT=", pe)
            if q < 0:
                # A packet too short for its header: the kernel says "INCOMPLETE [N bytes]".
                if line.startswith("INCOMPLETE [", pe + 1):
                    if not timed:
                        return None
                    return Event(t, src, dst, proto, None, None, *self._ifaces(line, start, s,
                                                                               tagged))
                return GARBLED
            qe = line.find(" ", q + 5)
            if qe < 0 or line[qe + 1:qe + 5] != "DPT=":
                return GARBLED
            de = line.find(" ", qe + 5)
            if de < 0:  # the kernel always prints more after DPT=: this line was cut
                return GARBLED
            try:
                sport, dport = int(line[q + 5:qe]), int(line[qe + 5:de])
            except ValueError:
                return GARBLED
            if not (0 <= sport <= 65535 and 0 <= dport <= 65535):
                return GARBLED
        elif proto not in _PROTO_NAMES and not proto.isdigit():
            return GARBLED
        if not timed:
            return None
        return Event(t, src, dst, proto, sport, dport, *self._ifaces(line, start, s, tagged))

    @staticmethod
    def _ifaces(line: str, start: int, s: int, tagged: bool) -> tuple[str, str, str]:
        """(iface_in, iface_out, prefix) from the part of the message before " SRC=" (at s)."""
        # Interfaces: " OUT=" (PHYSOUT= has no space before OUT=); IN= is the last one before it
        # (prefixes may contain "IN=" themselves, and may be glued to it: "[WAN_OUT-2000-A]IN=").
        o = line.rfind(" OUT=", start, s)
        if o >= 0:
            oe = line.find(" ", o + 5, s + 1)
            iface_out = line[o + 5:oe] if oe >= 0 else ""
            i = line.rfind("IN=", start, o)
        else:
            iface_out = ""
            i = line.find("IN=", start, s)
            while i > 0 and line[i - 1].isalpha():  # PHYSIN=
                i = line.find("IN=", i + 3, s)
        if i >= 0:
            iface_in = line[i + 3:o] if o >= 0 else line[i + 3:line.find(" ", i + 3, s + 1)]
            end_prefix = i
        else:
            iface_in = ""
            end_prefix = o if o >= 0 else s
        if tagged:
            k = line.find("kernel: ", start, end_prefix)
            if k >= 0:
                start = k + 8
            else:  # host (and LOGEMU has no tag): skip one word unless it is a `tag:` itself
                sp = line.find(" ", start, end_prefix)
                if sp >= 0 and line[sp - 1] != ":":
                    start = sp + 1
            if line[start:start + 1] == "[":
                m = _UPTIME.match(line, start)
                if m:
                    start = m.end()
        return iface_in, iface_out, line[start:end_prefix].strip()
