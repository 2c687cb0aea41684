"""`sync` writes a node-exporter textfile that Prometheus' own `promtool check metrics`
accepts, with values that match the state; and publishes a signed list ([publish]). Real DNS
on loopback, a generated firewall log with ground truth; no root."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from dnsfake import FakeDNS
from loggen import Scenario, Truth, generate
from test_sync import config_text

from ntpguard import metrics, minisign

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool not installed "
                                    "(Debian's prometheus package; make deps installs it)")


def samples(text: str) -> dict[str, float]:
    """`name{labels} value` lines → {"name{labels}": value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def promtool_check(path: Path) -> subprocess.CompletedProcess:
    assert promtool is not None
    return subprocess.run([promtool, "check", "metrics"], input=path.read_text(),
                          capture_output=True, text=True, timeout=60)


@needs_promtool
def test_sync_writes_metrics_promtool_accepts_and_publishes(tmp_path, run_cli, state_dir):
    truth = Truth()
    lines = list(generate(Scenario(hosts=2, servers=30, harvesters=2, duration=86400,
                                   address_lifetime=3600),
                          seed=5, truth=truth))
    log = tmp_path / "kern.log"
    log.write_text("\n".join(lines) + "\n")
    assert run_cli("list", "keygen", "-s", tmp_path / "k.key", "-p",
                   tmp_path / "k.pub").returncode == 0
    (tmp_path / "www").mkdir()
    prom = tmp_path / "ntpguard.prom"
    with FakeDNS(answer=truth.servers, sample=4) as dns:
        cfg = tmp_path / "ntpguard.toml"
        cfg.write_text(config_text(dns.port, str(log)) + (
            "[[lists.subscriptions]]\nname = \"dead\"\nurl = \"https://127.0.0.1:9/x\"\n"
            "timeout = 1\n"
            f"[publish]\npath = \"{tmp_path}/www/fleet.json\"\nkey = \"{tmp_path}/k.key\"\n"
            f"[metrics]\ntextfile = \"{prom}\"\n"))
        first = run_cli("sync", "--json", config=cfg)
        rep = json.loads(first.stdout)
        assert first.returncode == 4 and rep["failed"] == ["lists"], first.stdout
        check = promtool_check(prom)
        assert check.returncode == 0, check.stdout + check.stderr
        got = samples(prom.read_text())
        # The values are the state's, counted independently here.
        for status in ("harvester", "suspect", "clean", "unknown"):
            assert got[f'ntpguard_servers{{status="{status}"}}'] == rep["servers"].get(status, 0)
        assert got["ntpguard_scans_total"] == rep["steps"]["logs"]["scans"] > 0
        assert got['ntpguard_sync_step_failed{step="lists"}'] == 1
        assert got['ntpguard_sync_step_failed{step="verdicts"}'] == 0
        assert got['ntpguard_sync_step_failures_total{step="lists"}'] == 1
        assert got["ntpguard_rules_in_place"] == 0  # sync.apply_rules = false
        assert "ntpguard_sync_last_success_timestamp_seconds" not in got
        assert got['ntpguard_list_entries{list="builtin-harvesters"}'] > 0
        # The published list: signed, what detection convicted, evidence with each entry.
        www = tmp_path / "www"
        pub = (tmp_path / "k.pub").read_text()
        data = (www / "fleet.json").read_bytes()
        trusted = minisign.verify(data, (www / "fleet.json.minisig").read_bytes(), pub)
        doc = json.loads(data)
        harvesters = {e["address"] for e in doc["entries"] if e["kind"] == "harvester"}
        assert harvesters and harvesters <= truth.harvesters
        assert f"entries:{len(doc['entries'])}" in trusted
        assert all("positive" in e["evidence"] for e in doc["entries"]
                   if e["kind"] == "harvester")
        assert got["ntpguard_published_entries"] == len(doc["entries"])

        # A second sync: the failure counted again; the list left as it was (a 304 for
        # every subscriber), the rest of the metrics rewritten.
        mtime = (www / "fleet.json").stat().st_mtime_ns
        second = json.loads(run_cli("sync", "--json", config=cfg).stdout)
        assert second["steps"]["publish"]["changed"] is False
        assert (www / "fleet.json").stat().st_mtime_ns == mtime
        got = samples(prom.read_text())
        assert got['ntpguard_sync_step_failures_total{step="lists"}'] == 2

        # Without the dead subscription nothing fails: a last success time appears.
        cfg.write_text(config_text(dns.port, str(log)) + f"[metrics]\ntextfile = \"{prom}\"\n")
        assert run_cli("sync", config=cfg).returncode == 0
        got = samples(prom.read_text())
        assert got["ntpguard_sync_last_success_timestamp_seconds"] >= \
            got["ntpguard_sync_start_timestamp_seconds"]
        assert got['ntpguard_sync_step_failures_total{step="lists"}'] == 2
        assert promtool_check(prom).returncode == 0
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ntpguard-")] == []


def test_metrics_problems_are_the_metrics_step_only(tmp_path, run_cli, state_dir):
    log = tmp_path / "kern.log"
    log.write_text("")
    with FakeDNS(answer=["2001:db8:1::1"], sample=4) as dns:
        cfg = tmp_path / "ntpguard.toml"
        cfg.write_text(config_text(dns.port, str(log))
                       + f"[metrics]\ntextfile = \"{tmp_path}/missing/ntpguard.prom\"\n")
        p = run_cli("sync", "--json", config=cfg)
        rep = json.loads(p.stdout)
        assert p.returncode == 4 and rep["failed"] == ["metrics"]
        assert "cannot write metrics" in rep["steps"]["metrics"]["message"]
        assert rep["steps"]["verdicts"]["ok"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[metrics]\ntextfile = "/var/lib/prometheus/node-exporter/ntpguard.txt"\n')
    p = run_cli("status", config=bad)
    assert p.returncode == 2 and "metrics.textfile" in p.stderr and ".prom" in p.stderr


def test_render_follows_the_exposition_format():
    facts = metrics.Facts(servers={"harvester": 2, "clean": 5}, scans=7, steps={"rules": True},
                          lists=[{"name": 'odd"name', "entries": 3, "fetched": 10.5,
                                  "checked": None}])
    text = metrics.render(metrics.metrics(facts))
    assert 'ntpguard_servers{status="suspect"} 0' in text
    assert 'ntpguard_list_entries{list="odd\\"name"} 3' in text
    assert "ntpguard_list_checked_timestamp_seconds" not in text  # never checked: no sample
    names = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    assert all(n.startswith("ntpguard_") for n, _ in names)
    assert all(n.endswith("_total") == (kind == "counter") for n, kind in names)
