"""Files ntpguard trusts: checked directories, no links followed, bounded reads, atomic writes.

ntpguard runs as root and turns what it reads into firewall rules, so a file another user could
plant or swap is an attack path. The rules here are sshd's StrictModes applied to ntpguard's own
files: a directory it keeps state or lists in must be owned by root (or the user running
ntpguard) and writable by nobody else; files in it are opened without following a symbolic link
(O_NOFOLLOW) and read only when they are regular files under a size cap, so a link, a FIFO or
/dev/zero gives a one-line error instead of a write elsewhere, a hang or a MemoryError; and a
file is replaced by rename, so a reader or a crash sees the old content or the new, never half.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import BinaryIO, Iterator, Optional

from ntpguard.errors import UnsafePathError

# Read in pieces of this size: big enough that a 64 MiB list is ~1,000 reads, small enough that
# a cap is noticed within 64 KiB of being passed.
CHUNK = 64 << 10

_KINDS = (
    (stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _link_refused(path: str) -> UnsafePathError:
    return UnsafePathError(f"{path}: is a symbolic link; refused (ntpguard does not follow links "
                           "here: give the real path, or replace the link with the file)")


def dir_problem(st: os.stat_result, uid: int) -> str:
    """Why a directory with this lstat() result is unsafe for a process running as uid, or "".

    Owner root or uid, and no write bit for group or others: anyone else who can write there
    can replace the files ntpguard reads (its state, the lists it enforces) or plant links.
    """
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link; refused (use the real directory)"
    if not stat.S_ISDIR(st.st_mode):
        return f"is {_kind(st.st_mode)}, not a directory"
    if st.st_uid not in (0, uid):
        return (f"is owned by uid {st.st_uid}, not by root or uid {uid} (the user running "
                "ntpguard); refused (chown it)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                "refused (chmod go-w)")
    return ""


def check_dir(path: str) -> None:
    """Raise UnsafePathError unless `path` is a directory only root or we can change."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UnsafePathError(f"{path}: directory does not exist") from None
    except OSError as exc:
        raise UnsafePathError(f"{path}: cannot check directory: {exc.strerror}") from None
    problem = dir_problem(st, os.geteuid())
    if problem:
        raise UnsafePathError(f"{path}: {problem}")


def ensure_dir(path: str, mode: int = 0o755) -> None:
    """Create `path` (and missing parents) if needed, then `check_dir` it.

    A directory we create never gets group or other write bits, whatever the umask (a umask of
    002 would otherwise make ntpguard refuse its own directory on the next run). Failing to
    create it is an OSError for the caller to word; an unsafe one an UnsafePathError.
    """
    try:
        os.makedirs(path, mode=mode & ~(stat.S_IWGRP | stat.S_IWOTH))
    except FileExistsError:
        pass
    else:
        os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
    check_dir(path)


def check_file(path: str) -> Optional[os.stat_result]:
    """lstat() of a file ntpguard is about to open by name through a library that follows
    links (SQLite): None if absent, UnsafePathError if it is a link or not a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise _link_refused(path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError(f"{path}: is {_kind(st.st_mode)}, not a regular file; refused")
    return st


def open_nofollow(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open with O_NOFOLLOW and O_CLOEXEC; a link as the last component is an
    UnsafePathError, any other failure the OSError it is."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_refused(path) from None
        raise


def open_regular(path: str, max_bytes: int, follow: bool = False) -> BinaryIO:
    """Open an existing file for reading only if it is a regular file of at most max_bytes.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; a regular
    file ignores the flag. Missing or unreadable files raise OSError for the caller to word.
    follow=True accepts a link (the admin's own /etc/ntpguard/ntpguard.toml may be one).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
    fd = os.open(path, flags | os.O_CLOEXEC) if follow else open_nofollow(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path}: is {_kind(st.st_mode)}, not a regular file; refused")
        if st.st_size > max_bytes:
            raise UnsafePathError(f"{path}: {st.st_size} bytes, more than the limit of "
                                  f"{max_bytes}; refused")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_chunks(fh: BinaryIO, path: str, max_bytes: int) -> Iterator[bytes]:
    """The file's content in CHUNK pieces; UnsafePathError once it passes max_bytes (a file
    that grows while it is read)."""
    total = 0
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            return
        total += len(chunk)
        if total > max_bytes:
            raise UnsafePathError(f"{path}: more than the limit of {max_bytes} bytes; refused")
        yield chunk


def read_regular(path: str, max_bytes: int, follow: bool = False) -> bytes:
    """The whole content of a regular file of at most max_bytes (see open_regular)."""
    with open_regular(path, max_bytes, follow) as fh:
        return b"".join(read_chunks(fh, path, max_bytes))


def atomic_write(path: str, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Write a temporary file beside `path`, fsync, rename over it; raises OSError.

    A symbolic link at `path` is refused (OSError ELOOP): rename would replace the link, not
    write through it, but an admin's link there means the file lives elsewhere and silently
    cutting the link is as wrong as following it. The temporary file is created 0600
    (mkstemp, O_EXCL, so nothing planted under its name is followed) and gets `mode` through
    its descriptor just before the rename: nobody reads half-written content.

    durable=False: no fsync, for a file that only saves work and that its reader checks
    before trusting (the nft element cache, the inputs record: each names the boot and the
    kernel generation it holds for, so after a crash it is not trusted whatever the disk kept).
    A file synced and its directory synced cost ~5 ms here and tens of ms on an SD card.
    """
    atomic_write_all([(path, data, mode)], durable)


def atomic_write_all(items: list[tuple[str, bytes, int]], durable: bool = True) -> None:
    """atomic_write for files that belong together (a list and its signature): every one is
    written and synced to a temporary file first, then all are renamed in order, so a failure
    (a full disk) before the renames changes none of them, and after them a reader sees one
    pair or the other, but for the instant between two renames. durable: see atomic_write."""
    for path, _, _ in items:
        if os.path.islink(path):
            raise OSError(errno.ELOOP, "is a symbolic link; refused (ntpguard does not write "
                          "through links)", path)
        # Checked for all before any rename: a directory in the way of the second file must
        # not leave the first one replaced alone.
        if os.path.isdir(path):
            raise OSError(errno.EISDIR, "is a directory; refused", path)
    temps: list[str] = []
    try:
        for path, data, mode in items:
            fd, tmp = _temporary(os.path.dirname(path) or ".")
            temps.append(tmp)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
                os.fchmod(fh.fileno(), mode)
        for (path, _, _), tmp in zip(items, temps):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    if not durable:
        return
    # The renames themselves are only durable once the directory is on disk.
    for directory in dict.fromkeys(os.path.dirname(p) or "." for p, _, _ in items):
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def _temporary(directory: str) -> tuple[int, str]:
    """(descriptor, path) of a new empty file in `directory`, mode 0600, made with O_EXCL
    and O_NOFOLLOW (nothing planted under its name is followed): tempfile.mkstemp's file,
    without importing tempfile and random (~2 ms of a `rules apply`)."""
    for _ in range(100):
        path = os.path.join(directory, f".ntpguard-{os.urandom(6).hex()}")
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o600), path
        except FileExistsError:
            continue  # 2^-48 odds a try
    raise FileExistsError(errno.EEXIST, "no free temporary name", directory)


def create_exclusive(path: str, data: bytes, mode: int) -> None:
    """Write a new file that must not exist yet (a secret key): written and synced under a
    temporary name, then linked to `path`, which fails with FileExistsError if anything is
    there, a link included; nothing is ever overwritten and nobody reads half of it."""
    fd, tmp = _temporary(os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
