"""The state directory's files under faults and hostile changes: a newer database left as it
is, the lock holder always named, a zero-byte database, planted links, unsafe directories."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ntpguard import state as state_mod
from ntpguard.errors import LockBusy, StateError, UnsafePathError
from ntpguard.state import State
from ntpguard.status import Verdict

ROOT = Path(__file__).resolve().parent.parent
OTHER_UID = 54321


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_newer_schema_is_refused_unchanged(state_dir):
    """A database of a newer ntpguard in rollback-journal mode (as a newer version might keep
    it): refusing it must not switch it to WAL, which rewrites its header."""
    db = state_dir / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE future (x)")
        conn.execute("PRAGMA user_version=99")
    conn.close()
    before = digest(db)
    for lock in (True, False):
        with pytest.raises(StateError, match="newer ntpguard"):
            State.open(str(state_dir), lock=lock)
        assert digest(db) == before
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(p.name for p in state_dir.iterdir()) == ["lock", "state.db"]


# A real writer whose syscalls around the lock are slowed: os.pwrite (writing its line, right
# after flock) or, once it holds the lock, os.ftruncate (clearing the line, before unlocking).
HOLDER = textwrap.dedent("""
    import os, sys, time
    from ntpguard.state import State
    window = sys.argv[2]
    real_pwrite, real_ftruncate = os.pwrite, os.ftruncate
    def slow_pwrite(*a):
        print("in window", flush=True); time.sleep(0.4); return real_pwrite(*a)
    def slow_ftruncate(fd, n):
        real_ftruncate(fd, n)
        if n == 0:
            print("in window", flush=True); time.sleep(0.5)
    if window == "taking":
        os.pwrite = slow_pwrite
    st = State.open(sys.argv[1], holder="ntpguard slow")
    os.pwrite = real_pwrite
    if window == "releasing":
        os.ftruncate = slow_ftruncate
    else:
        time.sleep(1)  # held, its line written: what the second run must come to see
    st.close()
    time.sleep(0.5)
""")


@pytest.mark.parametrize("window", ["taking", "releasing"])
def test_lock_message_names_the_holder_in_every_window(state_dir, window, monkeypatch):
    """Met between the holder's flock and its line (or between clearing the line and
    unlocking), a second run names the holder's pid, or gets the lock once it is free; never
    "another run". The holder's windows here are 0.4-0.5 s (microseconds for real), so the
    second run may look for 5 s instead of 1 on a loaded test machine."""
    monkeypatch.setattr(state_mod, "_NAME_WAIT", 5.0, raising=False)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(state_dir), window],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "in window"
        try:
            State.open(str(state_dir), holder="ntpguard second").close()
            got = "the lock"
        except LockBusy as exc:
            got = str(exc)
    finally:
        proc.wait(timeout=10)
    if window == "taking":
        assert f"is locked by pid {proc.pid} (ntpguard slow) since " in got
    else:
        assert got == "the lock"


def test_zero_byte_database_is_an_empty_state_for_readers_and_writers(state_dir):
    (state_dir / "state.db").write_bytes(b"")
    with State.open(str(state_dir), lock=False) as ro:
        assert ro.servers() == [] and ro.verdict_history() == []
    assert (state_dir / "state.db").stat().st_size == 0  # a reader creates nothing
    with State.open(str(state_dir)) as st:
        st.add_verdict(Verdict.of("2604:a880:1:20::1", "harvester", "manual", {}, 1.0))
    with State.open(str(state_dir), lock=False) as ro:
        assert [v.status for v in ro.verdict_history()] == ["harvester"]


def test_lock_link_does_not_truncate_its_target(state_dir, tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (state_dir / "lock").symlink_to(target)
    with pytest.raises(UnsafePathError, match=r"lock: is a symbolic link"):
        State.open(str(state_dir))
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("name", ["state.db", "state.db-wal"])
def test_database_link_gets_nothing_written_into_its_target(state_dir, tmp_path, name):
    target = tmp_path / "elsewhere.db"
    (state_dir / name).symlink_to(target)
    for lock in (True, False):
        with pytest.raises(UnsafePathError, match=rf"{name}: is a symbolic link"):
            State.open(str(state_dir), lock=lock)
    assert not target.exists()
    assert not (tmp_path / "elsewhere.db-wal").exists()


def test_state_dir_that_others_can_write_is_refused(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    os.chmod(d, 0o777)
    for lock in (True, False):
        with pytest.raises(UnsafePathError, match="writable by group or others"):
            State.open(str(d), lock=lock)
    assert list(d.iterdir()) == []
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir()
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        State.open(str(link))
    assert list((tmp_path / "real").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_state_dir_of_another_user_is_refused_through_the_cli(tmp_path, run_cli, state_dir):
    os.chown(state_dir, OTHER_UID, -1)
    out = run_cli("resolve", "--rounds", "1")
    assert out.returncode == 2
    assert out.stderr == (f"ntpguard: {state_dir}: is owned by uid {OTHER_UID}, not by root or "
                          "uid 0 (the user running ntpguard); refused (chown it)\n")
    assert list(state_dir.iterdir()) == []
