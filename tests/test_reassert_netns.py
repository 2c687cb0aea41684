"""Rules that stay in place, against real netfilter in network namespaces (`ntpg-b-*`).

- `rules show` / `status` see every kind of change another tool can make to `table inet
  ntpguard` (exit 5), and `rules restore` puts the last applied plan back, canaries included;
- `ntpguard watch` puts the table back within a second of `nft flush ruleset` or a deleted
  rule, also while a sync holds the state lock, leaves ntpguard's own applies alone, and
  leaves removed rules removed;
- with ufw (real, enabled inside the namespace with private copies of its configuration)
  enabled before and after ntpguard, every port of a 40-port nmap scan is in ntpguard's log.

Nothing touches the root namespace's firewall or the host's /etc.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import lock_held
from labtools import wait_for

from lab.netns import Lab
from lab.world import start_chrony_server
from ntpguard.state import State
from ntpguard.status import Verdict

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parent.parent
HOST_NET = "2001:db8:b0::"
HOST = f"{HOST_NET}100"
CLEAN, HARVESTER = "2001:db8:b1::123", "2001:db8:b2::123"
SCANNERS = ("2001:db8:5cb::1", "2001:db8:5cb::2")


class Host:
    """ntpguard's namespace, wired to an "internet" namespace with a chronyd on the servers'
    addresses; ntpguard runs from this checkout with its own config and state."""

    def __init__(self, lab: Lab, workdir: Path, config: str) -> None:
        self.workdir = workdir
        self.ns, self.net = lab.ns("host"), lab.ns("net")
        lab.link(self.net, "h0", self.ns, "eth0")
        self.net.addr("h0", f"{HOST_NET}1/64")
        for s in SCANNERS:
            self.net.addr("h0", f"{s}/64")
        self.ns.addr("eth0", f"{HOST}/64")
        self.ns.run("ip", "-6", "route", "add", "default", "via", f"{HOST_NET}1")
        for a in (CLEAN, HARVESTER):
            self.net.addr("lo", f"{a}/128")
        (workdir / "chrony").mkdir()
        start_chrony_server(self.net, workdir / "chrony")
        self.state = workdir / "state"
        now = time.time()
        with State.open(str(self.state)) as st:
            st.record_answer("2.debian.pool.ntp.org", "AAAA", [(CLEAN, 6), (HARVESTER, 6)],
                             now)
            st.add_verdict(Verdict.of(HARVESTER, "harvester", "manual", {}, now))
        self.config = self.configure(extra=config)

    def configure(self, rules: str = "", extra: str = "", name: str = "ntpguard.toml") -> Path:
        path = self.workdir / name
        path.write_text('[pool]\nallow_nonglobal = true\n[lists]\nallow_nonglobal = true\n'
                        f'[rules]\nbackend = "nft"\n{rules}{extra}')
        return path

    def env(self, config: Path | None = None) -> list[str]:
        return ["env", f"PYTHONPATH={ROOT}", f"NTPGUARD_STATE_DIR={self.state}",
                f"NTPGUARD_CONFIG={config or self.config}"]

    def ntpguard(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
        return self.ns.run(*self.env(config), sys.executable, "-m", "ntpguard", *args,
                           check=False, timeout=120)

    def nft(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return self.ns.run("nft", *args, check=False, input=input)

    def in_place(self) -> bool:
        return self.nft("list", "set", "inet", "ntpguard", "generation").returncode == 0

    def ntp_refused(self, server: str) -> bool:
        """ntpdate gets nothing back (a locally rejected packet fails in send())."""
        return self.ns.run("ntpdate", "-q", "-t", "1", server, check=False,
                           timeout=30).returncode != 0


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Iterator[Host]:
    for tool in ("chronyd", "ntpdate", "nmap"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool}")
    workdir = tmp_path_factory.mktemp("reassert")
    os.chmod(workdir, 0o755)
    with Lab("ntpg-b-r-") as lab:
        yield Host(lab, workdir, "")


def handle_of(h: Host, chain: str, text: str) -> str:
    listing = h.nft("-a", "list", "chain", "inet", "ntpguard", chain).stdout
    line = next(ln for ln in listing.splitlines() if text in ln)
    return line.rsplit("# handle ", 1)[1].strip()


# Each: what another tool does to the table, and what `rules show` then says.
DRIFTS = [
    ("flush ruleset", lambda h: h.nft("flush", "ruleset"), "missing"),
    ("delete table", lambda h: h.nft("delete", "table", "inet", "ntpguard"), "missing"),
    ("delete a rule", lambda h: h.nft("delete", "rule", "inet", "ntpguard", "input", "handle",
                                      handle_of(h, "input", "jump scanners")), "drifted"),
    ("flush a chain", lambda h: h.nft("flush", "chain", "inet", "ntpguard", "output"),
     "drifted"),
    ("add a rule", lambda h: h.nft("add", "rule", "inet", "ntpguard", "output", "accept"),
     "drifted"),
    ("add a chain", lambda h: h.nft("add", "chain", "inet", "ntpguard", "extra"), "drifted"),
    ("flush a set", lambda h: h.nft("flush", "set", "inet", "ntpguard", "clean6"), "drifted"),
    ("one element replaced", lambda h: h.nft(
        "-f", "-", input=f"delete element inet ntpguard clean6 {{ {CLEAN} }}\n"
                         f"add element inet ntpguard clean6 {{ {HARVESTER} }}\n"), "drifted"),
    ("flush the canary map", lambda h: h.nft("flush", "map", "inet", "ntpguard", "canary6"),
     "drifted"),
]


def test_every_change_is_seen_and_restore_puts_the_plan_back(host):
    h = host
    out = h.ntpguard("rules", "apply")
    assert out.returncode == 0, out.stderr
    assert "chain canary_nat" in h.nft("list", "table", "inet", "ntpguard").stdout
    # The plan as applied, canaries and all, is in place as nft lists it back.
    assert h.ntpguard("rules", "show").returncode == 0
    for name, drift, state in DRIFTS:
        assert drift(h).returncode == 0, name
        shown = h.ntpguard("rules", "show")
        assert shown.returncode == 5 and f" are {state}: " in shown.stderr, (name, shown.stderr)
        status = h.ntpguard("status")
        assert status.returncode == 5 and f"rules:   {state} (nft, applied " in status.stdout
        out = h.ntpguard("rules", "restore")
        assert out.returncode == 0 and f"rules {state}" in out.stdout, (name, out.stdout)
        assert h.ntpguard("rules", "show").returncode == 0, name
    assert h.ntp_refused(HARVESTER) and not h.ntp_refused(CLEAN)


@pytest.mark.parametrize("rules, extra", [
    ("", '[canary]\nmode = "off"\n'),
    ('mode = "gateway"\nunknown = "allow"\nlog_group = 5\n', '[canary]\nmode = "off"\n'),
    ('mode = "gateway"\nunknown = "allow"\n', ""),
    ('mode = "gateway"\nlog = false\n', ""),
])
def test_every_kind_of_plan_reads_back_in_place(host, rules, extra):
    """A plan is compared with nft's own listing of it: no spelling of any rule ntpguard
    writes may read as drift (else every sync would replace the table, and status cry
    wolf)."""
    config = host.configure(rules, extra, "variant.toml")
    out = host.ntpguard("rules", "apply", config=config)
    assert out.returncode == 0, out.stderr
    shown = host.ntpguard("rules", "show", config=config)
    assert shown.returncode == 0, shown.stderr
    again = host.ntpguard("rules", "apply", config=config)
    assert "nothing changed" in again.stdout, again.stdout
    host.ntpguard("rules", "apply")  # back to the module's plan


@contextlib.contextmanager
def watcher(h: Host) -> Iterator[list[str]]:
    """`ntpguard watch` in the host namespace; yields its output lines so far (a live list)."""
    proc = subprocess.Popen(["ip", "netns", "exec", h.ns.name, *h.env(), sys.executable, "-m",
                             "ntpguard", "watch"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any("watching" in ln for ln in lines), 20, 0.02), lines
        yield lines
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        reader.join(timeout=5)


def back_within(h: Host, seconds: float) -> float:
    started = time.monotonic()
    assert wait_for(h.in_place, seconds, 0.02), f"table not back within {seconds} s"
    return time.monotonic() - started


def test_the_watcher_puts_rules_back_within_a_second(host, capsys):
    h = host
    assert h.ntpguard("rules", "apply").returncode == 0
    canaries = re.findall(r"inet6 (\S+)/128", h.ns.run("ip", "-6", "addr", "show", "eth0")
                          .stdout)
    assert canaries, "rules apply gave the clean server a canary"
    with watcher(h) as lines:
        times = {}
        assert h.nft("flush", "ruleset").returncode == 0
        times["flush ruleset"] = back_within(h, 5)
        # A reboot takes the canaries too: a restore puts them back before the rules.
        for c in canaries:
            h.ns.run("ip", "-6", "addr", "del", f"{c}/128", "dev", "eth0")
        assert h.nft("delete", "table", "inet", "ntpguard").returncode == 0
        times["delete table, canaries gone"] = back_within(h, 5)
        addrs = h.ns.run("ip", "-6", "addr", "show", "eth0").stdout
        assert all(c in addrs for c in canaries), addrs
        handle = handle_of(h, "output", "jump ntp")
        assert h.nft("delete", "rule", "inet", "ntpguard", "output", "handle",
                     handle).returncode == 0
        started = time.monotonic()
        assert wait_for(lambda: h.ntpguard("rules", "show").returncode == 0, 5, 0.02)
        times["delete a rule"] = time.monotonic() - started
        # A sync sleeping through its DNS rounds with the state lock held is no obstacle.
        with lock_held(h.state, 10, "ntpguard sync"):
            assert h.nft("flush", "ruleset").returncode == 0
            times["flush ruleset, state locked"] = back_within(h, 5)
        assert h.ntp_refused(HARVESTER) and not h.ntp_refused(CLEAN)
        restored = len([ln for ln in lines if "restored" in ln])
        assert restored == 4, lines
        # ntpguard's own changes are left alone; removed rules stay removed.
        assert h.ntpguard("rules", "apply", "--force").returncode == 0
        assert h.ntpguard("rules", "remove").returncode == 0
        time.sleep(1.5)
        assert not h.in_place() and len([ln for ln in lines if "restored" in ln]) == restored
        assert h.ntpguard("rules", "apply").returncode == 0
        time.sleep(1.0)
        assert len([ln for ln in lines if "restored" in ln]) == restored, lines
    with capsys.disabled():
        print("\nwatcher: table back after " + ", ".join(
            f"{what} {s:.2f} s" for what, s in times.items()))
    assert all(s < 2 for s in times.values()), times


# -- ufw ---------------------------------------------------------------------------------------


def ufw(h: Host, copies: Path, *args: str) -> subprocess.CompletedProcess:
    """ufw in the host namespace, reading and writing private copies of /etc/ufw and
    /etc/default/ufw (a mount namespace of its own): the machine's ufw stays as it was."""
    script = (f"mount --bind {copies}/etc-ufw /etc/ufw && "
              f"mount --bind {copies}/default-ufw /etc/default/ufw && "
              f'exec ip netns exec {h.ns.name} ufw "$@"')
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           script, "ufw", *args], capture_output=True, text=True, timeout=60)


