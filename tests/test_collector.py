"""A collector judges on many hosts' logs at once: generated logs of three hosts with ground
truth, split into one file per host as rsyslog writes them, read through `sync` and `detect
--hosts` for real. No root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dnsfake import FakeDNS
from loggen import Scenario, Truth, generate

from ntpguard import collector, config, evidence
from ntpguard.state import State
from ntpguard.verdict import attribute

HOSTS = 3
# Seed 1 of this scenario: three harvesters, 12 hours, each host alone convicts none, the
# pooled logs convict one (found by running seeds 1-8: 4 of 8 are like that, none convicts a
# clean server with the evidence of one host only).
SCENARIO = Scenario(hosts=HOSTS, servers=40, harvesters=3, duration=43200,
                    address_lifetime=3 * 3600)
SEED = 1


def host_prefix(i: int) -> str:
    return f"2001:0db8:{0xa000 + i:04x}:0001"  # as the kernel logs it (loggen's host /64s)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """remote/hostN/kern.log: each line in the file of the host whose address it names."""
    d = tmp_path_factory.mktemp("fleet")
    truth = Truth()
    parts: list[list[str]] = [[] for _ in range(HOSTS)]
    for line in generate(SCENARIO, seed=SEED, truth=truth):
        owner = next((i for i in range(HOSTS) if host_prefix(i) in line), 0)
        parts[owner].append(line)
    for i, lines in enumerate(parts):
        (d / "remote" / f"host{i}").mkdir(parents=True)
        (d / "remote" / f"host{i}" / "kern.log").write_text("\n".join(lines) + "\n")
    return d, truth


def collector_config(d: Path, port: int, extra: str = "") -> str:
    return ("[pool]\nnameservers = [\"127.0.0.1\"]\n"
            f"port = {port}\ninterval = 0\ntimeout = 1.0\nallow_nonglobal = true\n"
            "record_types = [\"AAAA\"]\nnames = [\"2.debian.pool.ntp.org\"]\n"
            "[sync]\napply_rules = false\nconfigure_time_daemon = false\n"
            f"[collector]\nhosts_from = [\"{d}/remote/*/kern.log\"]\n" + extra)


def test_pooled_logs_convict_what_no_single_host_can(fleet, tmp_path, run_cli, state_dir):
    d, truth = fleet
    settings = config.Detect()
    alone = set()
    for i in range(HOSTS):
        scans, contacts = evidence.detect_sources([str(d / "remote" / f"host{i}" / "kern.log")],
                                                  settings, workers=1)
        found, _ = attribute(contacts.runs, scans, contacts.end, settings)
        alone |= {a for a, f in found.items() if f.status == "harvester"}
    with FakeDNS(answer=truth.servers, sample=4) as dns:
        cfg = tmp_path / "collector.toml"
        cfg.write_text(collector_config(d, dns.port))
        first = run_cli("sync", "--json", config=cfg)
        assert first.returncode == 0, first.stdout + first.stderr
        rep = json.loads(first.stdout)
        hosts = {h["host"]: h for h in rep["steps"]["logs"]["hosts"]}
        assert sorted(hosts) == ["host0", "host1", "host2"]
        assert all(h["lines"] > 0 and not h["error"] for h in hosts.values())
        rows = json.loads(run_cli("servers", "--json", config=cfg).stdout)
        convicted = {r["address"] for r in rows if r["status"] == "harvester"}
        assert convicted and convicted <= truth.harvesters, (convicted, truth.harvesters)
        assert convicted - alone, "the pool convicted nothing a single host could not"
        # A second sync reads nothing again (each host's file resumes where it stopped).
        again = json.loads(run_cli("sync", "--json", config=cfg).stdout)
        assert again["steps"]["logs"]["lines"] == 0
        assert {h["host"]: h["lines"] for h in again["steps"]["logs"]["hosts"]} == \
            {"host0": 0, "host1": 0, "host2": 0}
        # detect --hosts without --record judges the same way, from the files alone.
        p = run_cli("detect", "--hosts", "--json", config=cfg)
        assert p.returncode == 0, p.stderr
        found = {o["address"] for o in map(json.loads, p.stdout.splitlines())
                 if o["type"] == "server" and o["status"] == "harvester"}
        assert found == convicted
    with State.open(str(state_dir), lock=False) as st:
        ends = st.hosts_coverage()
    assert sorted(ends) == ["host0", "host1", "host2"]


def test_each_address_is_covered_by_its_own_hosts_log():
    """A host whose log lags: its last contacts are not read as "no scan followed" because
    another host's log goes on for hours."""
    settings = config.Detect()
    t = 1_760_000_000.0
    runs = {(f"2001:db8:a:1::{i:x}", "2001:db8:1000::123"): [t + 600 * i, t + 600 * i, 1]
            for i in range(1, 6)}
    later = t + 86400  # another host's log reaches a day further
    blind, _ = attribute(runs, [], later, settings)
    own, _ = attribute(runs, [], later, settings,
                       covered={a: t + 600 * i + 5 for i, (a, _) in enumerate(runs, 1)})
    server = "2001:db8:1000::123"
    assert blind[server].negative == 5
    assert own[server].negative < blind[server].negative


def test_discovery_takes_plain_host_names_only(tmp_path):
    for name in ("gw1", "pi.lan", "bad name", "-x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "kern.log").write_text("")
    (tmp_path / "j").mkdir()
    for f in ("remote-a.journal", "remote-a@0001-0002.journal", "remote-ab.journal"):
        (tmp_path / "j" / f).write_text("")
    got = collector.discover((f"{tmp_path}/*/kern.log", f"journal:{tmp_path}/j/remote-*.journal"))
    assert [h.host for h in got] == ["a", "ab", "gw1", "pi.lan"]
    by = {h.host: h.source for h in got}
    assert by["gw1"] == f"{tmp_path}/gw1/kern.log"
    # journalctl --file takes the active file and its archives, never another host's.
    assert by["a"] == f"journal:{tmp_path}/j/remote-a[.@]*journal"


def test_host_settings_and_bad_configuration(tmp_path, run_cli):
    c = config.parse('[detect]\nlocal_prefixes = ["2001:db8:1::/48"]\n'
                     '[collector]\nhosts_from = ["/var/log/fleet/*/kern.log"]\n'
                     '[[collector.hosts]]\nname = "gw1"\nlan_interfaces = ["br-lan"]\n'
                     'local_prefixes = ["2001:db8:2::/48"]\n', "c.toml")
    assert collector.settings_for(c, "gw1").local_prefixes == ("2001:db8:2::/48",)
    assert collector.settings_for(c, "gw1").lan_interfaces == ("br-lan",)
    assert collector.settings_for(c, "other").local_prefixes == ("2001:db8:1::/48",)
    for text, words in (
            ('[collector]\nhosts_from = ["/var/log/*/*/kern.log"]\n', "one '*'"),
            ('[collector]\nhosts_from = ["relative/*.log"]\n', "absolute"),
            ('[[collector.hosts]]\nname = "a/b"\n', "host name"),
            ('[[collector.hosts]]\nname = "a"\n[[collector.hosts]]\nname = "a"\n', "twice")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        p = run_cli("status", config=bad)
        assert p.returncode == 2 and words in p.stderr and "collector" in p.stderr, p.stderr
        assert len(p.stderr.splitlines()) == 1
    p = run_cli("detect", "--hosts")
    assert p.returncode == 2 and "hosts_from" in p.stderr
