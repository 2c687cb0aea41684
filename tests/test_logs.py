"""Log readers: the public corpus, every envelope, year inference, hostile input, positions."""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntpguard.logs.parse import LineParser, parse_when
from ntpguard.logs.sources import Position, _raw_chunks, file_lines

# shared/ lies beside the checkout (CI clones elsewhere, with a copy of shared/ beside it).
CORPUS = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "corpus",
                           Path("/work/shared/corpus")) if p.is_dir()),
              Path("/work/shared/corpus"))
# Robustness inputs (edited, anonymised, truncated) per corpus/SOURCES.md: not ground truth.
_NOT_GENUINE = re.compile(r"edited|anonymised|truncated|Forums-Archive__syslog\.log")


def _corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*.log*") if p.is_file()) + sorted(
        CORPUS.glob("*.jsonl"))


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not present")
def test_corpus_every_genuine_line_is_read():
    """Every genuine line with an IP SRC= either gives an event whose addresses match the text,
    or (no timestamp in the line at all) is counted as untimed; ARP lines are not IP packets."""
    checked = 0
    for path in _corpus_files():
        genuine = not _NOT_GENUINE.search(path.name)
        parser = LineParser(boot_time=1.7e9, reference_time=path.stat().st_mtime)
        for line in path.read_text(encoding="utf-8").splitlines():
            before = parser.stats.untimed
            ev = parser.parse_line(line)
            if not genuine:
                continue  # robustness only: must not crash (it did not)
            m = re.search(r' SRC=(\S+) DST=(\S+)', line) or re.search(
                r'"src_ip": "([^"]+)", "dest_ip": "([^"]+)"', line)
            if m is None:
                assert ev is None, line  # ARP / no IP header
                continue
            checked += 1
            if ev is None:
                assert parser.stats.untimed == before + 1, f"{path.name}: {line}"
                continue
            assert ev.src == str(ipaddress.ip_address(m.group(1))), line
            assert ev.dst == str(ipaddress.ip_address(m.group(2))), line
            assert ev.time > 0
    assert checked > 300


def test_corpus_ipv6_is_canonical():
    parser = LineParser(reference_time=time.mktime((2010, 3, 20, 0, 0, 0, 0, 0, -1)))
    line = ("Mar 17 13:39:13 linux kernel: [956932.482352] DROP IN=eth0 OUT= "
            "MAC=00:13:46:3a:41:36:00:1b:b9:76:9c:e4:86:dd "
            "SRC=2001:0db8:0000:f101:0000:0000:0000:0002 "
            "DST=2001:0db8:0000:f101:0000:0000:0000:0001"
            " LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=TCP SPT=46395 DPT=80 WINDOW=5760 RES=0x00 "
            "SYN URGP=0 ")
    ev = parser.parse_line(line)
    assert ev is not None
    assert (ev.src, ev.dst, ev.proto, ev.sport, ev.dport) == (
        "2001:db8:0:f101::2", "2001:db8:0:f101::1", "TCP", 46395, 80)
    assert (ev.iface_in, ev.iface_out, ev.prefix) == ("eth0", "", "DROP")
    assert time.localtime(ev.time)[:6] == (2010, 3, 17, 13, 39, 13)


BODY = ("IN= OUT=eth0 SRC=2001:0db8:0000:0000:0000:0000:0000:0001 "
        "DST=2001:0db8:0000:0000:0000:0000:0000:0123 LEN=76 TC=0 HOPLIMIT=64 FLOWLBL=0 "
        "PROTO=UDP SPT=123 DPT=123 LEN=56 ")


@pytest.mark.parametrize("line,expected", [
    (f"2026-01-02T03:04:05.250000+01:00 host kernel: [ 1.0] ntp: {BODY}", 1767319445.25),
    (f"2026-01-02T03:04:05.250000+0100 host kernel: ntp: {BODY}", 1767319445.25),  # short-iso
    (f"<6>2026-01-02T02:04:05Z host kernel: ntp: {BODY}", 1767319445.0),
    (f"[  100.500000] ntp: {BODY}", 1767000100.5),                                  # dmesg
    (f"4,2217,100500000,-;ntp: {BODY}", 1767000100.5),                        # /dev/kmsg
    (f"6,12,100500000,-,caller=T1;ntp: {BODY}", 1767000100.5),     # kmsg with more fields
    (f"1767319445.250000 host kernel: ntp: {BODY}", 1767319445.25),          # short-unix
    ('{"__REALTIME_TIMESTAMP":"1767319445250000","__CURSOR":"s=1","MESSAGE":"ntp: '
     + BODY + '"}', 1767319445.25),                                                  # journal
    ('{"oob.time.sec": 1767319445, "oob.time.usec": 250000, "oob.prefix": "ntp: ", '
     '"ip.protocol": 17, "src_ip": "2001:db8::1", "dest_ip": "2001:db8::123", '
     '"src_port": 123, "dest_port": 123, "oob.in": "", "oob.out": "eth0"}', 1767319445.25),
    ('{"timestamp": "2026-01-02T02:04:05.25Z", "oob.prefix": "ntp: ", "ip.protocol": 17, '
     '"src_ip": "2001:db8::1", "dest_ip": "2001:db8::123", "src_port": 123, '
     '"dest_port": 123, "oob.in": "", "oob.out": "eth0"}', 1767319445.25),   # ulogd2, time
    ('{"@timestamp": "2026-01-02T02:04:05.25Z", "@version": 1, "oob.prefix": "ntp: ", '
     '"ip.protocol": 17, "src_ip": "2001:db8::1", "dest_ip": "2001:db8::123", '
     '"src_port": 123, "dest_port": 123, "oob.in": "", "oob.out": "eth0"}',
     1767319445.25),                                                      # ulogd2, eventv1=1
])
def test_envelopes(line, expected):
    ev = LineParser(boot_time=1767000000.0).parse_line(line)
    assert ev is not None
    assert ev.time == pytest.approx(expected)
    assert (ev.src, ev.dst, ev.proto, ev.sport, ev.dport) == (
        "2001:db8::1", "2001:db8::123", "UDP", 123, 123)
    assert ev.iface_out == "eth0"


