"""Long waits an admin can see and work around: a progress line on a real terminal (a pty),
nothing extra anywhere else, and no state lock held while a run only waits (real DNS on
loopback, real processes taking the lock)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import socket
import sqlite3
import struct
import subprocess
import sys
import termios
import time

import pytest
from conftest import cli_env, lock_held
from dnsfake import FakeDNS
from test_sync import config_text

from ntpguard.progress import count, countdown, duration
from ntpguard.state import State

V6 = ["2001:db8:1::1", "2001:db8:2::2", "2001:db8:3::3", "2001:db8:4::4"]
NAME = "2.debian.pool.ntp.org"


class Terminal:
    """`python -m ntpguard ARGS` with stderr (and stdout, unless `stdout_pipe`) on a new
    pseudo-terminal `columns` wide; `seen` is everything drawn on it so far."""

    def __init__(self, args, env, columns=100, stdout_pipe=False):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ntpguard", *map(str, args)], env=env,
            stdin=subprocess.DEVNULL, stderr=slave,
            stdout=subprocess.PIPE if stdout_pipe else slave)
        os.close(slave)
        self.master = master
        self.seen = ""

    def _read(self, timeout):
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every writer of the pty is gone
            return False
        self.seen += data.decode()
        return bool(data)

    def wait_for(self, text, timeout=30.0):
        """Read until `text` was drawn; fails the test if it never is."""
        end = time.monotonic() + timeout
        while text not in self.seen:
            left = end - time.monotonic()
            assert left > 0 and self._read(min(left, 0.2)), \
                f"{text!r} never drawn; the terminal shows {self.seen!r}"

    def finish(self, timeout=60.0):
        """(exit status, what the pty showed, what the stdout pipe got)."""
        out = self.proc.stdout.read().decode() if self.proc.stdout else ""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self._read(0.2):
            pass
        os.close(self.master)
        return self.proc.wait(timeout=timeout), self.seen, out


def write_config(path, port, interval):
    """test_sync's configuration (an empty log) with two DNS rounds per sync."""
    log = path.parent / "kern.log"
    log.touch()
    path.write_text(config_text(port, str(log), "resolve_rounds = 2\n", interval=interval))
    return path


def answers(state_dir) -> int:
    db = sqlite3.connect(state_dir / "state.db")
    try:
        return db.execute("SELECT sum(answers) FROM zone_answers").fetchone()[0] or 0
    finally:
        db.close()


def draws(seen):
    """The lines drawn on the terminal one over the other: what lies between carriage
    returns, without the blanks that wipe a longer line."""
    return [part.rstrip() for part in re.split(r"\r\n|\r|\n", seen) if part.strip()]


# -- the pure parts ---------------------------------------------------------------------------

def test_countdown_shows_each_second_left_and_sleeps_the_whole_pause():
    slept, shown = [], []
    countdown(2.5, lambda left: f"next in {duration(left)}", shown.append, slept.append)
    assert shown == ["next in 3 s", "next in 2 s", "next in 1 s"]
    assert slept == [1.0, 1.0, 0.5]
    slept.clear()
    countdown(0, str, shown.append, slept.append)
    assert slept == []


@pytest.mark.parametrize("seconds,text", [
    (0, "0 s"), (0.2, "1 s"), (1.0, "1 s"), (59.5, "1:00"), (150, "2:30"), (3601, "60:01"),
])
def test_duration_rounds_up_and_switches_to_minutes(seconds, text):
    assert duration(seconds) == text


def test_count_says_one_answer_and_two_answers():
    assert (count(1, "answer"), count(0, "answer"), count(2, "answer")) == (
        "1 answer", "0 answers", "2 answers")


# -- on a terminal, and off it ----------------------------------------------------------------

