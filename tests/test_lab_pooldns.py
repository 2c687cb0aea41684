"""The lab's pool DNS: real PowerDNS answering with rotating random 4-subsets, or SERVFAIL."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from lab.netns import Lab
from lab.pooldns import PoolDNS, pool_zones, zone_text

V6 = [str(ipaddress.ip_address(f"2001:db8:{i // 8:x}::{i % 8 + 1:x}")) for i in range(24)]
V4 = [f"198.51.100.{i}" for i in range(1, 13)]


def ask(dns_: PoolDNS, name: str, rtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rtype)
    return dns.query.udp(q, dns_.listen, port=dns_.port, timeout=3)


def addresses(msg: dns.message.Message) -> tuple[frozenset, int]:
    out, ttl = set(), -1
    for rrset in msg.answer:
        ttl = rrset.ttl
        out.update(r.address for r in rrset)
    return frozenset(out), ttl


def test_zone_text_splits_families_and_caps_sample():
    text = zone_text("2.debian.pool.ntp.org", ["2001:db8::1", "192.0.2.1"], ttl=30)
    assert "LUA AAAA \"pickrandomsample(1, {'2001:db8::1'})\"" in text
    assert "LUA A \"pickrandomsample(1, {'192.0.2.1'})\"" in text
    assert "$TTL 30" in text
    assert "pickrandomsample" not in zone_text("x.example", [], servfail=True)
    with pytest.raises(ValueError):
        zone_text("x.example", ["not-an-address"])


def test_pool_zones_layout():
    z = pool_zones(V6, V4)
    assert sorted(z) == [f"{i}.debian.pool.ntp.org" for i in range(4)]
    v4_only = [a for n in "013" for a in z[f"{n}.debian.pool.ntp.org"]]
    assert v4_only and all(ipaddress.ip_address(a).version == 4 for a in v4_only)
    assert set(V6) <= set(z["2.debian.pool.ntp.org"])
    assert sum(len(v) for v in z.values()) == len(V4) + len(V6)


@pytest.mark.root
def test_rotating_subsets_on_loopback(tmp_path):
    zones = pool_zones(V6, V4)
    with PoolDNS(zones, workdir=tmp_path, ttl=150, servfail_names=["broken.pool.example"]) as d:
        assert d.port > 1024 and d.listen == "127.0.0.1"
        seen, draws = set(), set()
        for _ in range(30):
            got, ttl = addresses(ask(d, "2.debian.pool.ntp.org", "AAAA"))
            assert len(got) == 4 and got <= set(V6)
            assert ttl == 150
            draws.add(got)
            seen |= got
        # 30 random 4-of-24 draws: identical draws or < 16 distinct addresses would mean a cache.
        assert len(draws) > 20
        assert len(seen) >= 16
        # A: 0.,1.,3. carry only IPv4 (3 each here); 2. carries AAAA and its share of IPv4.
        got, _ = addresses(ask(d, "0.debian.pool.ntp.org", "A"))
        assert got and got <= set(V4)
        empty = ask(d, "0.debian.pool.ntp.org", "AAAA")
        assert empty.rcode() == dns.rcode.NOERROR and not empty.answer
        bad = ask(d, "broken.pool.example", "AAAA")
        assert bad.rcode() == dns.rcode.SERVFAIL
        nx = ask(d, "nowhere.example", "AAAA")
        assert nx.rcode() == dns.rcode.REFUSED
    assert d.proc is None


@pytest.mark.root
def test_in_namespace_with_short_ttl(tmp_path):
    with Lab("ntpg-l-dns") as lab:
        inet = lab.ns("inet")
        inet.addr("lo", "2001:db8:53::53/128")
        with PoolDNS({"2.debian.pool.ntp.org": V6}, listen="2001:db8:53::53", port=53,
                     workdir=tmp_path, ns=inet, ttl=30) as d:
            out = d.dig("+short", "AAAA", "2.debian.pool.ntp.org").stdout.split()
            assert len(out) == 4 and set(out) <= set(V6)
            assert "30" in d.dig("+noall", "+answer", "AAAA", "2.debian.pool.ntp.org").stdout
            assert "inet" in repr(d)
