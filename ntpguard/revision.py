"""The state's revision: one value SQLite triggers change whenever something a firewall plan is
made from changes, so `rules apply` and `sync` can tell "nothing new" from one row (~1 ms)
instead of reading the state and building the plan (~0.4 s with 2,000 servers, a year of
scans and a 100k-entry list; ntpguard.inputs).

The value is random, not a count: a state database restored from a backup, or a copy of
another host's, cannot come back to a value remembered from a different history. Kept apart
from state.py, with no imports of ntpguard's, because reading it is the whole of a run that
finds nothing to do (state.py pulls in the detector, the canaries and the status model).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Optional

# What a plan reads (snapshot.firewall_plan, canary.maintain), and which changes matter.
# servers: only presence makes a server known; its last_seen and counts change with every
# DNS answer and change no plan. detect_contacts: only which servers some address talked to
# (the canaries go to the most used first); a run's packets and times grow with every poll.
WATCHED: dict[str, tuple[str, ...]] = {
    "servers": ("INSERT", "DELETE"),
    "verdicts": ("INSERT", "UPDATE", "DELETE"),
    "detect_scans": ("INSERT", "UPDATE", "DELETE"),
    "detect_triggers": ("INSERT", "UPDATE", "DELETE"),
    "canaries": ("INSERT", "UPDATE", "DELETE"),
    "detect_contacts": ("INSERT", "DELETE", "UPDATE OF address, server"),
}


def schema() -> list[str]:
    """The statements that make the revision row and its triggers (state.py's migration 8)."""
    out = [
        "CREATE TABLE revision (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)",
        "INSERT INTO revision (id, value) VALUES (1, random())",
    ]
    for table, events in WATCHED.items():
        for event in events:
            name = f"revision_{table}_{event.split()[0].lower()}"
            out.append(f"CREATE TRIGGER {name} AFTER {event} ON {table} "
                       "BEGIN UPDATE revision SET value = random() WHERE id = 1; END")
    return out


def read(directory: str, db_name: str = "state.db") -> Optional[int]:
    """The revision of the state database in `directory`; None when there is none to read (no
    database, an older schema, a damaged file): the caller then reads the state itself."""
    path = os.path.join(directory, db_name)
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5,
                               isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM revision WHERE id = 1").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return int(row[0]) if row and isinstance(row[0], int) else None
