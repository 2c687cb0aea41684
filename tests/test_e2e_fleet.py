"""A fleet learns together, end to end in the lab (lab.fleet): three protected hosts ship their
firewall logs with real rsyslog to a collector, whose ntpguard judges on them together and
publishes a signed list through a real nginx (HTTPS, lab CA); the hosts subscribe with the
collector's public key. Checked against the lab's ground truth: a harvester only one host
met is blocked on all three after their next sync; a tampered list or signature is refused
and the last good list stays in force; promtool accepts the metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from labtools import explained

from lab import fleet
from lab.world import World, WorldSpec, run_ntpguard

PREFIX = "ntpg-f-"


def statuses(world: World, client) -> dict[str, dict]:
    p = run_ntpguard(world, "servers", "--json", client=client)
    assert p.returncode == 0, p.stderr
    return {r["address"]: r for r in json.loads(p.stdout)}


def ntp_refused(client, server: str) -> bool:
    return client.ns.run("ntpdate", "-q", "-t", "1", server, check=False).returncode != 0


@pytest.mark.root
@pytest.mark.lab
def test_fleet_follows_the_collector(tmp_path: Path):
    t0 = time.monotonic()
    # 8 operators: ~15 IPv6 servers, 2 of them harvest. Lab lags (0.5-2 s) and a 10 s lookback.
    spec = WorldSpec(seed=31, prefix=PREFIX, topology="fleet", operators=8, harvesters=2,
                     lag_min=0.5, lag_max=2.0, chrony_client=False)
    with World(spec, tmp_path / "world") as world, explained(world):
        pubkey = fleet.setup_ntpguard(world)
        h1, h2, h3 = world.clients
        only_h1, shared = world.harvesters
        v6 = [s.address for s in world.servers if ":" in s.address]
        # h1 alone meets `only_h1`; every host meets the rest of the pool.
        others = [a for a in v6 if a != only_h1]
        used = fleet.meet(world, {0: v6, 1: others, 2: others}, passes=3, per_round=2)
        assert fleet.forwarded(world, used), "rsyslog did not forward every host's log"
        scanned = {e["target"] for e in world.scans()}
        assert {e["harvester"] for e in world.truth() if e["event"] == "harvest"} == \
            {only_h1, shared}
        assert not [e for e in world.truth() if e["event"] == "contact"
                    and e["harvester"] == only_h1 and e["source"].startswith(
                        ("2001:db8:4057:f2:", "2001:db8:4057:f3:"))], "h2/h3 met only_h1"
        print(f"met: {len(used)} addresses, {len(scanned)} scanned, "
              f"{time.monotonic() - t0:.1f} s")

        # The collector: every host's log, judged together; the list signed and served.
        p = run_ntpguard(world, "sync", "--no-resolve", "--json")
        report = json.loads(p.stdout)
        assert p.returncode == 0, p.stdout + p.stderr
        hosts = {h["host"]: h["lines"] for h in report["steps"]["logs"]["hosts"]}
        assert sorted(hosts) == ["h1", "h2", "h3"] and all(hosts.values()), hosts
        www = world.guard_dir / "www"
        listed = {e["address"]: e for e in json.loads((www / fleet.LIST_NAME).read_text())
                  ["entries"] if e["kind"] == "harvester"}
        assert only_h1 in listed and set(listed) <= set(world.harvesters), listed
        assert listed[only_h1]["evidence"]["positive"] >= 2
        good = (www / fleet.LIST_NAME).read_bytes(), (www / f"{fleet.LIST_NAME}.minisig")\
            .read_bytes()
        v = subprocess.run(["minisign", "-V", "-P", pubkey, "-m", str(www / fleet.LIST_NAME)],
                           capture_output=True, text=True, timeout=30)
        assert v.returncode == 0 and f"entries:{len(listed)}" in v.stdout, v.stdout + v.stderr
        print(f"collector: {sorted(listed)} published, {time.monotonic() - t0:.1f} s")

        # Every host's next sync: the harvester h1 alone met is blocked on all three. (Each
        # knows the whole pool first, as days of syncs would: `servers` lists known ones.)
        for c in world.clients:
            assert run_ntpguard(world, "resolve", client=c).returncode == 0
            p = run_ntpguard(world, "sync", "--no-resolve", "--json", client=c)
            rep = json.loads(p.stdout)
            assert p.returncode == 0, p.stdout + p.stderr
            assert rep["steps"]["lists"]["lists"][0]["status"] == "updated"
        for c in (h2, h3):
            row = statuses(world, c)[only_h1]
            assert (row["status"], row["source"]) == ("harvester", "list:fleet"), row
            assert ntp_refused(c, only_h1)
        assert ntp_refused(h1, only_h1)
        clean = next(a for a in world.clean if ":" in a)
        assert not ntp_refused(h2, clean)
        print(f"hosts follow: {time.monotonic() - t0:.1f} s")

        # A tampered list (the harvester dropped, a clean server added) with the old
        # signature, then the good list with an altered signature: refused, the last good
        # list stays in force (stored copy unchanged, the harvester still blocked).
        stored = (h2.dir / "state" / "lists" / "fleet.json").read_bytes()
        doc = json.loads(good[0])
        doc["entries"] = [e for e in doc["entries"] if e["address"] != only_h1] + [
            {"address": clean, "kind": "harvester"}]
        (www / fleet.LIST_NAME).write_text(json.dumps(doc, indent=1) + "\n")
        sig = good[1].decode().splitlines()
        sig[2] = sig[2].replace("entries:", "entries:9")
        for name, data in ((fleet.LIST_NAME, None),
                           (f"{fleet.LIST_NAME}.minisig", "\n".join(sig) + "\n")):
            if data is not None:
                (www / fleet.LIST_NAME).write_bytes(good[0])
                (www / name).write_text(data)
            p = run_ntpguard(world, "sync", "--no-resolve", "--json", client=h2)
            rep = json.loads(p.stdout)
            assert p.returncode == 4 and rep["failed"] == ["lists"], p.stdout
            message = rep["steps"]["lists"]["lists"][0]["message"]
            assert ("does not match" if data is None else "trusted comment was altered") \
                in message and "last good copy kept" in message, message
            assert (h2.dir / "state" / "lists" / "fleet.json").read_bytes() == stored
            rows = statuses(world, h2)
            assert rows[only_h1]["status"] == "harvester" and ntp_refused(h2, only_h1)
            assert rows[clean]["status"] != "harvester" and not ntp_refused(h2, clean)
        print(f"tampering refused: {time.monotonic() - t0:.1f} s")

        # The metrics of the collector and of a host: what promtool accepts, and true.
        promtool = shutil.which("promtool")
        assert promtool, "promtool (Debian's prometheus package) is needed"
        for prom in (world.guard_dir / "ntpguard.prom", h2.dir / "ntpguard.prom"):
            check = subprocess.run([promtool, "check", "metrics"], input=prom.read_text(),
                                   capture_output=True, text=True, timeout=60)
            assert check.returncode == 0, check.stdout + check.stderr
        text = (h2.dir / "ntpguard.prom").read_text()
        assert 'ntpguard_sync_step_failed{step="lists"} 1' in text
        assert "ntpguard_rules_in_place 1" in text
        assert 'ntpguard_list_entries{list="fleet"}' in text
        text = (world.guard_dir / "ntpguard.prom").read_text()
        assert 'ntpguard_collector_log_timestamp_seconds{host="h3"}' in text
        print(f"fleet lab: {time.monotonic() - t0:.1f} s in all")
