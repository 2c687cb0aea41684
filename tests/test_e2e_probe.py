"""`ntpguard probe` in the lab: fresh addresses make attribution exact (root, namespaces ntpg-p-).

One harvester and seven clean servers are probed from the lab host; the harvester's scanner
sweeps exactly the harvester's probe address, `detect --record` reads the host's firewall log
and the group tests built on the probes' contacts give the harvester sole positives and the
clean servers negatives; `probe --suspects` then picks the harvester by itself; the kernel
removes every probe address after its lifetime.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import time
from pathlib import Path

import pytest
from labtools import canon, explained, wait_for

from lab.netns import list_namespaces
from lab.world import (
    HOST_NET,
    LOG_PREFIX_IN,
    LOG_PREFIX_OUT,
    World,
    WorldSpec,
    lab_lookback,
    ntpguard_config,
    run_ntpguard,
)

PREFIX = "ntpg-p-"


def host_addresses(world: World) -> dict[str, dict]:
    out = world.host.run("ip", "-j", "-6", "addr", "show", "dev", "eth0")
    return {canon(i["local"]): i for link in json.loads(out.stdout)
            for i in link.get("addr_info", [])}


def probe(world: World, *args: str) -> list[dict]:
    out = run_ntpguard(world, "probe", "--json", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def detect_record(world: World) -> dict[str, dict]:
    out = run_ntpguard(world, "detect", "--record", "--json", str(world.firewall_json))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return {v["address"]: v for v in lines if v.get("type") == "server"}


@pytest.mark.root
@pytest.mark.lab
def test_probe_confirms_the_harvester_and_clears_clean_servers(tmp_path: Path):
    spec = WorldSpec(seed=21, prefix=PREFIX, lag_min=1.0, lag_max=2.0, chrony_client=False)
    lookback = lab_lookback(spec)
    life = lookback + 4
    with World(spec, tmp_path / "world") as world, explained(world):
        (world.guard_dir / "ntpguard.toml").write_text(ntpguard_config(
            world, overrides={"probe": {"lifetime": life, "timeout": 0.5}}))
        out = run_ntpguard(world, "resolve")  # the known set, so `servers` lists them
        assert out.returncode == 0, out.stderr
        harvester = world.harvesters[0]
        # One harvester and seven clean servers (the default max_per_run is 8).
        clean = [a for a in world.clean if ":" in a][:7]
        before = set(host_addresses(world))

        # Round 1: one probe each, each from its own fresh address in the host's /64.
        t0 = time.time()
        first = probe(world, harvester, *clean)
        assert [p["server"] for p in first] == [harvester, *clean]
        sources = [p["source"] for p in first]
        assert len(set(sources)) == len(first) and not set(sources) & before
        assert all(ipaddress.ip_address(s) in ipaddress.ip_network(HOST_NET) for s in sources)
        # The answer is reported only (a busy chronyd may be late); the probe is the packet.
        assert all(p["sent"] for p in first) and any(p["answered"] for p in first), first
        addrs = host_addresses(world)
        for s in sources:  # deprecated (never the host's own source), expiring
            assert addrs[s]["prefixlen"] == 128 and addrs[s]["preferred_life_time"] == 0
            assert 0 < addrs[s]["valid_life_time"] <= life
        # The contacts are in the state before any log is read.
        with sqlite3.connect(world.guard_dir / "state" / "state.db") as db:
            stored = set(db.execute("SELECT address, server FROM detect_contacts"))
        assert stored == {(p["source"], p["server"]) for p in first}

        # The harvester's scanner sweeps exactly the harvester's probe address.
        assert wait_for(lambda: world.scans(), timeout=spec.lag_max + 10)
        time.sleep(spec.lag_max + 1)
        assert [s["target"] for s in world.scans()] == [sources[0]]

        # After the lookback (and a later log line so the log covers it), the evidence.
        time.sleep(max(0.0, t0 + lookback + 1 - time.time()))
        world.poke(world.clean[-1:])
        time.sleep(1.5)
        verdicts = detect_record(world)
        assert verdicts[harvester]["sole"] == 1 and verdicts[harvester]["positive"] == 1
        assert verdicts[harvester]["status"] in ("suspect", "unknown")
        for c in clean:
            assert verdicts[c]["negative"] == 1 and verdicts[c]["positive"] == 0, verdicts[c]
            assert verdicts[c]["status"] not in ("harvester", "suspect")

        # --suspects picks the harvester (suspect, or unknown with a positive) and no clean one.
        second = probe(world, "--suspects")
        assert [p["server"] for p in second] == [harvester], second
        assert second[0]["source"] not in sources
        t1 = time.time()
        assert wait_for(lambda: len(world.scans()) == 2, timeout=spec.lag_max + 10)
        assert world.scans()[1]["target"] == second[0]["source"]
        # While its result is pending, --suspects does not probe it again.
        out = run_ntpguard(world, "probe", "--suspects")
        assert out.returncode == 0 and "no suspects" in out.stdout, out.stdout + out.stderr

        time.sleep(max(0.0, t1 + lookback + 1 - time.time()))
        world.poke(world.clean[-1:])
        time.sleep(1.5)
        verdicts = detect_record(world)
        assert verdicts[harvester]["sole"] == 2, verdicts[harvester]
        assert verdicts[harvester]["status"] == "harvester", verdicts
        listed = json.loads(run_ntpguard(world, "servers", "--json").stdout)
        assert {r["address"]: r["status"] for r in listed}[harvester] == "harvester"

        # Every probe packet in the log went to its one server; nothing else used the address.
        probes = {p["source"]: p["server"] for p in first + second}
        for r in world.log_lines():
            src = canon(r.get("src_ip", "::"))
            if r.get("oob.prefix") == LOG_PREFIX_OUT and src in probes:
                assert canon(r["dest_ip"]) == probes[src]
            if r.get("oob.prefix") == LOG_PREFIX_IN and canon(r.get("dest_ip", "::")) in probes:
                assert canon(r["dest_ip"]) in (sources[0], second[0]["source"])
        # The kernel removes the probe addresses after their lifetime.
        assert wait_for(lambda: not set(probes) & set(host_addresses(world)),
                        timeout=max(0.0, t1 + life - time.time()) + 5)
    assert not [n for n in list_namespaces() if n.startswith(PREFIX)]


@pytest.mark.root
@pytest.mark.lab
def test_probe_failures_are_one_line_errors(tmp_path: Path):
    """A lifetime shorter than the lookback and a prefix nobody routes here are refused
    before anything is sent; bad addresses exit 2."""
    spec = WorldSpec(seed=22, prefix=PREFIX, chrony_client=False, harvesters=1)
    with World(spec, tmp_path / "world") as world, explained(world):
        cfg = world.guard_dir / "ntpguard.toml"
        server = next(a for a in world.clean if ":" in a)
        before = set(host_addresses(world))
        cfg.write_text(ntpguard_config(world, overrides={"probe": {"lifetime": 1.0}}))
        out = run_ntpguard(world, "probe", server)
        assert out.returncode == 2 and out.stderr.startswith("ntpguard: probe.lifetime")
        cfg.write_text(ntpguard_config(world, overrides={"probe": {"interface": "nope0"}}))
        out = run_ntpguard(world, "probe", server)
        assert out.returncode == 1, out.stderr
        assert out.stderr.count("\n") == 1 and "nope0" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        cfg.write_text(ntpguard_config(world))
        for bad in ("198.51.100.10", "not-an-address", "fe80::1"):
            out = run_ntpguard(world, "probe", bad)
            assert out.returncode == 2 and out.stderr.startswith("ntpguard: "), (bad, out.stderr)
        assert set(host_addresses(world)) == before


@pytest.mark.root
@pytest.mark.lab
def test_sync_probes_the_suspects_when_asked(tmp_path: Path):
    """probe.in_sync = true: a sync after a positive group test of two servers probes each
    of them from its own fresh address (a step after the verdicts), and only the harvester's
    probe address is scanned; a dry run never probes."""
    spec = WorldSpec(seed=23, prefix=PREFIX, lag_min=1.0, lag_max=2.0, chrony_client=False)
    lookback = lab_lookback(spec)
    with World(spec, tmp_path / "world") as world, explained(world):
        (world.guard_dir / "ntpguard.toml").write_text(ntpguard_config(world, overrides={
            "probe": {"lifetime": lookback + 4, "in_sync": True},
            "sync": {"apply_rules": False, "configure_time_daemon": False}}))
        assert run_ntpguard(world, "resolve").returncode == 0
        harvester = world.harvesters[0]
        clean = [a for a in world.clean if ":" in a][:5]
        t0 = time.time()
        # One group test of the harvester with a clean server (an ordinary temporary address
        # of the host), and negatives for the other clean servers from probes.
        world.rotate_address()
        world.poke([harvester, clean[0]])
        probe(world, *clean[1:])
        assert wait_for(lambda: world.scans(), timeout=spec.lag_max + 10)
        time.sleep(max(0.0, t0 + lookback + 1 - time.time()))
        world.poke(world.clean[-1:])
        time.sleep(1.5)
        dry = run_ntpguard(world, "sync", "--dry-run", "--json")
        assert json.loads(dry.stdout)["steps"]["probe"]["skipped"], dry.stdout + dry.stderr
        out = run_ntpguard(world, "sync", "--json")
        rep = json.loads(out.stdout)
        step = rep["steps"]["probe"]
        assert step["ok"] and not step["skipped"], rep
        # Both members of the positive group are probed, each alone: that splits the group.
        sources = {p["server"]: p["source"] for p in step["probes"]}
        assert set(sources) == {harvester, clean[0]}, step
        assert wait_for(lambda: sources[harvester] in [s["target"] for s in world.scans()],
                        timeout=spec.lag_max + 10)
        time.sleep(spec.lag_max + 1)
        assert sources[clean[0]] not in [s["target"] for s in world.scans()]
