"""plan.build and the backends' pure renderers: no root, no netfilter."""

from __future__ import annotations

import ipaddress
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntpguard.backends import iptables as ipt
from ntpguard.backends import nft
from ntpguard.config import ConfigError, Rules, parse
from ntpguard.errors import FirewallError, UsageError
from ntpguard.plan import (
    HostFacts,
    PlanInputError,
    PrefixEntry,
    PrefixSet,
    UnsafePlan,
    build,
)
from ntpguard.status import ServerStatus

HOST = HostFacts(("2001:db8:1::2", "192.0.2.2", "fe80::2"), ("fe80::1", "192.0.2.1"))


def servers(*pairs: tuple[str, str]) -> list[ServerStatus]:
    return [ServerStatus.of(a, s) for a, s in pairs]


def scan(*prefixes: str) -> list[PrefixEntry]:
    return [PrefixEntry(p, f"list.txt:{i + 1}") for i, p in enumerate(prefixes)]


def plan_of(srv=(("2001:db8:100::1", "clean"),), scanners=(), harvesters=(), rules=None,
            host=HOST, force=False):
    rules = rules or Rules()
    return build(servers(*srv), scan(*scanners), scan(*harvesters), rules, host, force)


# -- who may receive NTP -------------------------------------------------------------------


def test_clean_and_unjudged_servers_allowed_harvesters_and_suspects_not():
    p = plan_of(srv=[("2001:db8:100::1", "clean"), ("2001:db8:100::2", "unknown"),
                     ("2001:db8:100::3", "harvester"), ("2001:db8:100::4", "suspect"),
                     ("198.51.100.1", "clean"), ("198.51.100.2", "harvester")])
    assert p.clean6 == ("2001:db8:100::1", "2001:db8:100::2")
    assert p.clean4 == ("198.51.100.1",)
    blocked = {(s.family, s.length, n) for s in p.harvesters for n in s.networks}
    assert blocked == {(6, 128, "2001:db8:100::3"), (6, 128, "2001:db8:100::4"),
                       (4, 32, "198.51.100.2")}


def test_addresses_are_canonical_and_sorted_numerically():
    p = plan_of(srv=[("2001:DB8:100:0::10", "clean"), ("2001:db8:100::9", "clean"),
                     ("2001:0db8:0100::a", "clean")])
    assert p.clean6 == ("2001:db8:100::9", "2001:db8:100::a", "2001:db8:100::10")


def test_the_plan_follows_statuses_inside_prefixes():
    """Whether a list entry outranks a server is the status model's decision; the plan lets
    every usable server through, before any prefix is looked at (the render tests show the
    order), and says how many sit inside harvester prefixes."""
    p = plan_of(srv=[("2001:db8:100::1", "clean"), ("2001:db8:200::1", "clean"),
                     ("2001:db8:300::1", "clean")],
                harvesters=["2001:db8:100::/48"], scanners=["2001:db8:200::/64"])
    assert p.clean6 == ("2001:db8:100::1", "2001:db8:200::1", "2001:db8:300::1")
    assert any("1 usable server(s) inside harvester prefixes" in n for n in p.notes)
    # A known server that is not usable (not known) is neither let through nor blocked.
    unknown_addr = build([ServerStatus.of("2001:db8:300::2", "clean", known=False),
                          ServerStatus.of("2001:db8:300::1", "clean")], [], [], Rules(), HOST)
    assert unknown_addr.clean6 == ("2001:db8:300::1",)
    assert unknown_addr.counts()["harvester_prefixes"] == 0


def test_no_clean_server_with_block_is_refused_unless_forced():
    with pytest.raises(UnsafePlan, match=r"stop all time sync.*--force"):
        plan_of(srv=[("2001:db8:100::3", "harvester")])
    with pytest.raises(UnsafePlan):
        plan_of(srv=())
    forced = plan_of(srv=(), force=True)
    assert forced.forced and forced.clean6 == () and "forced" in forced.notes[0]
    lenient = plan_of(srv=(), rules=Rules(unknown="allow"))
    assert lenient.unknown == "allow"


