"""The state database: known servers, verdict history, runs; one SQLite file, one writer at a time.

SQLite in WAL mode with every change inside one transaction, so a crash at any point leaves
either the old or the new state, never a mix. An flock() on a lock file beside the database keeps
two writing `ntpguard` runs from interleaving; readers need no lock (WAL gives them a snapshot).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import stat
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from ntpguard import files
from ntpguard.errors import LockBusy, StateError, UnsafePathError

DB_NAME = "state.db"
LOCK_NAME = "lock"
STATUSES = ("harvester", "suspect", "clean", "unknown")

# Each entry moves the schema from version i to i+1. Append, never edit a released entry:
# user_version in the database says how many have run. Later issues add their tables here.
Migration = Union[str, Callable[[sqlite3.Connection], None]]
MIGRATIONS: list[Migration] = [
    """
    CREATE TABLE servers (
        address     TEXT PRIMARY KEY,           -- RFC 5952 form
        family      INTEGER NOT NULL CHECK (family IN (4, 6)),
        first_seen  REAL NOT NULL,
        last_seen   REAL NOT NULL,
        times_seen  INTEGER NOT NULL DEFAULT 0  -- DNS answers that carried it
    );
    CREATE TABLE server_zones (
        address     TEXT NOT NULL REFERENCES servers(address) ON DELETE CASCADE,
        zone        TEXT NOT NULL,
        first_seen  REAL NOT NULL,
        last_seen   REAL NOT NULL,
        times_seen  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (address, zone)
    );
    -- How many answers each zone gave per record type: the sample count m of the estimate.
    CREATE TABLE zone_answers (
        zone        TEXT NOT NULL,
        rdtype      TEXT NOT NULL,
        answers     INTEGER NOT NULL DEFAULT 0,
        last_answer REAL,
        PRIMARY KEY (zone, rdtype)
    );
    CREATE TABLE verdicts (
        id          INTEGER PRIMARY KEY,
        address     TEXT NOT NULL,              -- an address or a prefix
        status      TEXT NOT NULL CHECK (status IN ('harvester','suspect','clean','unknown')),
        source      TEXT NOT NULL,              -- manual | detect | probe | list:NAME
        evidence    TEXT NOT NULL DEFAULT '{}', -- JSON
        time        REAL NOT NULL
    );
    CREATE INDEX verdicts_by_address ON verdicts (address, time);
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        command     TEXT NOT NULL,
        started     REAL NOT NULL,
        finished    REAL NOT NULL,
        ok          INTEGER NOT NULL,
        summary     TEXT NOT NULL DEFAULT '{}'  -- JSON
    );
    """,
    # 2: evidence from firewall logs (ntpguard detect --record; read/written by evidence.py).
    # Facts, not conclusions, so verdicts can be recomputed from all runs together; the keys
    # make ingesting the same log twice a no-op.
    """
    CREATE TABLE detect_positions (
        source      TEXT PRIMARY KEY,           -- file path or "journal"
        inode       INTEGER NOT NULL DEFAULT 0,
        offset      INTEGER NOT NULL DEFAULT 0,
        cursor      TEXT NOT NULL DEFAULT '',
        updated     REAL NOT NULL
    );
    CREATE TABLE detect_contacts (
        address     TEXT NOT NULL,              -- local address that sent
        server      TEXT NOT NULL,              -- where to (NTP server)
        first_time  REAL NOT NULL,
        PRIMARY KEY (address, server)
    );
    CREATE TABLE detect_scans (
        dst         TEXT NOT NULL,
        src         TEXT NOT NULL,
        start       REAL NOT NULL,
        end         REAL NOT NULL,
        ports       INTEGER NOT NULL,
        packets     INTEGER NOT NULL,
        protocols   TEXT NOT NULL,
        triggers    TEXT NOT NULL DEFAULT '[]', -- JSON
        PRIMARY KEY (dst, src, start)
    );
    CREATE TABLE detect_coverage (
        source      TEXT PRIMARY KEY,
        first_time  REAL NOT NULL,
        last_time   REAL NOT NULL
    );
    """,
    # ntpguard probe's contacts: a fresh address given to one server only, so a scan of it is
    # not background noise (verdict.py weighs these tests with their own background rate).
    "ALTER TABLE detect_contacts ADD COLUMN probe INTEGER NOT NULL DEFAULT 0",
]


@dataclass(frozen=True)
class Server:
    address: str
    family: int
    first_seen: float
    last_seen: float
    times_seen: int
    zones: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    address: str
    status: str
    source: str
    evidence: dict
    time: float


# How long a second run keeps looking for the holder's line when it meets the lock held but
# the line not written yet (or already cleared): the holder writes it in the next syscall, so
# milliseconds; a second is room for a loaded machine.
_NAME_WAIT = 1.0


def _holder(text: bytes) -> str:
    """The holder's line ("pid N (command) since TIME"), if complete and N is alive; else ""."""
    line, newline, _ = text.decode("utf-8", "replace").partition("\n")
    words = line.split()
    if not newline or len(words) < 2 or words[0] != "pid" or not words[1].isdigit():
        return ""
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return ""  # a line left by a killed holder, before the next holder overwrote it
    except PermissionError:
        pass  # alive, owned by another user
    return line.strip()


