"""The detector on REAL log lines: ntpguard's own nft `log` rules, real NTP, a real nmap scan.

Topology (namespaces prefixed ntpg-d2-; nothing touches the root namespace's firewall):

    host (ntpguard rules, HOST)  --  net (lo: NTP servers served by one chronyd -x, scanners)

`ntpdate -q` in host asks some servers, then `nmap -6 -sS` sweeps 120 ports of HOST from a
scanner address. The kernel prints the LOG lines ("ntpguard-ntp-out: ", "ntpguard-in: ") to its
ring buffer (net.netfilter.nf_log_all_netns=1); other engineers' tests log there at the same
time, so only lines carrying this run's addresses are kept: every run picks a random /48 in
3fff::/20 (the RFC 9637 documentation prefix, which no other test here uses).

The journal test starts a real systemd-journald in a private mount namespace (tmpfs on its
directories, so the host's journal and /run are untouched); it reads /dev/kmsg like on a real
Debian host, and `ntpguard detect --journal --record` must find each scan exactly once.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional

import pytest

from lab.netns import Lab, Namespace
from lab.world import start_chrony_server

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "ntpg-d2-"
JOURNALD = "/lib/systemd/systemd-journald"


def _expanded(address: str) -> str:
    return ipaddress.ip_address(address).exploded


class DetectLab:
    """host + net, ntpguard's rules applied in host, chronyd answering on every server address."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        net48 = f"3fff:{random.randrange(0x100, 0xfff):x}:{random.randrange(1, 0xffff):x}"
        self.host6 = f"{net48}:1::10"
        self.gw6 = f"{net48}:1::1"
        # One host address per round (a fresh temporary address, as after a rotation), so a
        # round's triggers are its own NTP packets only, whatever ran within `lookback` before.
        self.rounds = [f"{net48}:1::{0x100 + i:x}" for i in range(4)]
        self.servers = [f"{net48}:123::{i + 1:x}" for i in range(12)]
        self.scanners = [f"{net48}:666::{i + 5:x}" for i in range(3)]
        self.mine = [_expanded(a) for a in (self.host6, *self.rounds, *self.servers,
                                            *self.scanners)]
        self.workdir = workdir
        self.last_scan = 0.0
        self.host, self.net = lab.ns("host"), lab.ns("net")
        lab.link(self.host, "eth0", self.net, "eth0")
        self.host.addr("eth0", f"{self.host6}/64")
        for a in self.rounds:
            self.host.addr("eth0", f"{a}/64")
        self.net.addr("eth0", f"{self.gw6}/64")
        for a in (*self.servers, *self.scanners):
            self.net.addr("lo", f"{a}/128")
        self.host.run("ip", "-6", "route", "add", "default", "via", self.gw6)
        (workdir / "chrony").mkdir()
        start_chrony_server(self.net, workdir / "chrony")
        # Rules before the first NTP packet: every packet of the test is logged.
        self.state = workdir / "state"
        self.state.mkdir()
        self.config = workdir / "ntpguard.toml"
        self.config.write_text(
            "[lists]\nbuiltin = false\nallow_nonglobal = true\n"
            '[rules]\nbackend = "nft"\nmode = "host"\nunknown = "allow"\n'
            # The log lines must show each round's own address (with canaries on, NTP would
            # leave from them: tests/test_e2e_canary.py).
            '[canary]\nmode = "off"\n')
        out = self.ntpguard(self.host, "rules", "apply")
        assert out.returncode == 0, out.stderr
        deadline = time.time() + 15
        # The first answer needs chronyd up; this probe's packets are logged too, so it uses
        # a server the rounds below never ask (its lines carry this run's addresses).
        self.warmup = self.servers[-1]
        while self.ntpdate(self.warmup).returncode != 0:
            if time.time() > deadline:
                raise RuntimeError("lab chronyd does not answer")
            time.sleep(0.3)

    def ntpguard(self, ns: Namespace, *args: str, state: Optional[Path] = None
                 ) -> subprocess.CompletedProcess:
        env = ["env", f"PYTHONPATH={ROOT}", f"NTPGUARD_STATE_DIR={state or self.state}",
               f"NTPGUARD_CONFIG={self.config}"]
        return ns.run(*env, sys.executable, "-m", "ntpguard", *args, check=False, timeout=120)

    def ntpdate(self, *servers: str) -> subprocess.CompletedProcess:
        return self.host.run("ntpdate", "-q", "-t", "1", *servers, check=False, timeout=30)

    def round(self, address: str, servers: list[str], scanner: str) -> None:
        """NTP from `address` to `servers`, a pause (the harvester's lag), then a 120-port
        SYN scan of `address` from `scanner`."""
        for s in servers:  # ntpdate cannot bind: the route picks the source address
            self.host.run("ip", "-6", "route", "replace", f"{s}/128", "via", self.gw6,
                          "src", address)
        out = self.ntpdate(*servers)
        assert out.returncode == 0, out.stdout + out.stderr
        # The harvester's lag; and the log rule's token bucket (rules.log_burst 100, log_rate
        # 20/s) must be full again after the previous scan, or only ~20/s of it is logged.
        time.sleep(max(2.0, self.last_scan + 100 / 20 + 0.5 - time.time()))
        scan = self.net.run("nmap", "-6", "-n", "-sS", "-Pn", "-p", "1-120", "--max-retries",
                            "0", "-e", "eth0", "-S", scanner, address, timeout=60)
        self.last_scan = time.time()
        assert "120 closed" in scan.stdout or "Not shown: 120" in scan.stdout \
            or "All 120 scanned ports" in scan.stdout, scan.stdout

    def kernel_lines(self, want: int, timeout: float = 10.0) -> list[str]:
        """This run's LOG lines from the kernel ring buffer (dmesg: `[uptime] message`)."""
        deadline = time.time() + timeout
        while True:
            text = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
            lines = [ln for ln in text.splitlines()
                     if "ntpguard-" in ln and any(a in ln for a in self.mine)]
            if len(lines) >= want or time.time() > deadline:
                return lines
            time.sleep(0.3)


