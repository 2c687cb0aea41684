"""The pool resolver against real DNS servers on loopback: PowerDNS with rotating LUA answers,
and small misbehaving servers (silent, garbage, truncated, wrong records)."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

import pytest
from dnsfake import FakeDNS

from lab.pooldns import PoolDNS

V6 = [str(ipaddress.ip_address(f"2001:db8:{i // 7:x}::{i + 1:x}")) for i in range(30)]
V4 = [f"198.51.100.{i}" for i in range(1, 13)]


def write_config(tmp_path: Path, port: int, **pool) -> Path:
    lines = ["[pool]", "nameservers = [\"127.0.0.1\"]", f"port = {port}", "interval = 0",
             "timeout = 1.0", "allow_nonglobal = true"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in pool.items()]
    path = tmp_path / "ntpguard.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def servers(run_cli, cfg) -> list[dict]:
    out = run_cli("servers", "--json", config=cfg)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def pool_dns(tmp_path):
    zones = {
        "0.debian.pool.ntp.org": V4[0:4], "1.debian.pool.ntp.org": V4[4:8],
        "2.debian.pool.ntp.org": V6, "3.debian.pool.ntp.org": V4[8:12],
    }
    with PoolDNS(zones, workdir=tmp_path / "pdns",
                 servfail_names=["broken.pool.ntp.org"]) as server:
        yield server


@pytest.mark.root
def test_rounds_converge_on_the_whole_zone(tmp_path, run_cli, pool_dns):
    cfg = write_config(tmp_path, pool_dns.port)
    first = run_cli("resolve", "--rounds", "3", "--json", config=cfg)
    assert first.returncode == 0, first.stderr
    early = json.loads(first.stdout)
    assert early["queries"] == 3 * 8
    zone2 = next(z for z in early["zones"] if z["name"].startswith("2.") and z["rdtype"] == "AAAA")
    # 3 answers of 4 out of 30: at most 12 seen, and the estimate knows there is more.
    assert zone2["observed"] <= 12 and zone2["estimated"] > zone2["observed"]
    # IPv4-only names answer AAAA with no records: not an error.
    assert all(not z["errors"] for z in early["zones"])

    rest = run_cli("resolve", "--rounds", "60", "--json", config=cfg)
    assert rest.returncode == 0, rest.stderr
    late = json.loads(rest.stdout)
    zone2 = next(z for z in late["zones"] if z["name"].startswith("2.") and z["rdtype"] == "AAAA")
    known = {s["address"] for s in servers(run_cli, cfg)}
    assert known == set(V6) | set(V4)
    assert zone2["observed"] == 30 and zone2["unseen"] < 1.5
    assert late["known_servers"] == 42
    assert len(late["new_servers"]) == 42 - len(early["new_servers"])
    by_addr = {s["address"]: s for s in servers(run_cli, cfg)}
    assert by_addr[V6[0]]["zones"] == ["2.debian.pool.ntp.org"] and by_addr[V6[0]]["family"] == 6


@pytest.mark.root
def test_servfail_is_reported_and_keeps_the_set(tmp_path, run_cli, pool_dns):
    cfg = write_config(tmp_path, pool_dns.port, rounds=5)
    assert run_cli("resolve", config=cfg).returncode == 0
    before = servers(run_cli, cfg)
    cfg = write_config(tmp_path, pool_dns.port,
                       names=["broken.pool.ntp.org", "2.debian.pool.ntp.org"])
    out = run_cli("resolve", "--rounds", "1", "--json", config=cfg)
    assert out.returncode == 4, out.stderr
    zones = {(z["name"], z["rdtype"]): z for z in json.loads(out.stdout)["zones"]}
    assert "SERVFAIL" in zones[("broken.pool.ntp.org", "AAAA")]["errors"][0]
    assert zones[("2.debian.pool.ntp.org", "AAAA")]["answers"] == 1
    after = {s["address"] for s in servers(run_cli, cfg)}
    assert {s["address"] for s in before} <= after


def test_nonglobal_answers_are_rejected_by_default(tmp_path, run_cli):
    with FakeDNS(answer=["2001:db8::1", "2604:a880:400:d0::9:b001", "fe80::1", "::1"]) as fake:
        cfg = write_config(tmp_path, fake.port, record_types=["AAAA"],
                           names=["2.debian.pool.ntp.org"])
        cfg.write_text(cfg.read_text().replace("allow_nonglobal = true", "allow_nonglobal = false"))
        out = run_cli("resolve", "--rounds", "1", "--json", config=cfg)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["zones"][0]["rejected"] == 3
    assert [s["address"] for s in servers(run_cli, cfg)] == ["2604:a880:400:d0::9:b001"]


@pytest.mark.parametrize("fake_kw,problem", [
    ({"garbage": b"\xff" * 40}, ""),  # dnspython drops it, then times out
    ({"truncate": True}, ""),
    ({"wrong_type": True}, ""),
])
def test_broken_servers_never_shrink_the_set(tmp_path, run_cli, fake_kw, problem):
    with FakeDNS(answer=["2604:a880:400:d0::9:b001", "2604:a880:1:20::a7:f001"]) as good:
        cfg = write_config(tmp_path, good.port, record_types=["AAAA"],
                           names=["2.debian.pool.ntp.org"])
        assert run_cli("resolve", "--rounds", "1", config=cfg).returncode == 0
    before = servers(run_cli, cfg)
    assert len(before) == 2
    with FakeDNS(**fake_kw) as bad:
        cfg = write_config(tmp_path, bad.port, record_types=["AAAA"],
                           names=["2.debian.pool.ntp.org"])
        out = run_cli("resolve", "--rounds", "2", "--json", config=cfg)
        assert bad.queries >= 2
    assert "Traceback" not in out.stderr
    zone = json.loads(out.stdout)["zones"][0]
    if fake_kw.get("wrong_type"):
        # An answer of the wrong type carries no usable record: no error, nothing added.
        assert out.returncode == 0 and zone["records"] == 0
    else:
        assert out.returncode == 1
        assert zone["errors"] and problem in zone["errors"][0]
    assert servers(run_cli, cfg) == before


def test_server_down_times_out_per_name(tmp_path, run_cli):
    # A bound UDP socket that never answers: the query times out (1 s per query here).
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        cfg = write_config(tmp_path, silent.getsockname()[1],
                           names=["2.debian.pool.ntp.org"], record_types=["AAAA"])
        out = run_cli("resolve", "--rounds", "1", config=cfg)
    finally:
        silent.close()
    assert out.returncode == 1
    assert "2.debian.pool.ntp.org AAAA: timed out" in out.stderr
    assert "Traceback" not in out.stderr
