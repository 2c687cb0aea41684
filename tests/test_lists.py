"""Shared-list parsing, validation, storage and export (pure; no root)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st

from ntpguard import config, lists
from ntpguard.errors import ConfigError, UsageError
from ntpguard.status import Verdict

RULES = Path(__file__).resolve().parent.parent / "rules"
LIM = lists.Limits()


def parse_text(text: str, limits: lists.Limits = LIM) -> lists.ParsedList:
    return lists.parse(text.encode(), "t.txt", limits)


def refused(raw: bytes, limits: lists.Limits = LIM) -> list[str]:
    with pytest.raises(lists.ListError) as exc:
        lists.parse(raw, "t.txt", limits)
    assert str(exc.value).startswith("t.txt: list refused")
    assert "\n" not in str(exc.value)
    return exc.value.problems


def test_text_format_documented_example():
    p = parse_text("# a comment line\n\n2604:a880:800:10::/64 scanner # scan6.shodan.io\r\n"
                   "2604:A880:0400:00D0:0000:0000:0009:B001   harvester\n"
                   "198.51.99.7 harvester#no space\n")
    assert p.format == "text"
    assert [(e.address, e.kind, e.comment, e.line) for e in p.entries] == [
        ("2604:a880:800:10::/64", "scanner", "scan6.shodan.io", 3),
        ("2604:a880:400:d0::9:b001", "harvester", "", 4),
        ("198.51.99.7", "harvester", "no space", 5),
    ]


def test_every_problem_reported_with_line_numbers():
    problems = refused(
        b"2604:a880:800:10::/64 scanner\n"      # 1 ok
        b"2001:db8::1 harvester\n"             # 2 documentation
        b"2604::/16 scanner\n"                 # 3 too broad
        b"2a03:b0c0:3:d0::18:b001 friend\n"    # 4 unknown kind
        b"2604:a880:800:10::/64 scanner\n"     # 5 duplicate
        b"2604:a880:800:10::1/64 scanner\n"    # 6 host bits
        b"fe80::1 harvester\n"                 # 7 link-local
        b"2604:a880:1:20::a7:f001\n"           # 8 no kind
        b"1.2.3.4 harvester extra\n"           # 9 too many fields
        b"nonsense harvester\n"                # 10 not an address
        b"10.1.2.3 harvester\n"                # 11 private
    )
    text = " | ".join(problems)
    for n, word in [(2, "documentation"), (3, "broader than the limit /32"), (4, "unknown kind"),
                    (5, "duplicate of line 1"), (6, "host bits"), (7, "link-local"),
                    (8, "no kind"), (9, "expected ADDRESS KIND"), (10, "not an IP address"),
                    (11, "private")]:
        assert any(p.startswith(f"line {n}:") and word in p for p in problems), (n, text)
    assert len(problems) == 10


def test_conflicting_kinds_and_error_message_is_one_line_capped():
    problems = refused(b"2604:a880:1:20::a7:f001 harvester\n2604:a880:1:20::a7:f001 scanner\n")
    assert problems == ["line 2: 2604:a880:1:20::a7:f001 is listed as scanner here and as "
                        "harvester on line 1"]
    many = "".join(f"2001:db8::{i:x} harvester\n" for i in range(1, 26)).encode()
    with pytest.raises(lists.ListError) as exc:
        lists.parse(many, "m.txt", LIM)
    # The line shows the first 20 and counts the rest; .problems (--json) has all 25.
    assert "25 problems" in str(exc.value)
    assert str(exc.value).endswith("; and 5 more (reserved ranges (private, link-local...) "
                                   "are never listed: drop those lines)")
    assert "line 20:" in str(exc.value) and "line 21:" not in str(exc.value)
    assert len(exc.value.problems) == 25


def test_bad_encodings():
    assert refused(b"2604:a880:1:20::a7:f001 harvester\n\xff\xfe bad\n")[0].startswith(
        "line 2: not valid UTF-8")
    assert "NUL byte" in refused(b"2604:a880:1:20::a7:f001 harvester\x00\n")[0]
    # UTF-16 (Notepad's "Unicode"), either byte order: the cause named, not "NUL byte".
    text = "2604:a880:1:20::a7:f001 harvester\n"
    for encoded in (text.encode("utf-16"), b"\xfe\xff" + text.encode("utf-16-be")):
        assert refused(encoded) == ['line 1: UTF-16 text (an editor\'s "Unicode"): save the '
                                    'list as UTF-8']
    # A UTF-8 BOM (Windows editors) is not an error.
    assert len(lists.parse(b"\xef\xbb\xbf2604:a880:1:20::a7:f001 harvester\n", "b", LIM)
               .entries) == 1


def test_max_entries_and_limits():
    body = "".join(f"2604:a880:1:20::{i:x} harvester\n" for i in range(1, 12)).encode()
    assert refused(body, lists.Limits(max_entries=10)) == [
        "line 11: more than max_entries 10 entries (the rest was not read)"]
    assert len(lists.parse(body, "x", lists.Limits(max_entries=11)).entries) == 11
    # Prefix limits come from [rules]; IPv4 too.
    assert "broader" in refused(b"198.51.0.0/17 scanner\n", lists.Limits(min_prefixlen_v4=24))[0]
    lab = lists.Limits(allow_nonglobal=True)
    assert lists.parse(b"2001:db8::1 harvester\nfd00::/64 scanner\n", "x", lab).entries


def test_prefix_reaching_into_nonglobal_space_is_refused():
    # 172.0.0.0/11 starts in global space and ends inside 172.16.0.0/12 (private).
    problems = refused(b"172.0.0.0/11 scanner\n", lists.Limits(min_prefixlen_v4=8))
    assert problems == ["line 1: 172.0.0.0/11 is not a global address (private)"]


def test_default_kind_reads_plain_blocklists():
    p = lists.parse(b"2602:80d:1000:b0cc:e::/80 # censys\n", "c.txt",
                    lists.Limits(default_kind="scanner"))
    assert p.entries[0].kind == "scanner" and p.entries[0].comment == "censys"


def test_semicolon_comments_read_spamhaus_drop():
    """Spamhaus DROP's layout: `;` header lines and `PREFIX ; SBL id` entries; the line
    path (a CR alone ends a line) and the block path read it alike."""
    text = (b"; Spamhaus DROP List 2026/11/30 - (c) 2026 The Spamhaus Project\n"
            b"; Last-Modified: Mon, 30 Nov 2026 12:00:00 GMT\n"
            b"1.10.16.0/20 ; SBL256894\n"
            b"2a06:e480::/32 ; SBL301771 # kept\n")
    for raw in (text, text.replace(b"\n", b"\r")):
        p = lists.parse(raw, "drop.txt", lists.Limits(default_kind="scanner"))
        assert [(str(e.network), e.kind, e.comment) for e in p.entries] == [
            ("1.10.16.0/20", "scanner", "SBL256894"),
            ("2a06:e480::/32", "scanner", "SBL301771 # kept")]
    assert refused(b"1.10.16.0/20 scanner extra ; x\n") == [
        "line 1: expected ADDRESS KIND [# comment], got '1.10.16.0/20 scanner extra ; x'"]


# Spamhaus DROP as published since 2024 (drop_v4.json, drop_v6.json): JSON Lines, then a
# metadata line.
DROP_JSON = (b'{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}\n'
             b'{"cidr":"2a06:e480::/32","sblid":"SBL301771","rir":"ripencc"}\r\n'
             b'{"type":"metadata","timestamp":1764504000,"size":130,"records":2,'
             b'"copyright":"(c) 2026 The Spamhaus Project SLU",'
             b'"terms":"https://www.spamhaus.org/drop/terms/"}\n')


def test_json_lines_read_spamhaus_drop_json():
    for fmt in ("auto", "json"):  # `list import drop_v4.json --format json` reads them too
        p = lists.parse(DROP_JSON, "drop_v4.json", lists.Limits(default_kind="scanner"), fmt)
        assert p.format == "text"  # stored and read again line by line
    assert [(str(e.network), e.kind, e.comment, e.line) for e in p.entries] == [
        ("1.10.16.0/20", "scanner", "SBL256894", 1),
        ("2a06:e480::/32", "scanner", "SBL301771", 2)]
    # Without --kind: each entry says it has none, as a plain text blocklist's would.
    assert refused(DROP_JSON) == ["line 1: no kind (harvester or scanner) for '1.10.16.0/20'",
                                  "line 2: no kind (harvester or scanner) for '2a06:e480::/32'"]
    # A JSON line's own kind and comment; bad lines are named like any other.
    assert [(e.address, e.kind, e.comment) for e in lists.parse(
        b'{"address": "2604:a880:1:20::1", "kind": "Harvester", "comment": "c"}\n', "x").entries
    ] == [("2604:a880:1:20::1", "harvester", "c")]
    assert refused(b'{"cidr": "1.10.16.0/20", "kind": "scanner"}\n{"cidr": 5}\n["x"]\n'
                   b'{"cidr": "1.10.20.0/24", "kind": "scanner"\n{"sblid": "SBL1"}\n') == [
        'line 2: no "cidr" or "address" string in the object',
        "line 3: no kind (harvester or scanner) after '[\"x\"]'",
        "line 4: invalid JSON: Expecting ',' delimiter",
        'line 5: no "cidr" or "address" string in the object']


def test_json_documents_are_not_taken_for_json_lines():
    """An ntpguard JSON list stays one document, pretty-printed or on one line; broken JSON
    gets the JSON reader's words."""
    entry = '{"address": "2604:a880:1:20::1", "kind": "harvester"}'
    for doc in ('{"format": "ntpguard-list", "version": 1, "entries": [' + entry + "]}\n",
                '{\n "format": "ntpguard-list",\n "version": 1,\n "entries": [' + entry + "]}"):
        assert lists.parse(doc.encode(), "l.json").format == "json"
    assert refused(b'{"format": "ntpguard-list", "version": 1, "entries": [}\n') == [
        "line 1: invalid JSON: Expecting value"]


