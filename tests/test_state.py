"""The state database: schema, merge, verdict history, the writer lock and crash consistency."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import lock_held

from ntpguard import state as state_mod
from ntpguard.errors import LockBusy, StateError
from ntpguard.state import State
from ntpguard.status import Verdict

ROOT = Path(__file__).resolve().parent.parent


def test_new_state_is_migrated_and_in_wal(state_dir):
    with State.open(str(state_dir)) as st:
        assert st.schema_version == len(state_mod.MIGRATIONS)
        assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert st.servers() == []


def test_merge_counts_zones_and_new_servers(state_dir):
    with State.open(str(state_dir)) as st:
        assert st.record_answer("2.p", "AAAA", [("2001:db8::1", 6), ("2001:db8::2", 6)], 10) == [
            "2001:db8::1", "2001:db8::2"]
        assert st.record_answer("2.p", "AAAA", [("2001:db8::2", 6)], 20) == []
        assert st.record_answer("0.p", "A", [("192.0.2.1", 4)], 30) == ["192.0.2.1"]
        st.record_answer("3.p", "AAAA", [("2001:db8::2", 6)], 15)
        servers = {s.address: s for s in st.servers()}
    two = servers["2001:db8::2"]
    assert (two.first_seen, two.last_seen, two.times_seen) == (10, 20, 3)
    assert two.zones == ("2.p", "3.p")
    assert servers["192.0.2.1"].family == 4
    with State.open(str(state_dir), lock=False) as ro:
        assert ro.zone_incidence("2.p", 6) == (2, [1, 2]) or ro.zone_incidence("2.p", 6) == (
            2, [2, 1])


def test_verdict_history_and_bad_status(state_dir):
    with State.open(str(state_dir)) as st:
        st.add_verdict(Verdict.of("2001:db8::1", "suspect", "detect", {"positive": 1}, 1))
        st.add_verdict(Verdict.of("2001:db8::1", "harvester", "detect", {"positive": 3}, 2))
        st.add_verdict(Verdict.of("2001:db8::1", "clean", "manual", None, 3))
        with pytest.raises(ValueError, match="is not a valid Status"):
            Verdict.of("2001:db8::1", "evil", "manual", None, 4)
        # A damaged row (written by hand, or by a newer version) is left out, not fatal.
        st.conn.execute("INSERT INTO verdicts (address, status, source, evidence, time)"
                        " VALUES ('2001:db8::1', 'clean', 'oracle', '{', 5)")
        hist = st.verdict_history("2001:db8::1")
        latest = st.latest_verdicts()["2001:db8::1"]
    assert [v.status for v in hist] == ["suspect", "harvester", "clean"]
    assert latest["detect"].evidence == {"positive": 3}
    assert latest["manual"].status == "clean"


def test_readonly_open_of_missing_state_creates_nothing(tmp_path):
    target = tmp_path / "nowhere"
    with State.open(str(target), lock=False) as st:
        assert st.servers() == []
    assert not target.exists()


def test_newer_schema_is_refused(state_dir):
    with State.open(str(state_dir)) as st:
        st.conn.execute("PRAGMA user_version=99")
    with pytest.raises(StateError, match="newer ntpguard"):
        State.open(str(state_dir))
    with pytest.raises(StateError, match="newer ntpguard"):
        State.open(str(state_dir), lock=False)


def test_garbage_database_is_a_state_error(state_dir):
    (state_dir / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match=r"state\.db"):
        State.open(str(state_dir))


def test_a_database_damaged_past_its_header_is_a_state_error_too(state_dir, run_cli):
    """The open reads the header only; a damaged table page is met by the first query that
    reads it. That was an 'unexpected DatabaseError'; now the line the open gives."""
    with State.open(str(state_dir)) as st:
        for i in range(3000):
            st.add_verdict(Verdict.of(f"2001:db8::{i:x}", "clean", "manual",
                                      {"note": "x" * 40}, 1.7e9))
    db = state_dir / "state.db"
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 20 * page
    data[8 * page:len(data) - page] = b"\xa5" * (len(data) - 9 * page)
    db.write_bytes(bytes(data))
    for args in (["servers"], ["status"], ["mark", "2606:4700::1", "harvester"]):
        out = run_cli(*args)
        assert out.stderr.startswith(f"ntpguard: {db}: database disk image is malformed; "
                                     "the state database is damaged: restore it"), args
        assert out.stderr.count("\n") == 1 and out.returncode == 1


def test_a_database_missing_a_table_says_what_to_do(state_dir, run_cli):
    """A table dropped by hand (or another program's file by that name) is damaged the same
    way: one line, exit 1, with what the admin can do; a full disk or a lock would not say so."""
    import sqlite3

    with State.open(str(state_dir)) as st:
        st.add_verdict(Verdict.of("2606:4700::1", "harvester", "manual", {}, 1.7e9))
    conn = sqlite3.connect(state_dir / "state.db")
    conn.execute("DROP TABLE verdicts")
    conn.commit()
    conn.close()
    for args in (["status"], ["mark", "2606:4700::2", "harvester"]):
        out = run_cli(*args)
        assert out.returncode == 1, (args, out.stderr)
        assert "no such table: verdicts; the state database is damaged: restore it from a " \
               "backup, or move it aside" in out.stderr, args
        assert out.stderr.count("\n") == 1, out.stderr


def test_second_writer_is_refused_and_names_the_holder(state_dir):
    with State.open(str(state_dir), holder="ntpguard resolve"), pytest.raises(LockBusy) as info:
        State.open(str(state_dir), holder="ntpguard sync")
    assert f"pid {os.getpid()} (ntpguard resolve)" in str(info.value)
    # Released on close: a new writer gets in.
    State.open(str(state_dir)).close()


def test_wait_blocks_until_the_holder_is_gone(state_dir):
    with lock_held(state_dir, 1.5):
        start = time.monotonic()
        with State.open(str(state_dir), wait=True):
            waited = time.monotonic() - start
    assert waited > 0.5


def test_unlocked_lets_another_writer_in_and_takes_the_lock_back(state_dir):
    """While a run only waits, another writes; after the wait the run holds the lock again
    and sees what the other wrote."""
    with State.open(str(state_dir), holder="ntpguard sync") as st:
        with st.unlocked():
            with State.open(str(state_dir), holder="ntpguard mark") as other:
                other.record_answer("2.p", "AAAA", [("2001:db8::1", 6)], 1.0)
            # Every write still needs the lock: one inside the wait is refused, not made.
            with pytest.raises(StateError, match="writer lock was released"):
                st.record_answer("2.p", "AAAA", [("2001:db8::2", 6)], 2.0)
        with pytest.raises(LockBusy, match=r"\(ntpguard sync\)"):
            State.open(str(state_dir), holder="ntpguard mark")
        assert [s.address for s in st.servers()] == ["2001:db8::1"]
        st.record_answer("2.p", "AAAA", [("2001:db8::2", 6)], 3.0)
    with State.open(str(state_dir), lock=False) as ro:
        assert len(ro.servers()) == 2


def test_unlocked_waits_for_a_holder_and_says_who(state_dir):
    heard: list[str] = []
    with State.open(str(state_dir)) as st, contextlib.ExitStack() as stack:
        with st.unlocked(waiting=heard.append):
            holder = stack.enter_context(lock_held(state_dir, 1.5, "ntpguard mark"))
            start = time.monotonic()
        waited = time.monotonic() - start
        st.record_answer("2.p", "AAAA", [("2001:db8::1", 6)], 1.0)
    assert waited > 0.5
    assert len(heard) == 1 and heard[0].startswith(f"pid {holder.pid} (ntpguard mark) since ")


def test_unlocked_interrupted_leaves_the_lock_free(state_dir):
    """Ctrl-C during a wait ends the run: it does not wait for the lock to write nothing."""
    heard: list[str] = []
    with State.open(str(state_dir)) as st, contextlib.ExitStack() as stack:
        with pytest.raises(KeyboardInterrupt), st.unlocked(waiting=heard.append):
            holder = stack.enter_context(lock_held(state_dir, 30))
            raise KeyboardInterrupt
        assert heard == []  # it did not try to take the lock back
        with pytest.raises(StateError):
            st.record_answer("2.p", "AAAA", [], 1.0)
        holder.terminate()


WRITER = """
import sys
from ntpguard.state import State
st = State.open(sys.argv[1])
i = 0
print("go", flush=True)
while True:
    base = (i * 4) % 4000
    st.record_answer("2.p", "AAAA",
                     [(f"2001:db8::{base + k:x}", 6) for k in range(4)], float(i))
    i += 1
"""


def test_sigkill_mid_write_leaves_a_consistent_database(state_dir):
    """Every answer adds exactly 4 sightings; after a kill at a random point they still add up."""
    for delay in (0.05, 0.2, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(state_dir)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert proc.stdout.readline().strip() == "go"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with State.open(str(state_dir)) as st:
            assert st.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            answers = st.conn.execute("SELECT answers FROM zone_answers").fetchone()[0]
            sightings = st.conn.execute("SELECT sum(times_seen) FROM server_zones").fetchone()[0]
            total = st.conn.execute("SELECT sum(times_seen) FROM servers").fetchone()[0]
        assert answers > 0
        assert sightings == total == 4 * answers


def test_migrations_run_in_order_and_only_once(state_dir, monkeypatch):
    calls = []

    def step(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("CREATE TABLE extra (x)")

    with State.open(str(state_dir)):
        pass
    monkeypatch.setattr(state_mod, "MIGRATIONS", [*state_mod.MIGRATIONS, step])
    with State.open(str(state_dir)) as st:
        assert st.schema_version == len(state_mod.MIGRATIONS)
    with State.open(str(state_dir)):
        pass
    assert calls == [1]


def test_failed_migration_rolls_back(state_dir, monkeypatch):
    with State.open(str(state_dir)):
        pass

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x)")
        raise sqlite3.OperationalError("boom")

    monkeypatch.setattr(state_mod, "MIGRATIONS", [*state_mod.MIGRATIONS, broken])
    with pytest.raises(StateError, match="boom"):
        State.open(str(state_dir))
    monkeypatch.undo()
    with State.open(str(state_dir)) as st:
        tables = {r[0] for r in st.conn.execute("SELECT name FROM sqlite_master")}
    assert "half" not in tables


def test_contact_runs_merge_and_a_reread_never_inflates_them(state_dir):
    """A contact is stored as a run (first, last, packets): a later read adds its packets,
    reading the same packets again (a lost position) does not; a probe contact (no run)
    reads back as one packet."""
    from ntpguard.facts import Contacts

    pair = ("2001:db8:a::1", "2001:db8:5::123")
    with State.open(str(state_dir), lock=True) as st:
        st.save_detection([], Contacts({pair: [100.0, 400.0, 5]}, 100.0, 400.0), [], "k", 1.0)
        st.save_detection([], Contacts({pair: [100.0, 400.0, 5]}, 100.0, 400.0), [], "k", 2.0)
        assert st.contacts().runs[pair] == [100.0, 400.0, 5]
        st.save_detection([], Contacts({pair: [464.0, 720.0, 4]}, 400.0, 720.0), [], "k", 3.0)
        st.record_probe_contacts([("2001:db8:a::2", "2001:db8:5::9", 50.0)])
        runs = st.contacts().runs
    assert runs[pair] == [100.0, 720.0, 9]
    assert runs[("2001:db8:a::2", "2001:db8:5::9")] == [50.0, 50.0, 1]


def test_contacted_servers_are_every_server_of_the_contacts(state_dir):
    """One per server however many contacts it has, probe contacts included; a value a hand
    edit left that is not text (a blob: the column's affinity makes numbers text) is no
    server."""
    import random

    from ntpguard.facts import Contacts

    rng = random.Random(3)
    servers = [f"2001:db8:5::{i:x}" for i in range(1, 60)] + ["192.0.2.7", "198.51.100.1"]
    runs = {(f"2001:db8:a::{rng.randrange(1, 9)}", s): [1.0, 2.0, 1]
            for s in servers[:-1] for _ in range(rng.randrange(1, 5))}
    with State.open(str(state_dir), lock=True) as st:
        assert st.contacted_servers() == set()
        st.save_detection([], Contacts(runs, 0.0, 9.0), [], "k", 1.0)
        st.record_probe_contacts([("2001:db8:a::2", servers[-1], 50.0)])
        st.conn.execute("INSERT INTO detect_contacts (address, server, first_time)"
                        " VALUES ('2001:db8:a::9', x'00', 1.0), ('2001:db8:a::8', x'ff', 1.0)")
        assert st.contacted_servers() == set(servers)


def test_verdicts_are_weighed_again_only_when_the_evidence_changed(state_dir, monkeypatch):
    from ntpguard import evidence
    from ntpguard.config import Detect
    from ntpguard.facts import Contacts, Scan, Trigger

    calls = []
    real = evidence.compute_verdicts

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evidence, "compute_verdicts", counted)
    server, address = "2001:db8:100::1", "2001:db8:1::10"
    with State.open(str(state_dir)) as st:
        st.save_detection([], Contacts({(address, server): [100.0, 400.0, 5]}, 100.0, 9000.0),
                          [], "k", 1.0)
        first = evidence.record_verdicts(st, Detect(), now=2.0)
        assert evidence.record_verdicts(st, Detect(), now=3.0) == first and len(calls) == 1
        # Each kind of new fact makes it weigh again: a longer run, a scan, other settings.
        st.save_detection([], Contacts({(address, server): [100.0, 500.0, 6]}, 100.0, 9000.0),
                          [], "k", 4.0)
        evidence.record_verdicts(st, Detect(), now=5.0)
        assert len(calls) == 2
        scan = Scan(130.0, 131.0, "2604:a880:800:10::/64", address, 50, 50, ("tcp",),
                    (Trigger(server, "udp", 123, 123, 100.0, 30.0),))
        st.save_detection([], Contacts({}, 100.0, 9000.0), [scan], "k", 6.0)
        evidence.record_verdicts(st, Detect(), now=7.0)
        evidence.record_verdicts(st, Detect(), now=8.0)
        assert len(calls) == 3
        evidence.record_verdicts(st, Detect(lookback=7200.0), now=9.0)
        assert len(calls) == 4
    # A damaged memo is no memo.
    (Path(state_dir) / evidence.MEMO_NAME).write_text("{not json")
    with State.open(str(state_dir)) as st:
        evidence.record_verdicts(st, Detect(), now=10.0)
    assert len(calls) == 5


def test_a_canary_changes_the_evidence_key_only_where_it_met_evidence(state_dir):
    from ntpguard.canary import Canary, Change
    from ntpguard.facts import Contacts

    with State.open(str(state_dir)) as st:
        st.save_detection([], Contacts({("2001:db8:1::c1", "2001:db8:100::1"): [5.0, 6.0, 1]},
                                       5.0, 6.0), [], "k", 7.0)
        before = st.evidence_key()
        idle = Canary("2001:db8:1::c2", "2001:db8:100::2", "eth0", 1.0, 9e9)
        st.save_canaries(Change(add=(idle,)))
        assert st.evidence_key() == before  # no contact, no scan: weighs nothing
        met = Canary("2001:db8:1::c1", "2001:db8:100::1", "eth0", 1.0, 9e9)
        st.save_canaries(Change(add=(met,)))
        after = st.evidence_key()
        assert after != before  # its contact is now a probe's
        st.save_canaries(Change(retire=(met,)))
        assert st.evidence_key() == after


NOW = 1.8e9  # when the tests below age evidence out (after every time they store)


def test_evidence_ages_out_but_a_blocked_servers_stays(state_dir):
    """retention_days counts back from the newest covered log line; the contacts with and
    the scans triggered by a server judged harvester are kept however old; verdicts stay."""
    from ntpguard import evidence
    from ntpguard.config import Detect
    from ntpguard.facts import Contacts, Scan, Trigger
    from ntpguard.status import DETECT, Status

    day = 86400.0
    harvester, clean, addr = "2001:db8:100::1", "2001:db8:100::2", "2001:db8:1::10"

    def scan(t, server):
        return Scan(t + 30, t + 31, f"2604:a880:{server[-1]}::/64", addr, 50, 50, ("tcp",),
                    (Trigger(server, "udp", 123, 123, t, 30.0),))

    with State.open(str(state_dir)) as st:
        old, new = 10 * day, 200 * day
        st.save_detection([], Contacts({(addr, harvester): [old, old + 60, 2],
                                        (addr, clean): [old, old + 60, 2],
                                        ("2001:db8:1::11", clean): [new, new + 60, 2]},
                                       old, new + day), [scan(old, harvester), scan(old, clean),
                                                         scan(new, clean)], "k", 1.0)
        st.add_verdict(Verdict(harvester, Status.HARVESTER, DETECT, {}, old + day))
        assert evidence.age_out(st, Detect(retention_days=0), NOW) == (0, 0)
        assert evidence.age_out(st, Detect(retention_days=365), NOW) == (0, 0)
        assert evidence.age_out(st, Detect(retention_days=90), NOW) == (1, 1)
        runs = st.contacts().runs
        assert set(runs) == {(addr, harvester), ("2001:db8:1::11", clean)}
        scans = st.scans()
        assert [(s.start, s.triggers[0].server) for s in scans] == [
            (old + 30, harvester), (new + 30, clean)]
        assert st.conn.execute("SELECT count(*) FROM detect_triggers").fetchone()[0] == 2
        assert st.latest_verdicts()[harvester]
        assert evidence.age_out(st, Detect(retention_days=90), NOW) == (0, 0)


def test_evidence_is_never_aged_out_from_a_time_later_than_now(state_dir):
    """A log line stamped 100 years ahead covers up to then; counted back from there, every
    fact was 'older than the retention' and one sync deleted them all."""
    from ntpguard import evidence
    from ntpguard.config import Detect
    from ntpguard.facts import Contacts

    day, now = 86400.0, 1.8e9
    addr, server = "2001:db8:1::10", "2001:db8:100::2"
    with State.open(str(state_dir)) as st:
        st.save_detection([], Contacts({(addr, server): [now - day, now - day + 60, 2]},
                                       now - 2 * day, now + 100 * 365 * day), [], "k", now)
        assert evidence.age_out(st, Detect(retention_days=90), now) == (0, 0)
        assert set(st.contacts().runs) == {(addr, server)}
        assert evidence.age_out(st, Detect(retention_days=90), now + 91 * day) == (1, 0)


def test_old_runs_and_forgotten_canaries_age_out_and_failure_counts_stay(state_dir):
    """Runs older than retention_days go, their step failures kept as totals (a metrics
    counter never goes down); an expired canary goes once no contact or scan names it."""
    from ntpguard.canary import Canary, Change
    from ntpguard.facts import Contacts, Scan

    day, now = 86400.0, 400 * 86400.0
    with State.open(str(state_dir)) as st:
        st.record_run("sync", now - 350 * day, now, False, {"failed": "not a list"})
        for i, failed in enumerate([["logs"], ["logs", "lists"], [], ["rules"]]):
            t = now - (300 - 100 * i) * day  # 300, 200, 100 and 0 days ago
            st.record_run("sync", t, t + 5, not failed, {"failed": failed})
        before = st.step_failures("sync")
        assert before == {"logs": 2, "lists": 1, "rules": 1}
        kept, named, gone = (Canary(f"2001:db8:1::c{i}", "2001:db8:100::1", "eth0",
                                    now - t * day, now - (t - 1) * day) for i, t in
                             ((1, 10), (2, 300), (3, 300)))
        st.save_canaries(Change(add=(kept, named, gone)))
        st.save_detection([], Contacts(), [Scan(now - 299 * day, now - 299 * day + 1,
                                                "2001:db8:666::1", named.address, 40, 40,
                                                ("tcp",))], "k", now)
        assert st.age_out_history(0, now) == (0, 0)
        assert st.age_out_history(150, now) == (3, 1)
        assert [r["summary"]["failed"] for r in st.runs("sync", 10)] == [["rules"], []]
        assert st.step_failures("sync") == before
        assert {c.address for c in st.canaries()} == {kept.address, named.address}
        assert st.age_out_history(150, now) == (0, 0)
        assert st.step_failures("sync") == before


def test_the_last_good_run_outlives_the_retention(state_dir):
    """Syncs that all failed for longer than retention_days: the newest one that worked
    stays (status and the last-success metric name it), and so does each command's newest
    run; their failures are counted once."""
    day, now = 86400.0, 400 * 86400.0
    with State.open(str(state_dir)) as st:
        st.record_run("sync", now - 300 * day, now - 300 * day + 5, True, {"failed": []})
        for ago in (250, 200, 10):
            st.record_run("sync", now - ago * day, now - ago * day + 5, False,
                          {"failed": ["logs"]})
        st.record_run("detect", now - 280 * day, now - 280 * day + 1, True, {})
        assert st.age_out_history(150, now) == (2, 0)
        assert st.last_ok_run("sync") == {"started": now - 300 * day,
                                          "finished": now - 300 * day + 5}
        assert st.last_run("detect") is not None
        assert st.step_failures("sync") == {"logs": 3}
        assert st.age_out_history(150, now) == (0, 0)
        assert st.step_failures("sync") == {"logs": 3}


def test_scans_read_again_whenever_the_tables_changed(state_dir):
    from ntpguard.canary import Canary, Change
    from ntpguard.facts import Contacts, Scan, Trigger

    def scan(t, src):
        return Scan(t, t + 1, src, "2001:db8:1::10", 50, 50, ("tcp",),
                    (Trigger("2001:db8:100::1", "udp", 123, 123, t - 30, 30.0),))

    with State.open(str(state_dir)) as st:
        assert st.scans() == []
        st.save_detection([], Contacts({}, 0.0, 100.0), [scan(10.0, "2604::/64")], "k", 1.0)
        first = st.scans()
        assert [s.src for s in first] == ["2604::/64"] and st.scans() == first
        first.clear()  # the caller's list, not the remembered one
        assert len(st.scans()) == 1
        st.save_detection([], Contacts({}, 0.0, 100.0), [scan(20.0, "2605::/64")], "k", 2.0)
        assert [s.src for s in st.scans()] == ["2604::/64", "2605::/64"]
        st.conn.execute("DELETE FROM detect_triggers")
        assert [s.triggers for s in st.scans()] == [(), ()]
        # Another table's change does not make a read of the scans again (a `rules apply`
        # changes the canaries between the two reads it makes: ~0.1 s each with a year's).
        reads = []
        real = st._read_scans

        def counted() -> list[Scan]:
            reads.append(1)
            return real()

        st._read_scans = counted  # type: ignore[method-assign]
        st.add_verdict(Verdict.of("2001:db8:100::1", "clean", "manual", {}, 5.0))
        st.save_canaries(Change(add=(Canary("2001:db8:1::c1", "2001:db8:100::1", "eth0", 1.0,
                                            2.0),)))
        assert len(st.scans()) == 2 and reads == []
        st.conn.execute("UPDATE detect_scans SET ports = 51")
        assert [s.ports for s in st.scans()] == [51, 51] and reads == [1]


def test_the_rules_read_live_canaries_and_scanned_ones_only(state_dir):
    """90 days of rotations keep ~25k canary rows; the rules read those the kernel still
    holds, and the convictions those a recorded scan reached, however old."""
    from ntpguard.canary import Canary, Change
    from ntpguard.facts import Contacts, Scan

    old = Canary("2001:db8:5::1", "2001:db8::1", "eth0", 100.0, 200.0, retired=150.0)
    gone = Canary("2001:db8:5::2", "2001:db8::2", "eth0", 100.0, 200.0)
    live = Canary("2001:db8:5::3", "2001:db8::3", "eth0", 900.0, 2000.0)
    spare = Canary("2001:db8:5::4", "", "eth0", 950.0, 1001.0)
    with State.open(str(state_dir)) as st:
        st.save_canaries(Change(add=(old, gone, live, spare)))
        scan = Scan(400.0, 401.0, "2001:db8:5ca::/64", old.address, 100, 100, ("TCP",))
        st.save_detection([], Contacts(), [scan], "k", 500.0)
        assert [c.address for c in st.canaries()] == [old.address, gone.address,
                                                       live.address, spare.address]
        assert st.canaries(live_at=1000.0) == [live, spare]
        assert st.canaries(live_at=1001.0) == [live]
        assert st.scanned_canaries() == [old]


def test_the_scans_of_some_addresses_or_servers_are_those_of_the_whole_read(state_dir):
    """The rules read the scans of the scanned canaries and the scans the blocked servers
    triggered in SQL; they must be exactly the ones the whole read holds, triggers and all
    (a scan with several triggers is taken whole when one of them is the server's)."""
    import random

    from ntpguard.facts import Contacts, Scan, Trigger

    rng = random.Random(3)
    servers = [f"2001:db8:1::{k:x}" for k in range(1, 9)]
    dsts = [f"2001:db8:2::{k:x}" for k in range(1, 7)]
    scans = []
    for k in range(60):
        start = 1000.0 + 37 * k + rng.random()
        triggers = tuple(sorted(
            (Trigger(s, "UDP", 123, 123, start - lag, lag)
             for s, lag in zip(rng.sample(servers, rng.randrange(0, 4)), (3.0, 9.5, 40.0))),
            key=lambda t: t.time))
        scans.append(Scan(start, start + 2, f"2a00:{k % 5:x}::/64", rng.choice(dsts), 100, 100,
                          ("TCP",), triggers))
    with State.open(str(state_dir)) as st:
        st.save_detection([], Contacts(), scans, "k", 5000.0)
        whole = st.scans()
        assert len(whole) == 60
        for picked in ([], servers[:1], servers[2:5], servers, ["2001:db8:9::9"]):
            want = [s for s in whole if any(t.server in picked for t in s.triggers)]
            assert st.scans(triggered_by=picked) == want
            assert st.scans(triggered_by=set(picked)) == want
        for picked in ([], dsts[:1], dsts[1:4], ["2001:db8:9::9"]):
            assert st.scans(of=picked) == [s for s in whole if s.dst in picked]
        assert st.scans() == whole  # the whole read is not changed by the filtered ones