def test_year_inferred_across_new_year(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        ref = parse_when("2026-01-01T12:00:00")  # file last written on 1 January 2026
        parser = LineParser(reference_time=ref)
        evs = [parser.parse_line(f"{d} host kernel: ntp: {BODY}")
               for d in ("Dec 31 23:59:58", "Jan  1 00:00:01")]
        assert [time.gmtime(e.time)[:3] for e in evs] == [(2025, 12, 31), (2026, 1, 1)]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_forced_format_and_bad_lines_are_counted():
    parser = LineParser(fmt="rfc3339")
    assert parser.parse_line(f"Jan  1 00:00:01 host kernel: ntp: {BODY}") is not None  # fallback
    for bad in ("", "usb 1-1: new device", f"Jan  1 00:00:01 host kernel: ntp: {BODY[:120]}",
                BODY.replace("2001:0db8:0000:0000:0000:0000:0000:0001", "xx.xx.xx.xx"), "{",
                '{"MESSAGE": [1, 2]}'):
        assert parser.parse_line(bad) is None
    s = parser.stats
    assert s.lines == 7 and s.events == 1 and s.skipped == 6


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_no_text_crashes_the_parser(text):
    parser = LineParser(boot_time=0.0)
    for line in text.split("\n"):
        parser.parse_line(line)
    assert parser.stats.lines == len(text.split("\n"))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(BODY)), st.text(max_size=20))
def test_mangled_real_lines_never_crash(cut, junk):
    line = f"Jan  1 00:00:01 host kernel: ntp: {BODY}"
    parser = LineParser()
    parser.parse_line(line[:cut] + junk + line[cut:])
    parser.parse_line(line[: 35 + cut])


def test_file_positions_resume_truncate_and_rotate(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text("a\nb\n")
    pos = Position(str(log))
    assert list(file_lines(str(log), pos)) == ["a", "b"]
    with open(log, "a") as fh:
        fh.write("c\npartial")
    assert list(file_lines(str(log), pos)) == ["c", "partial"]
    assert list(file_lines(str(log), pos)) == ["partial"]  # an unfinished line is re-read
    with open(log, "a") as fh:
        fh.write(" line\nd\n")
    os.rename(log, tmp_path / "kern.log.1")  # rotation: the rest of the old file comes first
    log.write_text("e\nmore\n")
    assert list(file_lines(str(log), pos)) == ["partial line", "d", "e", "more"]
    log.write_text("")  # copytruncate: detected because the file is now shorter
    with open(log, "a") as fh:
        fh.write("f\n")
    assert list(file_lines(str(log), pos)) == ["f"]


@pytest.mark.parametrize("line", [
    '{"__REALTIME_TIMESTAMP": "99999999999999999999999", "MESSAGE": "ntp: ' + BODY + '"}',
    '{"message": "ntp: ' + BODY + '", "timestamp": 1e400}',
    '{"message": "ntp: ' + BODY + '", "timestamp": 9e15}',
    '{"oob.time.sec": "inf", "src_ip": "2001:db8::1", "dest_ip": "2001:db8::123", '
    '"ip.protocol": 17, "src_port": 123, "dest_port": 123}',
    f"[99999999999999.5] ntp: {BODY}",
    f"[Thu Mar 11 20:05:08 0001] ntp: {BODY}",
    f"2026-13-40T08:53:22Z host kernel: ntp: {BODY}",
])
def test_a_stamp_no_log_line_can_carry_leaves_the_line_untimed(line):
    """Before, each was a packet years away (or NaN): one such line in a log moved the
    covered time so far ahead that the retention deleted every real fact."""
    parser = LineParser(boot_time=1767000000.0)
    assert parser.parse_line(line) is None
    assert parser.stats.lines == 1 and parser.stats.events == 0 and parser.stats.untimed == 1
    assert LineParser(boot_time=1767000000.0).parse_line(line.replace("1e400", "1767319445")
                                                         .replace("9e15", "1767319445250")
                                                         .replace('"inf"', "1767319445")
                                                         .replace("99999999999999.5", "5.5")
                                                         .replace(" 0001]", " 2026]")
                                                         .replace("-13-40T", "-12-30T")
                                                         .replace("99999999999999999999999",
                                                                  "1767319445250000"))


def test_a_journal_message_given_as_bytes_is_read():
    """journald's JSON gives a message with a control character as an array of bytes."""
    body = f"ntp\t: {BODY}".encode()
    line = json.dumps({"__REALTIME_TIMESTAMP": "1767319445250000", "MESSAGE": list(body)})
    ev = LineParser().parse_line(line)
    assert ev is not None and ev.time == 1767319445.25 and ev.dport == 123
    bad = json.dumps({"__REALTIME_TIMESTAMP": "1767319445250000", "MESSAGE": [300, -1]})
    parser = LineParser()
    assert parser.parse_line(bad) is None and parser.stats.garbled == 1


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400", "-1", "253402300800",
                                  "yesterday", ""])
