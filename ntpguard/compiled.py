"""A validated list in the form rules and statuses use it, and the file that keeps it.

Validating a 100k-entry list takes a second of CPU and ~100 MB as Python objects; `rules
apply` and `sync` ran it on every stored list every time. A list is now validated once, when
it is imported or fetched, and kept beside its stored copy as `NAME.compiled`: per kind and per
(IP version, prefix length) its networks packed and sorted (ntpguard.prefixes.Networks), the
line each came from, which ones lie inside another entry of the same kind (rules leave them
out), and the harvester entries' comments (a verdict quotes them). Loading it is one read, a
JSON line and slices of raw arrays: milliseconds, and no object per entry.

It is trusted only while it provably describes the stored copy under the current settings
(`usable`): the SHA-256 of the copy it was built from (checked against the copy's file
identity, or the copy hashed again when that changed), the validation limits, the format
version, and a CRC-32 of its own content against damage. Anything else is rebuilt from the
stored copy, which is validated again on the way (lists.load_compiled), or refused with it.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from array import array
from dataclasses import field
from typing import Any, Iterable, Optional

from ntpguard.prefixes import Key, Networks, without
from ntpguard.records import record

# Version 2: the arrays raw after a JSON line (version 1 held them as base64 inside the JSON;
# such a file is rebuilt from the stored copy once, like any that does not match).
FORMAT, VERSION = "ntpguard-compiled-list", 2
KINDS = ("harvester", "scanner")
# A compiled list is about the size of its networks (16 bytes each for IPv6) and their line
# numbers (4 bytes each); a stored copy is at most 64 MiB, so this is far beyond any real one.
MAX_BYTES = 256 << 20


def _u32(values: Iterable[int]) -> array:
    return array("I", values)


def _u32_bytes(a: array) -> bytes:
    if sys.byteorder == "big":  # stored little-endian, whatever the machine
        a = array("I", a)
        a.byteswap()
    return a.tobytes()


def _u32_from(data: bytes) -> array:
    a = array("I")
    a.frombytes(data)
    if sys.byteorder == "big":
        a.byteswap()
    return a


@record
class Part:
    """One kind's entries of a list, by (IP version, prefix length)."""

    groups: dict[Key, Networks] = field(default_factory=dict)
    lines: dict[Key, array] = field(default_factory=dict)  # line or entry number of each
    # Entries inside another entry of this part: left out of the rules (the outer one covers
    # them), kept for lookups (the most specific entry names a server).
    inside: dict[Key, tuple[int, ...]] = field(default_factory=dict)
    # Harvesters only: each entry's comment, UTF-8 in one blob with offsets (len + 1 each).
    comments: dict[Key, tuple[bytes, array]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(n) for n in self.groups.values())

    def collapsed(self) -> dict[Key, Networks]:
        """The groups less the entries inside others: what the rules hold of this part."""
        out = {}
        for key, nets in self.groups.items():
            kept = without(nets, self.inside.get(key, ()))
            if len(kept):
                out[key] = kept
        return out

    def line(self, key: Key, index: int) -> int:
        return int(self.lines[key][index])

    def comment(self, key: Key, index: int) -> str:
        blob, offsets = self.comments.get(key, (b"", _u32(())))
        if index + 1 >= len(offsets):
            return ""
        return blob[offsets[index]:offsets[index + 1]].decode("utf-8", "replace")

    @classmethod
    def of(cls, groups: dict[Key, list[int]], lines: dict[Key, list[int]],
           inside: dict[Key, list[int]], comments: Optional[dict[Key, list[str]]]) -> Part:
        """From each group's networks (sorted, unique), lines, indexes inside another entry
        and (harvesters) comments."""
        packed = {k: Networks.from_sorted_ints(k[0], v) for k, v in groups.items()}
        notes = {}
        for key, texts in (comments or {}).items():
            encoded = [t.encode("utf-8") for t in texts]
            offsets = [0]
            for e in encoded:
                offsets.append(offsets[-1] + len(e))
            notes[key] = (b"".join(encoded), _u32(offsets))
        return cls(packed, {k: _u32(v) for k, v in lines.items()},
                   {k: tuple(v) for k, v in inside.items()}, notes)


@record
class Compiled:
    """A list as validated under `limits`, from the stored copy with this SHA-256."""

    sha256: str
    limits: str  # lists.Limits.key() of the settings it was validated with
    list_format: str  # text | json
    harvester: Part = field(default_factory=Part)
    scanner: Part = field(default_factory=Part)
    # The stored copy's file identity when this was built from it (inode, size, mtime, ctime):
    # while it is the same, the copy was not replaced or changed, so it need not be hashed.
    source: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return self.harvester.count + self.scanner.count

    def part(self, kind: str) -> Part:
        return self.harvester if kind == "harvester" else self.scanner

    def with_source(self, source: tuple[int, ...]) -> Compiled:
        return Compiled(self.sha256, self.limits, self.list_format, self.harvester,
                        self.scanner, source)


def identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file is replaced or written: inode, size, mtime, ctime (the
    kernel sets ctime; nobody can set it back)."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# -- the file ------------------------------------------------------------------------------------


def dumps(c: Compiled) -> bytes:
    """The file: a line with the CRC-32 of the rest, a line of JSON (what the list is, and
    where each group's arrays lie in what follows), then those arrays, raw: a 100k-entry
    list's ~1.7 MB of networks load with one read and no decoding (as base64 in the JSON,
    version 1, decoding them took ~20 ms of every `rules apply`)."""
    blobs: list[bytes] = []
    at = 0

    def span(data: bytes) -> list[int]:
        nonlocal at
        blobs.append(data)
        at += len(data)
        return [at - len(data), len(data)]

    parts: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        part = c.part(kind)
        groups = []
        for (fam, length), nets in sorted(part.groups.items()):
            g: dict[str, Any] = {"family": fam, "length": length, "networks": span(nets.packed),
                                 "lines": span(_u32_bytes(part.lines[(fam, length)])),
                                 "inside": list(part.inside.get((fam, length), ()))}
            if (fam, length) in part.comments:
                blob, offsets = part.comments[(fam, length)]
                g["comments"] = span(blob)
                g["offsets"] = span(_u32_bytes(offsets))
            groups.append(g)
        parts[kind] = groups
    head = json.dumps({"format": FORMAT, "version": VERSION, "sha256": c.sha256,
                       "limits": c.limits, "list_format": c.list_format,
                       "source": list(c.source), "parts": parts},
                      separators=(",", ":")).encode("ascii")
    body = b"".join([head, b"\n", *blobs])
    return b"%08x\n" % zlib.crc32(body) + body


class Damaged(ValueError):
    """A compiled file that is not one, or not whole."""


def loads(data: bytes) -> Compiled:
    """The Compiled a file holds; Damaged if it is not exactly what dumps() wrote."""
    # Offsets into one view, not partitions: each partition copied the ~2 MB of a 100k-entry
    # list's arrays (~1 ms a copy, in every `rules apply`).
    if data.find(b"\n", 0, 9) != 8:
        raise Damaged("no checksum line")
    try:
        crc = int(data[:8], 16)
    except ValueError:
        raise Damaged("no checksum line") from None
    whole = memoryview(data)
    if zlib.crc32(whole[9:]) != crc:
        raise Damaged("checksum does not match (damaged or cut short)")
    end = data.find(b"\n", 9)
    header, view = (data[9:], whole[len(data):]) if end < 0 else (data[9:end], whole[end + 1:])
    try:
        doc = json.loads(header)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or \
                doc.get("version") != VERSION:
            raise Damaged(f"not a version {VERSION} compiled list")
        parts = {kind: _part(doc["parts"][kind], view) for kind in KINDS}
        source = tuple(int(x) for x in doc["source"])
        return Compiled(str(doc["sha256"]), str(doc["limits"]), str(doc["list_format"]),
                        parts["harvester"], parts["scanner"], source)
    except Damaged:
        raise
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise Damaged(f"unreadable: {exc}") from None


def _slice(view: memoryview, where: Any) -> bytes:
    start, size = (int(x) for x in where)
    if start < 0 or size < 0 or start + size > len(view):
        raise Damaged("an array lies outside the file")
    return view[start:start + size].tobytes()


def _part(groups: list[dict[str, Any]], view: memoryview) -> Part:
    nets, lines, inside, comments = {}, {}, {}, {}
    for g in groups:
        key = (int(g["family"]), int(g["length"]))
        n = Networks(key[0], _slice(view, g["networks"]))
        ln = _u32_from(_slice(view, g["lines"]))
        ins = tuple(int(i) for i in g["inside"])
        if len(ln) != len(n) or any(not 0 <= i < len(n) for i in ins):
            raise Damaged(f"group {key}: counts do not match")
        nets[key], lines[key] = n, ln
        if ins:
            inside[key] = ins
        if "comments" in g:
            blob = _slice(view, g["comments"])
            offsets = _u32_from(_slice(view, g["offsets"]))
            if len(offsets) != len(n) + 1 or offsets[-1] != len(blob):
                raise Damaged(f"group {key}: comments do not match")
            comments[key] = (blob, offsets)
    return Part(nets, lines, inside, comments)


def usable(c: Optional[Compiled], sha256: Optional[str], limits: str) -> bool:
    """Whether a compiled list describes the stored copy with this SHA-256, validated under
    these limits."""
    return c is not None and c.sha256 == sha256 and c.limits == limits

