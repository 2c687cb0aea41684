"""A killed `rules apply` leaves the old table or the new one, never a mix (real nft, netns).

ntpguard runs as `python -m ntpguard rules apply` inside a namespace of its own (prefix
ntpg-h-, used by no other test) and is SIGKILLed mid-apply, from table A (a few hundred
scanner prefixes) to table B (15,504 prefixes in ~120 sets, the size of the apply that left a
partial table through `nft -f -`). Both ways to nftables are killed: the nft command (forced by
an `nftables` module on PYTHONPATH that raises ImportError, as on a host without
python3-nftables) and libnftables in-process.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.netns import Lab, Namespace

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "ntpg-h-"
CONFIG = '[lists]\nbuiltin = false\n[rules]\nbackend = "nft"\nunknown = "allow"\n'
SLOW_NFT = """#!/bin/sh
case " $* " in *" -f "*) sleep 0.3 ;; esac
exec {nft} "$@"
"""
# A transaction quicker than the timer (a fast run) is followed by the kill all the same: the
# process waits for it after the call instead of finishing first (as it did once in a full run).
KILLER = """
import os, signal, threading, time
_after = float(os.environ.get("NTPG_H_KILL_IN_CMD", "-1"))
if _after >= 0:
    import nftables
    _cmd = nftables.Nftables.cmd
    def cmd(self, text):
        if not text.startswith("table inet ntpguard"):  # a read, not the full replace
            return _cmd(self, text)
        threading.Timer(_after, os.kill, (os.getpid(), signal.SIGKILL)).start()
        result = _cmd(self, text)
        time.sleep(_after + 10)
        return result
    nftables.Nftables.cmd = cmd
