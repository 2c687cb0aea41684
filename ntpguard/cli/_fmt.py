"""Small shared output helpers for the command modules."""

from __future__ import annotations

import datetime
from typing import Any, Optional, TextIO


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


# Text from outside reaches the admin's terminal through these commands: a list's comments
# (`list show`, `explain`), notes, evidence, a list server's HTTP reason phrase in an error.
# A comment holding ESC ] 0 ; ... BEL retitled the terminal and ESC [ 2 J cleared it. On a
# terminal, control characters other than tab and newline (and on stderr carriage return,
# which the progress line redraws with) are printed as \xHH; a pipe or a file gets the text
# as it is (`list export > file` must stay the list).
_CONTROLS = (*range(0x20), 0x7F, *range(0x80, 0xA0))


def _shown(keep: str) -> dict[int, str]:
    return {c: f"\\x{c:02x}" for c in _CONTROLS if chr(c) not in keep}


OUTPUT, MESSAGES = _shown("\t\n"), _shown("\t\n\r")


class VisibleControls:
    """A terminal's text stream that shows control characters instead of obeying them."""

    def __init__(self, stream: TextIO, table: dict[int, str]) -> None:
        self._stream, self._table = stream, table

    def write(self, text: str) -> int:
        return self._stream.write(text.translate(self._table))

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, buffer...
        return getattr(self._stream, name)

