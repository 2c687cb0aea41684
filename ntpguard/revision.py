"""The state's revision: values SQLite triggers change whenever something a firewall plan is
made from changes (one a table), so `rules apply` and `sync` can tell "nothing new" from six
rows (~1 ms) instead of reading the state and building the plan (~0.4 s with 2,000 servers,
a year of scans and a 100k-entry list; ntpguard.inputs), and one run reads a table again
only after it changed (State._read_once).

A value is random, not a count: a state database restored from a backup, or a copy of
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
    """The statements that make the revision rows (one a watched table) and their triggers
    (state.py's migration 8)."""
    out = ["CREATE TABLE revision (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"]
    for table, events in WATCHED.items():
        out.append(f"INSERT INTO revision (name, value) VALUES ('{table}', random())")
        for event in events:
            name = f"revision_{table}_{event.split()[0].lower()}"
            out.append(f"CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN UPDATE revision"
                       f" SET value = random() WHERE name = '{table}'; END")
    return out


def query(tables: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    """(SQL, parameters) that read the revision of `tables` (all watched tables if none) as
    one text, the same whenever none of them changed."""
    names = tables or tuple(WATCHED)
    marks = ", ".join("?" * len(names))
    return (f"SELECT group_concat(name || '=' || value, ',') FROM (SELECT name, value FROM"
            f" revision WHERE name IN ({marks}) ORDER BY name)", names)


def read(directory: str, db_name: str = "state.db") -> Optional[str]:
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
        row = conn.execute(*query()).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return row[0] if row and isinstance(row[0], str) and row[0] else None