def test_kinds_in_any_case():
    p = parse_text("2604:a880:800:10::/64 SCANNER\n2604:a880:1:20::1 Harvester # x\n")
    assert [(e.kind, e.comment) for e in p.entries] == [("scanner", ""), ("harvester", "x")]
    assert refused(b"2604:a880:1:20::1 harvesters\n") == [
        "line 1: unknown kind 'harvesters' (harvester or scanner)"]


def test_json_roundtrip_with_evidence_and_times():
    e = lists.Entry(ipaddress.ip_network("2604:a880:1:20::a7:f007/128"), "harvester", "lag 7 s",
                    0, (("scans", 3), ("triggers", 5)), 1452713545.0, 1452715279.0)
    s = lists.Entry(ipaddress.ip_network("2604:a880:800:10::/64"), "scanner")
    text = lists.export_json([e, s], 1452716000.0)
    doc = json.loads(text)
    assert doc["format"] == "ntpguard-list" and doc["version"] == 1
    assert doc["generated"] == "2016-01-13T20:13:20Z"
    assert doc["entries"][0] == {"address": "2604:a880:1:20::a7:f007", "kind": "harvester",
                                 "comment": "lag 7 s", "evidence": {"scans": 3, "triggers": 5},
                                 "first_seen": "2016-01-13T19:32:25Z",
                                 "last_seen": "2016-01-13T20:01:19Z"}
    back = lists.parse(text.encode(), "j.json", LIM)
    assert back.format == "json"
    assert [(x.network, x.kind, x.comment, x.evidence, x.first_seen, x.last_seen)
            for x in back.entries] == [(e.network, e.kind, e.comment, e.evidence, e.first_seen,
                                        e.last_seen), (s.network, "scanner", "", (), None, None)]


