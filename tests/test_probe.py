"""ntpguard.probe's pure parts and the CLI's input checks (no root; the lab test is
tests/test_e2e_probe.py)."""

from __future__ import annotations

import functools
import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntpguard import config, fresh
from ntpguard import probe as probing
from ntpguard.config import Detect, Probe
from ntpguard.errors import UsageError
from ntpguard.facts import Scan
from ntpguard.state import State
from ntpguard.status import ServerStatus, Status
from ntpguard.verdict import Finding, attribute

NET = ipaddress.IPv6Network("2001:db8:4057:1::/64")

# `ip -j -6 addr show` / `ip -j -6 route show default` as iproute2 prints them (Debian 12).
LINKS = [
    {"ifname": "lo", "addr_info": [{"family": "inet6", "local": "::1", "prefixlen": 128,
                                    "scope": "host"}]},
    {"ifname": "eth0", "addr_info": [
        {"family": "inet6", "local": "2001:db8:4057:1::5", "prefixlen": 128, "scope": "global",
         "nodad": True, "deprecated": True, "dynamic": True, "valid_life_time": 20,
         "preferred_life_time": 0},
        {"family": "inet6", "local": "2001:db8:4057:1:c448:1c7b:ffe9:2e9c", "prefixlen": 64,
         "scope": "global", "temporary": True, "dynamic": True, "valid_life_time": 120,
         "preferred_life_time": 30},
        {"family": "inet6", "local": "2001:db8:4057:1::100", "prefixlen": 64, "scope": "global",
         "mngtmpaddr": True, "valid_life_time": 4294967295,
         "preferred_life_time": 4294967295},
        {"family": "inet6", "local": "fe80::707a:4aff:feac:bfa3", "prefixlen": 64,
         "scope": "link"},
    ]},
    {"ifname": "wlan0", "addr_info": [{"family": "inet6", "local": "2001:db8:99:2::7",
                                       "prefixlen": 64, "scope": "global"}]},
]
ROUTES = [{"dst": "default", "gateway": "2001:db8:4057:1::1", "dev": "eth0", "metric": 1024}]


# -- addresses -------------------------------------------------------------------------------

def test_fresh_address_skips_reserved_and_taken_identifiers():
    taken = {"2001:db8:4057:1::100", "2001:db8:4057:1::2"}
    draws = iter([0, 0xFDFF_FFFF_FFFF_FF80, 0xFFFF_FFFF_FFFF_FFFF, 0x100, 0x2, 0x1234])
    got = fresh.fresh_address(NET, taken, rand=lambda bits: next(draws))
    assert got == "2001:db8:4057:1::1234"


@given(st.integers(min_value=32, max_value=120), st.integers(min_value=0, max_value=2**64),
       st.integers(min_value=0, max_value=2**32))
def test_fresh_address_is_inside_the_prefix_and_never_the_hosts(length, base, seed):
    rnd = random.Random(seed)
    net = ipaddress.IPv6Network(((0x2001 << 112 | base << 48) >> (128 - length)
                                 << (128 - length), length))
    taken = {str(net[i]) for i in range(1, 5)}
    got = fresh.fresh_address(net, taken, rand=lambda bits: rnd.getrandbits(bits))
    ip = ipaddress.IPv6Address(got)
    assert ip in net and got not in taken and ip != net.network_address


def test_fresh_address_default_randomness_varies():
    got = {fresh.fresh_address(NET, frozenset()) for _ in range(50)}
    assert len(got) == 50 and all(ipaddress.IPv6Address(a) in NET for a in got)


def test_a_tiny_prefix_is_refused():
    with pytest.raises(UsageError):
        fresh.fresh_address(ipaddress.IPv6Network("2001:db8::/126"), ())


# -- where probes come from -------------------------------------------------------------------

def test_target_is_the_default_routes_interface_and_its_stable_64():
    t = fresh.choose_target(LINKS, ROUTES)
    assert t == probing.Target("eth0", NET)


