"""The nftables generation (ntpguard.backends.nft_gen) and what the element cache trusts of it:
parsed from crafted netlink answers; read from the kernel where that is allowed."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ntpguard.backends import nft, nft_gen
from ntpguard.plan import Plan


def _answer(kind: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBH", 0, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body


def _attr(kind: int, value: bytes) -> bytes:
    size = 4 + len(value)
    return struct.pack("=HH", size, kind) + value + b"\0" * (-size % 4)


NEWGEN = 10 << 8 | 15
ROOT = Path(__file__).resolve().parent.parent


def test_the_generation_is_read_from_its_attribute():
    other = _attr(2, struct.pack(">I", 7))  # NFTA_GEN_PROC_PID, before the id
    assert nft_gen.parse(_answer(NEWGEN, other + _attr(1, struct.pack(">I", 4242)))) == 4242


@pytest.mark.parametrize("data", [
    b"",
    _answer(2, struct.pack("=i", -1)),  # NLMSG_ERROR: not permitted
    _answer(NEWGEN, b""),  # no id
    _answer(NEWGEN, _attr(1, b"\1\2")),  # an id too short
    _answer(NEWGEN, struct.pack("=HH", 2, 1)),  # an attribute shorter than its header
    _answer(10 << 8 | 1, _attr(1, struct.pack(">I", 5))),  # another message
])
def test_anything_else_is_no_generation(data):
    assert nft_gen.parse(data) is None


def test_scope_names_this_boot_and_network_namespace():
    here = nft_gen.scope()
    assert here is not None and here.endswith(f":{os.stat('/proc/self/ns/net').st_ino}")


def test_a_remembered_generation_counts_only_in_its_own_scope(tmp_path, monkeypatch):
    path = str(tmp_path / "rules-nft.json")
    rendered = nft.rules_for(Plan())
    nft._save_cache(path, 12345, 77, rendered)
    assert nft._load_cache(path)["genid"] == 77
    monkeypatch.setattr(nft_gen, "scope", lambda: "another-boot:1")
    cached = nft._load_cache(path)
    assert cached["genid"] is None and cached["token"] == 12345
    monkeypatch.setattr(nft_gen, "scope", lambda: None)
    assert nft._load_cache(path)["genid"] is None


SNIPPET = """
import subprocess
from ntpguard.backends import nft_gen
before = nft_gen.genid()
subprocess.run(["nft", "add table inet ntpg_gen_test"], check=True)
after = nft_gen.genid()
subprocess.run(["nft", "add table inet ntpg_gen_test"], check=True)  # changes nothing
same = nft_gen.genid()
print(before, after, same)
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nft"),
                    reason="needs root, unshare and nft")
def test_the_kernel_generation_moves_by_one_per_transaction_that_changes_something():
    out = subprocess.run(["unshare", "-n", sys.executable, "-c", SNIPPET], check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split()
    before, after, same = (int(v) for v in out)
    assert after == before + 1 and same == after


def _big_plan(first: int, count: int = 600) -> Plan:
    """A plan whose /128 scanner set is too big to stay inline in the cache (setstore)."""
    from ntpguard.plan import PrefixSet
    from ntpguard.prefixes import Networks

    nets = Networks.of(6, [(0x2400 << 112) + i for i in range(first, first + count)])
    return Plan(clean6=("2001:db8:100::1",), scanners=(PrefixSet(6, 128, nets),))


def test_the_cache_keeps_big_sets_as_files_and_diffs_them_unread(tmp_path):
    path = str(tmp_path / "rules-nft.json")
    a, b = nft.rules_for(_big_plan(0)), nft.rules_for(_big_plan(1))
    nft._save_cache(path, 1, None, a)
    sets_dir = tmp_path / "rules-nft.sets"
    (blob,) = sets_dir.iterdir()
    assert os.path.getsize(path) < 2000 and blob.stat().st_size == 600 * 16
    cached = nft._load_cache(path)
    assert nft.diff_text(cached, a, 2) == ("", 0, 0)
    text, added, deleted = nft.diff_text(cached, b, 2)
    assert (added, deleted) == (1, 1) and "2400::258" in text and "2400::" in text
    # An unchanged set is not read: its file may even be gone; a changed one must be there.
    blob.unlink()
    assert nft.diff_text(nft._load_cache(path), a, 2) == ("", 0, 0)
    with pytest.raises(ValueError, match="No such file"):
        nft.diff_text(nft._load_cache(path), b, 2)
    nft._save_cache(path, 2, None, b)  # the new set written, the old one's file swept
    assert [p.name for p in sets_dir.iterdir()] == [b.sets["scan6_128"].digest()]


def test_a_damaged_cached_set_is_refused(tmp_path):
    path = str(tmp_path / "rules-nft.json")
    a, b = nft.rules_for(_big_plan(0)), nft.rules_for(_big_plan(1))
    nft._save_cache(path, 1, None, a)
    (blob,) = (tmp_path / "rules-nft.sets").iterdir()
    data = bytearray(blob.read_bytes())
    data[5] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        nft.diff_text(nft._load_cache(path), b, 2)
    nft._save_cache(path, 2, None, a)  # saving the same set again repairs its file
    assert nft.diff_text(nft._load_cache(path), b, 3)[1:] == (1, 1)


def test_a_kept_netlink_socket_reads_its_own_answer_not_a_leftover():
    from ntpguard import netlink

    def links(seq: int) -> bytes:  # RTM_GETLINK dump, any user may ask
        body = struct.pack("=BxHiII", 0, 0, 0, 0, 0)
        return struct.pack("=IHHII", 16 + len(body), 18, netlink.NLM_F_REQUEST
                           | netlink.NLM_F_DUMP, seq, 0) + body

    with netlink.asked(0, links(7), 1.0, keep=True):
        pass  # the answer is left unread
    with netlink.asked(0, links(8), 1.0, keep=True) as receive:
        assert struct.unpack_from("=IHHII", receive())[3] == 8
    owner, sock = netlink._KEPT[0]
    assert owner == os.getpid()
    pid = os.fork()
    if pid == 0:  # a child never uses its parent's socket
        with netlink.asked(0, links(9), 1.0, keep=True):
            pass
        os._exit(0 if netlink._KEPT[0][1] is not sock else 1)
    assert os.waitpid(pid, 0)[1] == 0 and netlink._KEPT[0][1] is sock