def test_a_time_given_by_the_user_is_an_instant_from_1970_to_9999(text):
    from ntpguard.errors import UsageError

    with pytest.raises(UsageError, match="not a time"):
        parse_when(text)


def test_a_line_without_end_costs_a_block_of_memory_not_its_length(tmp_path, monkeypatch):
    """A file with no newline for megabytes (lastlog's zeros) is kept only up to MAX_LINE a
    line, and the reading goes on at the right place: the next line and the positions."""
    from ntpguard.logs import sources

    monkeypatch.setattr(sources, "BLOCK", 1000)
    monkeypatch.setattr(sources, "MAX_LINE", 2500)
    log = tmp_path / "kern.log"
    log.write_bytes(b"first\n" + b"\0" * 10_000 + b"\nafter\n" + b"z" * 7000)
    pos = [0]
    with open(log, "rb") as fh:
        lines = [line for block in _raw_chunks(fh, pos) for line in sources.lines_of(block)]
    assert lines[0] == b"first" and lines[2] == b"after"
    assert lines[1] == b"\0" * len(lines[1]) and 2500 <= len(lines[1]) <= 2500 + 1000
    assert lines[3] == b"z" * len(lines[3]) and 2500 <= len(lines[3]) <= 3000
    assert pos[0] == 6 + 10_001 + 6  # the unfinished last line is read again next time
    resumed = Position(str(log))
    assert [x[:5] for x in file_lines(str(log), resumed)] == ["first", "\0" * 5, "after",
                                                              "zzzzz"]
    assert resumed.offset == pos[0]


