"""A harvesting pool server and its scanner, as seen in 2016 (README, "Why").

Runs inside the lab's "internet" namespace: an AF_PACKET socket sees every IPv6 packet that
reaches the namespace, and any packet whose destination is a harvester address (any protocol,
any port: the 2016 harvesters reacted to an empty UDP packet to port 321 too) has its source
recorded. After a random lag the source is handed to the scanner namespace, which runs a real
`nmap` sweep of ~100 ports from a random address of its own prefix. A source scanned recently
is not scanned again (the cooldown the real scanners showed).

Everything that happens is appended to the ground-truth file as JSON lines, so tests can check
ntpguard's verdicts against what really happened:
  {"event": "ready", ...}
  {"event": "contact", "t": ..., "source": ..., "harvester": ..., "proto": 17, "dport": 123}
  {"event": "harvest", "t": ..., "source": ..., "harvester": ..., "lag": ..., "due": ...}
  {"event": "scan", "t_start": ..., "t_end": ..., "target": ..., "scanner": ..., "rc": 0, ...}

Run: ip netns exec INET python3 -m lab.harvester CONFIG.json   (stop with SIGTERM)
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Optional

ETH_P_ALL = 0x0003
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4


def parse_ipv6(frame: bytes) -> Optional[tuple[str, str, int, int]]:
    """(source, destination, next header, destination port or 0) of an Ethernet/IPv6 frame.

    Pure, so the parsing is tested without sockets. Extension headers are not walked: the
    lab's NTP and scan traffic carries none, and the port only goes into the ground truth.
    """
    if len(frame) < 54 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IPV6:
        return None
    ip = frame[14:]
    if ip[0] >> 4 != 6:
        return None
    nxt = ip[6]
    src = str(ipaddress.IPv6Address(ip[8:24]))
    dst = str(ipaddress.IPv6Address(ip[24:40]))
    dport = struct.unpack("!H", ip[42:44])[0] if nxt in (6, 17) and len(ip) >= 44 else 0
    return src, dst, nxt, dport


class Truth:
    """Append-only JSON lines; one write() per line so lines from threads never interleave."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lock = threading.Lock()

    def write(self, **event: Any) -> None:
        line = (json.dumps(event, sort_keys=True) + "\n").encode()
        with self.lock:
            os.write(self.fd, line)


class Harvester:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.harvesters = {str(ipaddress.IPv6Address(a)) for a in cfg["harvesters"]}
        self.scan_ns: str = cfg["scan_ns"]
        self.scan_dev: str = cfg["scan_dev"]
        self.scanners: list[str] = cfg["scanners"]
        self.lag = (float(cfg["lag_min"]), float(cfg["lag_max"]))
        self.cooldown = float(cfg["cooldown"])
        self.ports: str = cfg.get("ports", "1-120")
        self.ignore = [ipaddress.ip_network(n) for n in cfg.get("ignore_sources", [])]
        self.rng = random.Random(cfg.get("seed", 0))
        self.truth = Truth(cfg["truth"])
        self.last_scheduled: dict[str, float] = {}
        self.last_contact: dict[tuple[str, str, int], float] = {}
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def seen(self, src: str, dst: str, proto: int, dport: int, now: float) -> None:
        """One packet to a harvester: record it, and schedule a scan unless in cooldown."""
        if any(ipaddress.IPv6Address(src) in n for n in self.ignore):
            return
        key = (src, dst, dport)
        # Contacts are deduplicated per second (chrony's iburst sends 4 in ~6 s).
        if now - self.last_contact.get(key, 0.0) >= 1.0:
            self.last_contact[key] = now
            self.truth.write(event="contact", t=now, source=src, harvester=dst, proto=proto,
                             dport=dport)
        last = self.last_scheduled.get(src)
        if last is not None and now - last < self.cooldown:
            return
        self.last_scheduled[src] = now
        lag = self.rng.uniform(*self.lag)
        scanner = self.rng.choice(self.scanners)
        self.truth.write(event="harvest", t=now, source=src, harvester=dst, lag=lag,
                         due=now + lag, scanner=scanner)
        th = threading.Thread(target=self.scan, args=(src, dst, now, lag, scanner), daemon=True)
        th.start()
        self.threads.append(th)

    def scan(self, target: str, harvester: str, trigger_t: float, lag: float,
             scanner: str) -> None:
        if self.stopping.wait(max(0.0, trigger_t + lag - time.time())):
            return
        cmd = ["ip", "netns", "exec", self.scan_ns, "nmap", "-6", "-n", "-sS", "-Pn",
               "-p", self.ports, "--max-retries", "0", "-e", self.scan_dev, "-S", scanner,
               target]
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        end = time.time()
        open_ports = [line.split("/")[0] for line in proc.stdout.splitlines()
                      if "/tcp" in line and " open " in line]
        self.truth.write(event="scan", t_start=start, t_end=end, target=target,
                         scanner=scanner, harvester=harvester, trigger_t=trigger_t, lag=lag,
                         ports=self.ports, rc=proc.returncode, open=open_ports,
                         error=proc.stderr.strip()[-300:] if proc.returncode else "")

    def run(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.settimeout(0.5)
        self.truth.write(event="ready", t=time.time(), pid=os.getpid(),
                         harvesters=sorted(self.harvesters))
        while not self.stopping.is_set():
            try:
                frame, addr = sock.recvfrom(65535)
            except socket.timeout:
                continue
            except InterruptedError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            parsed = parse_ipv6(frame)
            if parsed is None or parsed[1] not in self.harvesters:
                continue
            self.seen(parsed[0], parsed[1], parsed[2], parsed[3], time.time())
        sock.close()


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        cfg = json.load(fh)
    h = Harvester(cfg)
    signal.signal(signal.SIGTERM, lambda *_: h.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: h.stopping.set())
    h.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