def test_text_roundtrip():
    original = (RULES / "harvesters.txt").read_bytes()
    p = lists.parse(original, "h", LIM)
    again = lists.parse(lists.export_text(p.entries, "header\nline two").encode(), "h2", LIM)
    assert [(e.network, e.kind, e.comment) for e in again.entries] == sorted(
        [(e.network, e.kind, e.comment) for e in p.entries])


@pytest.mark.parametrize("doc, word", [
    ('{"format": "x", "version": 1, "entries": []}', "not an ntpguard list"),
    ('{"format": "ntpguard-list", "version": 2, "entries": []}', "unsupported version"),
    ('{"format": "ntpguard-list", "version": 1, "entries": {}}', "must be a list"),
    ('{"format": "ntpguard-list", "version": 1,\n "entries": [1,]}', "line 2: invalid JSON"),
    ('{"format": "ntpguard-list", "version": 1, "entries": [1]}', "entry 1: must be an object"),
    ('{"format": "ntpguard-list", "version": 1, "entries": [{"address": "2604:a880:1:20::1",'
     ' "kind": "harvester", "evidence": {"scans": -1}}]}', "non-negative"),
    ('{"format": "ntpguard-list", "version": 1, "entries": [{"address": "2604:a880:1:20::1",'
     ' "kind": "harvester", "first_seen": "2016-01-13T19:32:25"}]}', "no time zone"),
    ('{"format": "ntpguard-list", "version": 1, "entries": [{"address": "2604:a880:1:20::1",'
     ' "kind": "harvester"}, {"address": "2604:a880:1:20::1", "kind": "harvester"}]}',
     "entry 2: duplicate of entry 1"),
])
def test_json_validation(doc, word):
    problems = refused(doc.encode())
    assert any(word in p for p in problems), problems


