"""Nothing stops the job for long or for good: a hung command ends in one line and frees the
lock; a step that breaks (a bug, a damaged row) is that step's failure and the later steps run.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from loggen import Scenario, Truth, generate

from ntpguard import config, evidence, sync

SERVER = "2a01:4f8:2:2::123"


def hung(tmp_path, *names: str) -> dict[str, str]:
    """An environment where each named command hangs (a shell script whose child sleeps, so
    the pipes stay open), and Debian's python3-nftables cannot be imported, so the nft
    backend runs the nft command as on a host without it."""
    bin_dir = tmp_path / "hung-bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        script = bin_dir / name
        script.write_text("#!/bin/sh\nsleep 300\n")
        script.chmod(0o755)
    shim = tmp_path / "no-python-nftables"
    shim.mkdir(exist_ok=True)
    (shim / "nftables.py").write_text("raise ImportError('hidden for this test')\n")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": f"{shim}:{ROOT}"}


def running(text: str) -> list[str]:
    """Processes whose command line mentions text (pgrep -f, without procps)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if text.encode() in fh.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def test_a_hung_nft_ends_in_one_line_and_frees_the_lock(run_cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[general]\ncommand_timeout = 1\n[lists]\nbuiltin = false\n")
    assert run_cli("mark", SERVER, "clean", config=cfg).returncode == 0
    env = hung(tmp_path, "nft")
    started = time.monotonic()
    out = run_cli("rules", "apply", "--backend", "nft", config=cfg, env=env, timeout=60)
    took = time.monotonic() - started
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "did not finish within 1 s" in out.stderr, out.stderr
    assert took < 20, took  # two nft calls (the token probe and the apply), 1 s each
    # The lock is free at once: an admin's mark does not wait.
    mark = run_cli("mark", SERVER, "harvester", config=cfg, timeout=10)
    assert mark.returncode == 0, mark.stderr
    # No hung child left behind.
    assert not running(str(tmp_path / "hung-bin"))


def test_a_hung_chronyc_ends_in_one_line(run_cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[general]\ncommand_timeout = 1\n[lists]\nbuiltin = false\n")
    assert run_cli("mark", SERVER, "clean", config=cfg).returncode == 0
    path = tmp_path / "ntpguard.sources"
    out = run_cli("timeconf", "--format", "chrony", "--write", "--path", path, config=cfg,
                  env=hung(tmp_path, "chronyc"), timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr == (f"ntpguard: wrote {path}, but `chronyc reload sources` did not "
                          "finish within 1 s and was stopped ([general] command_timeout)\n")
    assert f"server {SERVER} iburst" in path.read_text()


def test_a_step_that_breaks_is_that_steps_failure_only(tmp_path, monkeypatch):
    """Any exception, not only the expected kinds, becomes the step's one-line failure; the
    traceback is kept for -v; the later steps run."""
    cfg = config.parse(
        f'[pool]\nnameservers = ["127.0.0.1"]\nport = 9\ntimeout = 0.2\nrounds = 1\n'
        f'[sync]\nlog_sources = ["{tmp_path / "none.log"}"]\napply_rules = false\n'
        f'[timeconf]\ndaemon = "chrony"\nreload = false\n'
        f'chrony_sources = "{tmp_path / "ntpguard.sources"}"\n'
        f'[servers]\ntrusted = ["{SERVER}"]\n[lists]\nbuiltin = false\n', "c.toml")

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(evidence, "compute_verdicts", broken)
    report = sync.run(cfg, str(tmp_path / "state"))
    verdicts = report.step("verdicts")
    assert not verdicts.ok and verdicts.message == "KeyError: 'a bug'"
    assert "Traceback" in verdicts.trace
    assert report.step("timeconf").ok and report.exit_code == 4
    assert f"server {SERVER} iburst" in (tmp_path / "ntpguard.sources").read_text()


@pytest.mark.root
@pytest.mark.skipif(not shutil.which("unshare") or not shutil.which("nft"),
                    reason="needs unshare and nft")
def test_a_damaged_trigger_row_leaves_rules_and_timeconf_running(tmp_path):
    """A stored trigger whose time is text (a damaged database): the row is left out with a
    warning, and the rules (real nft, in a throwaway network namespace) and timeconf steps run."""
    truth = Truth()
    log = tmp_path / "kern.log"
    log.write_text("\n".join(generate(Scenario(hosts=2, servers=30, harvesters=3), 4,
                                      truth)) + "\n")
    sources = tmp_path / "ntpguard.sources"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[pool]\nnameservers = ["127.0.0.1"]\nport = 9\ntimeout = 0.2\nrounds = 1\n'
        f'[sync]\nlog_sources = ["{log}"]\n'
        f'[timeconf]\ndaemon = "chrony"\nreload = false\nchrony_sources = "{sources}"\n'
        f'[servers]\ntrusted = ["{SERVER}"]\n[lists]\nbuiltin = false\n'
        '[detect]\nmin_ports = 15\n')
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NTPGUARD_CONFIG": str(cfg),
           "NTPGUARD_STATE_DIR": str(state)}

    def sync_json() -> dict:
        proc = subprocess.run(["unshare", "--net", sys.executable, "-m", "ntpguard", "sync",
                               "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert "Traceback" not in proc.stderr, proc.stderr
        return json.loads(proc.stdout)

    first = sync_json()
    assert first["steps"]["logs"]["scans"] > 0
    with sqlite3.connect(state / "state.db") as db:
        assert db.execute("UPDATE detect_triggers SET time = 'not a time' WHERE rowid = "
                          "(SELECT min(rowid) FROM detect_triggers)").rowcount == 1
    sources.unlink()
    again = sync_json()
    steps = again["steps"]
    assert steps["verdicts"]["ok"], steps["verdicts"]
    assert steps["rules"]["ok"] and steps["rules"]["action"] == "created", steps["rules"]
    assert steps["timeconf"]["ok"] and f"server {SERVER}" in sources.read_text()
    assert again["failed"] == ["resolve"]


def test_an_unreadable_log_source_is_its_own_failure_and_the_others_are_read(run_cli,
                                                                          tmp_path,
                                                                          state_dir):
    """A missing file, a directory and a FIFO among the log sources: each is named, the
    readable one is read and its position kept. Before, the first bad source failed the
    whole step (nothing read until it was fixed), and a FIFO with no writer hung the sync."""
    log = tmp_path / "kern.log"
    log.write_text(f"Oct  9 08:53:22 host kernel: [UFW BLOCK] IN= OUT=eth0 SRC=2001:db8::1 "
                   f"DST={SERVER} LEN=76 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=UDP SPT=123 "
                   "DPT=123 LEN=56\n")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    bad = [tmp_path / "missing.log", tmp_path / "dir", tmp_path / "fifo"]
    cfg = tmp_path / "c.toml"
    sources = ", ".join(f'"{p}"' for p in (bad[0], log, *bad[1:]))
    cfg.write_text(f"[sync]\nlog_sources = [{sources}]\nresolve_rounds = 1\n"
                   "apply_rules = false\nconfigure_time_daemon = false\n"
                   '[pool]\nnameservers = ["127.0.0.1"]\nport = 9\ntimeout = 0.2\n')
    out = run_cli("sync", "--no-resolve", "--json", config=cfg, timeout=60)
    assert out.returncode == 4, out.stderr
    logs = json.loads(out.stdout)["steps"]["logs"]
    assert logs["ok"] is False
    assert logs["lines"] == 1 and logs["events"] == 1 and logs["sources"] == [str(log)]
    assert logs["unreadable"] == [f"{bad[0]}: cannot read log: No such file or directory",
                                  f"{bad[1]}: cannot read log: not a regular file",
                                  f"{bad[2]}: cannot read log: not a regular file"]
    db = sqlite3.connect(state_dir / "state.db")
    try:
        kept = [r[0] for r in db.execute("SELECT source FROM detect_positions")]
    finally:
        db.close()
    assert kept == [str(log)]