def test_unsafe_plan_is_a_firewall_error_not_a_crash():
    assert issubclass(UnsafePlan, FirewallError)
    assert issubclass(PlanInputError, UsageError)


# -- scanner prefix safety -------------------------------------------------------------------


@pytest.mark.parametrize("prefix, why", [
    ("2600::/31", "broader than the limit /32"),
    ("10.0.0.0/15", "broader than the limit /16"),
    ("2001:db8::1/64", "host bits set"),
    ("not-a-prefix", "not an IP address or prefix"),
    ("::/32", "covers the unspecified address"),
    ("::1", "covers loopback"),
    ("fe80::/64", "covers link-local"),
    ("fe80::1", "covers link-local"),
    ("127.0.0.0/16", "covers loopback"),
    ("169.254.1.0/24", "covers link-local"),
    ("2001:db8:1::/48", "covers this host's address 2001:db8:1::2"),
    ("192.0.2.0/24", "covers this host's address 192.0.2.2"),
    ("ff02::/32", "covers multicast"),
])
def test_dangerous_scanner_prefixes_refused_with_source(prefix, why):
    with pytest.raises(PlanInputError) as exc:
        plan_of(scanners=["2604:a880:800:10::/64", prefix])
    assert str(exc.value).startswith("list.txt:2: ")
    assert why in str(exc.value)


def test_default_gateway_protected():
    host = HostFacts(("2001:db8:1::2",), ("2001:db8:9::1", "203.0.113.1"))
    with pytest.raises(PlanInputError, match=re.escape("default gateway 2001:db8:9::1")):
        plan_of(scanners=["2001:db8:9::/64"], host=host)
    with pytest.raises(PlanInputError, match=re.escape("default gateway 203.0.113.1")):
        plan_of(scanners=["203.0.113.0/24"], host=host)


def test_prefix_limits_come_from_config():
    p = plan_of(scanners=["2600::/24"], rules=Rules(max_prefix_v6=24))
    assert p.scanners[0].length == 24
    with pytest.raises(PlanInputError, match=re.escape("rules.max_prefix_v4")):
        plan_of(scanners=["203.0.113.0/24"], rules=Rules(max_prefix_v4=28))


def test_harvester_prefixes_limited_too():
    with pytest.raises(PlanInputError, match=re.escape("broader than the limit /32")):
        plan_of(harvesters=["2604::/16"])


# -- collapsing and grouping -----------------------------------------------------------------


def test_duplicates_and_nested_prefixes_collapse_siblings_stay():
    p = plan_of(scanners=["2604:a880:800:10::/64", "2604:a880:800:10::5",
                          "2604:a880:800::/48", "2604:a880:801::/48", "2604:a880:800::/48",
                          "203.0.113.0/24", "203.0.113.7", "198.51.100.0/25",
                          "198.51.100.128/25"])
    got = {(s.family, s.length): s.networks for s in p.scanners}
    assert got == {(6, 48): ("2604:a880:800::", "2604:a880:801::"),
                   (4, 25): ("198.51.100.0", "198.51.100.128"),
                   (4, 24): ("203.0.113.0",)}


def test_plan_is_deterministic_whatever_the_input_order():
    entries = [f"2604:a880:{i:x}::/48" for i in range(50)] + ["203.0.113.0/24"]
    srv = [(f"2001:db8:100::{i:x}", "clean") for i in range(20)]
    a = plan_of(srv=srv, scanners=entries)
    random.Random(3).shuffle(entries)
    random.Random(4).shuffle(srv)
    assert plan_of(srv=srv, scanners=entries) == a
    assert nft.rules_for(plan_of(srv=srv, scanners=entries)).sets == nft.rules_for(a).sets


@st.composite
def v6_prefixes(draw):
    length = draw(st.sampled_from([32, 40, 48, 56, 64, 96, 120, 128]))
    value = (0x2604 << 112) | draw(st.integers(0, 2**112 - 1))
    value = value >> (128 - length) << (128 - length)
    return f"{ipaddress.IPv6Address(value)}/{length}"


