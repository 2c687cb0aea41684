"""The progress line: the library's lines of progress (ntpguard.progress) drawn on a terminal.

Drawn on stderr only when stderr is a terminal and the command prints no JSON, so the timer's
journal, cron's mail and pipes get nothing extra. One line, redrawn in place with a carriage
return and padded with blanks over the longer line before it (no escape sequences, so a dumb
terminal shows it too), cut to the terminal's width so it never wraps (a wrapped line cannot
be redrawn with a carriage return). Anything else written to the terminal clears it first.
"""

from __future__ import annotations

import logging
import os
from typing import Any, TextIO


class Line:
    """A Show (ntpguard.progress) that draws on `stream`, or does nothing when not enabled."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.drawn = 0  # characters of the line now on the terminal

    @classmethod
    def on_terminal(cls, stream: TextIO, json: bool = False) -> Line:
        """Enabled when `stream` is a terminal and the output is not JSON."""
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):  # closed or replaced stream
            tty = False
        return cls(stream, tty and not json)

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 0
        return columns or 80  # a pseudo-terminal nobody sized says 0

    def __call__(self, text: str) -> None:
        if not self.enabled:
            return
        text = text[: max(self._width() - 1, 20)]
        self.stream.write("\r" + text + " " * max(0, self.drawn - len(text)))
        self.stream.flush()
        self.drawn = len(text)

    def clear(self) -> None:
        """Blank the line and put the cursor at its start, so what comes next has it whole."""
        if self.drawn:
            self.stream.write("\r" + " " * self.drawn + "\r")
            self.stream.flush()
            self.drawn = 0

    def before_log(self, record: logging.LogRecord) -> bool:
        """A logging filter: a warning gets a line of its own, not the tail of the progress."""
        self.clear()
        return True

    def __enter__(self) -> Line:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.clear()
