"""A firewall log generator with ground truth, for the detector's tests and benchmark.

Hosts with rotating temporary IPv6 addresses poll 4-7 pool servers (new servers at each
rotation, as after re-resolving); harvesters among the servers report each new client address
with their own probability and lag, and their scanner sweeps it once (cooldown). Around that:
unrelated scans (some from the same scanner /64, some slow), inbound noise, IPv4 lines, other
kernel messages and truncated lines. Lines look like the kernel's LOG output (IPv6 fully
expanded, trailing space) in a traditional syslog or RFC 3339 envelope.
"""

from __future__ import annotations

import heapq
import ipaddress
import json
import random
import subprocess
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

SCANNER_NET = "2604:a880:800:10::"  # the 2016 scan6.shodan.io /64


@dataclass
class Scenario:
    hosts: int = 1
    servers: int = 60
    harvesters: int = 3
    duration: float = 3 * 86400.0
    address_lifetime: float = 86400.0      # temporary address rotation (RFC 4941 default: 1 day)
    servers_per_address: tuple[int, int] = (4, 7)
    poll: float = 256.0                    # NTP poll interval
    harvest_rate: tuple[float, float] = (0.8, 1.0)   # per-harvester P(scan | new address)
    lag: tuple[float, float] = (5.0, 60.0)           # per-harvester lag range
    # Share of harvests at the address's first packet to the harvester; the rest at a later
    # poll (harvesters that sample, skip or rate-limit).
    first_packet: float = 1.0
    # "address": the scanner sweeps an address once, whoever reported it (2016's cooldown);
    # "harvester": once per harvester that reported it.
    cooldown: str = "address"
    # Each harvester is in exactly this many addresses' server groups (0: by chance).
    sightings: int = 0
    # When a host's address changes, its servers see the new one: "burst", all within
    # seconds (the daemon restarted with it, as at boot); "poll", each at its own next poll,
    # 0-`poll` s later (chrony and ntpd pick the source address per request, so a running
    # daemon moves to a new temporary address server by server). A host's first address is
    # always met in a burst (the daemon starts with it).
    rotation: str = "burst"
    unrelated_scans_per_day: float = 1.0
    unrelated_active: float = 0.0          # share of unrelated scans of an address in use
    slow_scan_share: float = 0.0           # unrelated scans spread over minutes
    noise_per_hour: float = 60.0           # single inbound drops from random sources
    inbound_ntp_per_hour: float = 0.0      # NTP from the internet to addresses in use
    ipv4_share: float = 0.2                # of noise lines
    kernel_other_per_hour: float = 5.0
    malformed_per_hour: float = 2.0
    gateway: bool = False                  # forwarded lines (IN=lan OUT=wan) for LAN hosts
    lan_prefixes: int = 0                  # 0: a /64 per host; else the LAN's /64s
    envelope: str = "syslog"               # syslog | rfc3339 | journal (journalctl -o json)
    start: float = 1_760_000_000.0


@dataclass
class Truth:
    harvesters: set[str] = field(default_factory=set)
    servers: list[str] = field(default_factory=list)
    harvester_scans: int = 0
    unrelated_scans: int = 0
    lines: int = 0
    scans_by: dict[str, int] = field(default_factory=dict)  # harvester → scans it triggered


