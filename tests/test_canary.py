"""NTP canaries, the pure parts: which canaries live, which scans convict, how nft says it.

The namespace test (tests/test_canary_netns.py) shows the kernel doing it with real packets.
"""

from __future__ import annotations

import ipaddress
import itertools

from ntpguard import canary
from ntpguard.backends import nft
from ntpguard.config import Canary as Settings
from ntpguard.config import Detect, Rules
from ntpguard.facts import Scan
from ntpguard.plan import HostFacts, build, canaries
from ntpguard.probe import Target
from ntpguard.status import RANKS, ServerStatus, Status, Verdict

NET = ipaddress.IPv6Network("2001:db8:4057:1::/64")
TARGET = Target("eth0", NET)
S1, S2, S3 = "2001:db8:a::1", "2001:db8:b::1", "2001:db8:c::1"


def counter():
    n = itertools.count(0x100)
    return lambda prefix, taken: str(prefix.network_address + next(n))


def test_every_wanted_server_gets_one_and_a_spare_exists():
    change = canary.plan([], [S1, S2], 1000.0, Settings(), Detect(), TARGET, [], counter())
    assert [c.server for c in change.add] == [canary.SPARE, S1, S2]
    assert len({c.address for c in change.add}) == 3
    assert all(ipaddress.ip_address(c.address) in NET for c in change.add)
    spare, own = change.add[0], change.add[1]
    assert spare.expires == 1000.0 + Settings().spare_rotate + 86400
    assert own.expires == 1000.0 + Settings().rotate + 86400
    # Nothing to do a moment later.
    again = canary.plan(list(change.add), [S1, S2], 1010.0, Settings(), Detect(), TARGET, [],
                        counter())
    assert again.empty


def test_rotation_scans_unwanted_and_a_moved_prefix_retire():
    st = Settings(rotate=100.0, spare_rotate=50.0)
    first = canary.plan([], [S1, S2, S3], 0.0, st, Detect(), TARGET, [], counter())
    cur = list(first.add)
    s2 = next(c for c in cur if c.server == S2)
    cur[cur.index(s2)] = canary.Canary(s2.address, S2, "eth0", s2.created, s2.expires,
                                       scanned=30.0)
    # At 60 s: the spare is old, S2's was scanned, S3 is no longer wanted.
    change = canary.plan(cur, [S1, S2], 60.0, st, Detect(), TARGET, [], counter())
    retired = {c.server: c for c in change.retire}
    assert set(retired) == {canary.SPARE, S2, S3}
    keep = canary.after_retirement(Detect())
    assert all(c.retired == 60.0 and c.expires == 60.0 + keep for c in change.retire)
    assert sorted(c.server for c in change.add) == sorted([canary.SPARE, S2])
    # The /64 changed (a new ISP prefix): every canary moves.
    moved = canary.plan(list(first.add), [S1], 10.0, st, Detect(),
                        Target("eth0", ipaddress.IPv6Network("2001:db8:9::/64")), [], counter())
    assert len(moved.retire) == 4 and {c.server for c in moved.add} == {canary.SPARE, S1}
    # Expired ones stay as history, out of every decision: only a new spare is made.
    late = canary.plan(list(change.retire), [], 60.0 + keep + 1, st, Detect(), TARGET, [],
                       counter())
    assert not late.retire and [c.server for c in late.add] == [canary.SPARE]


def test_at_most_max_servers_get_their_own():
    change = canary.plan([], [S1, S2, S3], 0.0, Settings(max=2), Detect(), TARGET, [], counter())
    assert [c.server for c in change.add] == [canary.SPARE, S1, S2]


