"""Where log lines come from: files (plain or gzip), stdin, the journal; and how far we got.

Files are read in large binary blocks and decoded once per block (far cheaper than per line),
which also gives exact byte offsets to resume from. A resumed file is recognised by its inode;
a smaller size than the saved offset means it was truncated (start again), another inode means
it was rotated (finish the old file, found by inode as NAME.1, then read the new one).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional

from ntpguard.errors import UsageError

BLOCK = 1 << 22  # 4 MiB: big enough to amortise decoding, small enough to bound memory


@dataclass
class Position:
    """How far a source was read: file (inode, offset) or journal cursor."""

    source: str
    inode: int = 0
    offset: int = 0
    cursor: str = ""


def _is_gzip(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _blocks(fh: BinaryIO, pos: list[int]) -> Iterator[str]:
    """Complete lines of fh as str; pos[0] advances past each line handed out."""
    rest = b""
    while True:
        block = fh.read(BLOCK)
        if not block:
            break
        block = rest + block
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            rest = block
            continue
        rest = block[cut:]
        text = block[:cut].decode("utf-8", "replace")
        lines = text.split("\n")
        lines.pop()  # after the last newline
        yield from lines
        pos[0] += cut
    if rest:  # a last line without newline: read it, but resume before it (it may grow)
        yield rest.decode("utf-8", "replace")


def file_lines(path: str, position: Optional[Position] = None) -> Iterator[str]:
    """Lines of a file from a saved position (updated in place as lines are handed out)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read log: {exc.strerror}") from None
    if position is not None and position.inode and position.inode != st.st_ino:
        # Rotated: the rest of the old file first, if it is still beside the new one.
        for old in (path + ".1", path + ".0"):
            try:
                if os.stat(old).st_ino == position.inode and not _is_gzip(old):
                    rotated = Position(old, position.inode, position.offset)
                    yield from file_lines(old, rotated)
                    break
            except OSError:
                continue
        position.offset = 0
    gz = _is_gzip(path)
    if position is not None:
        position.inode = st.st_ino
        if not gz and st.st_size < position.offset:  # truncated in place (copytruncate)
            position.offset = 0
    start = position.offset if position is not None else 0
    try:
        if gz:
            fh: BinaryIO = gzip.open(path, "rb")  # type: ignore[assignment]  # noqa: SIM115
        else:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise UsageError(f"{path}: cannot read log: {exc.strerror}") from None
    with fh:
        try:
            if start:
                fh.seek(start)
            pos = [start]
            for line in _blocks(fh, pos):
                yield line
                if position is not None:
                    position.offset = pos[0]  # lags a block behind: re-reading is harmless
            if position is not None:
                position.offset = pos[0]
        except (OSError, EOFError) as exc:  # a corrupt or cut gzip member
            raise UsageError(f"{path}: cannot read log: {exc}") from None


def stdin_lines() -> Iterator[str]:
    pos = [0]
    yield from _blocks(sys.stdin.buffer, pos)


def journal_lines(position: Position, journalctl: str = "journalctl") -> Iterator[str]:
    """Kernel messages from the journal as `-o json` lines, after the saved cursor; the
    position's cursor follows the last record handed out."""
    cmd = [journalctl, "-k", "-o", "json", "--no-pager", "-q"]
    if position.cursor:
        cmd += ["--after-cursor", position.cursor]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise UsageError(f"cannot run {journalctl}: {exc.strerror}") from None
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        yield line
        i = line.find('"__CURSOR":"')
        if i >= 0:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                position.cursor = json.loads(line)["__CURSOR"]
    err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
    if proc.wait() != 0:
        raise UsageError(f"journalctl failed: {err.splitlines()[-1] if err else proc.returncode}")