def test_shipped_lists_are_valid_and_complete():
    h = lists.parse((RULES / "harvesters.txt").read_bytes(), "h", LIM)
    s = lists.parse((RULES / "scanners.txt").read_bytes(), "s", LIM)
    got = {e.address for e in h.entries}
    want = {f"{pre}{i:03x}" for pre in ("2604:a880:400:d0::9:b", "2604:a880:1:20::a7:f",
                                         "2a03:b0c0:3:d0::18:b") for i in range(1, 16)}
    assert got == want and all(e.kind == "harvester" for e in h.entries)
    assert [(e.address, e.kind) for e in s.entries] == [("2604:a880:800:10::/64", "scanner")]
    for e in h.entries + s.entries:
        assert "netpatterns.blogspot.com 2016-01-15" in e.comment
    for f in ("harvesters.txt", "scanners.txt"):
        assert "The Rising Sophistication of Network Scanning" in (RULES / f).read_text()


def test_builtin_switchable_off_and_load_all(tmp_path):
    on = config.parse("", "c.toml")
    names = [x.name for x in lists.load_all(on, str(tmp_path))]
    assert names == ["builtin-harvesters", "builtin-scanners"]
    off = config.parse("[lists]\nbuiltin = false\n", "c.toml")
    assert lists.load_all(off, str(tmp_path)) == []
    missing = config.parse(f'[lists]\nbuiltin_dir = "{tmp_path}/nope"\n', "c.toml")
    with pytest.raises(UsageError, match="cannot read shipped list"):
        lists.load_all(missing, str(tmp_path))


def test_store_keeps_last_good_copy(tmp_path):
    state = str(tmp_path)
    good = lists.parse(b"2604:a880:1:20::a7:f001 harvester\n", "g", LIM)
    path = lists.store(state, "mine", good, {"source": "g", "trust": "report"})
    assert path.endswith("lists/mine.txt") and os.path.exists(path)
    assert lists.read_meta(state, "mine")["sha256"] == good.sha256
    with pytest.raises(lists.ListError):
        lists.parse(b"2604:a880:1:20::a7:f001 harvester\nbad line here\n", "b", LIM)
    assert lists.load_stored(state, "mine", LIM).entries == good.entries
    loaded = [x for x in lists.load_all(config.Config(), state) if x.name == "mine"]
    assert loaded[0].trust == "report" and len(loaded[0].entries) == 1
    # Switching format replaces the other file, no temporary files are left behind.
    j = lists.parse(lists.export_json(good.entries, 0).encode(), "j", LIM)
    lists.store(state, "mine", j, {})
    assert sorted(os.listdir(tmp_path / "lists")) == ["mine.compiled", "mine.json",
                                                      "mine.meta.json"]
    assert lists.stored_names(state) == ["mine"]
    assert lists.remove_stored(state, "mine") and lists.stored_names(state) == []
    with pytest.raises(UsageError):
        lists.store(state, "../escape", good, {})


def test_export_from_verdicts_only_local_harvesters():
    history = [
        Verdict.of("2604:a880:1:20::a7:f007", "harvester", "detect",
                {"scans": 2, "triggers": 3, "scanners": ["2604:a880:800:10::970:a001"]}, 100.0),
        Verdict.of("2604:a880:1:20::a7:f007", "harvester", "detect", {"scans": 4}, 200.0),
        # A manual "clean" overrides detection.
        Verdict.of("2604:a880:1:20::a7:f009", "harvester", "detect", {}, 100.0),
        Verdict.of("2604:a880:1:20::a7:f009", "clean", "manual", {}, 150.0),
        # Other people's lists are not re-published.
        Verdict.of("2a03:b0c0:3:d0::18:b001", "harvester", "list:builtin-harvesters", {}, 100.0),
        Verdict.of("2604:a880:400:d0::9:b00d", "harvester", "manual", {"note": "saw it"}, 300.0),
    ]
    entries = lists.entries_from_verdicts(history)
    got = {(e.address, e.kind): e for e in entries}
    assert set(got) == {("2604:a880:1:20::a7:f007", "harvester"),
                        ("2604:a880:400:d0::9:b00d", "harvester"),
                        ("2604:a880:800:10::970:a001", "scanner")}
    f007 = got[("2604:a880:1:20::a7:f007", "harvester")]
    assert f007.evidence == (("scans", 4),) and (f007.first_seen, f007.last_seen) == (100, 200)
    assert got[("2604:a880:400:d0::9:b00d", "harvester")].comment == "manual: saw it"
    # What is exported is a valid list.
    lists.parse(lists.export_json(entries, 0).encode(), "x", LIM)