"""


def scanner_list(count: int, seed: int) -> str:
    """`count` prefixes of many lengths (IPv6 /33-/128, IPv4 /17-/32), each in a /32 (IPv4:
    /16) of its own so that none covers another: one nft set per length, ~110 sets like a
    real scanner list's, and exactly `count` elements."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        if i % 7:
            length = rng.randint(33, 128)
            value = 0x2A00 << 112 | (seed << 14 | i) << 96 | rng.getrandbits(96)
            net: ipaddress._BaseNetwork = ipaddress.IPv6Network(
                (value >> (128 - length) << (128 - length), length))
        else:
            length = rng.randint(17, 32)
            value = (11 + seed * 40 + i // 7 // 256) << 24 | (i // 7 % 256) << 16 \
                | rng.getrandbits(16)
            net = ipaddress.IPv4Network((value >> (32 - length) << (32 - length), length))
        lines.append(f"{net} scanner")
    return "\n".join(lines) + "\n"


def table(ns: Namespace) -> dict:
    """The kernel's table as comparable data: sets with sorted elements, chains with rules;
    without handles, counters and the generation token (random per apply)."""
    proc = ns.run("nft", "-j", "list", "table", "inet", "ntpguard", check=False)
    if proc.returncode != 0:
        return {}
    out: dict = {"sets": {}, "rules": []}
    for item in json.loads(proc.stdout)["nftables"]:
        if "set" in item and item["set"]["name"] != "generation":
            elems = item["set"].get("elem", [])
            out["sets"][item["set"]["name"]] = sorted(json.dumps(e, sort_keys=True)
                                                      for e in elems)
        elif "rule" in item:
            expr = [e for e in item["rule"]["expr"] if "counter" not in e]
            out["rules"].append((item["rule"]["chain"], json.dumps(expr, sort_keys=True)))
    return out


class Host:
    def __init__(self, ns: Namespace, work: Path) -> None:
        self.ns, self.work = ns, work
        self.tmp = work / "tmp"  # TMPDIR of every ntpguard run: must stay empty
        self.tmp.mkdir()
        self.config = work / "ntpguard.toml"
        self.config.write_text(CONFIG)
        # Without python3-nftables: `import nftables` fails as it does where it is not installed.
        # The real nft, started 0.3 s late when it is to read a transaction (`-f`): the kill
        # then always comes before nft has read anything, as on a slow or busy host.
        self.bin = work / "bin"
        self.bin.mkdir()
        (self.bin / "nft").write_text(SLOW_NFT.format(nft=shutil.which("nft")))
        os.chmod(self.bin / "nft", 0o755)
        self.shadow = work / "shadow"
        self.shadow.mkdir()
        (self.shadow / "nftables.py").write_text(
            'raise ImportError("python3-nftables hidden by the test")\n')
        # On the libnftables path the transaction is one C call (~0.1 s for table B): this
        # kills the process from a timer thread while that call runs (ctypes drops the GIL).
        self.killer = work / "killer"
        self.killer.mkdir()
        (self.killer / "sitecustomize.py").write_text(KILLER)
        self.state = {}
        for name, count, seed in (("a", 300, 1), ("b", 15_504, 2)):
            state = work / f"state-{name}"
            listfile = work / f"{name}.txt"
            listfile.write_text(scanner_list(count, seed))
            proc = self.cli(["list", "import", str(listfile)], state, command_path=False)
            assert proc.returncode == 0, proc.stderr
            self.state[name] = state

    def env(self, state: Path, command_path: bool, kill_in_cmd: float = -1.0) -> list[str]:
        path = f"{self.shadow}:{ROOT}" if command_path else str(ROOT)
        if kill_in_cmd >= 0:
            path = f"{self.killer}:{path}"
        return ["env", f"PYTHONPATH={path}", f"NTPGUARD_CONFIG={self.config}",
                f"NTPGUARD_STATE_DIR={state}", f"TMPDIR={self.tmp}",
                f"NTPG_H_KILL_IN_CMD={kill_in_cmd}", f"PATH={self.bin}:{os.environ['PATH']}"]

    def cli(self, args: list[str], state: Path, command_path: bool
            ) -> subprocess.CompletedProcess:
        return self.ns.run(*self.env(state, command_path), sys.executable, "-m", "ntpguard",
                           *args, check=False, timeout=120)

    def apply(self, name: str, command_path: bool) -> dict:
        proc = self.cli(["rules", "apply"], self.state[name], command_path)
        assert proc.returncode == 0, proc.stderr
        return table(self.ns)

    def killed_apply(self, name: str, command_path: bool, kill_in_cmd: float = -1.0
                     ) -> tuple[bool, float]:
        """Start `rules apply` and SIGKILL it: `kill_in_cmd` s into libnftables' cmd() of the
        transaction, or else as soon as an `nft -f` child exists. Waits for an orphaned nft
        to finish. Returns (an nft child was seen, seconds until ntpguard died)."""
        cmd = ["ip", "netns", "exec", self.ns.name,
               *self.env(self.state[name], command_path, kill_in_cmd),
               sys.executable, "-m", "ntpguard", "rules", "apply"]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        nft_pids: list[str] = []
        while proc.poll() is None:
            try:
                pids = children.read_text().split()
            except OSError:
                pids = []
            # The apply's nft (`nft -f FILE`), not the one reading the table's token before.
            nft_pids = [p for p in pids if _comm(p) == "nft" and "-f" in _argv(p)]
            if nft_pids and kill_in_cmd < 0:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        proc.wait()
        died_at = time.monotonic() - start
        assert proc.returncode == -signal.SIGKILL, "ntpguard was not killed: it finished first"
        for pid in nft_pids:  # the orphan goes on; what it commits is what the kill left
            while os.path.exists(f"/proc/{pid}") and _comm(pid) == "nft":
                time.sleep(0.005)
        return bool(nft_pids), died_at


def _argv(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    work = tmp_path_factory.mktemp("harden-nft")
    os.chmod(work, 0o755)
    with Lab(PREFIX) as lab:
        h = Host(lab.ns("nft"), work)
        h.old, h.new = h.apply("a", False), h.apply("b", False)
        assert h.old["sets"] and h.new["sets"] and h.old != h.new
        assert sum(len(v) for v in h.new["sets"].values()) == 15_504
        yield h


# Where ntpguard dies. Command path: as soon as `nft -f` exists (started 0.3 s late, see
# SLOW_NFT), the moment it was still feeding nft through a pipe before (any earlier kill
# leaves nft unstarted: the old table).
# libnftables: 0.02 and 0.06 s into the cmd() call of the transaction, which takes
# 0.06-0.1 s here for table B (parsing 440 KB of text, then one netlink batch).
@pytest.mark.parametrize("command_path, kills", [(True, [-1.0]), (False, [0.02, 0.06])],
                         ids=["nft-command", "libnftables"])
def test_killed_apply_leaves_old_or_new_table(host, command_path, kills):
    outcomes = []
    for kill_in_cmd in kills:
        assert host.apply("a", command_path) == host.old
        saw_nft, died_at = host.killed_apply("b", command_path, kill_in_cmd)
        # The path under test is the one taken: an `nft -f` child, or none.
        assert saw_nft == command_path
        now = table(host.ns)
        assert now in (host.old, host.new), (
            f"killed after {died_at:.3f} s: a mix of {len(now.get('sets', {}))} sets, "
            f"{sum(len(v) for v in now.get('sets', {}).values())} elements")
        outcomes.append(f"{died_at:.2f}s:{'new' if now == host.new else 'old'}")
    print("kill outcomes:", " ".join(outcomes))
    # Killed once nft has the transaction, the whole new table is in place.
    if command_path:
        assert outcomes[0].endswith(":new")
    # Nothing left behind, not even by the killed runs: the transaction file had no name.
    assert not list(host.tmp.iterdir())
