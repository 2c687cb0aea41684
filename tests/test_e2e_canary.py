"""End to end with NTP canaries (the default): no server ever learns a real address of the host
or its LAN, and every harvester that harvests convicts itself by its canary.

The lab world (lab.world: PowerDNS pool, harvesters that sniff every packet to them and have a
real nmap scan its source, chronyd clients) with ntpguard's first `sync` before any time daemon
starts, as the boot unit orders it on a real host. Checked against the lab's ground truth.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from labtools import explained

from lab.world import World, WorldSpec, ntpguard_config, run_ntpguard
from ntpguard.state import State

PREFIX = "ntpg-q-"


def canaries_of(world: World) -> dict[str, str]:
    """Every canary the guard ever made (address → server; '' for the spare)."""
    with State.open(str(world.guard_dir / "state"), lock=False) as st:
        return {c.address: c.server for c in st.canaries()}


@pytest.mark.root
@pytest.mark.lab
@pytest.mark.parametrize(("seed", "topology"), [(21, "host"), (22, "gateway")])
def test_canaries_hide_every_real_address(tmp_path: Path, seed: int, topology: str):
    spec = WorldSpec(seed=seed, prefix=PREFIX, topology=topology, lag_min=0.5, lag_max=2.0,
                     chrony_client=False, lan_clients=2)
    with World(spec, tmp_path / "world") as world, explained(world):
        # No time daemon runs yet to be reloaded; it reads ntpguard's sources when it starts.
        (world.guard_dir / "ntpguard.toml").write_text(
            ntpguard_config(world, overrides={"timeconf": {"reload": False}}))
        assert run_ntpguard(world, "resolve").returncode == 0
        first = run_ntpguard(world, "sync", "--json")
        report = json.loads(first.stdout)
        print("sync 1:", json.dumps(report["steps"]["canaries"]), report["steps"]["rules"])
        assert report["steps"]["canaries"]["available"], report["steps"]["canaries"]
        assert first.returncode == 0, first.stdout + first.stderr
        made = canaries_of(world)
        v6 = {s.address for s in world.servers if ":" in s.address}
        assert set(made.values()) == v6 | {""}  # every pool server known: one each

        # The time daemons start now, and meet every server (as days of pool rotation would).
        for c in world.clients:
            world.start_chrony_client(c)
        if world.guard_client is not None:
            world.start_chrony_client(world.guard_client)
        for c in world.clients:
            world.poke(sorted(v6), client=c)
        deadline = time.monotonic() + 30
        harvested = set()
        while time.monotonic() < deadline:
            harvested = {e["harvester"] for e in world.truth() if e["event"] == "harvest"}
            if harvested == set(world.harvesters) and len(world.scans()) >= len(harvested):
                break
            time.sleep(0.5)
        time.sleep(3)  # the last scans finish and reach the log
        world.wait_synced(timeout=30)

        second = run_ntpguard(world, "sync", "--json")
        report = json.loads(second.stdout)
        print("sync 2:", json.dumps(report["steps"]["canaries"]))
        assert second.returncode == 0, second.stdout + second.stderr

        # Every scan the harvesters caused hit a canary: not one real address was harvested.
        made = canaries_of(world)
        scans = world.scans()
        assert scans, "no harvester harvested: the test would prove nothing"
        real = [s["target"] for s in scans if s["target"] not in made]
        assert real == [], f"real addresses scanned: {real}"
        assert not [e for e in world.truth() if e["event"] == "harvest"
                    and e["source"] not in made]

        # Every harvester that harvested is convicted by its own canary, no clean server is.
        rows = {r["address"]: r for r in json.loads(run_ntpguard(world, "servers",
                                                                 "--json").stdout)}
        for h in harvested:
            assert (rows[h]["status"], rows[h]["source"]) == ("harvester", "canary"), rows[h]
        wrong = [a for a in world.clean if rows.get(a, {}).get("status") in ("harvester",
                                                                              "suspect")]
        assert not wrong, f"clean servers marked: {wrong}"
        # status: no IPv6 server saw a real address (chronyd started after the canaries), the
        # canaries the harvesters had scanned are counted.
        status = json.loads(run_ntpguard(world, "status", "--json").stdout)
        exposure = status["exposure"]
        assert exposure["of_them_ipv6"] == 0, exposure
        assert exposure["canaries_scanned"] >= len(harvested), exposure
        # The convicted are refused now, and the time daemons keep time from the others.
        for h in harvested:
            assert world.host.run("ntpdate", "-q", "-t", "1", h, check=False).returncode != 0
        world.wait_synced(timeout=30)
        print(f"{topology}: {len(scans)} scans, all of canaries; convicted "
              f"{sorted(harvested)}")