def test_target_configured_interface_and_prefix_win():
    assert fresh.choose_target(LINKS, ROUTES, "wlan0").prefix == \
        ipaddress.IPv6Network("2001:db8:99:2::/64")
    assert fresh.choose_target(LINKS, [], "eth0", "2001:db8:77::/64") == \
        probing.Target("eth0", ipaddress.IPv6Network("2001:db8:77::/64"))


@pytest.mark.parametrize("links,routes,iface,msg", [
    (LINKS, [], "", "no IPv6 default route"),
    (LINKS, ROUTES, "eth9", "interface 'eth9' not found"),
    ([{"ifname": "eth0", "addr_info": LINKS[1]["addr_info"][:2] + LINKS[1]["addr_info"][3:]}],
     ROUTES, "", "no global IPv6 /64 on eth0"),
])
def test_target_problems_are_probe_errors(links, routes, iface, msg):
    with pytest.raises(fresh.ProbeError, match=msg):
        fresh.choose_target(links, routes, iface)


def test_live_probes_are_the_deprecated_128s_in_the_prefix():
    assert probing.live_probes(LINKS, probing.Target("eth0", NET)) == {"2001:db8:4057:1::5"}
    assert probing.live_probes(LINKS, probing.Target("wlan0", NET)) == set()


# -- settings and input --------------------------------------------------------------------

def test_lifetime_default_outlasts_lookback_and_window():
    assert probing.lifetime(Probe(), Detect(lookback=600, window=120)) == 720
    assert probing.lifetime(Probe(lifetime=14.2), Detect(lookback=10)) == 15
    with pytest.raises(UsageError, match=r"shorter than detect\.lookback"):
        probing.lifetime(Probe(lifetime=30), Detect(lookback=600))


def test_check_servers_canonical_unique_ipv6_only():
    assert probing.check_servers(["2A03:B0C0:3:D0::18:B001", "2a03:b0c0:3:d0::18:b001",
                                  "2604:a880:1:20::a7:f001"]) == [
        "2a03:b0c0:3:d0::18:b001", "2604:a880:1:20::a7:f001"]
    for bad, msg in [("192.0.2.1", "IPv4"), ("nope", "not an IP address"),
                     ("2001:db8::1", "documentation"), ("fe80::1%eth0", "not an IP")]:
        with pytest.raises(UsageError, match=msg):
            probing.check_servers([bad])
    assert probing.check_servers(["2001:db8::1"], allow_nonglobal=True) == ["2001:db8::1"]
    with pytest.raises(UsageError, match="link-local"):  # even in a lab
        probing.check_servers(["fe80::1"], allow_nonglobal=True)


# -- choosing suspects -------------------------------------------------------------------------

def v(address: str, status: str, p: float, pos: int) -> Finding:
    return Finding(address, Status(status), p, pos, 0, 0, 0.7)


def stated(pairs: dict[str, str]) -> dict[str, ServerStatus]:
    return {a: ServerStatus.of(a, s) for a, s in pairs.items()}


def test_select_suspects_order_limit_pending():
    statuses = stated({"2001:db8::a": "suspect", "2001:db8::b": "unknown",
                      "2001:db8::c": "clean", "2001:db8::d": "harvester",
                      "2001:db8::e": "unknown", "192.0.2.9": "suspect",
                      "2001:db8::f": "suspect", "2001:db8::10": "unknown"})
    detected = {"2001:db8::a": v("2001:db8::a", "suspect", 0.6, 2),
                "2001:db8::b": v("2001:db8::b", "unknown", 0.3, 1),
                "2001:db8::c": v("2001:db8::c", "clean", 0.01, 1),   # cleared by a mark, say
                "2001:db8::d": v("2001:db8::d", "harvester", 0.99, 3),
                "2001:db8::e": v("2001:db8::e", "unknown", 0.05, 0),  # no positive: no probe
                "2001:db8::f": v("2001:db8::f", "suspect", 0.9, 2),
                "2001:db8::11": v("2001:db8::11", "unknown", 0.2, 1)}  # not known: still
    assert probing.select_suspects(statuses, detected, set(), 8) == [
        "2001:db8::f", "2001:db8::a", "2001:db8::b", "2001:db8::11"]
    assert probing.select_suspects(statuses, detected, {"2001:db8::f"}, 2) == [
        "2001:db8::a", "2001:db8::b"]
    # A list or manual "suspect" without local evidence is probed too (last).
    assert probing.select_suspects(stated({"2001:db8::9": "suspect"}), {}, set(), 8) == [
        "2001:db8::9"]


