"""Compiled lists (ntpguard.compiled) and packed prefixes (ntpguard.prefixes): the form a list
is validated into once and loaded from on every use. Compared against ipaddress."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import zlib

import pytest

from ntpguard import compiled, lists
from ntpguard.prefixes import merge

LIM = lists.Limits(allow_nonglobal=True, default_kind="scanner")


def _random_entries(rng: random.Random, n: int) -> list[str]:
    out = set()
    while len(out) < n:
        if rng.random() < 0.7:
            length = rng.randint(32, 128)
            value = (0x2600 << 112 | rng.getrandbits(20) << 92) >> (128 - length) << (128 - length)
            out.add(str(ipaddress.IPv6Network((value, length))))
        else:
            length = rng.randint(16, 32)
            value = (0x0B00 << 16 | rng.getrandbits(16)) >> (32 - length) << (32 - length)
            out.add(str(ipaddress.IPv4Network((value, length))))
    # ::/96 values sort among IPv4 ones as integers; they must not break the collapse.
    out.update(["::b00:0/104", "::b00:1"])
    return sorted(out)


def _reference(entries: list[str]) -> set[str]:
    """What the rules must hold: every entry not inside another entry (ipaddress)."""
    nets = [ipaddress.ip_network(e) for e in entries]
    return {str(n) for n in nets
            if not any(o != n and o.version == n.version and n.subnet_of(o) for o in nets)}


@pytest.mark.parametrize("seed", range(5))
def test_compiled_groups_less_inside_entries_are_the_collapsed_list(seed):
    entries = _random_entries(random.Random(seed), 400)
    parsed = lists.parse("".join(f"{e}\n" for e in entries).encode(), "l.txt", LIM)
    part = parsed.compiled.scanner
    assert part.count == len(entries) and parsed.compiled.harvester.count == 0
    got = {str(ipaddress.ip_network(f"{a}/{length}"))
           for (fam, length), nets in part.collapsed().items() for a in nets}
    assert got == _reference(entries)
    # Each entry keeps its line number.
    for (fam, length), nets in part.groups.items():
        for i, a in enumerate(nets):
            line = part.line((fam, length), i)
            assert ipaddress.ip_network(entries[line - 1]) == ipaddress.ip_network(
                f"{a}/{length}")
    # merge() of the collapsed groups with loose prefixes equals the reference too.
    extra = [(6, int(ipaddress.IPv6Address("2600::")), 16), (4, 0x0B000000 | 5 << 8, 24)]
    merged = {str(ipaddress.ip_network(f"{a}/{length}"))
              for (fam, length), nets in merge([part.collapsed()], extra).items() for a in nets}
    assert merged == _reference([*entries, "2600::/16", "11.0.5.0/24"])


def test_round_trip_and_damage():
    raw = b"2600:1::/48 harvester # first\n203.0.113.7 scanner\n2600:1:0:1::/64 harvester\n"
    c = lists.parse(raw, "l.txt", lists.Limits(allow_nonglobal=True)).compiled
    data = compiled.dumps(c)
    back = compiled.loads(data)
    assert back == c and back.harvester.comment((6, 48), 0) == "first"
    assert back.harvester.inside == {(6, 64): (0,)}
    body = data.partition(b"\n")[2]

    def signed(text: bytes) -> bytes:  # a whole file (its CRC right) saying something wrong
        return b"%08x\n" % zlib.crc32(text) + text

    head = body.partition(b"\n")[0]
    first = json.loads(head)["parts"]["harvester"][0]["networks"]
    outside = head.replace(b'"networks":[%d,%d]' % tuple(first),
                           b'"networks":[%d,%d]' % (first[0], 1 << 20))
    assert outside != head
    for bad in (data[:-5], data.replace(b'"version":2', b'"version":9'), b"x" + data[1:],
                b"", b"00000000\n{}", signed(b"[]\n"), signed(outside + body[len(head):]),
                signed(body.replace(b'"version":2', b'"version":1'))):
        with pytest.raises(compiled.Damaged):
            compiled.loads(bad)


def test_a_stored_copy_changed_behind_its_compiled_form_is_validated_again(tmp_path):
    state = str(tmp_path)
    good = lists.parse(b"2600:1::/48 scanner\n", "l.txt", LIM)
    lists.store(state, "mine", good, {})
    assert lists.load_compiled(state, "mine", LIM).scanner.count == 1
    # Another copy put in place by hand: its compiled form no longer describes it.
    path = tmp_path / "lists" / "mine.txt"
    path.write_bytes(b"2600:1::/48 scanner\n2600:2::/48 scanner\n")
    assert lists.load_compiled(state, "mine", LIM).scanner.count == 2
    path.write_bytes(b"2600:1::/48 scanner\nnot-an-address scanner\n")
    with pytest.raises(lists.ListError):
        lists.load_compiled(state, "mine", LIM)
    # Other limits: validated again under them.
    path.write_bytes(b"2600:1::/48 scanner\n")
    os.utime(path, (1, 1))
    with pytest.raises(lists.ListError):
        lists.load_compiled(state, "mine", lists.Limits(min_prefixlen_v6=64,
                                                        default_kind="scanner"))
    # A damaged compiled form is built again, not trusted.
    (tmp_path / "lists" / "mine.compiled").write_bytes(b"garbage")
    assert lists.load_compiled(state, "mine", LIM).scanner.count == 1
