"""Shared harvester/scanner lists: parse, validate, store the last good copy, export.

Two formats (README "Shared lists"):

text   one entry a line: ADDRESS-OR-PREFIX KIND [# comment]; KIND is `harvester` or `scanner`
       (any case); blank lines and lines starting with `#` are ignored. The format of existing
       blocklists (maltrail's `IP # comment`; `;` starts a comment too, as in Spamhaus DROP's
       `1.10.16.0/20 ; SBL256894`), plus the kind column. A list without kinds can be read with a
       default kind (`list import --kind scanner`). A line that is a JSON object is an entry of
       JSON Lines, the format Spamhaus publishes DROP in since 2024 (`drop_v4.json`:
       `{"cidr": "1.10.16.0/20", "sblid": "SBL256894", "rir": "apnic"}` a line, then a
       `{"type": "metadata", ...}` one): its "cidr" (or "address"), "kind" and "sblid" (or
       "comment"); a "type": "metadata" line is skipped.
json   {"format": "ntpguard-list", "version": 1, "generated": ISO-8601, "entries": [
         {"address": "...", "kind": "...", "comment": "...", "evidence": {"NAME": count, ...},
          "first_seen": ISO-8601, "last_seen": ISO-8601}, ...]}

Validation is strict and all-or-nothing: a list with one bad line is refused as a whole (with
every problem's line number), because a list that is half applied is worse than the last good
copy, which stays in force. Parsing and exporting are pure; `store`/`load_stored` are the only
functions here that touch files.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
from array import array
from dataclasses import field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NoReturn, Optional

from ntpguard import compiled as compiled_mod
from ntpguard.addr import IPNetwork, nonglobal_reason_int, parse_prefix, parse_prefix_int
from ntpguard.compiled import Compiled, Part
from ntpguard.errors import UnsafePathError, UsageError
from ntpguard.files import (
    atomic_write,
    check_dir,
    check_file,
    ensure_dir,
    open_regular,
    read_chunks,
    read_regular,
)
from ntpguard.listfiles import builtin_paths, list_dir
from ntpguard.prefixes import BITS, Key, Networks, as_network, text_prefix
from ntpguard.records import record

if TYPE_CHECKING:
    from ntpguard.status import Verdict

KINDS = ("harvester", "scanner")
TRUSTS = ("enforce", "report")
JSON_FORMAT = "ntpguard-list"
JSON_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# Problems listed in one error message; the rest are counted (one line is the CLI's contract;
# `list import --json` and `list fetch --json` give every one).
_SHOWN_PROBLEMS = 20


_HINTS = (("broader than the limit", "the prefix limits are [rules] max_prefix_v6 and "
                                     "max_prefix_v4"),
          ("is not a global address", "reserved ranges (private, link-local...) are never "
                                      "listed: drop those lines"))


class ListError(UsageError):
    """A list that failed validation; never replaces the last good copy."""

    def __init__(self, source: str, problems: list[str]) -> None:
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        more = len(problems) - _SHOWN_PROBLEMS
        suffix = f"; and {more} more" if more > 0 else ""
        noun = "problem" if len(problems) == 1 else "problems"
        # Public lists (FireHOL level1) hold bogons and /8s on purpose; the admin's question
        # is which setting decides, and the answer is in the configuration, not in the list.
        hints = [hint for word, hint in _HINTS if any(word in p for p in problems)]
        hint = f" ({'; '.join(hints)})" if hints else ""
        super().__init__(f"{source}: list refused ({len(problems)} {noun}): {shown}{suffix}"
                         f"{hint}")
        self.source = source
        self.problems = problems


@record
class Entry:
    """One listed address or prefix. A single address is a /128 (or /32) network."""

    network: IPNetwork
    kind: str
    comment: str = ""
    line: int = 0  # where it came from (1-based line, or JSON entry index + 1); 0 = not parsed
    evidence: tuple[tuple[str, int], ...] = ()  # e.g. (("scans", 3), ("triggers", 5))
    first_seen: Optional[float] = None
    last_seen: Optional[float] = None

    @property
    def address(self) -> str:
        """The entry as written in lists: bare address for a single host, else CIDR."""
        n = self.network
        return str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)


@record
class Limits:
    """What a list may contain; from the [lists] config section or a subscription."""

    max_entries: int = 100_000
    min_prefixlen_v6: int = 32
    min_prefixlen_v4: int = 16
    allow_nonglobal: bool = False
    default_kind: str = ""  # kind for text lines that carry none; "" = a kind is required

    def key(self) -> str:
        """These limits as a string: a compiled list is valid only under the same ones."""
        return repr(self)


@record
class ParsedList:
    """A list that passed validation: its raw bytes (what is stored) and its compiled form.

    `entries` (one Entry object each, with comments and JSON evidence) is made on demand by
    parsing the bytes again: for showing and exporting a list, never for the rules."""

    format: str  # "text" or "json"
    sha256: str  # of the raw bytes as received
    raw: bytes = field(repr=False, default=b"")
    compiled: Compiled = field(repr=False, default_factory=lambda: Compiled("", "", ""),
                               compare=False)
    source: str = ""
    limits: Limits = field(default_factory=Limits)
    _entries: Optional[tuple[Entry, ...]] = field(default=None, repr=False, compare=False)

    @property
    def count(self) -> int:
        return self.compiled.count

    @property
    def entries(self) -> tuple[Entry, ...]:
        if self._entries is None:
            reader = Reader(self.source, self.limits, self.format, keep_entries=True)
            reader.feed(self.raw)
            object.__setattr__(self, "_entries", reader.result()._entries)
        assert self._entries is not None
        return self._entries


# -- parsing -------------------------------------------------------------------------------------

# Caps that keep a hostile list from costing more than its bytes (README "Security"). A line of
# a real list is an address, a kind and a comment, under 200 bytes; 64 KiB leaves room for any
# comment and still bounds what splitting one line costs.
MAX_LINE = 64 << 10
# One JSON entry (address, kind, comment, a few evidence counts, two times) is under 1 KiB. The
# stdlib decoder builds objects of ~20x the bytes they came from (a dict of short keys), so a
# value is only decoded once it is known to fit in this many bytes.
MAX_JSON_VALUE = 16 << 10
_BOM = b"\xef\xbb\xbf"
# UTF-16's, either byte order: what Windows Notepad saves as "Unicode" begins with one.
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_WS = frozenset(b" \t\r\n")
_NOT_WS = re.compile(rb"[^ \t\r\n]")
_NOT_BLANK = re.compile(rb"[^\xef\xbb\xbf \t\r\n]")  # the first byte after BOM and blanks
# Lines with no entry: blank, or a comment of up to 200 bytes (longer ones take the per-line
# path, which enforces MAX_LINE); and the line breaks str.splitlines() knows besides LF/CRLF.
_TRIVIAL_LINES = re.compile(rb"(?:\n+|[ \t]{0,64}#[^\n]{0,200}\n|[ \t]{1,64}\n)+")
_OTHER_BREAK = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_LONE_CR = re.compile("\r(?!\n)")


def _other_break(text: str) -> bool:
    """Whether `text` holds a line break other than LF and CRLF (_OTHER_BREAK), asked with
    substring tests where the text is ASCII (a list nearly always is): the regex walks every
    character, ~16 ms a MiB, ~5% of a whole 100k-entry `list import`; `in` is ~15 us a MiB."""
    if not text.isascii():
        return _OTHER_BREAK.search(text) is not None
    return ("\r" in text and _LONE_CR.search(text) is not None) or "\x0b" in text or \
        "\x0c" in text or "\x1c" in text or "\x1d" in text or "\x1e" in text
_MAX_DIGITS = 4300  # Python 3.11's default int_max_str_digits; 3.9 has no such limit


def _parse_int(digits: str) -> int:
    """An integer of at most _MAX_DIGITS digits: a longer one costs quadratic time to convert."""
    if len(digits) > _MAX_DIGITS:
        raise ValueError("too many digits")
    return int(digits)


_JSON = json.JSONDecoder(parse_int=_parse_int)
_MORE = object()  # "the value goes on past the bytes received so far"


# The keys that hold a JSON line's address, the first present wins: Spamhaus's, ntpguard's.
_ADDRESS_KEYS = ("cidr", "address")


def _json_lines(raw: bytes, start: int, final: bool) -> Optional[bool]:
    """Whether a list whose first byte (at `start`) is `{` is JSON Lines (read as text, line
    by line) rather than one JSON document: its first line is a whole JSON object with an
    address in it. None: too few bytes yet to tell. An ntpguard JSON list starts with `{` and
    a line break, or is one line whose object has no "cidr" or "address" but "format"."""
    end = raw.find(b"\n", start, start + MAX_LINE)
    if end < 0:
        if len(raw) - start >= MAX_LINE:
            return False  # no line of JSON Lines is that long
        if not final:
            return None
        end = len(raw)
    try:
        first = json.loads(bytes(raw[start:end]))
    except (ValueError, RecursionError):
        return False  # the JSON reader words what is wrong with it
    return isinstance(first, dict) and "format" not in first and any(
        key in first for key in _ADDRESS_KEYS)


def parse(raw: bytes, source: str, limits: Limits = Limits(), fmt: str = "auto") -> ParsedList:
    """Parse and validate a whole list; raise ListError naming every bad line."""
    reader = Reader(source, limits, fmt, keep_entries=True)
    reader.feed(raw)
    return reader.result()


# Text lines are taken a block of up to this many bytes at a time, decoded and split at C
# speed, wherever nothing in the block needs the line-by-line path's care.
_BLOCK = 1 << 20
_KIND_CODE = {"harvester": 0, "scanner": 1}


class Reader:
    """Parse and validate a list while its bytes arrive: feed(chunk)..., then result().

    feed() raises ListError at once when reading on is pointless or costly: more than
    max_entries entries (bad lines count too, so problems are bounded as well), a line or JSON
    value past its cap, bytes that are not UTF-8 text, broken JSON. Memory therefore stays
    within the bytes the caller let in (kept for the stored copy and its signature) plus
    max_entries entries, whatever the list holds. Every other problem is collected, and
    result() raises them together with their line (or entry) numbers.
    """

    def __init__(self, source: str, limits: Limits = Limits(), fmt: str = "auto",
                 keep_entries: bool = False) -> None:
        if fmt not in ("auto", "text", "json"):
            raise UsageError(f"unknown list format {fmt!r} (text or json)")
        self.source, self.limits, self.format = source, limits, fmt
        self._asked_format = fmt
        self._raw: Any = b""  # bytes, or a bytearray once a second chunk came
        self._hash = hashlib.sha256()
        self._pos = -1  # first byte not parsed yet; -1 until a BOM and the format are known
        self._bom = 0
        self._blank_to = 0  # auto format: bytes known to be BOM or blanks
        self._ended = False
        # Entry objects (with comments and JSON evidence) only when asked: 100k of them are
        # ~60 MB. Otherwise each valid entry is a key in _seen (one int: network, length,
        # family), its kind, number and (harvesters) comment by index.
        self.keep_entries = keep_entries
        self.entries: list[Entry] = []
        self.problems: list[str] = []
        self._seen: dict[int, int] = {}
        self._kinds = bytearray()
        self._numbers = array("I")
        self._comments: dict[int, str] = {}
        self._count = 0  # entries met, valid or not: what max_entries limits
        self._line = 0  # text: lines as str.splitlines() numbers them (LF, CRLF, CR, ...)
        self._lf_lines = 0  # text: LF-terminated lines, for encoding errors
        self._state = "start"  # json: where in {"key": value, "entries": [item, ...]} we are
        self._key: Any = ""
        self._header: dict[str, Any] = {}
        self._index = 0

    @property
    def raw(self) -> bytes:
        """The bytes received so far, exactly (what is stored and what a signature covers)."""
        return self._raw

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self._raw:
            self._raw = chunk
        else:
            if isinstance(self._raw, bytes):
                self._raw = bytearray(self._raw)
            self._raw += chunk
        self._hash.update(chunk)
        self._step(final=False)

    def end(self) -> None:
        """No more bytes: parse what is left (a last line without LF, the end of the JSON)."""
        if not self._ended:
            self._ended = True
            self._step(final=True)

    def result(self) -> ParsedList:
        self.end()
        if self.problems:
            raise ListError(self.source, self.problems)
        if not isinstance(self._raw, bytes):
            self._raw = bytes(self._raw)  # one copy of the list, not two (64 MiB at most)
        return ParsedList(self.format, self.sha256, self._raw, self.compiled(),
                          self.source, self.limits,
                          tuple(self.entries) if self.keep_entries else None)

    @property
    def count(self) -> int:
        """Valid entries so far."""
        return len(self._numbers)

    def compiled(self) -> Compiled:
        """The valid entries so far, packed and sorted by kind, IP version and length, and
        which lie inside another entry of their kind (one pass in sorted order). Written
        straight into bytes and arrays: lists of ints per group cost a 100k-entry import
        ~10 MB more at its peak."""
        kinds, numbers, comments, seen = self._kinds, self._numbers, self._comments, self._seen
        # The keys by kind and IP version (code << 1 | family bit), in one pass: a filtered
        # pass for each of the four took ~0.1 s of a 100k-entry import.
        buckets: list[list[int]] = [[], [], [], []]
        for key, index in seen.items():
            buckets[kinds[index] << 1 | key & 1].append(key)
        parts = []
        for code in (0, 1):
            # (family, length) → (packed networks, line numbers, comments), made in order.
            groups: dict[Key, tuple[bytearray, array, list[str]]] = {}
            inside: dict[Key, list[int]] = {}
            # A family at a time: IPv6 values below 2^32 (::/96) would sort among IPv4 ones.
            for fam_bit, fam in ((0, 4), (1, 6)):
                bits, width = BITS[fam], 16 if fam == 6 else 4
                last_net, last_len = -1, 0
                by_length: dict[int, tuple[bytearray, array, list[str]]] = {}
                keys = buckets[code << 1 | fam_bit]
                keys.sort()
                for key in keys:
                    length = key >> 1 & 0xFF
                    net = key >> 9
                    group = by_length.get(length)
                    if group is None:
                        group = by_length[length] = groups[(fam, length)] = (
                            bytearray(), array("I"), [])
                    packed = group[0]
                    if last_net >= 0 and net >> (bits - last_len) == \
                            last_net >> (bits - last_len):
                        inside.setdefault((fam, length), []).append(len(packed) // width)
                    else:
                        last_net, last_len = net, length
                    packed += net.to_bytes(width, "big")
                    index = seen[key]
                    group[1].append(numbers[index])
                    if code == 0:
                        group[2].append(comments.get(index, ""))
            notes = {k: v[2] for k, v in groups.items()} if code == 0 else None
            part = Part.of({}, {}, {}, notes)
            parts.append(Part({k: Networks(k[0], bytes(v[0])) for k, v in groups.items()},
                              {k: v[1] for k, v in groups.items()},
                              {k: tuple(v) for k, v in inside.items()}, part.comments))
        return Compiled(self.sha256, self.limits.key(),
                        self.format if self.format != "auto" else "text", parts[0], parts[1])

    # -- common ----------------------------------------------------------------------------------

    def _fatal(self, problem: str) -> NoReturn:
        self.problems.append(problem)
        raise ListError(self.source, self.problems)

    def _step(self, final: bool) -> None:
        if self._pos < 0 and not self._begin(final):
            return
        if self.format == "json":
            self._json(final)
        else:
            self._text(final)

    def _begin(self, final: bool) -> bool:
        """Skip a UTF-8 BOM (Windows editors) and pick the format; False: too few bytes yet."""
        raw = self._raw
        if len(raw) < len(_BOM) and not final and any(
                bom.startswith(bytes(raw)) for bom in (_BOM, *_UTF16_BOMS)):
            return False  # a BOM may be cut after its first byte or two
        self._bom = len(_BOM) if raw[:len(_BOM)] == _BOM else 0
        if raw[:2] in _UTF16_BOMS:
            # Every other byte NUL, so each line would be refused as binary; the cause is
            # one setting in the editor.
            self._fatal("line 1: UTF-16 text (an editor's \"Unicode\"): save the list as "
                        "UTF-8")
        if self.format in ("auto", "json"):
            # JSON starts with `{`, JSON Lines too (_json_lines tells them apart, and reads
            # them as text even with --format json: they are JSON); everything else is text.
            # Searched from where the last chunk's search ended (a list of nothing but 64 MiB
            # of blanks must not be rescanned from the start each chunk).
            first = _NOT_BLANK.search(raw, self._blank_to)
            if first is None and not final:
                self._blank_to = len(raw)
                return False
            fmt = "text" if self.format == "auto" else "json"
            if first is not None and raw[first.start()] == ord("{"):
                lines = _json_lines(raw, first.start(), final)
                if lines is None:
                    return False
                fmt = "text" if lines else "json"
            self.format = fmt
        self._pos = self._bom
        return True

    def _counted(self, where: str) -> None:
        """Count one entry met (valid or not); fatal past max_entries. (The text path counts
        inline and calls this only once past the limit.)"""
        if self._count <= self.limits.max_entries:
            self._count += 1
        if self._count > self.limits.max_entries:
            self._fatal(f"{where}: more than max_entries {self.limits.max_entries} entries "
                        "(the rest was not read)")

    def _add(self, address: str, kind: str, comment: str, number: int, unit: str,
             extra: tuple[tuple[tuple[str, int], ...], Optional[float], Optional[float]]
             = ((), None, None)) -> None:
        """Validate one entry; keep it unless an earlier one has the same network."""
        code = _KIND_CODE.get(kind)
        if code is None and kind.lower() in _KIND_CODE:  # `SCANNER`, `Harvester`
            kind = kind.lower()
            code = _KIND_CODE[kind]
        if code is None:
            self.problems.append(f"{unit} {number}: unknown kind {kind!r} (harvester or "
                                 "scanner)")
            return
        limits = self.limits
        try:
            fam, value, length = parse_prefix_int(address, limits.min_prefixlen_v6,
                                                  limits.min_prefixlen_v4)
        except UsageError as exc:
            self.problems.append(f"{unit} {number}: {exc}")
            return
        if not limits.allow_nonglobal:
            # Both ends: a prefix may start in global space and reach into a reserved block.
            last = value | ((1 << (BITS[fam] - length)) - 1)
            why = nonglobal_reason_int(fam, value) or nonglobal_reason_int(fam, last)
            if why:
                self.problems.append(f"{unit} {number}: {address} is not a global address "
                                     f"({why})")
                return
        # Sorts by family, then network, then length: the order a collapse walks.
        key = ((value << 8 | length) << 1 | 1) if fam == 6 else (value << 8 | length) << 1
        first = self._seen.get(key)
        if first is None:
            index = len(self._numbers)
            self._seen[key] = index
            self._kinds.append(code)
            self._numbers.append(number)
            if code == 0 or self.keep_entries:
                self._comments[index] = comment
            if self.keep_entries:
                self.entries.append(Entry(as_network(fam, value, length), kind, comment,
                                          number, *extra))
            return
        shown = text_prefix(fam, value, length)
        if self._kinds[first] == code:
            self.problems.append(f"{unit} {number}: duplicate of {unit} "
                                 f"{self._numbers[first]} ({shown})")
        else:
            self.problems.append(f"{unit} {number}: {shown} is listed as {kind} here and as "
                                 f"{KINDS[self._kinds[first]]} on {unit} "
                                 f"{self._numbers[first]}")

    # -- text ------------------------------------------------------------------------------------

    def _text(self, final: bool) -> None:
        buf = self._raw
        while self._pos < len(buf):
            if self._skip_trivial_lines() or self._text_block():
                continue
            end = buf.find(b"\n", self._pos)
            if end < 0:
                if len(buf) - self._pos > MAX_LINE:
                    self._fatal(f"line {self._lf_lines + 1}: longer than {MAX_LINE} bytes "
                                "(not a list)")
                if not final:
                    return
                end = len(buf)
            if end - self._pos > MAX_LINE:
                self._fatal(f"line {self._lf_lines + 1}: longer than {MAX_LINE} bytes "
                            "(not a list)")
            self._text_line(buf[self._pos:end], self._pos)
            self._pos = end + 1

    def _skip_trivial_lines(self) -> bool:
        """Pass a run of blank and comment lines at C speed (a flood of 8 MiB of empty lines
        took 7 s of CPU line by line), numbering them as the line-by-line path would: runs
        that are not UTF-8, hold a NUL or another line break than LF/CRLF go that path."""
        buf, start = self._raw, self._pos
        run = _TRIVIAL_LINES.match(buf, start, min(len(buf), start + (1 << 20)))
        if run is None:
            return False
        try:
            text = buf[start:run.end()].decode("utf-8")
        except UnicodeDecodeError:
            return False
        if "\x00" in text or _other_break(text):
            return False
        lines = text.count("\n")
        self._lf_lines += lines
        self._line += lines
        self._pos = run.end()
        return True

    def _text_block(self) -> bool:
        """The whole lines of up to _BLOCK bytes at once (a list's bulk: ~1 µs a line less
        than one by one), where nothing in them needs the line-by-line path, which words the
        problems: bytes that are not UTF-8, a NUL, another line break than LF or CRLF, a line
        that may be past MAX_LINE. False: take the line-by-line path here."""
        buf, start = self._raw, self._pos
        end = buf.rfind(b"\n", start, min(len(buf), start + _BLOCK))
        if end < 0:
            return False
        try:
            text = bytes(buf[start:end + 1]).decode("utf-8")
        except UnicodeDecodeError:
            return False
        if "\x00" in text or _other_break(text):
            return False
        lines = text.split("\n")
        lines.pop()  # the empty rest after the last LF
        if max(map(len, lines)) > MAX_LINE // 4:  # 4 bytes at most per character
            return False
        number = self._line
        entry = self._text_entry
        for line in lines:
            number += 1
            if line and line[0] != "#" and line[0] != ";":
                entry(line, number)
        self._line = number
        self._lf_lines += len(lines)
        self._pos = end + 1
        return True

    def _text_line(self, data: bytes, offset: int) -> None:
        self._lf_lines += 1
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._fatal(f"line {self._lf_lines}: not valid UTF-8 "
                        f"(byte {offset - self._bom + exc.start})")
        if "\x00" in text:
            self._fatal(f"line {self._lf_lines}: NUL byte (a binary file, not a list)")
        # The same numbering as splitlines() of the whole text: a lone CR also ends a line.
        for line in text.splitlines() or [""]:
            self._line += 1
            self._text_entry(line, self._line)

    def _text_entry(self, line: str, number: int) -> None:
        body, mark, comment = line.partition("#")
        if ";" in body:  # Spamhaus DROP's "1.10.16.0/20 ; SBL256894" and "; header" lines
            body, _, before = body.partition(";")
            comment = before + mark + comment
        fields = body.split()
        if not fields:
            return
        if fields[0][0] == "{":  # tested here, not first: 100k lines are text
            self._json_line(line, number)
            return
        self._count += 1
        if self._count > self.limits.max_entries:
            self._counted(f"line {number}")
        if len(fields) > 2:
            self.problems.append(f"line {number}: expected ADDRESS KIND [# comment], "
                                 f"got {line.strip()!r}")
            return
        kind = fields[1] if len(fields) == 2 else self.limits.default_kind
        if not kind:
            self.problems.append(f"line {number}: no kind (harvester or scanner) after "
                                 f"{fields[0]!r}")
            return
        self._add(fields[0], kind, comment.strip(), number, "line")

    def _json_line(self, line: str, number: int) -> None:
        """One line of JSON Lines (see the module's docstring)."""
        try:
            item = _JSON.decode(line)
        except RecursionError:
            self.problems.append(f"line {number}: invalid JSON: nested too deeply")
            return
        except ValueError as exc:  # JSONDecodeError, or _parse_int's limit
            self.problems.append(f"line {number}: invalid JSON: "
                                 f"{getattr(exc, 'msg', 'a number with too many digits')}")
            return
        found = [item[key] for key in _ADDRESS_KEYS if key in item] \
            if isinstance(item, dict) else []
        if not found and isinstance(item, dict) and item.get("type") == "metadata":
            return  # Spamhaus's last line: when, how many, the copyright
        where = f"line {number}"
        self._counted(where)
        if not isinstance(item, dict):
            self.problems.append(f"{where}: a JSON line must be an object")
            return
        address = found[0] if found else None
        kind = item.get("kind", self.limits.default_kind)
        comment = item.get("sblid", item.get("comment", ""))
        if not isinstance(address, str):
            self.problems.append(f'{where}: no "cidr" or "address" string in the object')
            return
        if not isinstance(kind, str) or not kind:
            self.problems.append(f"{where}: no kind (harvester or scanner) for {address!r}")
            return
        if not isinstance(comment, str) or "\n" in comment:
            self.problems.append(f'{where}: "sblid" and "comment" must be one-line strings')
            return
        self._add(address, kind, comment, number, "line")

    # -- json ------------------------------------------------------------------------------------

    def _line_at(self, pos: int) -> int:
        return self._raw.count(b"\n", 0, pos) + 1

    def _bad_json(self, pos: int, message: str, lines_on: int = 0) -> NoReturn:
        self._fatal(f"line {self._line_at(pos) + lines_on}: invalid JSON: {message}")

    def _json(self, final: bool) -> None:
        """One step of {"format": ..., "version": ..., "entries": [ITEM, ...]} at a time;
        each key, value and ITEM is decoded on its own (see _json_value)."""
        buf = self._raw
        while True:
            found = _NOT_WS.search(buf, self._pos)
            pos = self._pos = found.start() if found else len(buf)
            if pos >= len(buf):
                if final and self._state != "done":
                    self._bad_json(pos, "the list ends early")
                if final:
                    self._json_header_ok(final=True)
                return
            char, state = buf[pos:pos + 1], self._state
            # The entries first: they are what a list is made of (100k of them, 2 steps each).
            if state == "item," and char == b",":
                self._advance("item!")
            elif state in ("item", "item!") and not (state == "item" and char == b"]"):
                item = self._json_value(final)
                if item is _MORE:
                    return
                self._index += 1
                self._json_entry(item, self._index)
                self._state = "item,"
            elif state in ("item", "item,") and char == b"]":
                self._advance("next")
            elif state == "item,":
                self._bad_json(pos, "expected ',' or ']' after an entry")
            elif state == "done":
                self._bad_json(pos, "extra data after the list")
            elif state == "start":
                if char != b"{":
                    self._fatal(f'not an ntpguard list (a JSON object with "format": '
                                f'"{JSON_FORMAT}")')
                self._advance("key")
            elif state == "key" and char == b"}":
                self._advance("done")
            elif state in ("key", "key!"):
                if char != b'"':
                    self._bad_json(pos, "expected a property name in double quotes")
                key = self._json_value(final)
                if key is _MORE:
                    return
                self._key, self._state = key, "colon"
            elif state == "colon":
                if char != b":":
                    self._bad_json(pos, "expected ':'")
                if self._key == "entries":
                    self._state = "entries"
                    self._pos += 1
                else:
                    self._advance("value")
            elif state == "entries" and char == b"[":
                self._header["entries"] = []
                self._advance("item")
            elif state in ("value", "entries"):
                value = self._json_value(final)
                if value is _MORE:
                    return
                self._header[self._key] = value
                self._json_header_ok(final=False)
                self._state = "next"
            elif state == "next":
                if char not in (b",", b"}"):
                    self._bad_json(pos, "expected ',' or '}'")
                self._advance("key!" if char == b"," else "done")

    def _advance(self, state: str) -> None:
        self._pos += 1
        self._state = state

    def _json_value(self, final: bool) -> Any:
        """Decode the JSON value at _pos and move past it, or return _MORE if it may go on
        past the bytes received so far. A value is decoded from a window of 256 bytes, grown
        4-fold while the value does not end inside it, up to MAX_JSON_VALUE."""
        buf, start, size = self._raw, self._pos, 256
        while True:
            window = buf[start:start + size]
            if not isinstance(window, bytes):
                window = bytes(window)
            more_here = start + len(window) < len(buf)  # the buffer goes on past the window
            cut = more_here or not final
            # Where bytes that are not text start (not UTF-8, or a NUL): the value must end
            # before them. (What follows the value is met where the reading gets to it,
            # however the list was cut into pieces.)
            bad, why = None, ""
            nul = window.find(b"\x00")
            if nul >= 0:
                window = window[:nul]
                bad, why = start + nul, "NUL byte (a binary file, not a list)"
            try:
                text = window.decode("utf-8")
            except UnicodeDecodeError as exc:
                if not (cut and exc.end == len(window) and exc.reason == "unexpected end of data"
                        and bad is None):
                    bad = start + exc.start
                    why = f"not valid UTF-8 (byte {bad - self._bom})"
                text = window[:exc.start].decode("utf-8")  # a character cut at the window's end
            try:
                value, end = _JSON.raw_decode(text)
            except RecursionError:
                self._bad_json(start, "nested too deeply")
            except json.JSONDecodeError as exc:
                if bad is not None:  # the value went on into them (or broke before them)
                    self._fatal(f"line {self._line_at(bad)}: {why}")
                if not (cut and _value_end(window) is None):
                    self._bad_json(start, exc.msg, exc.lineno - 1)
            except ValueError:  # _parse_int's limit
                self._bad_json(start, "a number with too many digits")
            else:
                # A value ending right at a cut may go on (`1` of `10`): only a delimiter after
                # it says it is whole (or bytes that cannot continue it).
                if bad is not None or not (cut and end == len(text)):
                    self._pos = start + (end if text.isascii()
                                         else len(text[:end].encode("utf-8")))
                    return value
            # The value goes on past the window.
            if not more_here:
                return _MORE
            if size >= MAX_JSON_VALUE:
                self._fatal(f"line {self._line_at(start)}: a JSON value longer than "
                            f"{MAX_JSON_VALUE} bytes (not a list entry)")
            size *= 4

    def _json_header_ok(self, final: bool) -> None:
        """The document's own keys, as soon as each is known (all of them at the end)."""
        doc = self._header
        if (final or "format" in doc) and doc.get("format") != JSON_FORMAT:
            self._fatal(f'not an ntpguard list (no "format": "{JSON_FORMAT}")')
        if (final or "version" in doc) and doc.get("version") != JSON_VERSION:
            self._fatal(f"unsupported version {doc.get('version')!r} "
                        f"(this ntpguard reads {JSON_VERSION})")
        if (final or "entries" in doc) and not isinstance(doc.get("entries"), list):
            self._fatal('"entries" must be a list')

    def _json_entry(self, item: Any, index: int) -> None:
        where = f"entry {index}"
        self._counted(where)
        if not isinstance(item, dict):
            self.problems.append(f"{where}: must be an object")
            return
        address, kind = item.get("address"), item.get("kind")
        comment = item.get("comment", "")
        if not isinstance(address, str) or not isinstance(kind, str):
            self.problems.append(f'{where}: "address" and "kind" must be strings')
            return
        if not isinstance(comment, str) or "\n" in comment:
            self.problems.append(f'{where}: "comment" must be a one-line string')
            return
        try:
            evidence = _evidence(item.get("evidence", {}))
            first = _timestamp(item.get("first_seen"), "first_seen")
            last = _timestamp(item.get("last_seen"), "last_seen")
        except ValueError as exc:
            self.problems.append(f"{where}: {exc}")
            return
        self._add(address, kind, comment, index, "entry", (evidence, first, last))


_JSON_TOKEN = re.compile(rb'["\[\]{},]')
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _value_end(window: bytes) -> Optional[int]:
    """Where the JSON value at the start of `window` ends (the ',', ']' or '}' after it), or
    None if it does not end inside the window. Only strings and brackets are looked at."""
    depth, i = 0, 0
    while True:
        m = _JSON_TOKEN.search(window, i)
        if m is None:
            return None
        char = window[m.start()]
        if char == ord('"'):
            s = _JSON_STRING.match(window, m.start())
            if s is None:
                return None
            i = s.end()
            continue
        if char in b"[{":
            depth += 1
        elif depth == 0:
            return m.start()
        elif char in b"]}":
            depth -= 1
        i = m.end()


def _evidence(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise ValueError('"evidence" must map names to counts (non-negative integers)')
    return tuple(sorted(value.items()))


def _timestamp(value: Any, key: str) -> Optional[float]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f'"{key}" must be an ISO 8601 time string')
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f'"{key}": not an ISO 8601 time: {value!r}') from None
    if parsed.tzinfo is None:
        raise ValueError(f'"{key}": {value!r} has no time zone (add Z for UTC)')
    return parsed.timestamp()


