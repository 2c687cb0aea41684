"""Planted links and odd files: real symlinks, FIFOs, /dev/zero, directories of other owners.

Every refusal is an UnsafePathError naming the path and what is wrong; nothing hangs, nothing is
read without bound, nothing is written through a link. Owner tests chown to another uid, so
they need root (skipped otherwise); everything else runs as any user.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest
from conftest import no_hang

from ntpguard import files
from ntpguard.errors import UnsafePathError

OTHER_UID = 54321  # no such user on the test host; only its number matters
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


# -- directories ---------------------------------------------------------------------------------


def test_check_dir_accepts_own_private_directory(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o750)
    files.check_dir(str(d))


@pytest.mark.parametrize("mode, word", [(0o775, "0775"), (0o757, "0757"), (0o1777, "1777")])
def test_check_dir_refuses_group_or_other_writable(tmp_path, mode, word):
    d = tmp_path / "state"
    d.mkdir()
    os.chmod(d, mode)
    with pytest.raises(UnsafePathError) as info:
        files.check_dir(str(d))
    assert str(info.value) == (f"{d}: is writable by group or others (mode {word}); refused "
                               "(chmod go-w)")


def test_check_dir_refuses_a_link_and_a_file(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(UnsafePathError, match=rf"^{link}: is a symbolic link"):
        files.check_dir(str(link))
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(UnsafePathError) as info:
        files.check_dir(str(plain))
    assert str(info.value) == f"{plain}: is a regular file, not a directory"


@needs_root
def test_check_dir_refuses_another_users_directory(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o755)
    os.chown(d, OTHER_UID, -1)
    with pytest.raises(UnsafePathError) as info:
        files.check_dir(str(d))
    assert f"is owned by uid {OTHER_UID}, not by root or uid 0" in str(info.value)
    # The group does not matter; only who can write.
    os.chown(d, 0, OTHER_UID)
    files.check_dir(str(d))


def test_ensure_dir_never_creates_a_writable_directory(tmp_path):
    old = os.umask(0o002)  # an admin shell with a group-friendly umask
    try:
        files.ensure_dir(str(tmp_path / "a" / "b"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b").st_mode) == 0o755
    files.check_dir(str(tmp_path / "a" / "b"))


# -- reading -------------------------------------------------------------------------------------


def test_read_regular_reads_a_file_under_the_cap(tmp_path):
    f = tmp_path / "l.txt"
    f.write_bytes(b"x" * 1000)
    assert files.read_regular(str(f), 1000) == b"x" * 1000
    with pytest.raises(UnsafePathError, match=r"1001 bytes, more than the limit of 1000"):
        f.write_bytes(b"x" * 1001)
        files.read_regular(str(f), 1000)
    with pytest.raises(FileNotFoundError):
        files.read_regular(str(tmp_path / "missing"), 1000)


def test_read_regular_refuses_a_link(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"2604:a880:1:20::1 harvester\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with pytest.raises(UnsafePathError) as info:
        files.read_regular(str(link), 1 << 20)
    assert str(info.value).startswith(f"{link}: is a symbolic link; refused")
    # An admin's own config file may be a link: follow=True reads it.
    assert files.read_regular(str(link), 1 << 20, follow=True) == target.read_bytes()


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody ever writes: a plain open() would block for ever
    with no_hang(), pytest.raises(UnsafePathError, match=rf"^{fifo}: is a FIFO, not a regular"):
        files.read_regular(str(fifo), 1 << 20)


def test_dev_zero_is_refused_not_read(tmp_path):
    with no_hang(), pytest.raises(UnsafePathError, match=r"^/dev/zero: is a character device"):
        files.read_regular("/dev/zero", 64 << 20)
    with no_hang(), pytest.raises(UnsafePathError, match=r"is a directory"):
        files.read_regular(str(tmp_path), 1 << 20)


def test_a_file_that_grows_past_the_cap_while_read_is_refused(tmp_path):
    f = tmp_path / "growing"
    f.write_bytes(b"x" * 10)
    with files.open_regular(str(f), 100) as fh, \
            pytest.raises(UnsafePathError, match="more than the limit of 100 bytes"):
        f.write_bytes(b"y" * 200)  # replaced in place after the size check
        b"".join(files.read_chunks(fh, str(f), 100))


# -- writing -------------------------------------------------------------------------------------


def test_atomic_write_refuses_a_link_and_leaves_its_target(tmp_path):
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    link = tmp_path / "export.txt"
    link.symlink_to(target)
    with pytest.raises(OSError) as info:
        files.atomic_write(str(link), b"list\n")
    assert info.value.errno == errno.ELOOP and "symbolic link" in info.value.strerror
    assert target.read_text() == "root:x:0:0\n" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.txt", "passwd"]


def test_atomic_write_is_private_until_renamed(tmp_path, monkeypatch):
    """Nobody can read the temporary file while it holds half the data."""
    seen = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        seen.append(("writing", stat.S_IMODE(os.fstat(fd).st_mode)))
        return real_fsync(fd)

    def replace(src, dst):
        seen.append(("renamed", stat.S_IMODE(os.stat(src).st_mode)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    files.atomic_write(str(tmp_path / "a"), b"data", mode=0o644)
    assert seen[:2] == [("writing", 0o600), ("renamed", 0o644)]
    assert (tmp_path / "a").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_open_nofollow_does_not_truncate_a_links_target(tmp_path):
    target = tmp_path / "important"
    target.write_text("keep me\n")
    link = tmp_path / "lock"
    link.symlink_to(target)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        files.open_nofollow(str(link), os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    assert target.read_text() == "keep me\n"