# -- config ---------------------------------------------------------------------------------------

SUB = '[[lists.subscriptions]]\nname = "peers"\nurl = "https://lists.example/h.txt"\n'


def test_config_subscriptions():
    c = config.parse(SUB + 'sha256 = "' + "AB" * 32 + '"\ntrust = "report"\n' + SUB.replace(
        "peers", "other"), "c.toml")
    a, b = c.lists.subscriptions
    assert (a.name, a.trust, a.sha256, a.max_entries) == ("peers", "report", "ab" * 32, 100000)
    assert b.name == "other" and b.timeout == 30.0


@pytest.mark.parametrize("text, key, word", [
    ('[[lists.subscriptions]]\nname = "x"\n', "lists.subscriptions[0].url", "missing"),
    (SUB.replace("https://", "http://"), "lists.subscriptions[0].url", "https://"),
    (SUB + 'sha256 = "abc"\n', "lists.subscriptions[0].sha256", "64 hex"),
    (SUB + "max_entries = 0\n", "lists.subscriptions[0].max_entries", "greater than 0"),
    (SUB + 'trust = "maybe"\n', "lists.subscriptions[0].trust", "one of"),
    (SUB + "colour = 1\n", "lists.subscriptions[0].colour", "unknown key"),
    (SUB + SUB, "lists.subscriptions", "two subscriptions"),
    (SUB.replace("peers", "Bad Name"), "lists.subscriptions[0].name", "lower-case"),
    (SUB.replace("peers", "builtin-x"), "lists.subscriptions", "builtin"),
    ("[lists]\nsubscriptions = [1, 2]\n", "lists.subscriptions", "array of tables"),
    ("[lists]\nsubscriptions = 3\n", "lists.subscriptions", "array of tables"),
    ("[timeconf]\ndaemon = \"systemd\"\n", "timeconf.daemon", "one of"),
    ("[timeconf]\nspread_v6 = 200\n", "timeconf.spread_v6", "prefix length"),
])
def test_config_errors(text, key, word):
    with pytest.raises(ConfigError) as exc:
        config.parse(text, "c.toml")
    assert exc.value.key == key and word in exc.value.problem


# -- streaming: a list parsed piece by piece as it arrives is parsed exactly as a whole ----------

LINES = [b"2604:a880:1:20::a7:f001 harvester # caf\xc3\xa9\r", b"2604:a880:800:10::/64 scanner",
         b"# comment", b"", b"  ", b"2001:db8::1 harvester", b"bad line here", b"\xff\xfe",
         b"2604:a880:1:20::a7:f001 scanner", b"2604:a880:1:20::2\rx", b"1.2.3.4 harvester\x00",
         b"\xe2\x82\xac", b"2604:a880:1:20::3 harvester", b"# a\rb", b"#\r", b"\t# x\x0b",
         b"# \xe2\x80\xa8 2604:a880:1:20::4 harvester", b"# \xff", b"#\x00", b"#" * 300,
         b"2604:a880:1:20::5 scanner\x0c2604:a880:1:20::6 scanner",
         b"; Spamhaus", b"2604:a880:1:20::7 scanner ; SBL1 # x",
         b'{"cidr": "2604:a880:1:20::8", "sblid": "SBL2", "kind": "scanner"}',
         b'{"type": "metadata", "records": 1}', b'{"cidr": 1}', b' {"address": "2604:a880:1:'
         b'20::a", "kind": "SCANNER"}', b'{"cidr": "2604:a880:1:20::b"']


def _parsed_in_pieces(raw: bytes, cuts: list[int], limits: lists.Limits) -> object:
    reader = lists.Reader("s", limits)
    previous = 0
    try:
        for cut in [*sorted(cuts), len(raw)]:
            reader.feed(raw[previous:cut])
            previous = cut
        p = reader.result()
    except lists.ListError as exc:
        return exc.problems
    return (p.format, p.sha256, [(e.network, e.kind, e.comment, e.line, e.evidence,
                                  e.first_seen) for e in p.entries])


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(st.sampled_from(LINES), max_size=12), st.booleans(),
                  st.lists(st.integers(min_value=0, max_value=400), max_size=6),
                  st.integers(min_value=1, max_value=12))