def iso(ts: Optional[float]) -> Optional[str]:
    """UTC ISO 8601 with a Z, the form the JSON format writes."""
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- export --------------------------------------------------------------------------------------


def _sorted(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.kind, e.network.version, e.network))


def export_text(entries: Iterable[Entry], header: str = "") -> str:
    """The text format; parse(export_text(x)) gives x back (less evidence and times)."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    for e in _sorted(entries):
        comment = f" # {e.comment}" if e.comment else ""
        lines.append(f"{e.address} {e.kind}{comment}")
    return "\n".join(lines) + "\n"


def export_json(entries: Iterable[Entry], generated: float) -> str:
    items = []
    for e in _sorted(entries):
        item: dict[str, Any] = {"address": e.address, "kind": e.kind}
        if e.comment:
            item["comment"] = e.comment
        if e.evidence:
            item["evidence"] = dict(e.evidence)
        if e.first_seen is not None:
            item["first_seen"] = iso(e.first_seen)
        if e.last_seen is not None:
            item["last_seen"] = iso(e.last_seen)
        items.append(item)
    doc = {"format": JSON_FORMAT, "version": JSON_VERSION, "generated": iso(generated),
           "entries": items}
    return json.dumps(doc, indent=1) + "\n"


# -- stored copies -------------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsageError(f"list name {name!r}: use lower-case letters, digits, '.', '_', '-' "
                         "(up to 63, starting with a letter or digit)")
    return name


# Largest stored copy read back: the largest any fetch or import lets in (a subscription's
# max_bytes is at most 64 MiB, `list import` takes at most 64 MiB).
MAX_STORED_BYTES = 64 << 20
# A .meta.json is a dozen short keys.
MAX_META_BYTES = 1 << 20


def _checked_dir(state_dir: str, create: bool = False) -> Optional[str]:
    """STATE/lists after files.check_dir (created first if asked); None if it does not exist.

    The lists in it become firewall rules: a `lists` link or a directory another user can write
    to would let them choose what ntpguard enforces, or where it writes.
    """
    directory = list_dir(state_dir)
    if create:
        try:
            ensure_dir(directory, 0o755)
        except OSError as exc:
            raise UsageError(f"{directory}: cannot create: {exc.strerror}") from None
    elif not os.path.lexists(directory):
        return None
    else:
        check_dir(directory)
    return directory


def store(state_dir: str, name: str, parsed: ParsedList, meta: dict[str, Any]) -> str:
    """Keep a validated list as STATE/lists/NAME.{txt,json} with NAME.compiled and
    NAME.meta.json beside it.

    Only call with a list that `parse` accepted: this is what makes it the "last good copy".
    The list is written before its compiled form and its metadata, so a crash between them
    leaves a compiled form or metadata that describe an older copy (the compiled form says
    which copy it was built from, and is built again; a refetch without ETag fixes the
    metadata), never a list without validation.
    """
    check_name(name)
    directory = _checked_dir(state_dir, create=True)
    assert directory is not None
    try:
        ext = "json" if parsed.format == "json" else "txt"
        path = os.path.join(directory, f"{name}.{ext}")
        atomic_write(path, parsed.raw)
        _write_compiled(os.path.join(directory, f"{name}{COMPILED_EXT}"),
                        parsed.compiled.with_source(compiled_mod.identity(os.lstat(path))))
        other = os.path.join(directory, f"{name}.{'txt' if ext == 'json' else 'json'}")
        full = dict(meta, format=parsed.format, sha256=parsed.sha256, entries=parsed.count)
        atomic_write(os.path.join(directory, f"{name}.meta.json"),
                      (json.dumps(full, indent=1, sort_keys=True) + "\n").encode())
        if os.path.lexists(other):
            os.unlink(other)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot store list {name}: {exc.strerror}") from None
    return path


COMPILED_EXT = ".compiled"


def _write_compiled(path: str, c: Compiled) -> None:
    """Best effort: a compiled form that is not written is built again when next needed. Not
    synced (the list itself is): after a crash it is whole (its CRC) and names the very copy
    it was built from, or it is built again."""
    with contextlib.suppress(OSError):
        atomic_write(path, compiled_mod.dumps(c), durable=False)


# Compiled forms read in this process, by path, with the identity of the file they came from:
# a sync loads the lists in force four times (statuses, canaries, rules, the summary), ~25 ms
# each for a 100k-entry list.
_READ: dict[str, tuple[tuple[int, ...], Compiled]] = {}


def _read_compiled(path: str) -> Optional[Compiled]:
    """The compiled form in `path`, None if there is none or it is damaged (or not a regular
    file: nothing is followed or trusted there)."""
    try:
        st = os.lstat(path)
        seen = _READ.get(path)
        if seen is not None and seen[0] == compiled_mod.identity(st):
            return seen[1]
        c = compiled_mod.loads(read_regular(path, compiled_mod.MAX_BYTES))
    except (OSError, UnsafePathError, compiled_mod.Damaged):
        return None
    # Remembered under the identity seen before the read: a file replaced meanwhile has
    # another one, and is read again next time.
    _READ[path] = (compiled_mod.identity(st), c)
    return c


def store_meta(state_dir: str, name: str, meta: dict[str, Any]) -> None:
    """Rewrite only the metadata (e.g. the time of a 304 check); the list stays as it is."""
    directory = _checked_dir(state_dir, create=True)
    assert directory is not None
    path = os.path.join(directory, f"{check_name(name)}.meta.json")
    try:
        atomic_write(path, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def read_meta(state_dir: str, name: str) -> dict[str, Any]:
    """NAME.meta.json, or {} if there is none or it is not a JSON object; an unsafe directory
    or file (a link, a FIFO, ...) is an UnsafePathError."""
    directory = _checked_dir(state_dir)
    if directory is None:
        return {}
    path = os.path.join(directory, f"{name}.meta.json")
    try:
        meta = json.loads(read_regular(path, MAX_META_BYTES))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def stored_names(state_dir: str) -> list[str]:
    directory = _checked_dir(state_dir)
    if directory is None:
        return []
    names = set()
    for f in os.listdir(directory):
        base, ext = os.path.splitext(f)
        if ext in (".txt", ".json") and not f.endswith(".meta.json") and not f.startswith("."):
            names.add(base)
    return sorted(names)


def stored_path(state_dir: str, name: str) -> Optional[tuple[str, str]]:
    """(path, format) of the stored copy of list NAME, None if there is none."""
    directory = _checked_dir(state_dir)
    if directory is None:
        return None
    for ext, fmt in (("txt", "text"), ("json", "json")):
        path = os.path.join(directory, f"{name}.{ext}")
        if os.path.lexists(path):
            return path, fmt
    return None


def _read_copy(path: str) -> tuple[bytes, os.stat_result]:
    """A stored copy's bytes and the identity of the very file they came from."""
    try:
        with open_regular(path, MAX_STORED_BYTES) as fh:
            st = os.fstat(fh.fileno())
            return b"".join(read_chunks(fh, path, MAX_STORED_BYTES)), st
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def load_stored(state_dir: str, name: str, limits: Limits) -> Optional[ParsedList]:
    """The last good copy of list NAME, re-validated, or None if there is none."""
    found = stored_path(state_dir, name)
    if found is None:
        return None
    path, fmt = found
    return parse(_read_copy(path)[0], path, limits, fmt)