def logged_ports(scanner: str) -> set[int]:
    """Destination ports of `ntpguard-in:` lines from `scanner` in the kernel log
    (namespaces log there with nf_log_all_netns=1, which lab.netns.Lab sets)."""
    src = f"SRC={_expanded(scanner)} "
    lines = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
    return {int(m.group(1)) for ln in lines if "ntpguard-in: " in ln and src in ln
            for m in [re.search(r" DPT=(\d+) ", ln)] if m}


def _expanded(address: str) -> str:
    import ipaddress

    return ipaddress.ip_address(address).exploded


def test_ufw_before_or_after_ntpguard_hides_no_scan_from_its_log(tmp_path):
    if not shutil.which("ufw"):
        pytest.skip("needs ufw (make deps installs it)")
    copies = tmp_path / "ufw"
    copies.mkdir()
    shutil.copytree("/etc/ufw", copies / "etc-ufw")
    shutil.copy("/etc/default/ufw", copies / "default-ufw")
    (copies / "etc-ufw" / "sysctl.conf").write_text("")  # no sysctl changes, even per netns
    os.chmod(tmp_path, 0o755)
    with Lab("ntpg-b-u-") as lab:
        h = Host(lab, tmp_path, '[canary]\nmode = "off"\n')

        def scan() -> set[int]:
            # A source address of its own (random: not in the kernel log from any earlier run).
            scanner = f"2001:db8:5cb::{random.randrange(1 << 16):x}:{random.randrange(1 << 16):x}"
            h.net.addr("h0", f"{scanner}/64")
            out = h.net.run("nmap", "-6", "-n", "-sS", "-Pn", "-p", "1-40", "--max-retries",
                            "0", "-e", "h0", "-S", scanner, HOST, check=False, timeout=60)
            assert out.returncode == 0, out.stderr
            wait_for(lambda: len(logged_ports(scanner)) >= 40, 5, 0.2)
            return logged_ports(scanner)

        counts = {}
        # ntpguard first, ufw enabled after it (its chains are then the newest).
        assert h.ntpguard("rules", "apply").returncode == 0
        assert ufw(h, copies, "--force", "enable").returncode == 0
        assert "chain INPUT" in h.nft("list", "table", "ip6", "filter").stdout
        counts["ufw enabled after ntpguard"] = len(scan())
        # ufw first, ntpguard's table made after it.
        assert h.ntpguard("rules", "remove").returncode == 0
        assert ufw(h, copies, "--force", "disable").returncode == 0
        assert ufw(h, copies, "--force", "enable").returncode == 0
        assert h.ntpguard("rules", "apply").returncode == 0
        counts["ufw enabled before ntpguard"] = len(scan())
        assert ufw(h, copies, "--force", "disable").returncode == 0
    print(f"ports of a 40-port scan in ntpguard's log: {counts}")
    assert counts == {"ufw enabled after ntpguard": 40, "ufw enabled before ntpguard": 40}
    assert "ENABLED=no" in Path("/etc/ufw/ufw.conf").read_text()
