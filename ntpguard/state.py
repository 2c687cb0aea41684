"""The state database: known servers, verdict history, runs; one SQLite file, one writer at a time.

SQLite in WAL mode with every change inside one transaction, so a crash at any point leaves
either the old or the new state, never a mix. An flock() on a lock file beside the database keeps
two writing `ntpguard` runs from interleaving; readers need no lock (WAL gives them a snapshot).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import stat
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional, Union

from ntpguard import files, revision
from ntpguard.canary import Canary, Change
from ntpguard.errors import LockBusy, StateError, UnsafePathError
from ntpguard.facts import Contacts, Scan, Trigger
from ntpguard.records import record
from ntpguard.status import ServerStatus, Source, Status, Verdict

if TYPE_CHECKING:  # the log readers: imported where a read position is made (positions)
    from ntpguard.logs.sources import Position

DB_NAME = "state.db"
LOCK_NAME = "lock"
log = logging.getLogger("ntpguard")

def _triggers_table(db: sqlite3.Connection) -> None:
    """Migration 4: detect_scans.triggers (JSON) → detect_triggers rows; a blob that does not
    load loses its triggers (the scan stays), as the verdicts then would have anyway."""
    db.execute("""
        CREATE TABLE detect_triggers (
            dst         TEXT NOT NULL,              -- the scan: (dst, src, start)
            src         TEXT NOT NULL,
            start       REAL NOT NULL,
            server      TEXT NOT NULL,              -- where the local address sent to
            proto       TEXT NOT NULL,
            sport       INTEGER,
            dport       INTEGER,
            time        REAL NOT NULL,
            lag         REAL NOT NULL
        )""")
    db.execute("CREATE INDEX detect_triggers_by_scan ON detect_triggers (dst, src, start)")
    rows = []
    for dst, src, start, blob in db.execute(
            "SELECT dst, src, start, triggers FROM detect_scans").fetchall():
        try:
            for t in json.loads(blob):
                rows.append((dst, src, start, str(t["server"]), str(t["proto"]), t["sport"],
                             t["dport"], float(t["time"]), float(t["lag"])))
        except (ValueError, TypeError, KeyError):
            log.warning("state: the triggers of the scan of %s at %s did not load; dropped",
                        dst, start)
    db.executemany("INSERT INTO detect_triggers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    # SQLite before 3.35 (Debian 11) has no DROP COLUMN: copy the table without it.
    db.execute("""
        CREATE TABLE detect_scans_new (
            dst         TEXT NOT NULL,
            src         TEXT NOT NULL,
            start       REAL NOT NULL,
            end         REAL NOT NULL,
            ports       INTEGER NOT NULL,
            packets     INTEGER NOT NULL,
            protocols   TEXT NOT NULL,
            PRIMARY KEY (dst, src, start)
        )""")
    db.execute("INSERT INTO detect_scans_new SELECT dst, src, start, end, ports, packets,"
               " protocols FROM detect_scans")
    db.execute("DROP TABLE detect_scans")
    db.execute("ALTER TABLE detect_scans_new RENAME TO detect_scans")


def _revision(db: sqlite3.Connection) -> None:
    """Migration 8: the revision row and its triggers (statements with `;` inside, so not a
    string split on it)."""
    for statement in revision.schema():
        db.execute(statement)


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
    # 4: a scan's triggers in a table of their own, not a JSON blob per scan (a blob that
    # does not load took the whole verdicts step down with it).
    _triggers_table,
    # 5: NTP canaries (ntpguard.canary): one address per server in use, and the spare.
    """
    CREATE TABLE canaries (
        address     TEXT PRIMARY KEY,
        server      TEXT NOT NULL,              -- '' for the spare
        interface   TEXT NOT NULL,
        created     REAL NOT NULL,
        expires     REAL NOT NULL,              -- the kernel removes the address then
        retired     REAL,                       -- out of the map since
        scanned     REAL                        -- first scan of it seen at
    );
    CREATE INDEX canaries_by_server ON canaries (server);
    """,
    # 6: a contact is a run of packets, not only its first one: the attribution model
    # weighs every poll as a possible trigger. One row per address and server however long
    # they talk (a month of polls every 64 s would be 40,000 rows per pair as packets).
    """
    ALTER TABLE detect_contacts ADD COLUMN last_time REAL;     -- NULL: first_time
    ALTER TABLE detect_contacts ADD COLUMN packets INTEGER NOT NULL DEFAULT 1;
    """,
    # 7: a collector pools many hosts' logs (ntpguard.collector): which host each contact
    # came from, so each address's evidence is covered by its own host's log ('': this
    # host's own logs).
    "ALTER TABLE detect_contacts ADD COLUMN host TEXT NOT NULL DEFAULT ''",
    # 8: the revision (ntpguard.revision): a value triggers change with every change to what a
    # plan is made from, so a run with nothing new can tell without reading the rest.
    _revision,
    # 9: the failures of runs aged out of `runs` ([detect] retention_days), so the metrics'
    # failure counters never go down when the runs behind them are deleted.
    """
    CREATE TABLE run_failures (
        command     TEXT NOT NULL,
        step        TEXT NOT NULL,
        failures    INTEGER NOT NULL,
        PRIMARY KEY (command, step)
    );
    """,
    # 10: the effective statuses as last decided, and what they were decided from
    # (snapshot.statuses): after a verdict or two only their addresses are decided again.
    # Contacts by server: which servers were contacted (canary.maintain) reads the index, not
    # every contact (~10 ms to ~3 ms with a 90-day gateway's).
    """
    CREATE TABLE status_memo (
        address     TEXT PRIMARY KEY,
        status      TEXT NOT NULL,
        known       INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        verdict     TEXT                        -- JSON of the deciding verdict, or NULL
    );
    CREATE INDEX detect_contacts_by_server ON detect_contacts (server);
    CREATE TABLE status_memo_key (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        key         TEXT NOT NULL,              -- what else the statuses depend on, digested
        verdicts    TEXT NOT NULL,              -- the verdicts' revision (ntpguard.revision)
        last_id     INTEGER NOT NULL,           -- the newest verdict row then
        rows        INTEGER NOT NULL            -- how many verdict rows there were
    );
    """,
    # 11: the canaries the kernel still holds, found without reading their history (a rules
    # apply reads ~280 of the ~25k rows 90 days of retention keep).
    "CREATE INDEX canaries_by_expiry ON canaries (expires)",
]


@record
class Server:
    """A known NTP server: where and when the resolver met it."""

    address: str
    family: int
    first_seen: float
    last_seen: float
    times_seen: int
    zones: tuple[str, ...]


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
        self.holder = holder
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


# The same flock() guards STATE/rules.lock (ntpguard.applied).
FileLock = _Lock


def _take_lock(path: str, holder: str, wait: bool,
               waiting: Optional[Callable[[str], None]]) -> _Lock:
    """_Lock, first without waiting when `waiting` should hear who holds it before a wait."""
    if wait and waiting is not None:
        try:
            return _Lock(path, holder, False)
        except LockBusy as busy:
            # Who holds it: "... locked by WHO; try again ..." (the whole message if reworded).
            waiting(str(busy).partition("; try again")[0].rpartition(" locked by ")[2])
    return _Lock(path, holder, wait)


# SQLite's words for a file that is not, or no longer, a whole ntpguard database (as opposed
# to a full disk, an I/O error or a lock, which pass).
_DAMAGED = ("malformed", "not a database", "no such table", "no such column")


def _sqlite_error(path: str, exc: sqlite3.Error) -> StateError:
    """SQLite's failure as one line naming the file; for a damaged database, what to do."""
    text = f"{path}: {exc}"
    if any(words in str(exc) for words in _DAMAGED):
        text += ("; the state database is damaged: restore it from a backup, or move it aside"
                 " and the next run starts a new one (it reads the logs still on disk again;"
                 " marks and older evidence are lost)")
    return StateError(text)