def load_compiled(state_dir: str, name: str, limits: Limits, write: bool = True
                  ) -> Optional[Compiled]:
    """The compiled form of stored list NAME under `limits`, None if there is no copy.

    The NAME.compiled file is used when it provably describes the stored copy: built under
    the same limits, from a copy with this file identity (or, if the identity changed, the
    same SHA-256: the copy is hashed again), whole (its CRC). Otherwise the copy is validated
    again (ListError if it no longer passes, e.g. under stricter limits) and the compiled form
    written back when `write` (a reader that may not write just uses it).
    """
    found = stored_path(state_dir, name)
    if found is None:
        return None
    path, fmt = found
    directory = os.path.dirname(path)
    cpath = os.path.join(directory, f"{name}{COMPILED_EXT}")
    st = check_file(path)
    if st is None:
        return None
    key = limits.key()
    have = _read_compiled(cpath)
    if have is not None and have.limits == key:
        if have.source == compiled_mod.identity(st):
            return have
        raw, st = _read_copy(path)
        if hashlib.sha256(raw).hexdigest() == have.sha256:
            fresh = have.with_source(compiled_mod.identity(st))
            if write:
                _write_compiled(cpath, fresh)
            return fresh
    else:
        raw, st = _read_copy(path)
    reader = Reader(path, limits, fmt)
    reader.feed(raw)
    fresh = reader.result().compiled.with_source(compiled_mod.identity(st))
    if write:
        _write_compiled(cpath, fresh)
    return fresh


