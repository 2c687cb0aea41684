"""Where log lines come from: files (plain or gzip), stdin, the journal; and how far we got.

Files are read in large binary blocks and decoded once per block (far cheaper than per line),
which also gives exact byte offsets to resume from. A resumed file is recognised by its inode;
a smaller size than the saved offset means it was truncated (start again), another inode means
it was rotated (finish the old file, found by inode as NAME.1, then read the new one).
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from typing import BinaryIO, Iterator, NamedTuple, Optional, Protocol, Sequence, Union

from ntpguard.errors import UsageError
from ntpguard.records import record

# 1 MiB: big enough to amortise decoding and the detector's per-block work, small enough that
# what a read copies is still in the CPU's cache (2 MiB of L2 here) when the C parser walks it
# and to bound memory. 4 MiB blocks made a share of the radiation log (0.5M lines, parse and
# detect in one process) ~5-10% slower: 0.959 and 0.901 the time at 1 MiB, median of 12 and 16
# alternating runs (512 KiB: 0.935 and 0.937), with the same scans and contacts.
BLOCK = 1 << 20
# The most of one line kept while its end is being looked for. A log line is far shorter (the
# kernel's are under 1 KiB, journald's LineMax is 48 KiB, rsyslog's maxMessageSize 8 KiB);
# a file with no newline for longer is not a log (/var/log/lastlog, in a `detect
# /var/log/*`, is a sparse file of zeros, hundreds of GB on some hosts). Without the cap
# 300 MB of zeros on stdin took `detect -` to 612 MB of memory; with it, a block and this.
MAX_LINE = 1 << 20
# Character devices known by number (major, minor): /dev/null reads as an empty log, the usual
# stand-in for "no input"; /dev/kmsg is the kernel's ring buffer, whose reader waits for the
# next record for ever (its records are what the journal and dmesg show).
_DEV_NULL = (1, 3)
_DEV_KMSG = (1, 11)


@record(frozen=False)
class Position:
    """How far a source was read: file (inode, offset) or journal cursor."""

    source: str
    inode: int = 0
    offset: int = 0
    cursor: str = ""


GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(path: str) -> bool:
    """Whether a regular file is gzip (it is opened again to be read: not for a FIFO)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == GZIP_MAGIC
    except OSError:
        return False


class _Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Chunk(NamedTuple):
    """Complete lines as one read left them: the lines of head + data[:end] (newlines
    between them, none after the last). The C parser walks them in place; a bytes object per
    line (bytes.split) costs ~0.2 µs a line, a fifth of what parsing a line costs there."""

    head: bytes  # the start of the first line, cut off by the previous read
    data: bytes
    end: int


# A block of raw lines: a list, or a Chunk (lines_of() makes it a list).
Block = Union[list[bytes], Chunk]


def lines_of(block: Block) -> list[bytes]:
    """The lines of a block, as bytes without newlines."""
    if isinstance(block, list):
        return block
    lines = block.data[:block.end].split(b"\n")
    if block.head:
        lines[0] = block.head + lines[0]
    return lines


def _raw_blocks(fh: _Reader, pos: list[int]) -> Iterator[list[bytes]]:
    """Complete lines of fh, a block at a time, as bytes without newlines; pos[0] advances
    past each block handed out."""
    for block in _raw_chunks(fh, pos):
        yield lines_of(block)


def _raw_chunks(fh: _Reader, pos: list[int]) -> Iterator[Block]:
    """Complete lines of fh, a block (Chunk) at a time; pos[0] advances past each block
    handed out."""
    rest = b""
    over = 0  # bytes of the line in `rest` beyond MAX_LINE, read and dropped
    while True:
        block = fh.read(BLOCK)
        if not block:
            break
        end = block.rfind(b"\n")
        if end < 0:
            kept = block[:max(0, MAX_LINE - len(rest))]
            rest += kept
            over += len(block) - len(kept)
            continue
        yield Chunk(rest, block, end)
        pos[0] += end + 1 + len(rest) + over
        rest, over = block[end + 1:], 0  # after the last newline
    if rest:  # a last line without newline: read it, but resume before it (it may grow)
        yield [rest]


def _refuse_device(path: str, st: os.stat_result) -> None:
    """A character or block device is not a log: /dev/zero or a disk reads on for ever (in
    bounded memory, see MAX_LINE), a terminal waits for typing. Checked before the open, which
    for a terminal could make it the process's controlling one."""
    if stat.S_ISCHR(st.st_mode):
        number = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if number == _DEV_NULL:
            return
        kind = "a character device"
        if number == _DEV_KMSG:
            kind += ": read the journal with --journal, or dmesg output, instead"
    elif stat.S_ISBLK(st.st_mode):
        kind = "a block device"
    else:
        return
    raise UsageError(f"{path}: not a log file ({kind})")