@settings(max_examples=60, deadline=None)
@given(st.lists(v6_prefixes(), max_size=40))
def test_collapse_covers_every_entry_and_leaves_no_overlap(prefixes):
    p = plan_of(scanners=prefixes)
    nets = [ipaddress.ip_network(f"{n}/{s.length}") for s in p.scanners for n in s.networks]
    for text in prefixes:
        net = ipaddress.ip_network(text)
        assert any(net.subnet_of(n) for n in nets), text
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            assert not a.overlaps(b), (a, b)
    assert len(nets) <= len(set(prefixes))


# -- config ----------------------------------------------------------------------------------


def test_rules_config_section():
    cfg = parse('[rules]\nmode = "gateway"\nunknown = "allow"\nlog = false\n', "t.toml")
    assert cfg.rules.mode == "gateway" and cfg.rules.unknown == "allow" and not cfg.rules.log
    with pytest.raises(ConfigError,
                       match=re.escape('rules.mode: must be one of "host", "gateway"')):
        parse('[rules]\nmode = "router"\n', "t.toml")
    with pytest.raises(ConfigError,
                       match=re.escape("rules.max_prefix_v4: must be a prefix length 1-32")):
        parse("[rules]\nmax_prefix_v4 = 33\n", "t.toml")
    with pytest.raises(ConfigError, match=re.escape("rules.backend")):
        parse('[rules]\nbackend = "pf"\n', "t.toml")


# -- nft rendering ---------------------------------------------------------------------------


def test_nft_ruleset_host_mode():
    p = plan_of(srv=[("2001:db8:100::1", "clean"), ("198.51.100.1", "clean")],
                scanners=["2604:a880:800:10::/64", "2001:db8:666::5", "203.0.113.0/24"])
    text = nft.rules_for(p).full_text(0x1234)
    assert text.startswith("table inet ntpguard\ndelete table inet ntpguard\n")
    assert "ip6 saddr & ffff:ffff:ffff:ffff:: @scan6_64 counter drop" in text
    assert "ip6 saddr @scan6_128 counter drop" in text
    assert "ip saddr & 255.255.255.0 @scan4_24 counter drop" in text
    assert "counter reject with icmpx type admin-prohibited" in text
    assert 'log prefix "ntpguard-ntp-out: "' in text and 'log prefix "ntpguard-in: "' in text
    assert "add element inet ntpguard clean6 { 2001:db8:100::1 }" in text
    assert "add element inet ntpguard generation { 0x1234 }" in text
    assert "hook forward" not in text
    # Nothing outside the table: every command names table inet ntpguard.
    for line in text.splitlines():
        if line and not line.startswith(("\t", "}")):
            assert " inet ntpguard" in line, line


def test_nft_gateway_allow_mode_and_logging_options():
    p = plan_of(srv=[("2001:db8:100::3", "harvester")], harvesters=["2604:a880:400::/48"],
                rules=Rules(mode="gateway", unknown="allow", log_group=5, log_rate=7))
    text = nft.rules_for(p).full_text(1)
    assert "type filter hook forward priority filter" in text
    assert 'log prefix "ntpguard-ntp-fwd: " group 5' in text
    assert "limit rate 7/second" in text
    assert "ip6 daddr & ffff:ffff:ffff:: @harv6_48 counter reject" in text
    assert "ip6 daddr @harv6_128 counter reject" in text
    # Usable servers return before any harvester prefix is matched; scanners lose only
    # unsolicited traffic.
    ntp_chain = text[text.index("chain ntp {"):text.index("chain scanners {")]
    assert ntp_chain.index("ip6 daddr @clean6 return") < ntp_chain.index("@harv6_48")
    forward = text[text.index("chain forward {"):]
    assert forward.index("ct state established,related return") < forward.index(
        "jump scanners")
    quiet = nft.rules_for(plan_of(rules=Rules(log=False))).full_text(1)
    assert " log " not in quiet