@pytest.fixture(scope="module")
def dlab(tmp_path_factory):
    with Lab(PREFIX) as lab:
        yield DetectLab(lab, tmp_path_factory.mktemp("detect-netns"))


def _scans(stdout: str, dst: str) -> list[dict]:
    objs = [json.loads(x) for x in stdout.splitlines() if x.strip()]
    return [o for o in objs if o["type"] == "scan" and o["dst"] == dst]


def _check_scan(scan: dict, address: str, scanner: str, servers: list[str]) -> None:
    assert scan["src"] == scanner
    assert scan["dst"] == address
    assert scan["ports"] >= 100, scan
    assert scan["packets"] >= scan["ports"]
    assert {t["server"] for t in scan["triggers"]} == set(servers), scan["triggers"]
    for t in scan["triggers"]:
        assert t["dport"] == 123 and 1.0 < t["lag"] < 60.0, t


def test_real_nft_log_lines_from_ntp_and_nmap(dlab, run_cli):
    address, servers, scanner = dlab.rounds[0], dlab.servers[:4], dlab.scanners[0]
    dlab.round(address, servers, scanner)
    lines = dlab.kernel_lines(want=len(servers) + 100)
    outbound = [ln for ln in lines if "ntpguard-ntp-out: " in ln]
    inbound = [ln for ln in lines if "ntpguard-in: " in ln and f"DST={_expanded(address)} " in ln]
    # Every server asked left a line with the kernel's fully expanded addresses.
    for s in servers:
        assert any(f"SRC={_expanded(address)} DST={_expanded(s)} " in ln and "DPT=123 " in ln
                   for ln in outbound), s
    assert len(inbound) >= 100, f"only {len(inbound)} scan lines logged"
    out = run_cli("detect", "--json", "-", input="\n".join(lines) + "\n")
    assert out.returncode == 0, out.stderr
    scans = _scans(out.stdout, address)
    assert len(scans) == 1, out.stdout
    _check_scan(scans[0], address, scanner, servers)
    # The warm-up queries from the other address are contacts, not triggers of this scan.
    assert _scans(out.stdout, dlab.host6) == []
    # The human report says it the 2016 way.
    human = run_cli("detect", "-", input="\n".join(lines) + "\n")
    assert "one or more of these packets may have triggered the scan" in human.stdout
    assert f"scan of {address} from {scanner}" in human.stdout


# -- journald ------------------------------------------------------------------------------------

