"""Log sources → packets: every source in turn, a block at a time, resuming where it stopped.

A source is a file path (plain or gzip), `-` (stdin), `journal` (the kernel messages in
journald) or `journal:PATH` (those of a journal file). `read_blocks` hands the detector one
list of packets per 1 MiB read, and with positions moves each source's position along, so the
caller can store how far it got.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Iterable, Iterator, Optional

from ntpguard.logs import Logged, ReadStats, Sieve
from ntpguard.logs.parse import LineParser
from ntpguard.logs.sources import Block, Position, file_blocks, journal_blocks, stdin_blocks

JOURNAL = "journal"  # the system journal; "journal:PATH" a journal file (journalctl --file)
STDIN = "-"


def is_journal(source: str) -> bool:
    return source == JOURNAL or source.startswith(JOURNAL + ":")


def read_blocks(sources: Iterable[str], fmt: str = "auto", boot_time: Optional[float] = None,
                positions: Optional[dict[str, Position]] = None,
                stats: Optional[ReadStats] = None, sieve: Optional[Sieve] = None,
                tap: object = None) -> Iterator[list[Logged]]:
    """Packets of every source in turn, a list at a time (one per 1 MiB read), for
    Detector.feed_blocks; with positions, each source resumes where it stopped and its
    position follows the read. sieve: what the parser may leave out for the detector; tap:
    the detector's tap (Detector.tap), what the parser may keep from it."""
    stats = stats if stats is not None else ReadStats()
    for source in sources:
        pos = positions.setdefault(source, Position(source)) if positions is not None else None
        if is_journal(source):
            parser = LineParser(fmt, reference_time=time.time(), boot_time=boot_time,
                                sieve=sieve, tap=tap)
            files = [source[len(JOURNAL) + 1:]] if source != JOURNAL else []
            yield from parser.packet_blocks(journal_blocks(pos or Position(source),
                                                           files=files))
        else:
            blocks: Iterator[Block]
            if source == STDIN:
                ref, blocks = time.time(), stdin_blocks()
            else:
                try:
                    ref = os.stat(source).st_mtime
                except OSError:
                    ref = time.time()  # file_blocks reports the error
                blocks = file_blocks(source, pos)
            parser = LineParser(fmt, reference_time=ref, boot_time=boot_time, sieve=sieve,
                                tap=tap)
            yield from parser.packet_blocks(blocks)
        parser.stats.formats = {source: parser.detected_format()}
        stats.add(parser.stats)


def unreadable(source: str) -> Optional[str]:
    """Why a configured source cannot be read to its end now, or None (the journal is
    checked by reading it). Only regular files: a FIFO or a device never ends (with no
    writer, even opening a FIFO waits for ever: a timer's sync hung on one), and a stored
    position means nothing in it. Opened without blocking, to look."""
    if is_journal(source):
        return None
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return f"{source}: cannot read log: {exc.strerror}"
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode):
        return f"{source}: cannot read log: not a regular file"
    return None


def order_sources(paths: list[str]) -> list[str]:
    """Oldest first: kern.log.3.gz, kern.log.2.gz, kern.log.1, kern.log (then the rest)."""
    def key(item: tuple[int, str]) -> tuple:
        index, path = item
        name = os.path.basename(path)
        if name.endswith(".gz"):
            name = name[:-3]
        base, _, num = name.rpartition(".")
        if base and num.isdigit():
            return (os.path.dirname(path), base, -int(num), index)
        return (os.path.dirname(path), name, 0, index)
    special = [p for p in paths if p == STDIN or is_journal(p)]
    files = [p for _, p in sorted(enumerate(p for p in paths if p not in special), key=key)]
    return files + special
