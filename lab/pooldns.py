"""A rotating pool DNS: PowerDNS 4.7 (bind backend, LUA records) serving names → random subsets.

The real pool answers each query with at most 4 records picked from the servers of the asker's
zone, TTL 150 s (the pool's GeoDNS; docs/design.md, "Facts"). `pickrandomsample(4, {...})` in
a LUA record reproduces that with the real resolver code path: every query is a fresh random
draw, so a resolver has to ask repeatedly to learn the whole set. All caches are off, or
PowerDNS would hand out the same draw for a while.

Runs in a lab namespace (`ns=`) or on 127.0.0.1 in the root namespace (ns=None: a free high
port is picked). Names listed in `servfail_names` are served by a LUA record that raises, which
PowerDNS answers with SERVFAIL: the failure a resolver must survive.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from lab.netns import Namespace

PDNS = "/usr/sbin/pdns_server"


class PoolDNSError(RuntimeError):
    """PowerDNS did not start or a zone could not be written."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on host right now (pdns binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
            if port > 1024:
                return port
    raise PoolDNSError("no free port found on " + host)


def _lua_list(addresses: Sequence[str]) -> str:
    return "{" + ",".join(f"'{a}'" for a in addresses) + "}"


def zone_text(name: str, addresses: Iterable[str], ttl: int = 150, per_answer: int = 4,
              servfail: bool = False) -> str:
    """The bind zone file for one pool name, with LUA A/AAAA records at the apex.

    Pure, so the records can be checked without PowerDNS. A name with no A (or no AAAA)
    addresses simply has no such record: NOERROR with an empty answer, as the pool's
    IPv4-only names `0.`, `1.`, `3.` do for AAAA.
    """
    origin = name.rstrip(".") + "."
    v4: list[str] = []
    v6: list[str] = []
    for a in addresses:
        ip = ipaddress.ip_address(a)  # ValueError on junk: a lab bug, fail loudly
        (v6 if ip.version == 6 else v4).append(str(ip))
    lines = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ {ttl} IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 {ttl}",
        f"@ {ttl} IN NS ns.{origin}",
    ]
    if servfail:
        # A LUA error is answered with SERVFAIL (pdns 4.7 logs "Failed to load LUA record").
        lines.append(f"@ {ttl} IN LUA AAAA \"error('lab: broken on purpose')\"")
        lines.append(f"@ {ttl} IN LUA A \"error('lab: broken on purpose')\"")
    else:
        for rtype, group in (("A", v4), ("AAAA", v6)):
            if group:
                k = min(per_answer, len(group))
                lines.append(
                    f"@ {ttl} IN LUA {rtype} \"pickrandomsample({k}, {_lua_list(group)})\""
                )
    return "\n".join(lines) + "\n"


