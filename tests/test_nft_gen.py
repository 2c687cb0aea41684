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