def test_pending_servers_only_from_live_probe_addresses_within_lookback():
    first = {("2001:db8:4057:1::5", "2001:db8::a"): 95.0,
             ("2001:db8:4057:1::6", "2001:db8::b"): 50.0,
             ("2001:db8:4057:1::100", "2001:db8::c"): 99.0}
    live = {"2001:db8:4057:1::5", "2001:db8:4057:1::6"}
    assert probing.pending_servers(first, live, now=100.0, lookback=10) == {"2001:db8::a"}


# -- the recorded contact is a group test of one server ---------------------------------------

def test_recorded_probe_contacts_become_sole_tests(tmp_path):
    with State.open(str(tmp_path), lock=True) as state:
        state.record_probe_contacts([("2001:db8:4057:1::5", "2001:db8::a", 100.0),
                                     ("2001:db8:4057:1::6", "2001:db8::b", 100.0)])
        state.record_probe_contacts([("2001:db8:4057:1::5", "2001:db8::a", 90.0),
                                     ("2001:db8:4057:1::5", "2001:db8::a", 120.0)])
        contacts = state.contacts()
    assert contacts.first == {("2001:db8:4057:1::5", "2001:db8::a"): 90.0,
                              ("2001:db8:4057:1::6", "2001:db8::b"): 100.0}
    scan = Scan(95.0, 96.0, "2001:db8:5ca::/64", "2001:db8:4057:1::5", 120, 120, ("TCP",), ())
    verdicts, est = attribute(contacts.runs, [scan], 200.0, config.Detect(lookback=10.0),
                              {"2001:db8:4057:1::5", "2001:db8:4057:1::6"})
    assert est.unattributed_scans == 0
    a, b = verdicts["2001:db8::a"], verdicts["2001:db8::b"]
    assert (a.positive, a.sole, a.negative) == (1, 1, 0)
    assert (b.positive, b.negative) == (0, 1)


def test_two_sole_probe_hits_convict_where_two_passive_ones_do_not(tmp_path):
    """A probe address was given to one server only: a scan of it is not background noise.
    The same evidence from ordinary addresses stays below "harvester" (few tests, so the
    estimated background rate is high); from probe addresses it convicts."""
    harvester, clean = "2001:db8::a", ["2001:db8::b", "2001:db8::c", "2001:db8::d"]
    first, scans = {}, []
    for i in range(2):  # two probes of the harvester, both scanned
        address = f"2001:db8:4057:1::{i + 10:x}"
        first[(address, harvester)] = 100.0 + i
        scans.append(Scan(105.0 + i, 106.0 + i, "2001:db8:5ca::/64", address, 120, 120,
                          ("TCP",), ()))
    for i, server in enumerate(clean):  # one probe of each clean server, never scanned
        first[(f"2001:db8:4057:1::{i + 20:x}", server)] = 100.0
    probes = {a for a, _ in first}
    for marked, want in ((set(), {"suspect", "unknown"}), (probes, {"harvester"})):
        runs = {k: [t, t, 1] for k, t in first.items()}
        verdicts, _ = attribute(runs, scans, 500.0, config.Detect(lookback=10.0), marked)
        assert verdicts[harvester].status in want, (marked, verdicts[harvester])
        assert verdicts[harvester].sole == 2
        assert all(verdicts[c].status != "harvester" for c in clean)

    with State.open(str(tmp_path), lock=True) as state:
        state.record_probe_contacts([(a, s, t) for (a, s), t in first.items()])
        assert state.probe_addresses() == probes