def test_a_block_device_is_no_log_and_is_not_opened(monkeypatch):
    """A disk read as a log would go on for its whole size; refused before it is opened."""
    from ntpguard.errors import UsageError
    from ntpguard.logs import sources

    disk = os.stat_result((stat.S_IFBLK | 0o660, 1, 5, 1, 0, 6, 0, 0, 0, 0))
    real = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **kw: disk if path == "/dev/sdz"
                        else real(path, *a, **kw))
    monkeypatch.setattr(sources, "open", lambda *a: pytest.fail("opened"), raising=False)
    with pytest.raises(UsageError, match=r"^/dev/sdz: not a log file \(a block device\)$"):
        next(sources.file_blocks("/dev/sdz"))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_a_pipe_is_read_from_its_first_byte(gz):
    """`detect <(zcat kern.log.2.gz)` reads /dev/fd/63, a pipe. It was opened twice, once to
    look for gzip's magic: that read took the first 4-8 KiB with it (of a gzip stream, the
    header too, so nothing was read at all)."""
    import threading

    text = b"".join(b"line %d " % i + b"x" * 100 + b"\n" for i in range(2000))
    data = gzip.compress(text) if gz else text
    r, w = os.pipe()

    def write() -> None:
        with os.fdopen(w, "wb") as fh:
            fh.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        lines = list(file_lines(f"/dev/fd/{r}"))
    finally:
        os.close(r)
    writer.join(10)
    assert "\n".join(lines).encode() + b"\n" == text


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_stdin_is_read_plain_or_gzip(monkeypatch, gz):
    """`detect -` reads what it is given as `detect /dev/stdin` does: gzip is gunzipped
    (`cat kern.log.2.gz | ntpguard detect -`); a cut gzip stream is a one-line error."""
    import io
    import sys

    from ntpguard.errors import UsageError
    from ntpguard.logs.sources import stdin_blocks

    text = b"".join(b"line %d " % i + b"x" * 100 + b"\n" for i in range(20000))
    data = gzip.compress(text) if gz else text
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert [line for block in stdin_blocks() for line in block] == text.splitlines()
    if gz:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data[:len(data) // 2])))
        with pytest.raises(UsageError, match=r"^-: cannot read log"):
            list(stdin_blocks())


def test_gzip_file(tmp_path):
    path = tmp_path / "kern.log.2.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(f"Jan  1 00:00:01 host kernel: ntp: {BODY}\n" * 3)
    parser = LineParser()
    assert len(list(parser.parse_lines(file_lines(str(path))))) == 3


# -- the fast path (LineParser.packets) agrees with the full parser on every line -------------

class _Reads:
    """A file whose reads return at most `size` bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    def read(self, n: int) -> bytes:
        out, self.data = self.data[:min(n, self.size)], self.data[min(n, self.size):]
        return out


def _both(raw: list[bytes], fmt: str = "auto", ref: float = 1.7e9) -> None:
    """The full parser, the fast path in Python and its C copy give the same packets, the
    same counts and the same detected format."""
    slow = LineParser(fmt, reference_time=ref, boot_time=1.7e9)
    want = [tuple(ev[:8]) for ev in slow.parse_lines(r.decode("utf-8", "replace") for r in raw)]
    a = slow.stats
    for native, chunked in ((False, False), (True, False), (False, True), (True, True)):
        fast = LineParser(fmt, reference_time=ref, boot_time=1.7e9, native=native)
        if chunked:  # as files are read: reads of 1000 bytes cut lines anywhere
            blocks = list(_raw_chunks(_Reads(b"".join(r + b"\n" for r in raw), 1000), [0]))
        else:
            blocks = [raw[i:i + 97] for i in range(0, len(raw), 97)]
        got = [tuple(p[:8]) for p in fast.packets(blocks)]
        assert got == want, f"native={native}, chunked={chunked}"
        assert [type(x) for p in got for x in p] == [type(x) for p in want for x in p]
        b = fast.stats
        assert (a.lines, a.events, a.not_netfilter, a.garbled, a.untimed) == \
            (b.lines, b.events, b.not_netfilter, b.garbled, b.untimed), f"native={native}"
        assert slow.detected_format() == fast.detected_format()


def test_native_fast_path_is_built():
    """setup.py builds it optionally (a missing compiler must not stop an install); here,
    where the tests run, it must be there, or the figures in README.md are not this code's."""
    from ntpguard.logs import parse

    assert parse._native_cut is not None, \
        "ntpguard/logs/_cut.c is not built: install gcc and python3-dev, then " \
        "`python3 setup.py build_ext --inplace` (make test does)"


@pytest.mark.parametrize("envelope", ["syslog", "rfc3339"])
@pytest.mark.parametrize("fmt", ["auto", "syslog", "rfc3339"])
@pytest.mark.parametrize("start", [1_760_000_000.0, 1_767_139_200.0])  # Oct; Dec 31 (new year)
def test_fast_path_equals_full_parser_on_generated_logs(envelope, fmt, start):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from loggen import Scenario, generate

    sc = Scenario(hosts=3, servers=20, harvesters=2, duration=86400, envelope=envelope,
                  address_lifetime=4 * 3600, unrelated_scans_per_day=5, noise_per_hour=200,
                  malformed_per_hour=30, kernel_other_per_hour=30, start=start)
    _both([line.encode() for line in generate(sc, 5)], fmt, ref=sc.start + sc.duration)


@pytest.mark.parametrize("fmt", ["auto", "json"])
def test_fast_path_equals_full_parser_on_generated_journal_records(fmt):
    """`journalctl -o json` records, made into RFC 3339 lines for the fast paths: the same
    packets, counts and format as the full parser, and the full parser is not asked."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from loggen import Scenario, generate

    sc = Scenario(hosts=3, servers=20, harvesters=2, duration=6 * 3600, envelope="journal",
                  address_lifetime=3600, unrelated_scans_per_day=20, noise_per_hour=200,
                  inbound_ntp_per_hour=100, malformed_per_hour=30, kernel_other_per_hour=30,
                  gateway=True, lan_prefixes=1)
    # journalctl's own spacing (none), and a JSON writer's (", " and ": ")
    compact = [json.dumps(json.loads(line), separators=(",", ":")).encode()
               for line in generate(sc, 3)]
    spaced = [json.dumps(json.loads(line)).encode() for line in generate(sc, 4)]
    # Vector's events (the journal's fields, MESSAGE as "message", a UTC stamp)
    events = []
    for line in generate(sc, 5):
        rec = json.loads(line)
        t = int(rec.pop("__REALTIME_TIMESTAMP")) / 1e6
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e3):03d}Z"
        events.append(json.dumps({"host": "gw", "message": rec.pop("MESSAGE"),
                                  "source_type": "journald", "timestamp": stamp, **rec},
                                 separators=(",", ":")).encode())
    for raw in (compact, spaced, events):
        _both(raw, fmt, ref=sc.start + sc.duration)
        for native in (False, True):
            parser = LineParser(fmt, native=native)
            asked: list[int] = []
            parser.parse_lines = lambda lines, full=parser.parse_lines, asked=asked: (  # type: ignore
                asked.append(1) or full(lines))
            got = list(parser.packets([raw[i:i + 500] for i in range(0, len(raw), 500)]))
            # Only the malformed lines (cut short inside MESSAGE, so no longer JSON) are
            # the full parser's.
            assert got and len(asked) <= sc.malformed_per_hour * 6 + 5, (native, len(asked))
            assert parser.detected_format() == "json"


_RECORD = json.dumps({"__CURSOR": "s=0;i=1", "__REALTIME_TIMESTAMP": "1760000013826832",
                      "_TRANSPORT": "kernel", "MESSAGE": f"ntp: {BODY}"},
                     separators=(",", ":"))
_EVENT = json.dumps({"host": "gw", "message": f"ntp: {BODY}",
                     "timestamp": "2025-10-09T08:53:22.061Z"}, separators=(",", ":"))


def test_journal_records_the_fast_paths_leave_or_take_read_alike():
    """Cases a random edit seldom makes: a key twice (json.loads keeps the last), MESSAGE as a
    value, escapes and byte arrays in MESSAGE, and stamps past 2242, where int(stamp) / 1e6
    and the RFC 3339 line's seconds + fraction are doubles one place apart (9728340843.400928
    against .400927); a stamp of 400 digits (no float: it stopped the read) is untimed."""
    def rec(*pairs: str) -> bytes:
        return ("{" + ",".join(pairs) + "}").encode()
    msg = json.dumps(f"ntp: {BODY}")
    other = json.dumps(f"ntp: {BODY.replace('DPT=123', 'DPT=124')}")
    at = '"__REALTIME_TIMESTAMP":"1760000013826832"'
    raw = [rec(at, f'"MESSAGE":{msg}'),
           rec(at, '"MESSAGE":"usb 1-1: new device"', f'"MESSAGE":{msg}'),
           rec(at, f'"MESSAGE":{msg}', '"MESSAGE":"usb 1-1: new device"'),
           rec(at, f'"MESSAGE":{msg}', f'"MESSAGE":{other}'),
           rec('"__REALTIME_TIMESTAMP":"1760000099000001"', at, f'"MESSAGE":{msg}'),
           rec(at, '"SYSLOG_IDENTIFIER":"MESSAGE"', f'"MESSAGE":{msg}'),
           rec(at, f'"MESSAGE":{msg[:-1]}\\t"'),
           rec(at, f'"MESSAGE":{list(f"ntp: {BODY}".encode())}'),
           rec(at, f'"MESSAGE":{msg}', '"_PID":1'),
           *(rec(f'"__REALTIME_TIMESTAMP":"{x}"', f'"MESSAGE":{msg}')
             for x in (9728340843400927, 9198219959711757, 1000000000000000, 9999999999999999,
                       999999999999999, 10000000000000000, 1760000013826832, "9" * 400)),
           rec(at, f'"MESSAGE" : {msg} '), b"{ " + rec(at, f'"MESSAGE":{msg}')[1:],
           # shippers' events: "@timestamp" before "timestamp", stamps they write and others
           *(rec(*stamps, f'"message":{msg}') for stamps in (
               ['"timestamp":"2025-10-09T08:53:22.061Z"'],
               ['"@timestamp":"2025-10-09T08:53:22.061Z"', '"timestamp":"2025-10-09T09:00:00.5Z"'],
               ['"timestamp":"2025-10-09T08:53:22.061Z"', '"@timestamp":"2025-10-09T07:00:00Z"'],
               ['"timestamp":"2025-10-09T08:53:22.061+02:00"'],
               ['"timestamp":"2025-10-09T08:53:22.Z"'], ['"timestamp":"2025-13-09T08:53:22.1Z"'],
               ['"timestamp":"2025-10-09 08:53:22.061Z"'], ['"timestamp":"1760000013"'],
               ['"timestamp":"2025-10-09T08:53:22.061Z"', '"src_ip":"2001:db8::1"'],
               ['"timestamp":"2025-10-09T08:53:22.061Z"', '"message":"x"'], [])),
           rec('"timestamp":"2025-10-09T08:53:22.123456789Z"', f'"message":{msg}'),
           rec('"timestamp":1760000013', f'"message":{msg}')]
    _both(raw)
    _both(raw, "json")
    times = [p[0] for p in LineParser(native=True).packets([raw])]
    assert 9728340843.400927 in times and 9728340843.400928 not in times


@settings(max_examples=int(os.environ.get("NTPGUARD_EXAMPLES", "500")), deadline=None)
@given(st.integers(0, len(_RECORD)), st.integers(0, 6),
       st.sampled_from(["", " ", "\t", "\\", '\\"', '"', "\\u0041", "\x01", "\x7f", "\u00e9",
                        ",", ":", "{", "}", "[1]", "null", "0", '"MESSAGE":"x",',
                        '"__REALTIME_TIMESTAMP":"1760000013826833",', '"MESSAGE"',
                        '"message":"x",', '"@timestamp":"2025-10-09T08:53:22.5Z",', "+01:00",
                        "SRC=1.2.3.4 ", " OUT=", "\r", "9", "12345678901234567"]))
def test_fast_path_equals_full_parser_on_mangled_journal_records(at, cut, junk):
    """Records with escapes, control characters, duplicate keys, other values, spacing or
    a cut anywhere: where the check lets one through as a plain record, it reads as
    json.loads reads it."""
    for record in (_RECORD, _EVENT):
        mangled = record[:at] + junk + record[at + cut:]
        _both([mangled.encode("utf-8"), record.encode(), mangled.encode("utf-8")[:at + 3]])
        _both([mangled.encode("utf-8"), record.encode()], "json")


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not present")
def test_fast_path_equals_full_parser_on_corpus():
    for path in _corpus_files():
        raw = path.read_bytes().split(b"\n")
        _both(raw, ref=path.stat().st_mtime)


_FAST_LINES = [
    f"Jan  1 00:00:01 host kernel: [ 5.000000] ntp: {BODY}",
    f"2026-01-02T03:04:05.250000+01:00 host kernel: ntp: {BODY}",
    f"2026-01-02T03:04:05.25-0130 host kernel: ntp: {BODY}",
    f"2026-01-02T03:04:05.250000Z host kernel: ntp: {BODY}",
]


@settings(max_examples=int(os.environ.get("NTPGUARD_EXAMPLES", "500")), deadline=None)
@given(st.sampled_from(_FAST_LINES), st.integers(0, 240), st.integers(0, 8),
       st.sampled_from(["", " ", "0", "9", ":", ".", "+", "-", "Z", "x", "SPT=1 ", "DPT=",
                        "PROTO=ICMP ", " SRC=1.2.3.4 DST=5.6.7.8 ", "\u00e9", "\ufffd", "{",
                        "::ffff:1.2.3.4", "65536", "٣", "=", "IN=", " OUT=", "IN=a OUT=b ",
                        " PHYSIN=br0 ", "[WAN]IN="]))
def test_fast_path_equals_full_parser_on_mangled_lines(line, at, cut, junk):
    mangled = line[:at] + junk + line[at + cut:]
    _both([mangled.encode("utf-8"), line.encode(), mangled.encode("utf-8")[:at + 3]])


def test_kmsg_records_are_read_by_every_path_alike():
    """/dev/kmsg records (`cat /dev/kmsg`): "PRI,SEQ,USEC,FLAGS;" then the message, and the
    dictionary lines after it (" SUBSYSTEM=...", not netfilter). The fast paths leave them
    to the full parser; a line that merely starts with digits and commas is no record."""
    raw = [f"4,2217,43594532,-;ntp: {BODY}".encode(), b" SUBSYSTEM=net",
           f"6,2218,43594533,c,caller=T12;ntp: {BODY}".encode(),
           f"Jan  1 00:00:01 host kernel: ntp: {BODY}".encode(),
           f"4,2217;ntp: {BODY}".encode(), f"4,22,17,{'x' * 50};ntp: {BODY}".encode()]
    _both(raw)
    parser = LineParser(boot_time=1.7e9)
    times = [ev.time if ev else None for ev in map(parser.parse_line, (r.decode() for r in raw))]
    assert times[:3] == [pytest.approx(1.7e9 + 43.594532), None, pytest.approx(1.7e9 + 43.594533)]
    untimed = LineParser()  # no boot time
    assert untimed.parse_line(raw[0].decode()) is None and untimed.stats.untimed == 1


_ULOGD = {"oob.prefix": "ntp: ", "oob.in": "", "oob.out": "eth0", "ip.protocol": 17,
          "src_ip": "2001:db8::1", "dest_ip": "2001:db8::123", "src_port": 123, "dest_port": 123}


def test_a_packet_without_a_time_is_untimed_in_every_path_and_format():
    """ulogd2's JSON with `timestamp=0` has no time for a packet the kernel sent none with: it
    was counted as "not netfilter" (the raw text has no SRC=) unless --format json was given.
    What is not a packet stays "not netfilter", and a garbled one "garbled", whatever the
    stamp: a kernel message with an impossible uptime was untimed in the full parser and not
    netfilter on the fast paths."""
    untimed = [json.dumps(_ULOGD), json.dumps(dict(_ULOGD, timestamp="not a time")),
               json.dumps(dict(_ULOGD, **{"ip.protocol": 1}, src_port=None))]
    other = [json.dumps({"__REALTIME_TIMESTAMP": "99999999999999999999999",
                         "MESSAGE": "usb 1-1: new high-speed USB device"}),
             "[99999999999999.5] usb 1-1: new high-speed USB device", json.dumps({"x": 1})]
    garbled = [json.dumps(dict(_ULOGD, src_port="123")),
               f"[99999999999999.5] ntp: {BODY.replace('SPT=123 ', 'SPT=x ')}"]
    raw = [line.encode() for line in untimed + other + garbled]
    _both(raw)  # the full parser, the Python fast path and the C one: the same counts
    parser = LineParser(boot_time=1.7e9)
    assert list(parser.packets([raw])) == []
    s = parser.stats
    assert (s.lines, s.untimed, s.not_netfilter, s.garbled) == (8, 3, 3, 2)
    parser = LineParser("json")  # the JSON lines with --format json
    assert list(parser.parse_lines(x for x in untimed + other + garbled if x[0] == "{")) == []
    s = parser.stats
    assert (s.lines, s.untimed, s.not_netfilter, s.garbled) == (6, 3, 2, 1)


def test_the_c_scan_finds_every_byte_at_every_offset():
    """_cut.c finds '=' and ' ' 64 bytes at a time (SSE2 compares, or 8-byte words where
    there are none): every occurrence at every offset around the 8-, 16- and 64-byte edges,
    with neighbouring and high-bit bytes beside it (<, >, 0xbd for '='; 0xa0 for ' '), in
    lines that end anywhere in a window, with and without readable bytes after their end;
    the portable masks are checked here too, though this machine uses the fast ones."""
    from ntpguard.logs.parse import _native_cut

    if _native_cut is None:
        pytest.skip("the scan is the C path's")
    from ntpguard.logs._cut import scan_positions

    cases = ((ord("="), b"<>\xbd=x"), (ord(" "), b"\x00!\xa0 x"), (0xff, b"\x7f\xfe\xff"))
    for byte, near in cases:
        for length in [*range(0, 20), *range(60, 70), *range(124, 132), 200]:
            for at in range(length):
                line = bytearray(near[(k * 7 + at) % len(near)] for k in range(length))
                line = bytes(b if b != byte else ord("y") for b in line)
                line = line[:at] + bytes([byte]) + line[at + 1:]
                want = [k for k, b in enumerate(line) if b == byte]
                for after in (b"", bytes([byte]) * 70):
                    for portable in (False, True):
                        got = scan_positions(line + after, length, byte, portable)
                        assert got == want, (line, after, portable)


@pytest.mark.parametrize("shift", range(0, 72))
def test_fast_path_equals_full_parser_with_fields_at_every_offset(shift):
    """Each field of a line at every offset to the C scan's 64-byte windows (a longer prefix
    moves them on), with decoy '=' and ' OUT=' before them, lines cut short anywhere after
    SRC=, and lines that end in a read's last bytes (chunked) or alone (listed)."""
    prefix = "x" * shift
    lines = [f"Jan  1 00:00:01 host kernel: [ 5.000000] {prefix}ntp: {BODY}",
             f"Jan  1 00:00:01 host kernel: {prefix}a=b OUT=c IN=eth1 OUT=eth0 "
             f"SRC=192.0.2.{shift} DST=198.51.100.7 LEN=60 TTL=51 ID=1 DF PROTO=TCP "
             f"SPT={1000 + shift} DPT=443 WINDOW=1 RES=0x00 SYN URGP=0",
             f"2026-01-02T03:04:05.250000+01:00 host kernel: {prefix}ntp: {BODY}"]
    raw = [line.encode() for line in lines]
    body = raw[0].index(b" SRC=")
    raw += [raw[0][:end] for end in range(body, len(raw[0]), 7)]
    _both(raw)