# Runs as `unshare -m python3 -c JOURNAL_SHELL`: private tmpfs over journald's directories, a
# real systemd-journald reading /dev/kmsg, then one command per stdin line (a JSON argv),
# answering each with one JSON line {rc, stdout, stderr}; the commands see this journal.
JOURNAL_SHELL = textwrap.dedent("""
    import json, os, subprocess, sys, time
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    for d in ("/run/systemd", "/run/log", "/var/log/journal"):
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    os.makedirs("/run/systemd/journal", exist_ok=True)
    jd = subprocess.Popen([sys.argv[1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not os.path.exists("/run/systemd/journal/socket"):
        if jd.poll() is not None or time.time() > deadline:
            print(json.dumps({"rc": -1, "stdout": "", "stderr": "journald did not start"}))
            sys.exit(1)
        time.sleep(0.05)
    print(json.dumps({"rc": 0, "stdout": "ready", "stderr": ""}), flush=True)
    try:
        for line in sys.stdin:
            argv = json.loads(line)
            p = subprocess.run(argv, capture_output=True, text=True)
            print(json.dumps({"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}),
                  flush=True)
    finally:
        jd.terminate()
        jd.wait()
""")


class JournalShell:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "-m", sys.executable, "-c", JOURNAL_SHELL, JOURNALD],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = self._answer()
        if hello["rc"] != 0:
            raise RuntimeError(hello["stderr"])

    def _answer(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("journal shell died")
        return json.loads(line)

    def run(self, *argv: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(list(argv)) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def wait_for(self, needle: str, count: int, timeout: float = 15.0) -> None:
        """Until `count` kernel messages containing needle are in the journal (it reads
        /dev/kmsg asynchronously)."""
        deadline = time.time() + timeout
        while True:
            out = self.run("journalctl", "-k", "-o", "cat", "--no-pager", "-q")
            if out["stdout"].count(needle) >= count:
                return
            if time.time() > deadline:
                raise AssertionError(f"journal has {out['stdout'].count(needle)} of {count} "
                                     f"lines with {needle!r}")
            time.sleep(0.3)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.skipif(not os.path.exists(JOURNALD), reason="systemd-journald not installed")
def test_journal_source_with_cursor(dlab, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    env = ["env", f"PYTHONPATH={ROOT}", f"NTPGUARD_STATE_DIR={state}",
           f"NTPGUARD_CONFIG={dlab.config}"]
    detect = [*env, sys.executable, "-m", "ntpguard", "detect", "--journal", "--record",
              "--json"]
    shell = JournalShell()
    try:
        (one_addr, two_addr), scanner = dlab.rounds[1:3], dlab.scanners[1]
        one_servers, two_servers = dlab.servers[4:7], dlab.servers[7:10]
        dlab.round(one_addr, one_servers, scanner)
        shell.wait_for(f"DST={_expanded(one_addr)} ", 100)
        first = shell.run(*detect)
        assert first["rc"] == 0, first["stderr"]
        # journald read the ring buffer from its start: this round and what came before.
        scans = _scans(first["stdout"], one_addr)
        assert len(scans) == 1, first["stdout"]
        _check_scan(scans[0], one_addr, scanner, one_servers)
        cursor = _cursor(state)
        assert cursor.startswith("s="), cursor

        again = shell.run(*detect)  # from the saved cursor: nothing of ours is new
        assert again["rc"] == 0, again["stderr"]
        assert not any(o["type"] == "scan" and o["dst"] in dlab.rounds
                       for o in map(json.loads, again["stdout"].splitlines())), again["stdout"]
        runs = _summaries(state)
        assert runs[0]["events"] >= 100 and runs[1]["lines"] < runs[0]["lines"] / 2, runs

        # A new round: only its scan is new, with only its own triggers.
        dlab.round(two_addr, two_servers, scanner)
        shell.wait_for(f"DST={_expanded(two_addr)} ", 100)
        third = shell.run(*detect)
        assert third["rc"] == 0, third["stderr"]
        new = [o for o in map(json.loads, third["stdout"].splitlines())
               if o["type"] == "scan" and o["dst"] in dlab.rounds]
        assert [o["dst"] for o in new] == [two_addr], third["stdout"]
        _check_scan(new[0], two_addr, scanner, two_servers)
        assert _cursor(state) != cursor
    finally:
        shell.close()


def _cursor(state: Path) -> str:
    import sqlite3

    with sqlite3.connect(state / "state.db") as db:
        row = db.execute("SELECT cursor FROM detect_positions WHERE source = 'journal'"
                         ).fetchone()
    return row[0] if row else ""


def _summaries(state: Path) -> list[dict]:
    import sqlite3

    with sqlite3.connect(state / "state.db") as db:
        return [json.loads(s) for (s,) in db.execute(
            "SELECT summary FROM runs WHERE command = 'detect' ORDER BY id")]