# -- a probe's wait: counted down, without the state lock -----------------------------------

def test_a_probe_waits_for_its_answer_without_the_lock_and_counts_down(tmp_path, monkeypatch):
    """probe.timeout per server is a wait an admin sees each second, and the state's writer
    lock is free meanwhile (another run writes then), while the contact is recorded under
    it. A real SNTP exchange on loopback with a server that never answers; adding a probe
    address needs root, so here the probe goes from ::1 (tests/test_e2e_probe.py adds real
    ones)."""
    from test_timeconf import fake_server

    sock, port = fake_server(lambda request: [])
    monkeypatch.setattr(probing, "find_target",
                        lambda settings: probing.Target("lo", ipaddress.IPv6Network("::/64")))
    monkeypatch.setattr(probing, "addresses", lambda: [])
    monkeypatch.setattr(probing, "fresh_address", lambda prefix, taken: "::1")
    monkeypatch.setattr(probing, "add_address", lambda *args: None)
    monkeypatch.setattr(probing, "send", functools.partial(probing.send, port=port))
    shown: list[str] = []
    try:
        with State.open(str(tmp_path), holder="ntpguard probe") as state:

            def show(text: str) -> None:
                shown.append(text)
                with State.open(str(tmp_path), holder="ntpguard mark") as other:
                    other.record_answer("2.p", "AAAA", [(f"2001:db8::{len(shown)}", 6)], 1.0)

            _, _, results = probing.run(
                ["::1"], Probe(timeout=2.5), Detect(),
                lambda r: state.record_probe_contacts([(r.source, r.server, r.time)]),
                show=show, idle=state.unlocked)
            assert state.contacts().first.keys() == {("::1", "::1")}
            assert len(state.servers()) == len(shown)
    finally:
        sock.close()
    assert results[0].sent and not results[0].answered, results
    assert shown == [f"probe 1/1: 0 sent; waiting {n} s for ::1 to answer" for n in (3, 2, 1)]


# -- the CLI refuses bad input with one line, before touching anything ------------------------

@pytest.mark.parametrize("args,config,msg", [
    ([], "", "give server addresses to probe, or --suspects"),
    (["--suspects", "2001:db8::1"], "", "not both"),
    (["192.0.2.1"], "", "IPv4 servers cannot be probed"),
    (["zzz"], "", "not an IP address"),
    (["2604:a880:1:20::a7:f001"], "[probe]\nlifetime = 5.0\n", "probe.lifetime (5 s)"),
    (["2604:a880:1:20::a7:f001"], "[probe]\nprefix = \"2001:db8::1/64\"\n", "probe.prefix"),
    (["2604:a880:1:20::a7:f001"], "[probe]\ninterface = \"a b\"\n", "probe.interface"),
    (["2604:a880:1:20::a7:f001", "2604:a880:1:20::a7:f002"], "[probe]\nmax_per_run = 1\n",
     "more than probe.max_per_run"),
])
def test_cli_bad_input_is_one_line_exit_2(run_cli, tmp_path, state_dir, args, config, msg):
    cfg = tmp_path / "c.toml"
    cfg.write_text(config)
    out = run_cli("probe", *args, config=cfg)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("ntpguard: ") and out.stderr.count("\n") == 1, out.stderr
    assert msg in out.stderr
    assert not (state_dir / "state.db").exists()


def test_random_draws_use_all_64_bits():
    rnd = random.Random(1)
    got = [fresh.fresh_address(NET, (), rand=lambda bits: rnd.getrandbits(bits))
           for _ in range(200)]
    assert max(int(ipaddress.IPv6Address(a)) - int(NET.network_address) for a in got) > 2**62