def test_fast_paths_follow_the_year_the_full_parser_moves_on():
    """Lines only the full parser takes (here: with a <PRI>) can move the year on and clear
    the stamp caches; the same stamp after them must not come from a memo of the old year.
    (Dec 2025, Jan 2026, Jun 2026, then Dec again: within 6 months of June, so 2026.)"""
    line = f"Dec 31 23:59:59 host kernel: ntp: {BODY}".encode()
    raw = [line, b"<4>Jan  1 00:00:01 host kernel: ntp: " + BODY.encode(),
           b"<4>Jun  1 00:00:01 host kernel: ntp: " + BODY.encode(), line]
    _both(raw, ref=1_767_225_600.0 + 86400)  # written on 2026-01-02


_GROUPS = st.one_of(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xABC, 0x1000]), st.integers(0, 65535))


@settings(max_examples=int(os.environ.get("NTPGUARD_EXAMPLES", "500")), deadline=None)
@given(st.lists(st.tuples(st.lists(_GROUPS, min_size=8, max_size=8), st.integers(0, 3)),
                min_size=1, max_size=6),
       st.lists(st.tuples(st.integers(0, 255), st.integers(0, 3)), min_size=4, max_size=4))
def test_fast_paths_print_addresses_as_ipaddress_does(addresses, quad):
    """IPv6 addresses with zero runs of every length (where "::" goes: the longest run, the
    first of equals), written as the kernel writes them (zero-padded), compressed or in
    capitals; dotted quads with and without leading zeros."""
    import ipaddress

    lines = []
    for groups, form in addresses:
        a = ipaddress.IPv6Address(b"".join(g.to_bytes(2, "big") for g in groups))
        text = [a.exploded, a.compressed, a.exploded.upper(), str(a).upper()][form]
        lines.append(f"Jan  1 00:00:01 host kernel: x: IN=eth0 OUT= SRC={text} "
                     f"DST={a.exploded} LEN=80 PROTO=UDP SPT=123 DPT=123 LEN=56")
    v4 = ".".join(str(n).zfill(1 + z) if z < 2 else str(n) for n, z in quad)
    lines.append(f"Jan  1 00:00:02 host kernel: x: IN=eth0 OUT= SRC={v4} DST=192.0.2.1 LEN=76 "
                 "PROTO=UDP SPT=123 DPT=123 LEN=56")
    _both([line.encode() for line in lines])