class PoolDNS:
    """PowerDNS serving `zones` (name → addresses); a context manager that always stops it."""

    def __init__(self, zones: Mapping[str, Sequence[str]], listen: str = "127.0.0.1",
                 port: int = 0, workdir: Optional[Path] = None,
                 ns: Optional[Namespace] = None, ttl: int = 150, per_answer: int = 4,
                 servfail_names: Iterable[str] = ()) -> None:
        if workdir is None:
            raise PoolDNSError("PoolDNS needs a workdir for its zone files and log")
        self.zones = {k.rstrip(".").lower(): list(v) for k, v in zones.items()}
        self.servfail_names = {n.rstrip(".").lower() for n in servfail_names}
        for n in self.servfail_names:
            self.zones.setdefault(n, [])
        self.listen = listen
        self.ns = ns
        if ns is None and not port:
            port = free_port(listen)
        self.port = port or 53
        self.workdir = Path(workdir)
        self.ttl = ttl
        self.per_answer = per_answer
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.workdir / "pdns.log"

    # -- files ---------------------------------------------------------------------------
    def write_config(self) -> list[str]:
        """Write zone files and named.conf; return the pdns_server command line."""
        zdir = self.workdir / "zones"
        zdir.mkdir(parents=True, exist_ok=True)
        named = []
        for name, addrs in sorted(self.zones.items()):
            path = zdir / f"{name}.zone"
            path.write_text(zone_text(name, addrs, self.ttl, self.per_answer,
                                      servfail=name in self.servfail_names))
            named.append(f'zone "{name}" {{ type master; file "{path}"; }};')
        (self.workdir / "named.conf").write_text("\n".join(named) + "\n")
        return [
            PDNS, "--no-config", "--daemon=no", "--guardian=no", "--disable-syslog",
            "--write-pid=no", f"--socket-dir={self.workdir}",
            # No security-status poll: it is a DNS query to the internet the lab must not make.
            "--security-poll-suffix=",
            "--launch=bind", f"--bind-config={self.workdir / 'named.conf'}",
            f"--local-address={self.listen}", f"--local-port={self.port}",
            "--enable-lua-records=yes",
            # Every query must be a fresh random draw: with any cache on, PowerDNS repeats one.
            "--cache-ttl=0", "--query-cache-ttl=0", "--negquery-cache-ttl=0",
            "--zone-cache-refresh-interval=0",
            "--webserver=no", "--api=no", "--loglevel=5", "--log-timestamp=yes",
            "--receiver-threads=1", "--distributor-threads=1",
        ]

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> PoolDNS:
        cmd = self.write_config()
        with open(self.log_path, "ab") as log:
            if self.ns is not None:
                self.proc = self.ns.popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            else:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PoolDNSError(f"pdns_server exited ({self.proc.returncode}): "
                                   + self.log_tail())
            if self.answers_soa():
                return self
            time.sleep(0.1)
        self.stop()
        raise PoolDNSError("pdns_server did not become ready in time: " + self.log_tail())

    def dig(self, *args: str, timeout: float = 5) -> subprocess.CompletedProcess:
        """Run `dig @listen -p port ARGS` where the server is (its namespace or root)."""
        cmd = ["dig", "+time=1", "+tries=1", "-p", str(self.port), f"@{self.listen}", *args]
        if self.ns is not None:
            cmd = ["ip", "netns", "exec", self.ns.name, *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def answers_soa(self) -> bool:
        """True once pdns answers the SOA of one of its zones (its "ready" log line is not
        printed with a single distributor thread, so ask it)."""
        name = next(iter(self.zones), None)
        if name is None:
            return b"Done parsing domains" in self.log_path.read_bytes()
        out = self.dig("+short", "SOA", name)
        return out.returncode == 0 and bool(out.stdout.strip())

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # With `ip netns exec` the pid is pdns itself (exec), so signals reach it.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    @property
    def address(self) -> str:
        return self.listen

    def __enter__(self) -> PoolDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.ns.name if self.ns is not None else "root"
        return f"PoolDNS({where} {self.listen}:{self.port}, {len(self.zones)} names)"


def pool_zones(v6: Sequence[str], v4: Sequence[str] = (),
               base: str = "debian.pool.ntp.org") -> dict[str, list[str]]:
    """The pool's layout: AAAA only in `2.`, `0.`/`1.`/`3.` IPv4-only (the pool's docs, 2026).

    Servers are dealt round-robin to the four names, as the pool spreads its members.
    """
    zones: dict[str, list[str]] = {f"{i}.{base}": [] for i in range(4)}
    for i, a in enumerate(v4):
        zones[f"{i % 4}.{base}"].append(a)
    zones[f"2.{base}"].extend(v6)
    return zones


__all__ = ["PoolDNS", "PoolDNSError", "free_port", "pool_zones", "zone_text"]

if __name__ == "__main__":  # pragma: no cover - manual check: python3 -m lab.pooldns
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        addrs = [f"2001:db8::{i:x}" for i in range(1, 31)]
        with PoolDNS({"2.debian.pool.ntp.org": addrs}, workdir=Path(d)) as dns:
            print(dns, "pid", os.getpid())
            out = subprocess.run(["dig", "+short", "-p", str(dns.port), "@127.0.0.1",
                                  "AAAA", "2.debian.pool.ntp.org"], capture_output=True,
                                 text=True)
            print(out.stdout)