def _check_db_files(path: str) -> Optional[os.stat_result]:
    """SQLite opens state.db, its -wal and -shm by name and follows links (placing the WAL
    beside the link's target): refuse a link or a non-regular file there before it does.
    The lstat() of state.db, None if it does not exist."""
    for suffix in ("-wal", "-shm", "-journal"):
        files.check_file(path + suffix)
    return files.check_file(path)


class _Lock:
    """An exclusive flock() on STATE/lock that records who holds it, for the error message.

    The holder writes its line right after taking the lock and clears it just before letting
    go, so a second run can meet the lock held with no line yet (or no more): it then looks
    again for up to _NAME_WAIT seconds, and either names the holder or gets the lock.
    The file is opened without following a link (a `lock` link must not truncate its target).
    """

    def __init__(self, path: str, holder: str, wait: bool) -> None:
        self.path = path
        try:
            self.fd = files.open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateError(f"{path}: cannot open lock file: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(self.fd).st_mode):
                raise UnsafePathError(f"{path}: is not a regular file; refused (remove it)")
            if wait:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            else:
                self._take_or_name_holder()
        except BaseException:
            os.close(self.fd)
            raise
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        line = f"pid {os.getpid()} ({holder}) since {stamp}\n".encode()
        # Write, then cut what a longer old line left: the file is never empty while held.
        os.pwrite(self.fd, line, 0)
        os.ftruncate(self.fd, len(line))

    def _take_or_name_holder(self) -> None:
        give_up = time.monotonic() + _NAME_WAIT
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            who = _holder(os.pread(self.fd, 200, 0))
            if who or time.monotonic() > give_up:
                raise LockBusy(
                    f"state {os.path.dirname(self.path)} is locked by "
                    f"{who or 'another run (it did not say which)'}; try again later or use --wait"
                )
            time.sleep(0.01)

    def release(self) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


class State:
    """The open state database. Use `State.open()`; close with `close()` or `with`."""

    def __init__(self, conn: sqlite3.Connection, directory: str, lock: Optional[_Lock]) -> None:
        self.conn = conn
        self.directory = directory
        self._lock = lock

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str, lock: bool = True, wait: bool = False,
             holder: str = "ntpguard") -> State:
        """Open (and create or migrate) the database in `directory`.

        lock=True takes the exclusive writer lock; lock=False opens read-only, and a directory
        without a database reads as an empty state instead of creating files. The directory
        must pass files.check_dir; state.db (and its -wal, -shm) must not be links.
        """
        path = os.path.join(directory, DB_NAME)
        if not lock:
            return cls._open_readonly(directory, path)
        try:
            files.ensure_dir(directory, 0o755)
        except OSError as exc:
            raise StateError(
                f"{directory}: cannot create state directory: {exc.strerror}") from None
        held = _Lock(os.path.join(directory, LOCK_NAME), holder, wait)
        conn = None
        try:
            _check_db_files(path)
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            # Nothing is changed before the version is known: a database of a newer ntpguard
            # is refused as it is (not even switched to WAL, which rewrites its header).
            conn.execute("PRAGMA busy_timeout=30000")
            cls._check_version(conn.execute("PRAGMA user_version").fetchone()[0], path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            state = cls(conn, directory, held)
            state._migrate()
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            held.release()
            raise StateError(f"{path}: {exc}") from None
        except BaseException:
            if conn is not None:
                conn.close()
            held.release()
            raise
        return state

    @classmethod
    def _open_readonly(cls, directory: str, path: str) -> State:
        """A read-only view; no directory, no database, or a zero-byte one reads as empty.

        A zero-byte state.db is what a run killed between SQLite creating the file and its
        first commit leaves, and SQLite itself reads it as an empty database: it holds no state
        to protect, so readers show the empty state and the next writer initialises it (before,
        writers did that while readers refused it, so `servers` failed until a `resolve` ran).
        """
        if os.path.lexists(directory):
            files.check_dir(directory)
        st = _check_db_files(path)
        if st is None or st.st_size == 0:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            state = cls(conn, directory, None)
            state._migrate()
            return state
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30,
                                   isolation_level=None)
            conn.execute("PRAGMA busy_timeout=30000")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path}: {exc}") from None
        state = cls(conn, directory, None)
        state._check_version(version, path)
        if version < len(MIGRATIONS):
            raise StateError(f"{path}: schema version {version} is older than this ntpguard's "
                             f"{len(MIGRATIONS)}; run a command that writes (e.g. resolve) first")
        return state

    @staticmethod
    def _check_version(version: int, path: str) -> None:
        if version > len(MIGRATIONS):
            raise StateError(f"{path}: schema version {version} was written by a newer ntpguard "
                             f"(this one knows {len(MIGRATIONS)}); it was left as it is")

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        self._check_version(version, os.path.join(self.directory, DB_NAME))
        for number in range(version, len(MIGRATIONS)):
            step = MIGRATIONS[number]
            with self.transaction():
                if callable(step):
                    step(self.conn)
                else:
                    for statement in step.split(";"):
                        if statement.strip():
                            self.conn.execute(statement)
                # PRAGMA takes no parameters; number is ours, not user input.
                self.conn.execute(f"PRAGMA user_version={number + 1}")

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.conn.close()
        if self._lock:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception: all or nothing."""
        if self.conn.in_transaction:  # nested: the outer transaction decides
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- known servers -------------------------------------------------------------------------

    def record_answer(self, zone: str, rdtype: str, addresses: Iterable[tuple[str, int]],
                      now: float) -> list[str]:
        """Merge one DNS answer (canonical address, family) into the known set; return new ones."""
        new = []
        with self.transaction() as db:
            db.execute(
                "INSERT INTO zone_answers (zone, rdtype, answers, last_answer) VALUES (?, ?, 1, ?)"
                " ON CONFLICT (zone, rdtype) DO UPDATE SET answers = answers + 1,"
                " last_answer = excluded.last_answer",
                (zone, rdtype, now),
            )
            for address, fam in addresses:
                cur = db.execute(
                    "INSERT INTO servers (address, family, first_seen, last_seen, times_seen)"
                    " VALUES (?, ?, ?, ?, 1) ON CONFLICT (address) DO NOTHING",
                    (address, fam, now, now),
                )
                if cur.rowcount:
                    new.append(address)
                else:
                    db.execute(
                        "UPDATE servers SET last_seen = max(last_seen, ?),"
                        " times_seen = times_seen + 1 WHERE address = ?",
                        (now, address),
                    )
                db.execute(
                    "INSERT INTO server_zones (address, zone, first_seen, last_seen, times_seen)"
                    " VALUES (?, ?, ?, ?, 1) ON CONFLICT (address, zone) DO UPDATE SET"
                    " last_seen = max(last_seen, excluded.last_seen), times_seen = times_seen + 1",
                    (address, zone, now, now),
                )
        return new

    def servers(self) -> list[Server]:
        zones: dict[str, list[str]] = {}
        for address, zone in self.conn.execute(
            "SELECT address, zone FROM server_zones ORDER BY zone"
        ):
            zones.setdefault(address, []).append(zone)
        return [
            Server(a, f, fs, ls, n, tuple(zones.get(a, ())))
            for a, f, fs, ls, n in self.conn.execute(
                "SELECT address, family, first_seen, last_seen, times_seen FROM servers"
                " ORDER BY family DESC, address"
            )
        ]

    def zone_incidence(self, zone: str, family: int) -> tuple[int, list[int]]:
        """(answers received for the zone's record type, times_seen of each server in it)."""
        rdtype = "AAAA" if family == 6 else "A"
        row = self.conn.execute(
            "SELECT answers FROM zone_answers WHERE zone = ? AND rdtype = ?", (zone, rdtype)
        ).fetchone()
        counts = [
            n for (n,) in self.conn.execute(
                "SELECT z.times_seen FROM server_zones z JOIN servers s USING (address)"
                " WHERE z.zone = ? AND s.family = ?", (zone, family)
            )
        ]
        return (row[0] if row else 0), counts

    def zones(self) -> list[tuple[str, str, int, Optional[float]]]:
        return list(self.conn.execute(
            "SELECT zone, rdtype, answers, last_answer FROM zone_answers ORDER BY zone, rdtype"
        ))

    # -- verdicts ------------------------------------------------------------------------------

    def add_verdict(self, address: str, status: str, source: str, evidence: Optional[dict],
                    now: float) -> None:
        if status not in STATUSES:
            raise StateError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
        with self.transaction() as db:
            db.execute(
                "INSERT INTO verdicts (address, status, source, evidence, time)"
                " VALUES (?, ?, ?, ?, ?)",
                (address, status, source, json.dumps(evidence or {}, sort_keys=True), now),
            )

    def verdict_history(self, address: Optional[str] = None) -> list[Verdict]:
        sql = "SELECT address, status, source, evidence, time FROM verdicts"
        args: tuple = ()
        if address is not None:
            sql += " WHERE address = ?"
            args = (address,)
        return [Verdict(a, s, src, json.loads(e), t)
                for a, s, src, e, t in self.conn.execute(sql + " ORDER BY time, id", args)]

    def latest_verdicts(self) -> dict[str, dict[str, Verdict]]:
        """address → source → that source's most recent verdict."""
        out: dict[str, dict[str, Verdict]] = {}
        for v in self.verdict_history():
            out.setdefault(v.address, {})[v.source] = v
        return out

    # -- runs ----------------------------------------------------------------------------------

    def record_run(self, command: str, started: float, finished: float, ok: bool,
                   summary: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (command, started, finished, ok, summary) VALUES (?,?,?,?,?)",
                (command, started, finished, int(ok), json.dumps(summary, sort_keys=True)),
            )

    def last_run(self, command: str) -> Optional[dict[str, Any]]:
        row = self.conn.execute(
            "SELECT started, finished, ok, summary FROM runs WHERE command = ?"
            " ORDER BY id DESC LIMIT 1", (command,)
        ).fetchone()
        if row is None:
            return None
        return {"started": row[0], "finished": row[1], "ok": bool(row[2]),
                "summary": json.loads(row[3])}