def test_resolve_on_a_terminal_redraws_one_progress_line(tmp_path, state_dir):
    with FakeDNS(answer=V6) as dns:
        cfg = write_config(tmp_path / "c.toml", dns.port, interval=2.5)
        term = Terminal(["resolve", "--rounds", "3"], cli_env(tmp_path, state_dir, cfg),
                        columns=70)
        code, seen, _ = term.finish()
    assert code == 0, seen
    lines = draws(seen)
    # The step, the round, what was found so far, the time to the next round, counted down;
    # cut to the 70 columns (less one: a full line would wrap on some terminals).
    asking = f"resolve 1/3: 0 new servers in 0 answers; asking {NAME} AAAA (1/1)"
    assert asking[:69] in lines and len(asking) > 69
    assert "resolve 1/3 done: 4 new servers in 1 answer; round 2 in 3 s" in lines
    assert "resolve 1/3 done: 4 new servers in 1 answer; round 2 in 1 s" in lines
    assert "resolve 2/3 done: 4 new servers in 2 answers; round 3 in 2 s" in lines
    # All of it on one line: no line feed before the summary, nothing wider than the terminal
    # (a wrapped line could not be redrawn), and the line wiped before the summary.
    progress, summary = seen.split("resolve: 3 queries", 1)
    assert "\n" not in progress
    assert max(len(part) for part in progress.split("\r")) < 70
    assert progress.endswith("\r") and not progress.split("\r")[-2].strip()
    assert summary.startswith(", 3 answers, 4 new servers, 4 known\r\n")


def test_a_warning_gets_a_line_of_its_own_on_the_terminal(tmp_path, state_dir):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a DNS server that never answers
    silent.bind(("127.0.0.1", 0))
    try:
        cfg = write_config(tmp_path / "c.toml", silent.getsockname()[1], interval=0)
        code, seen, _ = Terminal(["resolve", "--rounds", "1"],
                                 cli_env(tmp_path, state_dir, cfg)).finish()
    finally:
        silent.close()
    assert code == 1, seen
    before, warning = seen.split(f"ntpguard: {NAME} AAAA: timed out", 1)
    assert "resolve 1/1: 0 new servers in 0 answers; asking" in before
    # The progress line was wiped (blanks, back to the first column) before the warning.
    assert re.search(r"\r {20,}\r$", before), repr(before)
    assert warning.startswith("\r\n")


def test_sync_on_a_terminal_names_each_step(tmp_path, state_dir):
    with FakeDNS(answer=V6) as dns:
        cfg = write_config(tmp_path / "c.toml", dns.port, interval=1)
        code, seen, out = Terminal(["sync"], cli_env(tmp_path, state_dir, cfg),
                                   stdout_pipe=True).finish()
    assert code == 0, seen + out
    lines = draws(seen)
    assert "sync: resolve 1/2 done: 4 new servers in 1 answer; round 2 in 1 s" in lines
    assert "sync: logs: reading new firewall log lines" in lines
    assert "sync: verdicts: recomputing them from all evidence" in lines
    # stderr was only the progress line, wiped at the end; the summary went to stdout alone.
    assert not seen.split("\r")[-1].strip() and not seen.split("\r")[-2].strip()
    assert out.startswith("sync: servers 4 known/") and out.count("\n") == 1


def test_waiting_for_the_lock_names_the_holder(tmp_path, state_dir):
    with lock_held(state_dir, 2, "ntpguard sync") as holder:
        term = Terminal(["mark", "2a01:4f8:2:2::123", "clean", "--wait"],
                        cli_env(tmp_path, state_dir))
        term.wait_for(f"waiting for the state lock, held by pid {holder.pid} (ntpguard sync)")
    code, seen, _ = term.finish()
    assert code == 0, seen
    # Wiped once the lock was taken, before mark's own output.
    assert re.search(r"\r +\r2a01:4f8:2:2::123: marked clean[^\r]*\r\n$", seen), repr(seen)


def test_list_fetch_names_the_list_it_waits_for(tmp_path, state_dir):
    """A list server that takes the connection and never answers costs the whole timeout."""
    mute = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    mute.bind(("127.0.0.1", 0))
    mute.listen()
    url = f"https://127.0.0.1:{mute.getsockname()[1]}/harvesters.txt"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[lists.subscriptions]]\nname = "mute"\nurl = "{url}"\ntimeout = 1.0\n')
    try:
        code, seen, _ = Terminal(["list", "fetch"], cli_env(tmp_path, state_dir, cfg)).finish()
    finally:
        mute.close()
    assert code == 1, seen
    assert f"lists 1/1: 0 updated; fetching mute from {url}" in draws(seen)
    assert "mute: failed" in seen