@settings(max_examples=int(os.environ.get("NTPGUARD_EXAMPLES", "500")), deadline=None)
@given(st.lists(st.one_of(
    st.text("0123456789abcdefABCDEF:", max_size=46),
    st.lists(st.text("0f:", min_size=1, max_size=5), min_size=1, max_size=10).map(":".join)),
    min_size=1, max_size=8))
def test_fast_paths_take_odd_ipv6_texts_as_the_full_parser_does(texts):
    """Texts of hex digits and colons that are no address, or an unusual one (5-digit groups,
    ":::", a colon at one end, nine groups, "::" with eight): the C path's own IPv6 reader
    hands them on, and all paths agree."""
    _both([f"Jan  1 00:00:01 host kernel: x: IN=eth0 OUT= SRC={t} DST={t or '::1'} LEN=80 "
           "PROTO=UDP SPT=123 DPT=123 LEN=56".encode() for t in texts])


_PIECES = [b"Jan  1 00:00:01 ", b"2026-01-02T03:04:05.25+01:00 ", b"host kernel: ", b"x: ",
           b"IN=eth0 OUT= ", b" SRC=", b"2001:0db8:0000:0000:0000:0000:0000:0001", b"192.0.2.1",
           b" DST=", b"::ffff:1.2.3.4", b"fe80::1%eth0", b" LEN=80 ", b" PROTO=", b"UDP ",
           b"TCP ", b"ICMPv6 ", b"SPT=123 ", b"DPT=65535 ", b"DPT=65536 ", b"LEN=56 ", b" ",
           b":", b".", b"{", b"\xff", b"\x00", b"\xc3\xa9", b"0", b"9"]