def test_nft_diff_only_touches_changed_elements():
    a = nft.rules_for(plan_of(srv=[("2001:db8:100::1", "clean"), ("2001:db8:100::2", "clean")],
                           scanners=["2604:a880:800:10::/64"]))
    b = nft.rules_for(plan_of(srv=[("2001:db8:100::1", "clean"), ("2001:db8:100::3", "clean")],
                           scanners=["2604:a880:800:10::/64"]))
    cached = {"token": 7, "skeleton": a.skeleton, "sets": a.sets}
    text, added, deleted = nft.diff_text(cached, b, 9)
    assert (added, deleted) == (1, 1)
    assert text.splitlines() == [
        "delete element inet ntpguard clean6 { 2001:db8:100::2 }",
        "add element inet ntpguard clean6 { 2001:db8:100::3 }",
        "delete element inet ntpguard generation { 0x7 }",
        "add element inet ntpguard generation { 0x9 }",
    ]
    assert nft.diff_text(cached, a, 9) == ("", 0, 0)


# -- iptables rendering ------------------------------------------------------------------------


def test_iptables_rules_and_sets():
    p = plan_of(srv=[("2001:db8:100::1", "clean"), ("198.51.100.1", "clean")],
                scanners=["2604:a880:800:10::/64", "203.0.113.0/24", "2001:db8:666::5"],
                rules=Rules(mode="gateway"))
    r = ipt.rules_for(p)
    assert r.sets["ntpguard-scan6"] == (6, ["2001:db8:666::5", "2604:a880:800:10::/64"])
    assert r.sets["ntpguard-clean4"] == (4, ["198.51.100.1"])
    out6 = [x.save_line("NTPGUARD-OUT") for x in r.chains[6]["NTPGUARD-OUT"]]
    assert out6[-2:] == [
        "-A NTPGUARD-OUT -p udp -m udp --dport 123 -m set --match-set ntpguard-clean6 dst "
        "-j RETURN",
        "-A NTPGUARD-OUT -p udp -m udp --dport 123 -j REJECT --reject-with icmp6-adm-prohibited",
    ]
    assert "--reject-with icmp-admin-prohibited" in r.text()
    assert set(r.chains[4]) == {"NTPGUARD-OUT", "NTPGUARD-IN", "NTPGUARD-FWD"}
    assert "NTPGUARD-FWD" not in ipt.rules_for(plan_of()).chains[6]


def test_iptables_refuses_nflog():
    with pytest.raises(FirewallError, match=re.escape("NFLOG")):
        ipt.rules_for(plan_of(rules=Rules(log_group=3)))


def test_parsed_networks_accepted_and_still_checked():
    p = build(servers(("2001:db8:100::1", "clean")),
              [PrefixEntry(ipaddress.ip_network("2604:a880:800:10::/64"), "l:1")], [], Rules(),
              HOST)
    assert p.scanners[0].networks == ("2604:a880:800:10::",)
    with pytest.raises(PlanInputError, match=re.escape("l:1: 2600::/16 is broader")):
        build(servers(("2001:db8:100::1", "clean")),
              [PrefixEntry(ipaddress.ip_network("2600::/16"), "l:1")], [], Rules(), HOST)


def test_protected_reason_names_what_a_prefix_would_cut_off():
    from ntpguard.plan import protected_reason

    host = HostFacts(addresses=("2001:db8:1::2",), gateways=("fe80::1",))
    assert protected_reason("2604:a880:800:10::/64", host) is None
    assert "2001:db8:1::2" in protected_reason("2001:db8:1::/64", host)
    assert protected_reason("fe80::/64", host) == "link-local"


# -- compiled lists: the protected-address check without a pass over the entries -----------


def _listed(*lines: str):
    from ntpguard.lists import Limits, parse
    from ntpguard.plan import Listed

    parsed = parse("\n".join(lines).encode() + b"\n", "big.txt",
                   Limits(allow_nonglobal=True, default_kind="scanner"))
    return Listed("big.txt", parsed.compiled.scanner)


