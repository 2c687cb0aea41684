"""`ntpguard sync` end to end without root: real DNS on loopback, a generated firewall log with
ground truth, rules and time daemon steps off (the namespace tests cover those)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from dnsfake import FakeDNS
from loggen import Scenario, Truth, generate


def config_text(port: int, log: str, extra: str = "", interval: float = 0) -> str:
    """Pool DNS on loopback port `port`, one log file, rules and time daemon off; `extra`
    goes on in [sync]."""
    return (
        "[pool]\nnameservers = [\"127.0.0.1\"]\n"
        f"port = {port}\ninterval = {interval}\ntimeout = 1.0\nallow_nonglobal = true\n"
        "record_types = [\"AAAA\"]\nnames = [\"2.debian.pool.ntp.org\"]\n"
        f"[sync]\nlog_sources = [\"{log}\"]\napply_rules = false\n"
        "configure_time_daemon = false\n" + extra
    )


def counts(state_dir) -> dict:
    db = sqlite3.connect(state_dir / "state.db")
    try:
        return {
            "scans": db.execute("SELECT count(*) FROM detect_scans").fetchone()[0],
            "contacts": db.execute("SELECT count(*) FROM detect_contacts").fetchone()[0],
            "verdicts": db.execute("SELECT count(*) FROM verdicts").fetchone()[0],
            "servers": db.execute("SELECT count(*) FROM servers").fetchone()[0],
        }
    finally:
        db.close()


@pytest.fixture
def world(tmp_path):
    truth = Truth()
    lines = list(generate(Scenario(hosts=3, servers=30, harvesters=2, duration=2 * 86400),
                          seed=11, truth=truth))
    return truth, lines


def test_sync_twice_never_double_counts(tmp_path, run_cli, state_dir, world):
    truth, lines = world
    log = tmp_path / "kern.log"
    half = len(lines) // 2
    log.write_text("\n".join(lines[:half]) + "\n")
    with FakeDNS(answer=truth.servers, sample=4) as dns:
        cfg = tmp_path / "ntpguard.toml"
        cfg.write_text(config_text(dns.port, str(log)))

        first = run_cli("sync", "--json", config=cfg)
        assert first.returncode == 0, first.stdout + first.stderr
        rep = json.loads(first.stdout)
        assert rep["steps"]["resolve"]["answers"] == 1
        assert rep["steps"]["logs"]["scans"] > 0
        assert rep["steps"]["rules"]["skipped"] and rep["steps"]["timeconf"]["skipped"]
        after_first = counts(state_dir)

        again = json.loads(run_cli("sync", "--json", config=cfg).stdout)
        assert again["steps"]["logs"]["lines"] == 0 and again["steps"]["logs"]["scans"] == 0
        same = counts(state_dir)
        assert (same["scans"], same["contacts"], same["verdicts"]) == (
            after_first["scans"], after_first["contacts"], after_first["verdicts"])

        # New lines arrive; a dry run reads them but leaves the state alone.
        with log.open("a") as fh:
            fh.write("\n".join(lines[half:]) + "\n")
        dry = run_cli("sync", "--dry-run", "--json", config=cfg)
        assert json.loads(dry.stdout)["steps"]["logs"]["lines"] == len(lines) - half
        assert counts(state_dir) == same
        assert json.loads(dry.stdout)["dry_run"] is True

        last = json.loads(run_cli("sync", "--json", config=cfg).stdout)
        assert last["steps"]["logs"]["lines"] == len(lines) - half
    incremental = counts(state_dir)

    # The same whole log ingested at once into a fresh state gives the same evidence.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    whole = run_cli("detect", "--record", str(log), env={"NTPGUARD_STATE_DIR": str(fresh)},
                    config=cfg)
    assert whole.returncode == 0, whole.stderr
    once = counts(fresh)
    assert (incremental["scans"], incremental["contacts"]) == (once["scans"], once["contacts"])

    servers = {s["address"]: s for s in json.loads(run_cli("servers", "--json").stdout)}
    marked = {a for a, s in servers.items() if s["status"] == "harvester"}
    assert marked <= truth.harvesters


def test_sync_reports_a_failed_step_and_runs_the_rest(tmp_path, run_cli, state_dir, world):
    _truth, lines = world
    log = tmp_path / "kern.log"
    log.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "ntpguard.toml"
    # Nothing listens on port 9 of loopback: DNS fails; the log step must still run.
    cfg.write_text(config_text(9, str(log)))
    out = run_cli("sync", config=cfg)
    assert out.returncode == 4, out.stdout + out.stderr
    # No pool server is known, but the servers this host's log judged are.
    assert out.stdout.startswith("sync: servers ")
    assert "failed: resolve" in out.stdout
    assert counts(state_dir)["scans"] > 0
    # A log source that disappears is a failed step, not a crash.
    cfg.write_text(config_text(9, str(tmp_path / "gone.log")))
    out = run_cli("sync", "--json", config=cfg)
    rep = json.loads(out.stdout)
    # Verdicts still recomputed from the evidence already stored: partly done, exit 4.
    assert out.returncode == 4 and set(rep["failed"]) == {"resolve", "logs"}
    assert "gone.log" in rep["steps"]["logs"]["message"]
    assert "Traceback" not in out.stderr


def test_summary_not_sent_to_syslog_when_stdout_is_the_journal(monkeypatch):
    """Under systemd stdout is the journal (named by $JOURNAL_STREAM): one line per run, not
    the printed one plus a syslog copy. Any other stdout (a terminal, cron's pipe) keeps the
    syslog line."""
    import os

    from ntpguard.cli.sync import stdout_is_journal

    r, w = os.pipe()
    other_r, other_w = os.pipe()
    try:
        st = os.fstat(w)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stdout_is_journal(w)
        assert not stdout_is_journal(other_w)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not stdout_is_journal(w)
    finally:
        for fd in (r, w, other_r, other_w):
            os.close(fd)
    assert not stdout_is_journal(10_000)  # not open