def file_blocks(path: str, position: Optional[Position] = None) -> Iterator[Block]:
    """Blocks of raw lines of a file from a saved position (updated in place as blocks are
    handed out)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read log: {exc.strerror}") from None
    _refuse_device(path, st)
    if position is not None and position.inode and position.inode != st.st_ino:
        # Rotated: the rest of the old file first, if it is still beside the new one.
        for old in (path + ".1", path + ".0"):
            try:
                if os.stat(old).st_ino == position.inode and not _is_gzip(old):
                    rotated = Position(old, position.inode, position.offset)
                    yield from file_blocks(old, rotated)
                    break
            except OSError:
                continue
        position.offset = 0
    # A FIFO (`detect <(zcat ...)`, /dev/stdin on a pipe) can be read only once: opened to
    # look at its first bytes and again to read it, it lost them and the rest of the buffered
    # read (4-8 KiB). It is opened once, and gzip is told by _unpiped.
    regular = stat.S_ISREG(st.st_mode)
    gz = regular and _is_gzip(path)
    if position is not None:
        position.inode = st.st_ino
        if not gz and st.st_size < position.offset:  # truncated in place (copytruncate)
            position.offset = 0
    start = position.offset if position is not None else 0
    try:
        if gz:
            import gzip  # here: ~1 ms of every `ntpguard detect` of a plain file

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
            for lines in _raw_chunks(fh if regular else _unpiped(fh), pos):
                yield lines
                if position is not None:
                    position.offset = pos[0]
            if position is not None:
                position.offset = pos[0]
        except (OSError, EOFError) as exc:  # a corrupt or cut gzip member
            raise UsageError(f"{path}: cannot read log: {exc}") from None


class _Prefixed:
    """A file object whose first bytes were read already: they are handed out again first."""

    def __init__(self, head: bytes, fh: _Reader) -> None:
        self.head, self.fh = head, fh

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.fh.read(size)
        if 0 <= size <= len(self.head):
            data, self.head = self.head[:size], self.head[size:]
            return data
        data, self.head = self.head, b""
        return data + self.fh.read(size - len(data) if size >= 0 else -1)


def _unpiped(fh: BinaryIO) -> _Reader:
    """What a file read once (a FIFO) holds, gunzipped if it is gzip: the first two bytes tell,
    and are read again from memory."""
    head = _Prefixed(fh.read(2), fh)
    if head.head != GZIP_MAGIC:
        return head
    import gzip

    # typeshed asks for a seek() too: GzipFile seeks only to rewind, which this never does.
    return gzip.GzipFile(fileobj=head, mode="rb")  # type: ignore[call-overload]


def range_blocks(path: str, start: int, stop: Optional[int] = None,
                 end: Optional[list[int]] = None) -> Iterator[Block]:
    """Blocks of the lines in bytes [start, stop) of a plain file; start and stop are line
    boundaries (stop None: to the end, a last line without newline included). end[0], if
    given, ends up past the last complete line read (where a later read resumes)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise UsageError(f"{path}: cannot read log: {exc.strerror}") from None
    with fh:
        fh.seek(start)
        pos = [start]
        if stop is None:
            yield from _raw_chunks(fh, pos)
        else:
            yield from _raw_chunks(_Limited(fh, stop - start), pos)
        if end is not None:
            end[0] = pos[0]


class _Limited:
    """A file object that ends after n bytes (a worker's share of a big log)."""

    def __init__(self, fh: BinaryIO, n: int) -> None:
        self.fh, self.left = fh, n

    def read(self, size: int) -> bytes:
        data = self.fh.read(min(size, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data


def line_start(path: str, offset: int) -> int:
    """The first line boundary at or after offset (the file's size if none)."""
    if offset <= 0:
        return 0
    with open(path, "rb") as fh:
        fh.seek(offset - 1)
        while True:
            chunk = fh.read(1 << 16)
            if not chunk:
                return fh.tell()
            i = chunk.find(b"\n")
            if i >= 0:
                return fh.tell() - len(chunk) + i + 1


def file_lines(path: str, position: Optional[Position] = None) -> Iterator[str]:
    """Lines of a file (str) from a saved position (updated in place as blocks are read)."""
    for block in file_blocks(path, position):
        for line in lines_of(block):
            yield line.decode("utf-8", "replace")


def stdin_blocks() -> Iterator[list[bytes]]:
    """Lines from stdin (`detect -`), gunzipped if they come gzipped (`cat kern.log.2.gz |`)."""
    pos = [0]
    try:
        yield from _raw_blocks(_unpiped(sys.stdin.buffer), pos)
    except (OSError, EOFError) as exc:  # a corrupt or cut gzip stream
        raise UsageError(f"-: cannot read log: {exc}") from None


def journal_blocks(position: Position, journalctl: str = "journalctl",
                   files: Sequence[str] = ()) -> Iterator[list[bytes]]:
    """Kernel messages from the journal (or journal files) after the saved cursor, a block
    of raw lines at a time, as `-o short-iso-precise` prints them: RFC 3339 stamps with
    microseconds, the envelope the parser's fast path cuts (`-o json` goes through the full
    parser at a quarter of the speed). `--show-cursor` ends the output with the cursor of the
    last entry, which the position takes."""
    cmd = [journalctl, "-k", "-o", "short-iso-precise", "--show-cursor", "--no-pager", "-q"]
    for f in files:
        cmd += ["--file", f]
    if position.cursor:
        cmd += ["--after-cursor", position.cursor]
    import subprocess  # here, as in commands.py: only the journal's reads start a process

    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise UsageError(f"cannot run {journalctl}: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    # stderr is read by a thread: a chatty journalctl must not block on a full pipe.
    err: list[bytes] = []
    stderr = proc.stderr
    reader = threading.Thread(target=lambda: err.append(stderr.read()), daemon=True)
    reader.start()
    cursor, shown = "", False
    for lines in _raw_blocks(proc.stdout, [0]):
        if lines and lines[-1].startswith(b"-- cursor: "):  # only ever the last line
            cursor = lines.pop().decode("ascii", "replace")[11:].strip()
        shown = shown or bool(lines)
        yield lines
    reader.join()
    text = b"".join(err).decode("utf-8", "replace").strip()
    # systemd 252's journalctl exits 1 without a word when --show-cursor has no entry to show
    # (a journal without kernel messages, as in a container): nothing new, not a failure.
    if proc.wait() != 0 and (text or shown or cursor):
        raise UsageError(f"journalctl failed: {text.splitlines()[-1] if text else proc.returncode}")
    if cursor:
        position.cursor = cursor
