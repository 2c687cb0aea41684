"""Splitting one big log file into shares that several processes read at once.

Each share is a byte range cut at line boundaries, with the time of its first packet, and a
warm-up start before it: a worker reads from the warm-up start so that every trigger and scan
window reaching into its share is complete, and reports only what starts inside the share.
Only plain files are split (not gzip, stdin or the journal), and only when the times at the
cuts increase: a log out of order is read in one piece rather than risk a wrong answer.
"""

from __future__ import annotations

import math
import os
from typing import Optional

from ntpguard.logs.parse import LineParser
from ntpguard.logs.read import STDIN, is_journal
from ntpguard.logs.sources import Position, _is_gzip, line_start, range_blocks
from ntpguard.records import record


@record
class Share:
    """One worker's part of a file: read [warm, hi) (hi None: to the end and on until its
    scans are over), report what starts in [t_lo, t_hi)."""

    path: str
    reference_time: float  # the file's mtime: the year of syslog stamps is inferred from it
    fmt: str
    boot_time: Optional[float]
    warm: int
    lo: int
    hi: Optional[int]
    t_lo: float
    t_hi: float


def plan_shares(path: str, positions: Optional[dict[str, Position]], workers: int,
                min_bytes: int, margin: float, fmt: str, boot_time: Optional[float]
                ) -> Optional[list[Share]]:
    """The shares of `path` from its saved position, or None when it is not worth splitting
    (smaller than min_bytes to read, gzip, stdin, journal, rotated since the last read).
    `margin` is how many seconds before its share a worker must start reading."""
    if path == STDIN or is_journal(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None  # the sequential reader reports it
    start = 0
    if positions is not None and path in positions:
        pos = positions[path]
        if pos.inode and pos.inode != st.st_ino:
            return None  # rotated: file_blocks finishes the old file first
        start = pos.offset if st.st_size >= pos.offset else 0
    if st.st_size - start < min_bytes or _is_gzip(path):
        return None
    ref = st.st_mtime
    cuts = [start] + [line_start(path, start + (st.st_size - start) * i // workers)
                      for i in range(1, workers)] + [st.st_size]
    times: list[float] = [-math.inf]
    for cut in cuts[1:-1]:
        t = first_time(path, cut, fmt, ref, boot_time)
        if t is None or t <= times[-1]:
            return None  # no packet after the cut, or out of order: not worth the risk
        times.append(t)
    times.append(math.inf)
    shares = []
    for i in range(workers):
        lo, hi = cuts[i], cuts[i + 1]
        if hi <= lo:
            return None
        warm = lo if i == 0 else _warm_start(path, start, lo, times[i] - margin, fmt, ref,
                                             boot_time)
        shares.append(Share(path, ref, fmt, boot_time, warm, lo,
                            hi if i < workers - 1 else None, times[i], times[i + 1]))
    return shares


def first_time(path: str, offset: int, fmt: str, ref: float, boot_time: Optional[float],
               limit: int = 1 << 22) -> Optional[float]:
    """The time of the first packet at or after a line boundary (within `limit` bytes).
    The first 64 KiB are tried alone: a block is parsed whole, and planning a split parsed
    4 MiB per cut and per step back (~20 ms before any worker started)."""
    size = os.path.getsize(path)
    for window in sorted({min(1 << 16, limit), limit}):
        parser = LineParser(fmt, reference_time=ref, boot_time=boot_time)
        stop = line_start(path, min(offset + window, size))
        for block in parser.packet_blocks(range_blocks(path, offset, stop)):
            if block:
                return block[0][0]
    return None


def _warm_start(path: str, floor: int, cut: int, until: float, fmt: str, ref: float,
                boot_time: Optional[float]) -> int:
    """A line boundary before cut whose first packet is no later than `until` (or floor)."""
    step = 1 << 20
    while True:
        off = max(floor, cut - step)
        off = line_start(path, off) if off > floor else floor
        if off <= floor:
            return floor
        t = first_time(path, off, fmt, ref, boot_time, limit=cut - off)
        if t is not None and t <= until:
            return off
        step *= 2
