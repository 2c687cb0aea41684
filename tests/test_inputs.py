"""The digest a run with nothing new stops at (ntpguard.inputs, ntpguard.revision): every
change a plan depends on must change it, and what a plan does not depend on must not (else
every sync with new NTP polls would build the plan again). Without root: the kernel side is in
tests/test_rules_netns.py."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ntpguard import canary, config, configfile, hostinfo, inputs, lists, revision
from ntpguard.canary import SPARE, Canary
from ntpguard.errors import UsageError
from ntpguard.facts import Contacts, Scan, Trigger
from ntpguard.logs.sources import Position
from ntpguard.probe import Target
from ntpguard.state import State
from ntpguard.status import Verdict

ROOT = Path(__file__).resolve().parent.parent

NOW = 1_800_000_000.0


def rev(state_dir) -> int:
    value = revision.read(str(state_dir))
    assert value is not None
    return value


def contacts(*pairs: tuple[str, str, float, float, int]) -> Contacts:
    return Contacts(runs={(a, s): [t0, t1, n] for a, s, t0, t1, n in pairs}, start=NOW,
                    end=NOW + 600)


def test_revision_follows_what_a_plan_reads_and_ignores_the_rest(state_dir):
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA", [("2001:db8::1", 6)], NOW)
    seen = [rev(state_dir)]

    def changed() -> bool:
        now = rev(state_dir)
        seen.append(now)
        return seen[-1] != seen[-2]

    with State.open(str(state_dir)) as st:
        # The same server answered again: last_seen and counts only.
        st.record_answer("2.debian.pool.ntp.org", "AAAA", [("2001:db8::1", 6)], NOW + 60)
    assert not changed()
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA", [("2001:db8::2", 6)], NOW + 60)
    assert changed()
    with State.open(str(state_dir)) as st:
        st.add_verdict(Verdict.of("2001:db8::2", "harvester", "manual", {}, NOW + 61))
    assert changed()
    with State.open(str(state_dir)) as st:
        st.record_run("rules apply", NOW, NOW + 1, True, {})
    assert not changed()
    pos = [Position("kern.log", 1, 100)]
    with State.open(str(state_dir)) as st:
        st.save_detection(pos, contacts(("2001:db8:5::9", "2001:db8::1", NOW, NOW + 64, 2)),
                          [], "kern.log", NOW + 70)
    assert changed()  # a new pair: the servers contacted changed (canaries go there first)
    with State.open(str(state_dir)) as st:
        st.save_detection(pos, contacts(("2001:db8:5::9", "2001:db8::1", NOW + 128,
                                         NOW + 192, 2)), [], "kern.log", NOW + 200)
    assert not changed()  # the same pair polled again
    scan = Scan(NOW + 130, NOW + 140, "2001:db8:666::5", "2001:db8:5::9", 40, 40, ("tcp",),
                (Trigger("2001:db8::1", "udp", 123, 123, NOW + 128, 2.0),))
    with State.open(str(state_dir)) as st:
        st.save_detection(pos, Contacts(), [scan], "kern.log", NOW + 300)
    assert changed()
    with State.open(str(state_dir)) as st:
        st.save_canaries(canary.Change(add=(Canary("2001:db8:5::c", "2001:db8::1", "eth0",
                                                    NOW, NOW + 3600),)))
    assert changed()
    with State.open(str(state_dir)) as st:
        assert st.age_out(0.001, [], 1e10) != (0, 0)  # deletes the contacts and the scan
    assert changed()


def test_revision_is_none_without_a_database_or_its_table(tmp_path):
    assert revision.read(str(tmp_path)) is None
    (tmp_path / "state.db").write_bytes(b"not a database" * 100)
    assert revision.read(str(tmp_path)) is None


def write_config(tmp_path, text: str) -> config.Config:
    path = tmp_path / "ntpguard.toml"
    path.write_text(text)
    return config.load(str(path))


def test_digest_changes_with_every_input_and_only_then(tmp_path, state_dir):
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA", [("2001:db8::1", 6)], NOW)
    cfg = write_config(tmp_path, "[lists]\nbuiltin = false\n")
    first = inputs.digest(cfg, str(state_dir))
    assert first is not None and first == inputs.digest(cfg, str(state_dir))
    # A configuration value. The file is named by its bytes (so a run with nothing new need
    # not load it): written differently, it is a new input too; settings made otherwise
    # (not loaded from a file) are named by their values.
    other = write_config(tmp_path, '[lists]\nbuiltin = false\n[rules]\nmode = "gateway"\n')
    assert inputs.digest(other, str(state_dir)) != first
    same = write_config(tmp_path, "# a comment\n[lists]\nbuiltin   =   false\n")
    assert same == cfg and inputs.digest(same, str(state_dir)) != first
    made = dataclasses.replace(cfg)
    assert made.source is None and inputs.digest(made, str(state_dir)) == inputs.digest(
        dataclasses.replace(same), str(state_dir)) not in (None, first)
    assert write_config(tmp_path, "[lists]\nbuiltin = false\n").source == cfg.source
    assert inputs.digest(write_config(tmp_path, "[lists]\nbuiltin = false\n"),
                         str(state_dir)) == first
    # A stored list.
    parsed = lists.parse(b"2001:db8:666::/48 scanner\n", "t", lists.Limits(
        allow_nonglobal=True), "text")
    lists.store(str(state_dir), "lab", parsed, {"source": "lab", "trust": "enforce"})
    with_list = inputs.digest(cfg, str(state_dir))
    assert with_list not in (None, first)
    # The state.
    with State.open(str(state_dir)) as st:
        st.add_verdict(Verdict.of("2001:db8::1", "clean", "manual", {}, NOW))
    assert inputs.digest(cfg, str(state_dir)) not in (None, with_list)
    # The shipped lists are inputs when they are in force.
    shipped = write_config(tmp_path, "[lists]\nbuiltin = true\n")
    assert inputs.digest(shipped, str(state_dir)) != inputs.digest(cfg, str(state_dir))


def test_the_file_and_state_directory_a_run_finds_before_loading_the_settings(
        tmp_path, monkeypatch):
    """What `rules apply` with nothing new reads instead of the settings: the same file and
    state directory config.load() and the CLI find, by the same precedence."""
    monkeypatch.delenv("NTPGUARD_CONFIG", raising=False)
    monkeypatch.delenv("NTPGUARD_STATE_DIR", raising=False)
    path = tmp_path / "a.toml"
    path.write_text('[general]\nstate_dir = "/srv/ng"\n')
    source = configfile.read(str(path))
    assert configfile.configured_state_dir(source) == "/srv/ng"
    assert config.load(str(path)).source == source
    never = lambda: pytest.fail("the settings were asked")  # noqa: E731
    assert configfile.state_dir("/x", never) == "/x"
    monkeypatch.setenv("NTPGUARD_STATE_DIR", "/env")
    assert configfile.state_dir(None, never) == "/env"
    monkeypatch.delenv("NTPGUARD_STATE_DIR")
    assert configfile.state_dir(None, lambda: None) == configfile.DEFAULT_STATE_DIR
    monkeypatch.setenv("NTPGUARD_CONFIG", str(path))
    assert configfile.read(None) == source
    # Nothing a run could take for a state directory: the default, and the settings loaded
    # later word what is wrong.
    for text in (b"[general\n", b"\xff", b"general = 1\n", b"[general]\nstate_dir = 5\n"):
        path.write_bytes(text)
        assert configfile.configured_state_dir(configfile.read(str(path))) is None
    # Another file, other bytes, no file: other identities.
    other = tmp_path / "b.toml"
    other.write_text('[general]\nstate_dir = "/srv/ng"\n')
    identities = {source.identity, configfile.read(str(other)).identity,
                  configfile.read(os.devnull).identity}
    path.write_text('[general]\nstate_dir = "/srv/ng" \n')
    identities.add(configfile.read(str(path)).identity)
    assert len(identities) == 4
    with pytest.raises(UsageError, match="not found"):
        configfile.read(str(tmp_path / "absent.toml"))


def test_digest_is_none_when_the_state_cannot_say(tmp_path):
    cfg = write_config(tmp_path, "")
    assert inputs.digest(cfg, str(tmp_path / "nothing-here")) is None


def _route(dst_len: int, table: int, *attrs: tuple[int, bytes]) -> bytes:
    """One RTM_NEWROUTE message as rtnetlink sends it (IPv6, unicast)."""
    body = struct.pack("=BBBBBBBBI", 10, dst_len, 0, 0, table, 3, 0, 1, 0)
    for kind, value in attrs:
        size = 4 + len(value)
        body += struct.pack("=HH", size, kind) + value + b"\0" * (-size % 4)
    return struct.pack("=IHHII", 16 + len(body), 24, 2, 1, 0) + body


DONE = struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0" * 4
GW1, GW2 = bytes.fromhex("20010db8" + "0" * 23 + "1"), bytes.fromhex("20010db8" + "0" * 23 + "2")
OIF = (4, struct.pack("=I", 3))


def test_host_facts_are_the_main_tables_default_routes_without_their_clocks():
    cache = (12, struct.pack("=IIIIIIII", 5, 0, 0, 0, 1000, 0, 0, 0))  # RTA_CACHEINFO
    later = (12, struct.pack("=IIIIIIII", 9, 0, 0, 0, 700, 0, 0, 0))
    done, routes = hostinfo.parse_routes(
        _route(0, 254, OIF, (5, GW1), cache) + _route(64, 254, OIF)  # a prefix route
        + _route(0, 255, OIF, (5, GW2)) + DONE)  # the local table's
    assert done and routes is not None and len(routes) == 1 and GW1.hex() in routes[0]
    assert hostinfo.parse_routes(_route(0, 254, OIF, (5, GW1), later) + DONE) == (True, routes)
    assert hostinfo.parse_routes(_route(0, 254, OIF, (5, GW2)) + DONE)[1] != routes
    # A table past 255 is named by RTA_TABLE; a dump goes on until NLMSG_DONE.
    assert hostinfo.parse_routes(_route(0, 252, OIF, (15, struct.pack("=I", 254)))) == (
        False, [f"10/1/4:{OIF[1].hex()}/15:fe000000"])
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + b"\0" * 20
    assert hostinfo.parse_routes(error) == (True, None)
    assert hostinfo.parse_routes(_route(0, 254, OIF)[:30]) == (True, None)  # cut short


def test_next_change_is_the_first_rotation_or_expiry():
    settings = config.Canary(rotate=3600.0, spare_rotate=600.0)
    cs = [
        Canary("2001:db8::c1", "2001:db8::1", "eth0", NOW - 100, NOW + 4000),  # rotates +3500
        Canary("2001:db8::c2", SPARE, "eth0", NOW - 500, NOW + 800),  # spare: rotates at +100
        Canary("2001:db8::c3", "2001:db8::2", "eth0", NOW - 9000, NOW + 50,
               retired=NOW - 10),  # retired: only its expiry counts (+50)
        Canary("2001:db8::c4", "2001:db8::3", "eth0", NOW - 9000, NOW - 1),  # gone
    ]
    assert canary.next_change(cs, NOW, settings) == NOW + 50
    assert canary.next_change(cs[:2], NOW, settings) == NOW + 100
    assert canary.next_change(cs[:1], NOW, settings) == NOW + 3500
    assert canary.next_change(cs[3:], NOW, settings) == math.inf
    # At the deadline itself plan() already rotates: the record must not hold then.
    target = Target("eth0", ipaddress.IPv6Network("2001:db8::/64"))
    change = canary.plan(cs[:2], ["2001:db8::1"], NOW + 100, settings, config.Detect(),
                         target, [], lambda p, t: "2001:db8::c9")
    assert [c.server for c in change.retire] == [SPARE]


def test_a_damaged_or_foreign_record_is_no_record(state_dir):
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, inputs.RECORD_NAME)
    for text in ("{", "[]", json.dumps({"format": "other"}),
                 json.dumps({"format": inputs.FORMAT, "digest": "x"})):
        with open(path, "w") as fh:
            fh.write(text)
        assert inputs.load(str(state_dir)) is None
    record = inputs.Record("d", "nft", "/etc/x.toml\0abc", "auto", [], False, False, "s", 7,
                           time.time() + 60, time.time(), {"message": "m"}, {"clean6": 1}, [],
                           "plan")
    inputs.save(str(state_dir), record)
    assert inputs.load(str(state_dir)) == record


HOSTINFO_SNIPPET = r"""
import json, subprocess
from ntpguard import hostinfo