@settings(max_examples=int(os.environ.get("NTPGUARD_EXAMPLES", "500")), deadline=None)
@given(st.lists(st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=8)),
                         max_size=16).map(b"".join), min_size=1, max_size=8))
def test_fast_paths_take_any_bytes_as_the_full_parser_does(lines):
    """Lines made of netfilter fragments, odd bytes (NUL, invalid UTF-8) and junk: neither
    fast path crashes, and both agree with the full parser on every one."""
    _both([line.replace(b"\n", b" ") for line in lines])


@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus not present")
def test_corpus_directions():
    """Every genuine corpus packet's direction is the one its IN=/OUT= text says (the last
    pair before SRC=): sent, received or forwarded; and every kind occurs in the corpus."""
    from ntpguard.logs import direction

    seen = set()
    for path in _corpus_files():
        if _NOT_GENUINE.search(path.name) or path.suffix == ".jsonl":
            continue
        parser = LineParser(boot_time=1.7e9, reference_time=path.stat().st_mtime)
        for line in path.read_text(encoding="utf-8").splitlines():
            ev = parser.parse_line(line)
            pairs = re.findall(r"IN=(\S*) OUT=(\S*) ", line.split(" SRC=")[0] + " ")
            if ev is None or not pairs:
                continue
            want = direction(*pairs[-1])
            assert direction(ev.iface_in, ev.iface_out) == want, line
            seen.add(want)
    assert seen == {"in", "out", "forwarded"}


