"""Network namespace primitives for tests and the lab: create, wire, run, tear down.

Every namespace name starts with a prefix owned by one lab, so a crashed run's leftovers can be
found and removed by the next (`cleanup(prefix)`). Nothing is connected to the root namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Optional, Sequence

PREFIX = "ntpg-"


def sh(*cmd: str, check: bool = True, input: Optional[str] = None,
       timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command in the root namespace; raise with its stderr on failure."""
    proc = subprocess.run(list(cmd), input=input, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def list_namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup(prefix: str = PREFIX) -> None:
    """Kill every process in, and delete, every namespace whose name starts with prefix."""
    for name in list_namespaces():
        if not name.startswith(prefix):
            continue
        pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "delete", name, check=False)
        # /etc/netns/NAME holds per-namespace resolv.conf; remove ours with the namespace.
        etc = f"/etc/netns/{name}"
        if os.path.isdir(etc):
            shutil.rmtree(etc, ignore_errors=True)


@dataclass
class Namespace:
    name: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *cmd: str, check: bool = True, input: Optional[str] = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, input=input,
                  timeout=timeout)

    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen:
        """Start a long-running process in the namespace; it is killed by `Lab.close()`."""
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)
        self.procs.append(proc)
        return proc

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def addr(self, dev: str, cidr: str, nodad: bool = True) -> None:
        extra = ["nodad"] if nodad and ":" in cidr else []
        self.run("ip", "addr", "add", cidr, "dev", dev, *extra)

    def resolv_conf(self, nameserver: str) -> None:
        """Write /etc/netns/NAME/resolv.conf, which `ip netns exec` bind-mounts."""
        os.makedirs(f"/etc/netns/{self.name}", exist_ok=True)
        with open(f"/etc/netns/{self.name}/resolv.conf", "w") as fh:
            fh.write(f"nameserver {nameserver}\n")


class Lab:
    """A set of namespaces under one prefix; a context manager that always tears down."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.namespaces: dict[str, Namespace] = {}
        cleanup(prefix)
        # LOG lines from inside namespaces reach the kernel log only with this set.
        sh("sysctl", "-qw", "net.netfilter.nf_log_all_netns=1", check=False)

    def ns(self, short: str) -> Namespace:
        name = self.prefix + short
        sh("ip", "netns", "add", name)
        ns = Namespace(name)
        self.namespaces[short] = ns
        ns.run("ip", "link", "set", "lo", "up")
        # No DAD: addresses must be usable at once (the lab has no duplicate to detect).
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
        return ns

    def link(self, a: Namespace, a_dev: str, b: Namespace, b_dev: str) -> None:
        """A veth pair a_dev (in a) <-> b_dev (in b), both up."""
        tmp_a, tmp_b = f"{a_dev[:6]}{os.getpid() % 10000}a", f"{b_dev[:6]}{os.getpid() % 10000}b"
        sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        sh("ip", "link", "set", tmp_a, "netns", a.name)
        sh("ip", "link", "set", tmp_b, "netns", b.name)
        a.run("ip", "link", "set", tmp_a, "name", a_dev)
        b.run("ip", "link", "set", tmp_b, "name", b_dev)
        for ns, dev in ((a, a_dev), (b, b_dev)):
            ns.sysctl(f"net.ipv6.conf.{dev}.accept_dad", "0")
            ns.run("ip", "link", "set", dev, "up")

    def close(self) -> None:
        for ns in self.namespaces.values():
            for proc in ns.procs:
                if proc.poll() is None:
                    proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)
        cleanup(self.prefix)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