def test_only_its_own_canary_scanned_convicts_a_server():
    change = canary.plan([], [S1, S2], 100.0, Settings(), Detect(), TARGET, [], counter())
    by_server = {c.server: c for c in change.add}

    def scan(dst, start):
        return Scan(start, start + 1, "2001:db8:5ca::/64", dst, 100, 100, ("TCP",))
    scans = [scan(by_server[S1].address, 130.0), scan(by_server[S1].address, 140.0),
             scan(by_server[canary.SPARE].address, 150.0),   # the spare: a group test only
             scan(by_server[S2].address, 50.0),               # before S2's canary existed
             scan("2001:db8:4057:1::100", 160.0)]             # a real address
    verdicts, scanned = canary.convictions(scans, change.add, {})
    assert [(v.address, v.status, str(v.source)) for v in verdicts] == [
        (S1, Status.HARVESTER, "canary")]
    assert verdicts[0].evidence["canary"] == by_server[S1].address
    assert verdicts[0].evidence["lag"] == 30.0
    assert [c.address for c in scanned] == [by_server[S1].address]
    assert scanned[0].scanned == 130.0
    # Recorded once per canary.
    again, _ = canary.convictions(scans, scanned, {S1: verdicts[0]})
    assert again == []


def test_exempt_destinations_keep_the_real_source():
    on_link = set(HostFacts(("2001:db8:4057:1::2", "192.0.2.2")).blocks64())
    assert not canary.exempt("2001:db8:4057:2::53", on_link)  # the next /64 is not on-link
    assert canary.exempt("fe80::1", on_link)
    assert canary.exempt("fd00::123", on_link)
    assert canary.exempt("2001:db8:4057:1::53", on_link)
    assert canary.exempt("192.0.2.1", on_link)  # IPv4: no canaries
    assert canary.exempt("2001:db8:77::1", on_link, trusted=["2001:db8:77::1"])
    assert not canary.exempt("2001:db8:77::1", on_link)


def test_in_force_maps_usable_servers_only():
    change = canary.plan([], [S1, S2], 0.0, Settings(), Detect(), TARGET, [], counter())
    mapping, spare, live = canary.in_force(change.add, [S1], 10.0)
    assert set(mapping) == {S1} and spare is not None and len(live) == 3


def test_nft_rewrites_ntp_to_the_canaries_and_drops_the_rest_to_them():
    host = HostFacts(("2001:db8:4057:1::100",), ())
    plan = build([ServerStatus.of(S1, "clean")], [], [], Rules(), host,
                 canaries=canaries({S1: "2001:db8:4057:1::ca"}, "2001:db8:4057:1::5a",
                                   ["2001:db8:4057:1::5a", "2001:db8:4057:1::ca"], host,
                                   trusted=("2001:db8:77::1",)))
    assert plan.unknown == "allow"  # auto: unknown servers only ever meet a canary
    r = nft.rules_for(plan)
    assert r.sets["canary6"] == [f"{S1} : 2001:db8:4057:1::ca"]
    assert r.sets["spare6"] == ["123 : 2001:db8:4057:1::5a"]
    assert "2001:db8:4057:1::/64" in r.sets["keep6"] and "2001:db8:77::1/128" in r.sets["keep6"]
    assert "fe80::/10" in r.sets["keep6"]
    text = r.full_text(1)
    nat = text[text.index("chain canary_nat"):]
    assert "type nat hook postrouting priority srcnat" in nat
    assert nat.index("map @canary6") < nat.index("map @spare6")
    inp = text[text.index("chain input {"):text.index("chain canary_nat")]
    assert inp.index("nd-neighbor-solicit") < inp.index("@canaries6 ct state new")
    assert 'log prefix "ntpguard-canary-in: "' in inp
    # NTP is logged after the rewrite only.
    output = text[text.index("chain output {"):text.index("chain input {")]
    assert "ntpguard-ntp-out" not in output
    assert 'log prefix "ntpguard-ntp-out: "' in text[text.index("chain canary_log"):]
    # Without canaries "auto" blocks unknown servers, as before.
    assert build([ServerStatus.of(S1, "clean")], [], [], Rules(), HostFacts()).unknown == "block"


