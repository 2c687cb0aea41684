"""Progress of long waits, as one line of text at a time for whoever shows it.

The library's slow parts (DNS rounds `pool.interval` apart, probes waiting `probe.timeout` for
an answer, a sync's steps) call a `Show` with a line that says what runs, what it found so far
and when the next thing happens. The CLI draws those lines on a terminal and drops them
everywhere else (timer, cron, pipes, --json), so an unattended run prints nothing extra.
"""

from __future__ import annotations

import math
import time
from typing import Callable

# One line of progress: the step, the round, what was found so far, the time to the next action.
Show = Callable[[str], None]

# A countdown redraws once a second: the shown seconds always move, and a 150 s pause
# costs 150 wake-ups, nothing next to the DNS queries around it.
TICK = 1.0


def quiet(text: str) -> None:
    """The Show of a run nobody watches."""


def prefixed(prefix: str, show: Show) -> Show:
    """A Show that puts `prefix` before every line (sync's steps: "sync: resolve 1/3 ...")."""
    return lambda text: show(prefix + text)


def lock_wait(show: Show) -> Callable[[str], None]:
    """What State.open / State.unlocked call with the lock's holder before they wait for it."""
    return lambda holder: show(f"waiting for the state lock, held by {holder}")


def count(number: int, noun: str) -> str:
    """"1 answer", "2 answers"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def duration(seconds: float) -> str:
    """Whole seconds left, rounded up (never "0 s" while something is still to wait):
    "45 s" under a minute, else "2:25"."""
    whole = max(0, math.ceil(seconds - 1e-9))
    if whole < 60:
        return f"{whole} s"
    return f"{whole // 60}:{whole % 60:02d}"


def countdown(seconds: float, describe: Callable[[float], str], show: Show,
              sleep: Callable[[float], None] = time.sleep) -> None:
    """Sleep `seconds`, showing describe(seconds left) before each tick of at most TICK s.

    The seconds are counted from the slices slept, not read from a clock, so a test's fake
    `sleep` ends the countdown at once; a real sleep overshoots by about 0.2 ms a tick
    (measured on a busy 2-core machine), some 35 ms over a 150 s pause.
    """
    left = float(seconds)
    while left > 0:
        show(describe(left))
        step = min(TICK, left)
        sleep(step)
        left -= step