class State:
    """The open state database. Use `State.open()`; close with `close()` or `with`."""

    def __init__(self, conn: sqlite3.Connection, directory: str, lock: Optional[_Lock]) -> None:
        self.conn = conn
        self.directory = directory
        self._lock = lock
        self._released = False  # inside unlocked(): no write allowed
        # What _read_once read, with the revision it was read at (ntpguard.revision): a sync
        # asks for the latest verdicts five times (~40 ms each with a few thousand servers), a
        # `rules apply` for the scans (~80 ms with a year's) and the canaries three times.
        self._read: dict[str, tuple[str, Any]] = {}

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str, lock: bool = True, wait: bool = False,
             holder: str = "ntpguard", waiting: Optional[Callable[[str], None]] = None
             ) -> State:
        """Open (and create or migrate) the database in `directory`.

        lock=True takes the exclusive writer lock; lock=False opens read-only, and a directory
        without a database reads as an empty state instead of creating files. With wait=True,
        `waiting` hears who holds the lock before the wait starts (a terminal shows it). The
        directory must pass files.check_dir; state.db (and its -wal, -shm) must not be links.
        """
        path = os.path.join(directory, DB_NAME)
        if not lock:
            return cls._open_readonly(directory, path)
        try:
            files.ensure_dir(directory, 0o755)
        except OSError as exc:
            raise StateError(
                f"{directory}: cannot create state directory: {exc.strerror}") from None
        held = _take_lock(os.path.join(directory, LOCK_NAME), holder, wait, waiting)
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
            raise _sqlite_error(path, exc) from None
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
            return cls.empty(directory)
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30,
                                   isolation_level=None)
            conn.execute("PRAGMA busy_timeout=30000")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise _sqlite_error(path, exc) from None
        state = cls(conn, directory, None)
        state._check_version(version, path)
        if version < len(MIGRATIONS):
            raise StateError(f"{path}: schema version {version} is older than this ntpguard's "
                             f"{len(MIGRATIONS)}; run a command that writes (e.g. resolve) first")
        return state

    @classmethod
    def empty(cls, directory: str) -> State:
        """A state that knows nothing (in memory); files beside it, such as stored lists, are
        still read from `directory`."""
        state = cls(sqlite3.connect(":memory:", isolation_level=None), directory, None)
        state._migrate()
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

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.close()
        # SQLite's own failures met while working, not at the open (a page damaged after the
        # header, a full disk, an I/O error: SQLITE_CORRUPT is a plain DatabaseError, the
        # others OperationalError): the state's, so one line naming the file as at the open,
        # not an "unexpected DatabaseError". Misuse (ProgrammingError, IntegrityError) stays
        # a bug.
        if type(exc) is sqlite3.DatabaseError or isinstance(exc, sqlite3.OperationalError):
            raise _sqlite_error(os.path.join(self.directory, DB_NAME), exc) from exc

    @contextlib.contextmanager
    def unlocked(self, waiting: Optional[Callable[[str], None]] = None) -> Iterator[None]:
        """Let other runs write while this one only waits (the pause between DNS rounds, a
        probe's wait for an answer): the writer lock is released for the block and taken back
        after it, waiting for a run that holds it then (`waiting` hears who; runs hold it while
        they work, not while they wait). A write inside the block raises StateError, so every
        write still happens under the lock; what was read before the block may have changed
        after it.

        Interrupted (Ctrl-C), the lock is not taken back: the run ends and writes nothing
        more. A state without the lock (read-only) just runs the block.
        """
        held = self._lock
        if held is None or self._released:
            yield
            return
        path, holder = held.path, held.holder
        held.release()
        self._lock = None
        self._released = True
        try:
            yield
        except Exception:
            self._relock(path, holder, waiting)
            raise
        self._relock(path, holder, waiting)

    def _relock(self, path: str, holder: str, waiting: Optional[Callable[[str], None]]) -> None:
        self._lock = _take_lock(path, holder, True, waiting)
        self._released = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception: all or nothing."""
        if self._released:
            raise StateError(f"{self.directory}: a write while the state's writer lock was "
                             "released (a bug: writes belong after State.unlocked())")
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

    def servers(self, only: Optional[Iterable[str]] = None) -> list[Server]:
        """The servers the pool served (`only`: those of these addresses)."""
        where, args = "", ()  # type: tuple[str, tuple[str, ...]]
        if only is not None:
            args = tuple(only)
            where = f" WHERE address IN ({', '.join('?' * len(args))})" if args else " WHERE 0"
        zones: dict[str, list[str]] = {}
        for address, zone in self.conn.execute(
            "SELECT address, zone FROM server_zones" + where + " ORDER BY zone", args
        ):
            zones.setdefault(address, []).append(zone)
        return [
            Server(a, f, fs, ls, n, tuple(zones.get(a, ())))
            for a, f, fs, ls, n in self.conn.execute(
                "SELECT address, family, first_seen, last_seen, times_seen FROM servers"
                + where + " ORDER BY family DESC, address", args
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

    def add_verdict(self, verdict: Verdict) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO verdicts (address, status, source, evidence, time)"
                " VALUES (?, ?, ?, ?, ?)",
                (verdict.address, verdict.status.value, str(verdict.source),
                 json.dumps(dict(verdict.evidence), sort_keys=True), verdict.time),
            )

    def verdict_rows(self) -> tuple[int, int]:
        """(the newest verdict row's id, how many rows there are)."""
        newest, rows = self.conn.execute(
            "SELECT coalesce(max(id), 0), count(*) FROM verdicts").fetchone()
        return int(newest), int(rows)

    def verdicts_after(self, last_id: int) -> tuple[int, set[str]]:
        """How many verdict rows come after row `last_id`, and their addresses."""
        added = self.conn.execute("SELECT count(*) FROM verdicts WHERE id > ?",
                                  (last_id,)).fetchone()[0]
        return int(added), {str(a) for (a,) in self.conn.execute(
            "SELECT DISTINCT address FROM verdicts WHERE id > ?", (last_id,))}

    def status_memo(self) -> Optional[tuple[tuple[str, str, int, int], dict[str, ServerStatus]]]:
        """The statuses as last remembered and what they were decided from: (key, verdicts'
        revision, newest verdict id, verdict rows); None if there are none, or a row this
        version cannot read (they are then decided again)."""
        head = self.conn.execute(
            "SELECT key, verdicts, last_id, rows FROM status_memo_key").fetchone()
        if head is None or not (_all(str, head[0], head[1]) and _all(int, head[2], head[3])):
            return None
        out: dict[str, ServerStatus] = {}
        rows = self.conn.execute("SELECT address, status, known, reason, verdict FROM"
                                 " status_memo ORDER BY address").fetchall()
        statuses = {s.value: s for s in Status}
        sources: dict[str, Source] = {}
        try:
            # One JSON text for all the verdicts: a parse per row took longer than the rest.
            decided = iter(json.loads(
                "[" + ",".join(v for *_, v in rows if isinstance(v, str)) + "]"))
            for a, s, known, reason, v in rows:
                verdict = None
                if v is not None:
                    d = next(decided)
                    text = str(d["source"])
                    source = sources.get(text) or sources.setdefault(text, Source.parse(text))
                    evidence = d["evidence"]
                    if not isinstance(evidence, dict) or not isinstance(a, str):
                        raise ValueError("not an object")
                    verdict = Verdict(str(d["address"]), statuses[d["status"]], source,
                                      evidence, float(d["time"]))
                out[a] = ServerStatus(a, statuses[s], verdict, str(reason), bool(known))
        except (ValueError, TypeError, KeyError, StopIteration):
            log.warning("state: the remembered statuses are damaged; deciding them again")
            return None
        return (head[0], head[1], head[2], head[3]), out

    def save_status_memo(self, mark: tuple[str, str, int, int],
                         statuses: Mapping[str, ServerStatus],
                         changed: Optional[Iterable[str]] = None) -> None:
        """Remember the statuses and what they were decided from (snapshot.statuses): all of
        them, or (changed) only those addresses' rows."""
        def row(s: ServerStatus) -> tuple[str, str, int, str, Optional[str]]:
            v = s.verdict
            text = None if v is None else json.dumps(
                {"address": v.address, "status": v.status.value, "source": str(v.source),
                 "evidence": dict(v.evidence), "time": v.time}, sort_keys=True)
            return s.address, s.status.value, int(s.known), s.reason, text

        with self.transaction() as db:
            if changed is None:
                db.execute("DELETE FROM status_memo")
                db.executemany("INSERT INTO status_memo VALUES (?, ?, ?, ?, ?)",
                               (row(s) for s in statuses.values()))
            else:
                for address in changed:
                    db.execute("DELETE FROM status_memo WHERE address = ?", (address,))
                    if address in statuses:
                        db.execute("INSERT INTO status_memo VALUES (?, ?, ?, ?, ?)",
                                   row(statuses[address]))
            db.execute("INSERT OR REPLACE INTO status_memo_key VALUES (1, ?, ?, ?, ?)", mark)

    @property
    def writable(self) -> bool:
        """Whether this run holds the writer lock now (not read-only, not inside unlocked())."""
        return self._lock is not None and not self._released

    def verdict_history(self, address: Optional[str] = None, source: Optional[str] = None
                        ) -> list[Verdict]:
        """Every stored verdict (of `address`, of `source`), oldest first; a row this version
        cannot read (a source or evidence written by hand or by a newer ntpguard) is left out
        with a warning."""
        sql = "SELECT id, address, status, source, evidence, time FROM verdicts"
        where = [(c, v) for c, v in (("address", address), ("source", source)) if v is not None]
        if where:
            sql += " WHERE " + " AND ".join(f"{c} = ?" for c, _ in where)
        args = tuple(v for _, v in where)
        out = []
        for row_id, a, s, src, e, t in self.conn.execute(sql + " ORDER BY time, id", args):
            try:
                evidence = json.loads(e)
                if not isinstance(evidence, dict) or not isinstance(t, (int, float)):
                    raise ValueError("not an object")
                out.append(Verdict.of(str(a), str(s), str(src), evidence, t))
            except (ValueError, TypeError):
                log.warning("state: verdict row %s (%s) is damaged; ignored", row_id, a)
        return out

    def revision(self, tables: tuple[str, ...] = ()) -> Optional[str]:
        """The revision of some of the tables ntpguard.revision watches (all if none named):
        it changes with every change to them."""
        try:
            row = self.conn.execute(*revision.query(tables)).fetchone()
        except sqlite3.Error:  # a damaged database: nothing is read once, all is read again
            return None
        return row[0] if row and isinstance(row[0], str) and row[0] else None

    def _read_once(self, name: str, tables: tuple[str, ...], read: Callable[[], Any]) -> Any:
        """read() (of `tables` only), remembered as `name`, once per revision of those
        tables."""
        rev = self.revision(tables)
        hit = self._read.get(name)
        if rev is not None and hit is not None and hit[0] == rev:
            return hit[1]
        value = read()
        if rev is not None:
            self._read[name] = (rev, value)
        return value

    def latest_verdicts(self) -> dict[str, dict[str, Verdict]]:
        """address → source → that source's most recent verdict."""
        def latest() -> dict[str, dict[str, Verdict]]:
            out: dict[str, dict[str, Verdict]] = {}
            for v in self.verdict_history():
                out.setdefault(v.address, {})[str(v.source)] = v
            return out

        read = self._read_once("latest_verdicts", ("verdicts",), latest)
        return {a: dict(by) for a, by in read.items()}  # the caller's to change

    # -- evidence from firewall logs -------------------------------------------------------------
    # Facts, not conclusions, so verdicts are recomputed from all runs together; the keys make
    # storing the same log twice a no-op.

    def positions(self) -> dict[str, Position]:
        """How far each log source was read (file inode and offset, journal cursor)."""
        from ntpguard.logs.sources import Position

        return {src: Position(src, ino, off, cur) for src, ino, off, cur in self.conn.execute(
            "SELECT source, inode, offset, cursor FROM detect_positions")}

    def save_detection(self, positions: Iterable[Position], contacts: Contacts,
                       scans: Iterable[Scan], coverage_key: str, now: float,
                       host: str = "") -> None:
        """One read's facts and where it stopped, in one transaction; `host`: whose log it
        was, on a collector."""
        scans = list(scans)
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO detect_positions (source, inode, offset, cursor, updated)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET"
                " inode = excluded.inode, offset = excluded.offset, cursor = excluded.cursor,"
                " updated = excluded.updated",
                [(p.source, p.inode, p.offset, p.cursor, now) for p in positions])
            # Runs merge: a read of later packets adds its count; a read of the same packets
            # again (a lost position) takes the larger count, so re-reading never inflates it.
            db.executemany(
                "INSERT INTO detect_contacts (address, server, first_time, last_time, packets,"
                " host) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (address, server) DO UPDATE SET"
                " packets = CASE WHEN excluded.first_time > coalesce(last_time, first_time)"
                " THEN packets + excluded.packets ELSE max(packets, excluded.packets) END,"
                " last_time = max(coalesce(last_time, first_time), excluded.last_time),"
                " first_time = min(first_time, excluded.first_time), host = excluded.host",
                [(a, s, r[0], r[1], r[2], host) for (a, s), r in contacts.runs.items()])
            fresh = []
            for s in scans:
                cur = db.execute(
                    "INSERT INTO detect_scans (dst, src, start, end, ports, packets, protocols)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dst, src, start) DO NOTHING",
                    (s.dst, s.src, s.start, s.end, s.ports, s.packets, ",".join(s.protocols)))
                if cur.rowcount:
                    fresh.append(s)
            db.executemany(
                "INSERT INTO detect_triggers (dst, src, start, server, proto, sport, dport,"
                " time, lag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(s.dst, s.src, s.start, t.server, t.proto, t.sport, t.dport, t.time, t.lag)
                 for s in fresh for t in s.triggers])
            if contacts.start is not None and contacts.end is not None:
                db.execute(
                    "INSERT INTO detect_coverage (source, first_time, last_time) VALUES (?, ?, ?)"
                    " ON CONFLICT (source) DO UPDATE SET"
                    " first_time = min(first_time, excluded.first_time),"
                    " last_time = max(last_time, excluded.last_time)",
                    (coverage_key, contacts.start, contacts.end))

    def record_probe_contacts(self, contacts: Iterable[tuple[str, str, float]]) -> None:
        """Contacts (local address, server, time) known without a log line: `ntpguard probe`'s
        packets, so they form tests even if the firewall logged nothing. Merged like logged
        ones (earliest time wins), so the same packet seen in the log later is a no-op."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO detect_contacts (address, server, first_time, probe)"
                " VALUES (?, ?, ?, 1) ON CONFLICT (address, server) DO UPDATE SET"
                " first_time = min(first_time, excluded.first_time), probe = 1",
                list(contacts))

    def probe_addresses(self) -> set[str]:
        """The local addresses only ntpguard's own packets used, each known to few servers:
        `ntpguard probe`'s and the NTP canaries (a scan of one is no background noise)."""
        return {a for (a,) in self.conn.execute(
            "SELECT DISTINCT address FROM detect_contacts WHERE probe = 1"
            " UNION SELECT address FROM canaries")}

    # -- NTP canaries --------------------------------------------------------------------------

    def canaries(self, live_at: Optional[float] = None) -> list[Canary]:
        """Every canary ever made, oldest first: those in use, retired ones the kernel still
        holds, and expired ones (history: an address that was a canary is never mistaken for
        a real one). With `live_at`, only those the kernel still holds then (expires later):
        what the rules need. The history grows by ~280 rows a day (256 servers' daily
        rotation and the hourly spare), ~25k in the default 90 days of retention; a rules
        apply reads ~280 of them."""
        if live_at is not None:
            # Read once per change of the table, and filtered for a later `live_at` (an apply
            # asks three times: the canaries' upkeep, the plan, when the plan will change).
            def live() -> tuple[float, list[Canary]]:
                return live_at, self._read_canaries(" WHERE expires > ?", (live_at,))

            read_at, rows = self._read_once("live canaries", ("canaries",), live)
            if read_at > live_at:  # asked for an earlier time than was read: read it
                rows = live()[1]
            return [c for c in rows if c.expires > live_at]
        return list(self._read_once("canaries", ("canaries",), self._read_canaries))

    def scanned_canaries(self) -> list[Canary]:
        """The canaries, however old, whose address a recorded scan reached: all the
        convictions can come from (ntpguard.canary.convictions)."""
        return self._read_canaries(" WHERE address IN (SELECT dst FROM detect_scans)")

    def _read_canaries(self, where: str = "", args: tuple[Any, ...] = ()) -> list[Canary]:
        out = []
        for row in self.conn.execute(
                "SELECT address, server, interface, created, expires, retired, scanned"
                f" FROM canaries{where} ORDER BY created, address", args):
            address, server, iface, created, expires, retired, scanned = row
            if not (_all(str, address, server, iface) and _all(_NUMBER, created, expires)
                    and _all((int, float, type(None)), retired, scanned)):
                log.warning("state: canary row %s is damaged; ignored", address)
                continue
            out.append(Canary(address, server, iface, float(created), float(expires),
                              retired, scanned))
        return out

    def save_canaries(self, change: Change, scanned: Iterable[Canary] = ()) -> None:
        """A maintenance run's result, in one transaction: new canaries, retired and scanned
        ones updated. Expired ones stay: their addresses are never a real address's."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO canaries (address, server, interface, created, expires,"
                " retired, scanned) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(c.address, c.server, c.interface, c.created, c.expires, c.retired, c.scanned)
                 for c in (*change.add, *change.retire, *scanned)])


    def scans(self, of: Optional[Iterable[str]] = None,
              triggered_by: Optional[Iterable[str]] = None) -> list[Scan]:
        """Every recorded scan with its triggers, by start; or only the scans of the addresses
        `of`, or those a server in `triggered_by` triggered (the rules need no more: of the
        ~3,900 scans of benchmarks/scale.py's year, 293 have any trigger at all; reading them
        all was ~6 ms of every `rules apply`). A row with a value
        of the wrong type (a damaged database) is left out with a warning, so one bad row
        cannot stop the verdicts or the rules that read them."""
        if of is not None:
            return self._read_scans("dst IN (SELECT value FROM json_each(?))",
                                    json.dumps(sorted(set(of))))
        if triggered_by is not None:
            return self._read_scans(
                "(dst, src, start) IN (SELECT dst, src, start FROM detect_triggers"
                " WHERE server IN (SELECT value FROM json_each(?)))",
                json.dumps(sorted(set(triggered_by))))
        return list(self._read_once("scans", ("detect_scans", "detect_triggers"),
                                    self._read_scans))

    def _read_scans(self, where: str = "", arg: Optional[str] = None) -> list[Scan]:
        """The scans `where` selects (SQL over detect_scans' columns, one argument), or all."""
        args = () if arg is None else (arg,)
        triggers: dict[tuple[str, str, float], list[Trigger]] = {}
        bad = 0
        for dst, src, start, server, proto, sport, dport, t, lag in self.conn.execute(
                "SELECT dst, src, start, server, proto, sport, dport, time, lag"
                " FROM detect_triggers" + (f" WHERE (dst, src, start) IN (SELECT dst, src,"
                                            f" start FROM detect_scans WHERE {where})"
                                            if where else "") + " ORDER BY time", args):
            if not (_all(str, server, proto) and _all(_NUMBER, t, lag, start)
                    and _all(_PORT, sport, dport)):
                bad += 1
                continue
            triggers.setdefault((dst, src, start), []).append(
                Trigger(server, proto, sport, dport, float(t), float(lag)))
        out = []
        for dst, src, start, end, ports, packets, protos in self.conn.execute(
                "SELECT dst, src, start, end, ports, packets, protocols FROM detect_scans"
                + (f" WHERE {where}" if where else "") + " ORDER BY start", args):
            if not (_all(str, dst, src, protos) and _all(_NUMBER, start, end)
                    and _all(int, ports, packets)):
                bad += 1
                continue
            out.append(Scan(float(start), float(end), src, dst, ports, packets,
                            tuple(p for p in protos.split(",") if p),
                            tuple(triggers.get((dst, src, start), ()))))
        if bad:
            log.warning("state: %d damaged scan or trigger row(s) ignored", bad)
        return out

    def contacts(self) -> Contacts:
        """Every contact recorded so far (runs) and the time span the logs covered."""
        contacts = Contacts()
        for address, server, t, last, n in self.conn.execute(
                "SELECT address, server, first_time, coalesce(last_time, first_time), packets"
                " FROM detect_contacts"):
            if _all(str, address, server) and _all(_NUMBER, t, last) and isinstance(n, int):
                contacts.runs[(address, server)] = [float(t), max(float(last), float(t)),
                                                    max(n, 1)]
        # This host's own logs; a collector's hosts' logs cover their own addresses
        # (address_coverage), and only speak here when it reads no log of its own.
        row = self.conn.execute(
            "SELECT min(first_time), max(last_time) FROM detect_coverage"
            " WHERE source NOT LIKE 'host:%'").fetchone()
        if not (row and _all(_NUMBER, *row)):
            row = self.conn.execute(
                "SELECT min(first_time), max(last_time) FROM detect_coverage").fetchone()
        if row and _all(_NUMBER, *row):
            contacts.start, contacts.end = float(row[0]), float(row[1])
        return contacts

    def evidence_key(self) -> str:
        """A string that changes whenever anything verdicts are computed from changes: the
        contacts (rows only grow or are updated upwards: a count, the rowid and column sums
        move with every insert, update or delete), the scans and their triggers, the log
        coverage, the canaries that met evidence (probe addresses) and the detect verdicts
        recorded. A few
        aggregate queries: ~20 ms for a year of a 50-host gateway (~110k contacts), where
        weighing that evidence again takes seconds."""
        parts = [self.conn.execute(sql).fetchone() for sql in (
            "SELECT count(*), max(rowid), total(first_time), total(last_time), total(packets),"
            " total(probe), total(length(host)) FROM detect_contacts",
            "SELECT count(*), max(rowid), total(start), total(end), total(packets)"
            " FROM detect_scans",
            "SELECT count(*), max(rowid), total(time) FROM detect_triggers",
            "SELECT group_concat(source || ' ' || first_time || ' ' || last_time, ',')"
            " FROM (SELECT * FROM detect_coverage ORDER BY source)",
            # Canaries only as probe addresses (verdict.attribute), and those matter only
            # where they sent or were scanned: a canary made or retired is no new evidence.
            "SELECT group_concat(address) FROM (SELECT address FROM canaries WHERE address IN"
            " (SELECT address FROM detect_contacts) OR address IN (SELECT dst FROM"
            " detect_scans) ORDER BY address)",
            "SELECT count(*), max(id) FROM verdicts WHERE source = 'detect'",
        )]
        return repr(parts)

    def age_out(self, days: float, keep_servers: Iterable[str], now: float) -> tuple[int, int]:
        """Delete contacts and scans (with their triggers) that ended more than `days`
        before the newest time the logs covered (or now, if that is earlier), except contacts
        with and scans triggered by `keep_servers` (the blocked: their verdicts rest on that
        evidence). Returns (contacts, scans) deleted. When that frees more than half the file,
        it is compacted (VACUUM: ~0.5 s for a year of evidence, once).

        Never counted back from later than now: one log line stamped years ahead (a clock
        set wrong for a while, a bad stamp in an exported log) made every real fact older
        than the retention, and one sync deleted them all."""
        row = self.conn.execute("SELECT max(last_time) FROM detect_coverage").fetchone()
        if days <= 0 or not row or not isinstance(row[0], _NUMBER):
            return 0, 0
        cutoff = min(float(row[0]), now) - days * 86400.0
        with self.transaction() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS keep_servers (address TEXT PRIMARY KEY)")
            db.execute("DELETE FROM temp.keep_servers")
            db.executemany("INSERT OR IGNORE INTO temp.keep_servers VALUES (?)",
                           [(a,) for a in keep_servers])
            contacts = db.execute(
                "DELETE FROM detect_contacts WHERE coalesce(last_time, first_time) < ?"
                " AND server NOT IN (SELECT address FROM temp.keep_servers)",
                (cutoff,)).rowcount
            scans = db.execute(
                "DELETE FROM detect_scans WHERE end < ? AND NOT EXISTS (SELECT 1 FROM"
                " detect_triggers t WHERE t.dst = detect_scans.dst AND t.src = detect_scans.src"
                " AND t.start = detect_scans.start AND t.server IN"
                " (SELECT address FROM temp.keep_servers))", (cutoff,)).rowcount
            if scans:
                db.execute(
                    "DELETE FROM detect_triggers WHERE NOT EXISTS (SELECT 1 FROM detect_scans s"
                    " WHERE s.dst = detect_triggers.dst AND s.src = detect_triggers.src AND"
                    " s.start = detect_triggers.start)")
        if contacts or scans:
            pages, free = (self.conn.execute(f"PRAGMA {p}").fetchone()[0]
                           for p in ("page_count", "freelist_count"))
            if free * 2 > pages:
                self.conn.execute("VACUUM")
        return contacts, scans

    def age_out_history(self, days: float, now: float) -> tuple[int, int]:
        """Delete the records of runs older than `days` (their step failures added to
        run_failures first; each command's newest run and newest successful run are kept)
        and canaries expired more than `days` ago that no contact or scan names any more
        (while evidence names an address, it must stay known as a canary's). Returns (runs,
        canaries) deleted. A sync every 15 minutes records ~35k runs a year (~1.6 KB each),
        canaries rotating daily ~94k rows a year for 256 servers, every one of them read by
        each sync."""
        if days <= 0:
            return 0, 0
        cutoff = now - days * 86400.0
        # Each command's newest run and newest run with nothing failed stay whatever their
        # age: `status` and the last-success metric read them, and a host whose syncs all
        # failed for longer than the retention must still say when one last worked (an
        # alert on that metric's age would otherwise go silent as it vanished).
        old = ("runs.started < ? AND runs.id NOT IN (SELECT max(id) FROM runs GROUP BY command"
               " UNION SELECT max(id) FROM runs WHERE ok = 1 GROUP BY command)")
        with self.transaction() as db:
            try:
                db.execute(
                    "INSERT INTO run_failures (command, step, failures)"
                    " SELECT runs.command, f.value, count(*) FROM runs,"
                    f" json_each(runs.summary, '$.failed') AS f WHERE {old} AND"
                    " json_valid(runs.summary) AND json_type(runs.summary, '$.failed') ="
                    " 'array' AND f.type = 'text' GROUP BY runs.command, f.value"
                    " ON CONFLICT (command, step) DO UPDATE SET"
                    " failures = failures + excluded.failures", (cutoff,))
            except sqlite3.OperationalError:  # a summary whose "failed" is not an array
                log.warning("state: the failures of runs before %s could not be counted", cutoff)
            runs = db.execute(f"DELETE FROM runs WHERE {old}", (cutoff,)).rowcount
            canaries = db.execute(
                "DELETE FROM canaries WHERE expires < ?"
                " AND address NOT IN (SELECT address FROM detect_contacts)"
                " AND address NOT IN (SELECT dst FROM detect_scans)", (cutoff,)).rowcount
        return runs, canaries

    def contacted_servers(self) -> set[str]:
        """Every server some local address was seen talking to: what `contacts()` names,
        without making a run per contact (a year of a 50-host gateway: ~100k rows). One seek
        of the server index per server, not a walk of every row of it: ~4 ms for 2,000
        servers in 110k rows, where DISTINCT took 6-9."""
        return {server for (server,) in self.conn.execute(
            "WITH RECURSIVE s(server) AS (SELECT min(server) FROM detect_contacts"
            " UNION ALL SELECT (SELECT min(server) FROM detect_contacts WHERE server > s.server)"
            " FROM s WHERE s.server IS NOT NULL) SELECT server FROM s")
            if isinstance(server, str)}

    def address_coverage(self) -> dict[str, float]:
        """Local address → the end of the log that covers it: on a collector, its own host's
        (a host whose log lags must not turn its contacts into "no scan followed"). Only
        addresses a host's log named are listed; the others are covered by this host's own
        logs (Contacts.end)."""
        out: dict[str, float] = {}
        for address, end in self.conn.execute(
                "SELECT c.address, max(v.last_time) FROM detect_contacts c"
                " JOIN detect_coverage v ON v.source = 'host:' || c.host"
                " WHERE c.host != '' GROUP BY c.address"):
            if isinstance(address, str) and isinstance(end, _NUMBER):
                out[address] = float(end)
        return out

    def hosts_coverage(self) -> dict[str, float]:
        """Collector host → time of the newest line read from its log."""
        return {str(src)[5:]: float(end) for src, end in self.conn.execute(
            "SELECT source, last_time FROM detect_coverage WHERE source LIKE 'host:%'")
            if isinstance(end, _NUMBER)}

    # -- runs ----------------------------------------------------------------------------------

    def record_run(self, command: str, started: float, finished: float, ok: bool,
                   summary: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs (command, started, finished, ok, summary) VALUES (?,?,?,?,?)",
                (command, started, finished, int(ok), json.dumps(summary, sort_keys=True)),
            )

    def runs(self, command: str, limit: int = 1) -> list[dict[str, Any]]:
        """The newest runs of a command, newest first (a summary that does not load reads
        as empty)."""
        out = []
        for started, finished, ok, summary in self.conn.execute(
                "SELECT started, finished, ok, summary FROM runs WHERE command = ?"
                " ORDER BY id DESC LIMIT ?", (command, limit)):
            try:
                data = json.loads(summary)
            except (ValueError, TypeError):
                data = {}
            out.append({"started": started, "finished": finished, "ok": bool(ok),
                        "summary": data if isinstance(data, dict) else {}})
        return out

    def last_ok_run(self, command: str) -> Optional[dict[str, Any]]:
        """The newest run of a command in which nothing failed (started, finished)."""
        row = self.conn.execute(
            "SELECT started, finished FROM runs WHERE command = ? AND ok = 1"
            " ORDER BY id DESC LIMIT 1", (command,)).fetchone()
        return {"started": row[0], "finished": row[1]} if row else None

    def step_failures(self, command: str) -> dict[str, int]:
        """How often each step of a command failed, over every run ever recorded: those aged
        out (run_failures) and those kept (the summaries' "failed" lists, counted by SQLite's
        JSON functions: no run is loaded into Python)."""
        out: dict[str, int] = {}
        for name, n in self.conn.execute(
                "SELECT step, failures FROM run_failures WHERE command = ?", (command,)):
            if isinstance(name, str) and isinstance(n, int):
                out[name] = n  # the runs aged out (age_out_history)
        try:
            rows = self.conn.execute(
                "SELECT f.value, count(*) FROM runs, json_each(runs.summary, '$.failed') AS f"
                " WHERE runs.command = ? AND json_valid(runs.summary)"
                " AND json_type(runs.summary, '$.failed') = 'array' GROUP BY f.value",
                (command,)).fetchall()
        except sqlite3.OperationalError:  # a summary whose "failed" is not an array
            return out
        for name, n in rows:
            if isinstance(name, str):
                out[name] = out.get(name, 0) + int(n)
        return out

    def counts(self) -> dict[str, int]:
        """Totals for metrics: scans stored, canary convictions recorded."""
        scans = self.conn.execute("SELECT count(*) FROM detect_scans").fetchone()[0]
        convictions = self.conn.execute(
            "SELECT count(*) FROM verdicts WHERE source = 'canary' AND status = 'harvester'"
        ).fetchone()[0]
        return {"scans": int(scans), "canary_convictions": int(convictions)}

    def last_run(self, command: str) -> Optional[dict[str, Any]]:
        runs = self.runs(command, 1)
        return runs[0] if runs else None


_NUMBER = (int, float)
_PORT = (int, type(None))


def _all(kind: Any, *values: Any) -> bool:
    """Every value is of `kind` (a type or a tuple of them; never a bool for int). SQLite
    hands back exactly int, float, str, bytes or None, so the type itself is compared: a
    year of contacts is ~100k rows of four checks each."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for v in values:  # noqa: SIM110 - all() of a generator takes twice as long here
        if type(v) not in kinds:
            return False
    return True