def test_a_rotation_is_an_element_update_not_a_new_table():
    host = HostFacts(("2001:db8:4057:1::100",), ())

    def rendered(c1, spare):
        return nft.rules_for(build([ServerStatus.of(S1, "clean")], [], [], Rules(), host,
                                   canaries=canaries({S1: c1}, spare, [c1, spare], host)))
    a = rendered("2001:db8:4057:1::ca", "2001:db8:4057:1::5a")
    b = rendered("2001:db8:4057:1::cb", "2001:db8:4057:1::5b")
    assert a.skeleton == b.skeleton
    text, added, deleted = nft.diff_text({"token": 1, "skeleton": a.skeleton, "sets": a.sets},
                                         b, 2)
    assert (added, deleted) == (4, 4)
    assert f"delete element inet ntpguard canary6 {{ {S1} : 2001:db8:4057:1::ca }}" in text


def test_canary_verdicts_rank_as_local_evidence():
    v = Verdict(S1, Status.HARVESTER, canary.CANARY, {"canary": "x"}, 1.0)
    assert v.source.local
    assert RANKS["trusted"] < v.source.rank < RANKS["detect"] < RANKS["list"]


def test_exposure_counts_real_addresses_only_where_nothing_rewrote_them():
    spare = canary.Canary("2001:db8:4057:1::5a", canary.SPARE, "eth0", 1000.0, 1e9)
    own = canary.Canary("2001:db8:4057:1::ca", S1, "eth0", 1000.0, 1e9, scanned=1500.0)
    real = "2001:db8:4057:1::100"
    runs = {
        (real, S2): [100.0, 900.0, 5],          # before any canary: the server saw it
        (real, S3): [1100.0, 1900.0, 9],        # a pre-rewrite log line: it saw a canary
        ("2001:db8:4057:1::ca", S1): [1000.0, 1900.0, 9],   # the canary itself
        (real, "192.0.2.7"): [1100.0, 1900.0, 3],           # IPv4: never rewritten
        (real, "2001:db8:77::1"): [1100.0, 1900.0, 3],      # trusted: kept its source
        ("2001:db8:4057:1::7e", S1): [10.0, 20.0, 1],        # long before the window
    }
    seen, scanned = canary.exposure(runs, {own.address, spare.address}, [spare, own], 50.0,
                                    kept=lambda s: s == "2001:db8:77::1")
    assert seen == {S2, "192.0.2.7", "2001:db8:77::1"}
    assert scanned == 1
    assert canary.exposure(runs, set(), [], 50.0)[0] >= {S2, S3}  # no canaries: all real


def test_many_canaries_go_in_one_ip_batch_and_one_by_one_if_it_fails(monkeypatch):
    import subprocess

    from ntpguard import canary as canary_mod

    calls = []

    def fake_run(argv, input=None, check=True, error=None):
        calls.append((argv, input))
        failed = argv[:2] == ["ip", "-batch"] and fail_batch
        return subprocess.CompletedProcess(argv, 1 if failed else 0, "", "")

    monkeypatch.setattr(canary_mod.commands, "run", fake_run)
    made = [canary_mod.Canary(f"2001:db8:1::c{i}", f"2001:db8:100::{i}", "eth0", 0.0, 100.0)
            for i in range(3)]
    fail_batch = False
    canary_mod.add_addresses(made, 10.0)
    assert len(calls) == 1 and calls[0][0] == ["ip", "-batch", "-"]
    assert calls[0][1].splitlines() == [
        f"addr replace 2001:db8:1::c{i}/128 dev eth0 nodad noprefixroute valid_lft 90 "
        "preferred_lft 0"
        for i in range(3)]
    calls.clear()
    fail_batch = True
    canary_mod.add_addresses(made, 10.0)
    assert [c[0][:4] for c in calls] == [["ip", "-batch", "-"]] + [
        ["ip", "-6", "addr", "replace"]] * 3