# UTF-16's BOM cut after its first byte (found on a slower machine's draw).
@hypothesis.example([b"\xff\xfe"], False, [1], 1)
@hypothesis.example([b"\xfe\xff2604:a880:1:20::1"], False, [1, 2], 1)
def test_text_fed_in_pieces_parses_as_a_whole(lines, bom, cuts, max_entries):
    raw = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines)
    limits = lists.Limits(max_entries=max_entries)
    cuts = [c % (len(raw) + 1) for c in cuts]
    assert _parsed_in_pieces(raw, cuts, limits) == _parsed_in_pieces(raw, [], limits)


ITEMS = ['{"address": "2604:a880:1:20::1", "kind": "harvester", "comment": "\\u00e9t\\u00e9 €",'
         ' "evidence": {"scans": 10}, "first_seen": "2016-01-13T19:32:25Z"}',
         '{"address": "2604:a880:800:10::/64", "kind": "scanner"}', "1", '"x"', "[[[[]]]]",
         '{"address": "2001:db8::1", "kind": "scanner"}', '{"address": 3}',
         '{"address": "2604:a880:1:20::1", "kind": "harvester"}', "12345678901234567890",
         '{"kind": "scanner", "address": "2604:a880:1:20::9", "evidence": {"a": -1}}']


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(st.sampled_from(ITEMS), max_size=8),
                  st.sampled_from(['"format": "ntpguard-list", "version": 1',
                                   '"version": 1, "x": [1, {"y": "}"}], "format": "ntpguard-list"',
                                   '"format": "other", "version": 1']),
                  st.sampled_from([" ", "\n  ", ""]),
                  st.sampled_from(["", "}", " x", "\n"]),
                  st.lists(st.integers(min_value=0, max_value=1000), max_size=6))
def test_json_fed_in_pieces_parses_as_a_whole(items, header, space, tail, cuts):
    raw = ("{" + header + "," + space + '"entries": [' + ("," + space).join(items) + "]}"
           + tail).encode()
    cuts = [c % (len(raw) + 1) for c in cuts]
    assert _parsed_in_pieces(raw, cuts, LIM) == _parsed_in_pieces(raw, [], LIM)


def test_json_caps_and_odd_values():
    head = b'{"format": "ntpguard-list", "version": 1, "entries": ['
    long_comment = b'{"address": "2604:a880:1:20::1", "kind": "harvester", "comment": "' \
        + b"a" * 20000 + b'"}]}'
    assert refused(head + long_comment) == [
        "line 1: a JSON value longer than 16384 bytes (not a list entry)"]
    assert refused(head + b"[" * 5000 + b"]" * 5000 + b"]}") == [
        "line 1: invalid JSON: nested too deeply"]
    assert refused(head + b"1" * 5000 + b"]}") == [
        "line 1: invalid JSON: a number with too many digits"]
    assert refused(b'{"format": "ntpguard-list", "version": 1, "entries": []} x') == [
        "line 1: invalid JSON: extra data after the list"]
    assert refused(b"x" * 70000) == ["line 1: longer than 65536 bytes (not a list)"]


def test_a_refusal_names_the_setting_behind_a_limit():
    """FireHOL level1 holds bogons and /8s on purpose: the refusal says which setting
    decides the limit, and nothing for problems no setting changes."""
    with pytest.raises(lists.ListError) as exc:
        lists.parse(b"5.134.128.0/19\n10.0.0.0/8\n192.168.0.0/16\n", "level1.netset",
                    lists.Limits(default_kind="scanner"))
    text = str(exc.value)
    assert text.endswith("(the prefix limits are [rules] max_prefix_v6 and max_prefix_v4; "
                         "reserved ranges (private, link-local...) are never listed: drop "
                         "those lines)")
    with pytest.raises(lists.ListError) as exc:
        lists.parse(b"5.134.128.0/19 sender\n", "x.txt", lists.Limits())
    assert str(exc.value).endswith("unknown kind 'sender' (harvester or scanner)")


@hypothesis.given(st.text(alphabet=st.sampled_from(
    list("a1:/ #\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\xe9"))))
def test_other_line_breaks_found_as_the_regex_finds_them(text):
    assert lists._other_break(text) == (lists._OTHER_BREAK.search(text) is not None)