@pytest.mark.parametrize("entry, covered", [
    ("2001:db8:1::2", True),  # the very address
    ("2001:db8:1::/112", True),  # inside the host's /64, longer than /64
    ("2001:db8:1:0:8000::/65", False),  # the other half of that /64
    ("2001:db8:1::/64", True),
    ("2001:db8:1::/48", True),
    ("2001:db8:2::/64", False),
    ("2001:db8:1::3", False),  # a neighbour of many host addresses, none of them
])
def test_listed_scanners_cover_host_addresses(entry, covered):
    # Like a host with its canaries: many addresses in one /64, looked up per /64 first.
    canaries = [f"2001:db8:1::{i:x}" for i in range(0x100, 0x200)]
    host = HostFacts((*canaries, "2001:db8:1::2"), ("fe80::1",))
    listed = _listed("2600:1::/48", "203.0.113.0/24", entry, "2001:db8:1::4")
    if covered:
        with pytest.raises(PlanInputError, match=r"^big\.txt:3: .*covers this host's address"):
            build(servers(("2001:db8:100::1", "clean")), [], [], Rules(), host,
                  listed_scanners=[listed])
    else:
        p = build(servers(("2001:db8:100::1", "clean")), [], [], Rules(), host,
                  listed_scanners=[listed])
        assert sum(len(s.networks) for s in p.scanners) == 4


@pytest.mark.parametrize("seed", range(40))
def test_the_protected_check_agrees_with_one_entry_at_a_time(seed):
    """The grouped lookups (and the groups' spans they skip by) refuse a list exactly when
    some entry, checked alone, would cut off a protected address, naming the first such line."""
    from ntpguard.plan import protected_reason

    rng = random.Random(seed)
    host = HostFacts(("2001:db8:1::2", "2001:db8:1::1:5", "192.0.2.2"),
                     ("fe80::1", "192.0.2.1"))
    entries: set[str] = set()
    while len(entries) < 30:
        if rng.random() < 0.5:
            near = rng.random() < 0.03  # beside this host's addresses
            base = 0x20010DB8 << 96 | 1 << 80 if near else rng.choice([0x26 << 120, 0x24 << 120])
            length = rng.choice([32, 48, 64, 96, 112, 127, 128])
            value = (base | rng.getrandbits(96) >> rng.randint(0, 96)) >> (128 - length) \
                << (128 - length)
            entries.add(str(ipaddress.IPv6Network((value, length))))
        else:
            near = rng.random() < 0.03
            base = 0xC0000200 if near else rng.choice([0xCB007100, 0x0B000000])
            length = rng.choice([16, 24, 28, 31, 32])
            value = (base | rng.getrandbits(8)) >> (32 - length) << (32 - length)
            entries.add(str(ipaddress.IPv4Network((value, length))))
    lines = sorted(entries, key=lambda _: rng.random())
    expected = next((i + 1 for i, e in enumerate(lines) if protected_reason(e, host)), None)
    listed = _listed(*lines)
    if expected is None:
        build(servers(("2001:db8:100::1", "clean")), [], [], Rules(), host,
              listed_scanners=[listed])
    else:
        with pytest.raises(PlanInputError, match=rf"^big\.txt:{expected}: "):
            build(servers(("2001:db8:100::1", "clean")), [], [], Rules(), host,
                  listed_scanners=[listed])


def test_one_server_verdict_never_changes_the_sets_only_their_elements():
    """The /128 and /32 harvester sets are there with no harvester too, so the firewall's
    skeleton is the same before and after one server is judged (an update in place)."""
    from ntpguard.backends.nft import rules_for

    statuses = [ServerStatus.of("2001:db8:300::1", "clean"), ServerStatus.of("192.0.2.77",
                                                                             "clean")]
    before = build(statuses, [], [], Rules(unknown="allow"), HOST)
    for bad in ("2001:db8:300::1", "192.0.2.77"):
        judged = [ServerStatus.of(s.address, "harvester" if s.address == bad else "clean")
                  for s in statuses]
        after = build(judged, [], [], Rules(unknown="allow"), HOST)
        assert rules_for(after).skeleton == rules_for(before).skeleton
        assert rules_for(after).sets != rules_for(before).sets


@pytest.mark.parametrize("family", [4, 6])
def test_set_masks_are_the_netmasks_ipaddress_gives(family):
    """The `& MASK` of each set in the nft rules, for every prefix length."""
    zero = "0.0.0.0" if family == 4 else "::"
    for length in range(33 if family == 4 else 129):
        ps = PrefixSet(family, length, ())
        assert ps.mask() == str(ipaddress.ip_network(f"{zero}/{length}").netmask), length