def test_nothing_extra_without_a_terminal_or_with_json(tmp_path, state_dir, run_cli):
    with FakeDNS(answer=V6) as dns:
        cfg = write_config(tmp_path / "c.toml", dns.port, interval=1)
        resolve = run_cli("resolve", "--rounds", "2", config=cfg)
        sync = run_cli("sync", config=cfg)
        # --json on a terminal: the JSON alone, no progress line.
        code, seen, _ = Terminal(["sync", "--json"], cli_env(tmp_path, state_dir, cfg)).finish()
    assert resolve.returncode == 0 and sync.returncode == 0, resolve.stderr + sync.stderr
    assert resolve.stderr == "" and sync.stderr == ""
    assert "\r" not in resolve.stdout and resolve.stdout.startswith("resolve: 2 queries")
    assert sync.stdout.startswith("sync: servers 4 known/") and sync.stdout.count("\n") == 1
    assert code == 0 and "\r" not in seen.replace("\r\n", "\n")
    assert json.loads(seen)["steps"]["resolve"]["answers"] == 2


# -- no lock held while waiting ---------------------------------------------------------------

@pytest.mark.parametrize("dry_run", [False, True], ids=["sync", "dry-run"])
def test_mark_succeeds_at_once_while_sync_is_between_dns_rounds(tmp_path, state_dir, run_cli,
                                                                dry_run):
    """The pause between rounds (here 8 s; 150 s by default) holds no lock: `mark` without
    --wait gets in at once, and the sync, which reads the state afresh for its later steps,
    counts the mark made meanwhile."""
    with FakeDNS(answer=V6) as dns:
        cfg = write_config(tmp_path / "c.toml", dns.port, interval=8)
        args = ["sync", "--dry-run"] if dry_run else ["sync"]
        term = Terminal(args, cli_env(tmp_path, state_dir, cfg), stdout_pipe=True)
        term.wait_for("round 2 in")
        started = time.monotonic()
        mark = run_cli("mark", V6[0], "harvester", config=cfg)
        took = time.monotonic() - started
        assert term.proc.poll() is None  # the sync was still pausing
        code, seen, out = term.finish()
    assert mark.returncode == 0, mark.stderr
    assert took < 8
    assert code == 0, seen + out
    if dry_run:  # its scratch copy was taken before the mark, and the real state is untouched
        assert answers(state_dir) == 0
    else:
        assert out.startswith("sync: servers 4 known/0 clean/1 harvester/"), out
        assert answers(state_dir) == 2


def test_a_sync_waits_for_the_lock_to_write_and_names_the_holder(tmp_path, state_dir):
    """The writes after a pause still happen under the lock: while another run holds it,
    the sync waits (saying who holds it) and merges its round only after."""
    with FakeDNS(answer=V6) as dns:
        cfg = write_config(tmp_path / "c.toml", dns.port, interval=2)
        term = Terminal(["sync"], cli_env(tmp_path, state_dir, cfg), stdout_pipe=True)
        term.wait_for("round 2 in")
        with State.open(str(state_dir), holder="ntpguard mark"):
            term.wait_for(f"sync: waiting for the state lock, held by pid {os.getpid()} "
                          "(ntpguard mark) since ")
            time.sleep(1)
            assert term.proc.poll() is None
            assert answers(state_dir) == 1  # round 2 not merged while the lock is held
        code, seen, out = term.finish()
    assert code == 0, seen + out
    assert answers(state_dir) == 2


def test_sync_no_resolve_does_the_rest_without_dns(tmp_path, state_dir, run_cli):
    with FakeDNS(answer=V6) as dns:
        cfg = write_config(tmp_path / "c.toml", dns.port, interval=150)
        started = time.monotonic()
        out = run_cli("sync", "--no-resolve", "--json", config=cfg)
        took = time.monotonic() - started
        queries = dns.queries
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert queries == 0 and took < 30
    assert rep["steps"]["resolve"]["skipped"]
    assert "--no-resolve" in rep["steps"]["resolve"]["message"]
    assert not rep["steps"]["logs"]["skipped"] and not rep["steps"]["verdicts"]["skipped"]