@pytest.mark.parametrize("line,when", [
    # OpenWrt logread and dmesg -T carry their own year: not the file's.
    (f"Mon Dec 25 13:31:15 2017 kern.warn kernel: [ 5.000000] drop: {BODY}",
     (2017, 12, 25, 13, 31, 15)),
    (f"[Thu Mar 11 20:05:08 2021] drop: {BODY}", (2021, 3, 11, 20, 5, 8)),
    # Vector (and similar shippers): the time in "timestamp", RFC 3339 or epoch.
    ('{"message": "drop: ' + BODY + '", "timestamp": "2024-05-06T07:08:09.5Z", "host": "gw"}',
     (2024, 5, 6, 7, 8, 9)),
    ('{"message": "drop: ' + BODY + '", "timestamp": 1714979289500, "host": "gw"}',
     (2024, 5, 6, 7, 8, 9)),
])
def test_stamps_with_their_own_year_and_shipper_timestamps(monkeypatch, line, when):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        parser = LineParser(reference_time=parse_when("2026-01-01T12:00:00"))
        for raw in (line, line):  # twice: cached stamps must agree
            ev = parser.parse_line(raw)
            assert ev is not None, raw
            assert time.gmtime(ev.time)[:6] == when
            assert (ev.src, ev.dport, ev.iface_out) == ("2001:db8::1", 123, "eth0")
        _both([line.encode()], ref=parse_when("2026-01-01T12:00:00"))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_the_sieve_hands_on_packets_as_they_are_logged():
    """Through the C sieve, what passes (held lines released later among them) is packet for
    packet what the parser makes without it, with more interface pairs than the C side
    remembers (8) and released lines between; a quarter of the lines come from sources seen
    once, which stay held."""
    from collections import Counter

    from ntpguard.logs import Sieve
    from ntpguard.logs.parse import _native_cut

    if _native_cut is None:
        pytest.skip("the sieve is the C path's")
    raw = [f"Jan  1 00:{k // 60:02d}:{k % 60:02d} host kernel: x: IN=wan{k % 12} "
           f"OUT={'lan' if k % 3 else ''}{k % 12} "
           f"SRC={f'203.0.113.{k % 7}' if k % 4 else f'198.51.100.{k // 4}'} DST=192.0.2.{k % 2} "
           f"LEN=60 PROTO=TCP SPT=4000 DPT={k} WINDOW=1 RES=0x00 SYN URGP=0".encode()
           for k in range(300)]
    plain = LineParser(reference_time=1.7e9)
    sieved = LineParser(reference_time=1.7e9, sieve=Sieve(30.0, 123, False, True))
    want = Counter(tuple(p) for p in plain.packets([raw]))
    got = Counter(tuple(p) for p in sieved.packets([raw[i:i + 50]
                                                    for i in range(0, len(raw), 50)]))
    assert len(want) == 300 and 0 < sum(got.values()) < 300
    assert not got - want
    # The line that releases a held one keeps its own interfaces when the held line's take
    # the place of the ones it had (eight remembered: seven, a held line, the eighth).
    head = "Jan  1 00:00:01 host kernel: x: IN={} SRC={} DST=192.0.2.1 LEN=60 PROTO={} SPT=9"
    ntp = [head.format(f"wan{j} OUT=lan{j}", "203.0.113.1", "UDP") + " DPT=123 LEN=56"
           for j in range(1, 9)]
    probe = [head.format(ifc, "198.51.100.1", "TCP") + f" DPT={port} WINDOW=1 SYN URGP=0"
             for ifc, port in (("wanZ OUT=", 22), ("wan1 OUT=lan1", 80))]
    raw = [line.encode() for line in [*ntp[:7], probe[0], ntp[7], probe[1]]]
    got = Counter(tuple(p) for p in LineParser(
        reference_time=1.7e9, sieve=Sieve(30.0, 123, False, True)).packets([raw]))
    assert got == Counter(tuple(p) for p in LineParser(reference_time=1.7e9).packets([raw]))