def remove_stored(state_dir: str, name: str) -> bool:
    directory = _checked_dir(state_dir)
    if directory is None:
        return False
    removed = False
    for suffix in (".txt", ".json", ".meta.json", COMPILED_EXT):
        path = os.path.join(directory, name + suffix)
        if os.path.lexists(path):
            os.unlink(path)
            removed = suffix != COMPILED_EXT or removed
    return removed


# -- the lists in force --------------------------------------------------------------------------

@record
class LoadedList:
    """A list in force: its name (`builtin-harvesters`, a subscription, an import) and trust.

    trust "enforce": entries count as evidence for verdicts and rules (below manual marks and
    local evidence); "report": shown by `list show`/`explain` only. Its entries are held
    compiled (packed, by kind and length); `entries` reads and parses the copy again.
    """

    name: str
    trust: str
    compiled: Compiled
    origin: str  # file or URL it came from
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    path: str = ""  # the stored (or shipped) copy
    limits: Limits = field(default_factory=Limits, compare=False)
    format: str = "text"

    @property
    def count(self) -> int:
        return self.compiled.count

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry with its comment and evidence, from the copy (for showing it)."""
        return parse(_read_copy(self.path)[0], self.path, self.limits, self.format).entries


def limits_for(config: Any, max_entries: Optional[int] = None, kind: str = "") -> Limits:
    """Limits from the [lists] and [rules] sections (prefix limits are shared with the rules)."""
    rules = getattr(config, "rules", None)
    return Limits(
        max_entries=max_entries if max_entries is not None else config.lists.max_entries,
        min_prefixlen_v6=getattr(rules, "max_prefix_v6", 32),
        min_prefixlen_v4=getattr(rules, "max_prefix_v4", 16),
        allow_nonglobal=config.lists.allow_nonglobal,
        default_kind=kind,
    )


def load_builtin(config: Any) -> list[LoadedList]:
    """The shipped lists; [lists] builtin = false switches them off. They are a few dozen
    entries: parsed on every use, never compiled to a file (their directory is not ours)."""
    out = []
    limits = limits_for(config)
    for path in builtin_paths(config):
        try:
            raw = read_regular(path, MAX_STORED_BYTES)
        except OSError as exc:
            raise UsageError(f"{path}: cannot read shipped list: {exc.strerror} "
                             "(set [lists] builtin_dir, or builtin = false)") from None
        reader = Reader(path, limits, "text")
        reader.feed(raw)
        parsed = reader.result()
        name = "builtin-" + os.path.basename(path).rsplit(".", 1)[0]
        out.append(LoadedList(name, config.lists.builtin_trust, parsed.compiled, path, {},
                              path, limits, "text"))
    return out


def stored_settings(config: Any, name: str, meta: Mapping[str, Any]) -> tuple[Limits, str]:
    """(limits, trust) a stored list is held to: its subscription's, else its import's."""
    sub = next((s for s in config.lists.subscriptions if s.name == name), None)
    if sub is not None:
        return limits_for(config, sub.max_entries, sub.kind), sub.trust
    trust = meta.get("trust") if meta.get("trust") in TRUSTS else "enforce"
    return limits_for(config, kind=str(meta.get("kind", ""))), str(trust)


def load_all(config: Any, state_dir: str, write: bool = True) -> list[LoadedList]:
    """Every list in force: shipped, subscribed and imported (their last good copies,
    compiled; `write`: a compiled form built again may be written back)."""
    out = load_builtin(config)
    for name in stored_names(state_dir):
        meta = read_meta(state_dir, name)
        limits, trust = stored_settings(config, name, meta)
        found = stored_path(state_dir, name)
        compiled = load_compiled(state_dir, name, limits, write)
        if compiled is not None and found is not None:
            out.append(LoadedList(name, trust, compiled, str(meta.get("source", "")), meta,
                                  found[0], limits, found[1]))
    return out


# -- export from local verdicts ------------------------------------------------------------------


PUBLISHABLE = ("harvester", "suspect")


def entries_from_verdicts(history: Iterable[Verdict], statuses: Iterable[str] = ("harvester",),
                          seen: Optional[Mapping[str, tuple[float, float]]] = None,
                          scanners: bool = True) -> list[Entry]:
    """This host's own findings as list entries: what `list export` and `[publish]` publish.

    Only local sources (manual marks, canaries, detection, probes) count: re-publishing other
    people's lists would launder them into "evidence" on every host that subscribes. A server
    is exported when its effective status from local sources alone (ntpguard.status) is one of
    `statuses` (harvester, and suspect if asked: a list knows only the kind `harvester`, so a
    suspect's comment says what it is). Its evidence is the integer fields of the deciding
    verdict (detection: positive, negative, sole) and `canary`, how many of its canaries were
    scanned; first and last seen are the first and last scan it may have triggered (`seen`,
    from the stored scans), else the times of its verdicts. With `scanners`, scanner addresses
    or prefixes a harvester verdict names under "scanners" are exported as `scanner` entries.
    """
    from ntpguard.status import Status, effective, local_only

    wanted = {Status(s) for s in statuses}
    latest: dict[str, dict[str, Verdict]] = {}
    local: dict[str, list[Verdict]] = {}
    for v in sorted(history, key=lambda v: v.time):
        if v.source.local:
            latest.setdefault(v.address, {})[str(v.source)] = v
            local.setdefault(v.address, []).append(v)
    convicted: list[str] = []
    found: dict[IPNetwork, Entry] = {}
    for address, s in effective(local_only(latest)).items():
        decided = s.verdict
        if decided is None or s.status not in wanted:
            continue
        net = parse_prefix(address, 0, 0)
        times = [v.time for v in local[address] if v.status == s.status] or [decided.time]
        counts = {k: n for k, n in decided.evidence.items()
                  if isinstance(n, int) and not isinstance(n, bool) and n >= 0}
        canaries = {v.evidence.get("canary") for v in local[address]
                    if v.source.kind == "canary" and v.status == Status.HARVESTER}
        if canaries:
            counts["canary"] = len(canaries)
        note = decided.evidence.get("note")
        comment = f"{decided.source}: {note}" if isinstance(note, str) and note else \
            str(decided.source)
        if s.status != Status.HARVESTER:
            comment = f"{s.status}, {comment}"
        first, last = (seen or {}).get(address, (min(times), max(times)))
        found[net] = Entry(net, "harvester", comment.replace("\n", " "), 0,
                           tuple(sorted(counts.items())), first, last)
        if s.status == Status.HARVESTER:
            convicted.append(address)
    listed: dict[IPNetwork, Entry] = {}
    for address in convicted if scanners else ():
        for v in local[address]:
            named = v.evidence.get("scanners") if v.status == Status.HARVESTER else None
            for text in named if isinstance(named, list) else []:
                try:
                    snet = parse_prefix(str(text), 0, 0)
                except UsageError:
                    continue
                old = listed.get(snet)
                first = v.time if old is None else min(old.first_seen or v.time, v.time)
                last = v.time if old is None else max(old.last_seen or v.time, v.time)
                listed[snet] = Entry(snet, "scanner", f"scanned after {address}", 0, (),
                                     first, last)
    return list(found.values()) + [s for n, s in listed.items() if n not in found]


def scan_times(scans: Iterable[Any]) -> dict[str, tuple[float, float]]:
    """Server → (first, last) start of a scan that followed a packet to it (its triggers):
    when a harvester was last seen at work, for the `first_seen`/`last_seen` of an export."""
    out: dict[str, tuple[float, float]] = {}
    for scan in scans:
        for server in {t.server for t in scan.triggers}:
            old = out.get(server)
            out[server] = (scan.start, scan.start) if old is None else \
                (min(old[0], scan.start), max(old[1], scan.start))
    return out
