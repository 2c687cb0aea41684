"""Small shared output helpers for the command modules."""

from __future__ import annotations

import datetime
from typing import Optional


def iso(ts: Optional[float]) -> Optional[str]:
    """A Unix time as local ISO 8601 with offset (what an admin compares with their logs)."""
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows
    )