def _addr(rng: random.Random, prefix: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(int(ipaddress.IPv6Address(prefix)) | rng.getrandbits(64))


def generate(sc: Scenario, seed: int, truth: Optional[Truth] = None) -> Iterator[str]:
    """Lines in time order; fills `truth` (if given) as it goes."""
    rng = random.Random(seed)
    truth = truth if truth is not None else Truth()
    servers = [str(ipaddress.IPv6Address((0x2001_0db8_1000 + i) << 80 | rng.getrandbits(64)))
               for i in range(sc.servers)]
    truth.servers = servers
    harvesters = {s: (rng.uniform(*sc.harvest_rate), rng.uniform(*sc.lag))
                  for s in rng.sample(servers, sc.harvesters)}
    truth.harvesters = set(harvesters)
    truth.scans_by = dict.fromkeys(harvesters, 0)
    end = sc.start + sc.duration
    events: list[tuple[float, int, str]] = []  # (time, seq, line)
    seq = 0

    def push(t: float, line: str) -> None:
        nonlocal seq
        if t < end:
            heapq.heappush(events, (t, seq, line))
            seq += 1

    # A host's own packets leave by eth0 (IN= empty); a gateway forwards its LAN's (eth1)
    # to the internet (eth0) and the scans back.
    out_if, in_if = ("eth0", "eth1") if sc.gateway else ("eth0", "")
    inbound = f"IN=eth0 OUT={'eth1' if sc.gateway else ''}"

    def ntp_line(src: str, dst: str, sport: int) -> str:
        return _packet(f"IN={in_if} OUT={out_if}" if sc.gateway else f"IN= OUT={out_if}",
                       "ntpguard-out: ", src, dst, "UDP", sport, 123, with_mac=sc.gateway)

    def scan_lines(t: float, target: str, ports: int, spread: float, scanner: str) -> None:
        for port in rng.sample(range(1, 65536), ports):
            push(t + rng.uniform(0, spread),
                 _packet(inbound, "ntpguard-in: ", scanner, target,
                         rng.choice(("TCP", "TCP", "UDP")), rng.randrange(32768, 61000), port,
                         with_mac=True))

    def host_prefix(h: int) -> str:
        if sc.lan_prefixes:
            return f"2001:db8:a000:{h % sc.lan_prefixes + 1:x}::"
        return f"2001:db8:{0xa000 + h:x}:1::"

    # Addresses (host, address, from, to) and the servers each polls.
    lives: list[tuple[int, str, float, float]] = []
    for h in range(sc.hosts):
        t = sc.start + rng.uniform(0, sc.poll)
        while t < end:
            life_end = t + sc.address_lifetime * rng.uniform(0.8, 1.2)
            lives.append((h, str(_addr(rng, host_prefix(h))), t, life_end))
            t = life_end
    pool = [s for s in servers if s not in harvesters] if sc.sightings else servers
    groups = [rng.sample(pool, min(rng.randint(*sc.servers_per_address), len(pool)))
              for _ in lives]
    if sc.sightings:
        for server in harvesters:
            for i in rng.sample(range(len(lives)), min(sc.sightings, len(lives))):
                groups[i].append(server)
    firsts = {min(t for h2, _, t, _ in lives if h2 == h) for h in range(sc.hosts)
              if any(h2 == h for h2, _, _, _ in lives)}
    for (_, address, t, life_end), group in zip(lives, groups):
        spread = sc.poll if sc.rotation == "poll" and t not in firsts else 8.0
        # The scans this address would get, by harvester; with cooldown "address" only the
        # first of them in time happens (the scanner has swept it when the others report it).
        due: list[tuple[float, str]] = []
        for server in group:
            first = t + rng.uniform(0, spread)  # iburst within seconds, or the next poll
            polls = []
            pt = first
            sport = 123 if rng.random() < 0.5 else rng.randrange(32768, 61000)
            while pt < min(life_end, end):
                push(pt, ntp_line(address, server, sport))
                polls.append(pt)
                pt += sc.poll * rng.uniform(0.9, 1.1)
            if server not in harvesters or not polls:
                continue
            rate, lag = harvesters[server]
            if rng.random() >= rate:
                continue
            seen = polls[0] if rng.random() < sc.first_packet or len(polls) == 1 else \
                polls[min(1 + int(rng.expovariate(0.5)), len(polls) - 1)]
            due.append((seen + lag * rng.uniform(0.7, 1.3), server))
        for st, server in sorted(due)[:1] if sc.cooldown == "address" else due:
            if st < end:
                truth.harvester_scans += 1
                truth.scans_by[server] += 1
                scan_lines(st, address, rng.randint(100, 120), 1.0,
                           str(_addr(rng, SCANNER_NET)))
    # Unrelated scans of the hosts' prefixes: a random address of a host's /64 (learned
    # nowhere we can see) or, for `unrelated_active`, an address in use (learned elsewhere);
    # half from the harvesters' scanner /64.
    n = int(sc.unrelated_scans_per_day * sc.duration / 86400 + rng.random())
    for _ in range(n):
        st = rng.uniform(sc.start, end)
        active = [a for _, a, t0, t1 in lives if t0 <= st < t1]
        if active and rng.random() < sc.unrelated_active:
            target = rng.choice(active)
        else:
            target = str(_addr(rng, host_prefix(rng.randrange(sc.hosts))))
        slow = rng.random() < sc.slow_scan_share
        scanner = str(_addr(rng, SCANNER_NET if rng.random() < 0.5 else "2a0b:4340:1::"))
        scan_lines(st, target, rng.randint(20, 60) if slow else rng.randint(30, 200),
                   600.0 if slow else 2.0, scanner)
        truth.unrelated_scans += 1
    # Background.
    hours = sc.duration / 3600

    def rand_times(per_hour: float) -> list[float]:
        return [rng.uniform(sc.start, end) for _ in range(int(per_hour * hours))]

    for t in rand_times(sc.noise_per_hour):
        if rng.random() < sc.ipv4_share:
            src = str(ipaddress.IPv4Address(rng.getrandbits(32)))
            dst = "198.51.100.7"
        else:
            src = str(_addr(rng, f"2a0{rng.randrange(10)}:{rng.getrandbits(16):x}::"))
            dst = str(_addr(rng, host_prefix(rng.randrange(sc.hosts))))
        push(t, _packet("IN=eth0 OUT=", "ntpguard-in: ", src, dst, "TCP",
                        rng.randrange(1024, 65535), rng.choice((22, 23, 80, 443, 3389, 8080)),
                        with_mac=True))
    # Inbound NTP (amplification scanners, research probes) to addresses in use: never a
    # contact, whatever its ports.
    for t in rand_times(sc.inbound_ntp_per_hour):
        active = [a for _, a, t0, t1 in lives if t0 <= t < t1]
        if not active:
            continue
        src = str(_addr(rng, f"2a0{rng.randrange(10)}:{rng.getrandbits(16):x}::"))
        push(t, _packet(inbound, "ntpguard-in: ", src, rng.choice(active), "UDP",
                        rng.choice((123, rng.randrange(1024, 65535))), 123, with_mac=True))
    for t in rand_times(sc.kernel_other_per_hour):
        push(t, "usb 1-1.2: new high-speed USB device number 7 using xhci_hcd")
    for t in rand_times(sc.malformed_per_hour):
        line = _packet("IN=eth0 OUT=", "ntpguard-in: ", "2001:db8::1", "2001:db8::2", "UDP",
                       1234, 5678, with_mac=True)
        push(t, line[: rng.randrange(10, len(line) - 20)])
    fmt = _envelope(sc.envelope)
    while events:
        t, _, line = heapq.heappop(events)
        truth.lines += 1
        yield fmt(t, line)


def _packet(ifaces: str, prefix: str, src: str, dst: str, proto: str, sport: int, dport: int,
            with_mac: bool) -> str:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    mac = "MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd " if with_mac else ""
    if a.version == 6:
        ip = (f"SRC={a.exploded} DST={b.exploded} LEN=80 TC=0 HOPLIMIT=56 FLOWLBL=0 ")
    else:
        ip = f"SRC={a} DST={b} LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=4242 DF "
    if proto == "TCP":
        l4 = f"PROTO=TCP SPT={sport} DPT={dport} WINDOW=1024 RES=0x00 SYN URGP=0 "
    else:
        l4 = f"PROTO=UDP SPT={sport} DPT={dport} LEN=56 "
    return f"{prefix}{ifaces} {mac}{ip}{l4}"


def _envelope(kind: str):
    boot = 1_759_990_000.0
    if kind == "journal":
        cursor = iter(range(1, 1 << 62))

        def fmt(t: float, msg: str) -> str:
            return json.dumps({"__CURSOR": f"s=0;i={next(cursor):x}",
                               "__REALTIME_TIMESTAMP": str(int(t * 1e6)),
                               "_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "kernel",
                               "PRIORITY": "4", "MESSAGE": msg},
                              separators=(",", ":"))  # as journalctl writes them
        return fmt
    if kind == "rfc3339":
        def fmt(t: float, msg: str) -> str:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
            return f"{stamp}.{int(t % 1 * 1e6):06d}+00:00 host kernel: {msg}"
        return fmt

    def fmt(t: float, msg: str) -> str:
        lt = time.localtime(t)
        stamp = f"{time.strftime('%b', lt)} {lt.tm_mday:2d} {time.strftime('%H:%M:%S', lt)}"
        return f"{stamp} host kernel: [{t - boot:12.6f}] {msg}"
    return fmt


# The attribution scenarios (benchmarks/attribution.py runs many seeds of each; the tests a few).
ATTRIBUTION = {
    # A 4-host site: 3 of 40 servers harvest 90% of the addresses they see, and their scanner
    # sweeps an address once per harvester that reported it; lags 3-60 s; NTP from the
    # internet at the hosts' addresses.
    "site": Scenario(hosts=4, servers=40, harvesters=3, harvest_rate=(0.9, 0.9),
                     cooldown="harvester", lag=(4.3, 46.0), duration=4 * 86400,
                     address_lifetime=6 * 3600, inbound_ntp_per_hour=300,
                     unrelated_scans_per_day=4, unrelated_active=0.5),
    # journalctl -o json from 12 hosts: 5 of 60 servers at 70%, some after a later poll, lags
    # up to 180 s; 20 unrelated scans an hour, half from the harvesters' scanner /64;
    # addresses rotating every 20 minutes.
    "journal": Scenario(hosts=12, servers=60, harvesters=5, harvest_rate=(0.7, 0.7),
                        first_packet=0.8, lag=(8.0, 138.0), duration=86400,
                        address_lifetime=1200, unrelated_scans_per_day=480,
                        inbound_ntp_per_hour=100, envelope="journal", poll=64.0),
    # The same, but a quarter of the unrelated scans hit addresses in use (their scanners
    # learned them elsewhere): beyond the targets, shown to say where the model strains.
    "journal-active": Scenario(hosts=12, servers=60, harvesters=5, harvest_rate=(0.7, 0.7),
                               first_packet=0.8, lag=(8.0, 138.0), duration=86400,
                               address_lifetime=1200, unrelated_scans_per_day=480,
                               unrelated_active=0.25, inbound_ntp_per_hour=100,
                               envelope="journal", poll=64.0),
    # Two hosts polling every 1024 s; the one harvester is met twice.
    "sparse": Scenario(hosts=2, servers=30, harvesters=1, harvest_rate=(0.9, 1.0),
                       sightings=2, poll=1024.0, duration=4 * 86400,
                       address_lifetime=86400, unrelated_scans_per_day=2),
    # A gateway forwarding for 40 hosts in one LAN /64: 8 of 120 servers harvest half of
    # the addresses they see, lags up to 240 s; no [detect] configuration (sides learned).
    "gateway": Scenario(hosts=40, servers=120, harvesters=8, harvest_rate=(0.5, 0.5),
                        first_packet=0.9, lag=(10.0, 185.0), duration=2 * 86400,
                        address_lifetime=8 * 3600, gateway=True, lan_prefixes=1, poll=128.0,
                        inbound_ntp_per_hour=200, unrelated_scans_per_day=24,
                        unrelated_active=0.3),
}

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"


def write_journal(path: str, lines: Iterable[str]) -> int:
    """A real journal file of kernel messages (what journald writes), made from `journalctl -o
    json` lines by systemd-journal-remote (Debian package systemd-journal-remote); read it
    with `journalctl --file`. Returns the number of entries."""
    proc = subprocess.Popen([JOURNAL_REMOTE, "-o", path, "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    n = 0
    buf = []
    for line in lines:
        rec = json.loads(line)
        n += 1
        buf.append(f"__CURSOR=s=0;i={n:x}\n__REALTIME_TIMESTAMP={rec['__REALTIME_TIMESTAMP']}\n"
                   f"__MONOTONIC_TIMESTAMP={n}\n_BOOT_ID={'0' * 31}1\n_TRANSPORT=kernel\n"
                   f"_HOSTNAME=gw\nSYSLOG_IDENTIFIER=kernel\nPRIORITY=4\n"
                   f"MESSAGE={rec['MESSAGE']}\n\n")
        if len(buf) >= 4096:
            proc.stdin.write("".join(buf).encode())
            buf.clear()
    proc.stdin.write("".join(buf).encode())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"{JOURNAL_REMOTE} failed")
    return n