def ip(*args):
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"ip {' '.join(args)}: {p.stderr}")
    return p.stdout

lines = '''link set lo up
link add va type veth peer name vb
link set va up
link set vb up
addr add 2001:db8:1::2/64 dev va nodad
addr add 2001:db8:1::3/64 dev va nodad preferred_lft 0
addr add 2001:db8:1::4/64 dev va nodad valid_lft 3000 preferred_lft 2000
addr add 192.0.2.2/24 dev va
addr add 192.0.2.3/24 dev va
addr add 2001:db8:2::2/64 dev vb nodad
addr add 198.51.100.2/24 dev vb
route add default via 192.0.2.1 dev va metric 7
-6 route add default nexthop via 2001:db8:1::1 dev va nexthop via 2001:db8:2::1 dev vb'''
for line in lines.splitlines():
    ip(*line.split())
ip("link", "add", "vc", "type", "veth", "peer", "name", "vd")
subprocess.run(["sysctl", "-qw", "net.ipv6.conf.vc.dad_transmits=100"], check=True)
ip("link", "set", "vc", "up")
ip("link", "set", "vd", "up")
ip("addr", "add", "2001:db8:3::2/64", "dev", "vc")  # tentative: DAD for 100 s
print(json.dumps({"ours": hostinfo.addresses(), "ip": json.loads(ip("-j", "addr", "show")),
                  "routes": [hostinfo.default_route_list(f) for f in (4, 6)],
                  "ip_routes": [json.loads(ip("-j", f"-{f}", "route", "show", "default"))
                                for f in (4, 6)]}))
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="needs root, unshare and ip")
def test_addresses_and_default_routes_read_from_rtnetlink_are_what_ip_shows():
    """hostinfo asks rtnetlink instead of running `ip -j`; in a network namespace of its own
    with deprecated, tentative, secondary and link-local addresses and a multipath default
    route, every field ntpguard reads is what `ip -j` prints."""
    out = json.loads(subprocess.run(
        ["unshare", "-n", sys.executable, "-c", HOSTINFO_SNIPPET], check=True,
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout)
    keys = ("family", "local", "prefixlen", "scope", "temporary", "secondary", "deprecated",
            "tentative", "dadfailed", "valid_life_time", "preferred_life_time")

    def addresses(links):
        return [(link["ifname"], sorted(tuple((k, i.get(k)) for k in keys
                                              if k not in ("valid_life_time",
                                                           "preferred_life_time")
                                              or i.get(k) in (0, 4294967295))
                                        for i in link.get("addr_info", [])))
                for link in links if link.get("addr_info")]

    assert addresses(out["ours"]) == addresses(out["ip"])
    flags = {(i["local"], k) for link in out["ours"] for i in link["addr_info"] for k in
             ("deprecated", "tentative", "secondary")
             if i.get(k) and i["scope"] != "link"}  # link-local ones: DAD still running
    assert flags == {("2001:db8:1::3", "deprecated"), ("2001:db8:3::2", "tentative"),
                     ("192.0.2.3", "secondary")}
    lifetimes = {i["local"]: (i["preferred_life_time"], i["valid_life_time"])
                 for link in out["ours"] for i in link["addr_info"]}
    assert 1990 <= lifetimes["2001:db8:1::4"][0] <= 2000 < lifetimes["2001:db8:1::4"][1] <= 3000

    def hops(routes):
        return [{k: r[k] for k in ("dst", "gateway", "dev", "metric") if k in r}
                | {"nexthops": [{k: h[k] for k in ("gateway", "dev") if k in h}
                                for h in r.get("nexthops", [])]} for r in routes]

    assert [hops(r) for r in out["routes"]] == [hops(r) for r in out["ip_routes"]]
    assert len(out["routes"][1][0]["nexthops"]) == 2 and out["routes"][0][0]["metric"] == 7
