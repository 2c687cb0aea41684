"""The lab world: an NTP pool with harvesters, a scanner, and a protected host, all in namespaces.

    ┌──────────── scan ────────────┐        ┌──────────── host ─────────────────────┐
    │ scanner prefix 2001:db8:5ca::/64 │    │ 2001:db8:4057:1::/64, RFC 4941 temporary │
    │ nmap, started by the harvester │      │ addresses; chronyd client; nft log →    │
    └──────────────┬───────────────┘        │ ulogd2 (LOGEMU text + JSON)            │
                   │ veth                   └──────────────┬────────────────────────┘
    ┌──────────────┴──────────── inet (router) ────────────┴───┐
    │ PowerDNS: 0-3.debian.pool.ntp.org (rotating 4-subsets)     │
    │ one chronyd -x serving every NTP server address on lo      │
    │ harvester: AF_PACKET sniffer → lag → scan → ground truth    │
    └────────────────────────────────────────────────────────────┘

Gateway topology (`WorldSpec(topology="gateway")`): the host is replaced by a router `gw`
(where ntpguard runs, in gateway mode, and where the firewall log is written: its FORWARD hook
sees the LAN's NTP and the scans) with LAN clients `lan1`, `lan2`... behind it, each in its own
/64 with temporary addresses and its own chronyd.

Nothing is connected to the root namespace. Every name starts with the world's prefix, so a
crashed run is cleaned up by the next one (`lab.netns.cleanup(prefix)` in `Lab.__init__`).
Addresses are documentation ones (2001:db8::/32, 192.0.2.0/24, ...): ntpguard needs
`pool.allow_nonglobal = true` in the lab.

Files (under workdir): truth.jsonl (ground truth, see lab.harvester), world.json (the servers,
which are harvesters), GUARD/firewall.log (LOGEMU) and GUARD/firewall.json (ulogd2 JSON),
where GUARD is `host` or `gw`, and
every daemon's own log, all printed by `World.dump_logs()` when a test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from lab.netns import Lab, Namespace
from lab.pooldns import PoolDNS, pool_zones

ROOT = Path(__file__).resolve().parent.parent

DNS_ADDR = "2001:db8:53::53"
HOST_NET = "2001:db8:4057:1::/64"
HOST_GW = "2001:db8:4057:1::1"
HOST_STABLE = "2001:db8:4057:1::100"
HOST_V4, HOST_V4_GW = "192.0.2.100", "192.0.2.1"
# Gateway topology: uplink gw <-> inet, and one /64 per LAN client.
UPLINK_GW, UPLINK_ROUTER = "2001:db8:4057:ff::1", "2001:db8:4057:ff::2"
SITE_NET = "2001:db8:4057::/48"
SITE_V4 = "10.57.0.0/16"
SCAN_NET = "2001:db8:5ca::/64"
SCAN_GW = "2001:db8:5ca::1"
LOG_GROUP_TEXT, LOG_GROUP_JSON = 7, 8
# The lab's observer rules log with these prefixes; ntpguard's own rules use "ntpguard-...".
LOG_PREFIX_OUT = "lab-ntp-out: "
LOG_PREFIX_IN = "lab-in: "


class WorldError(RuntimeError):
    """The lab could not be built (a daemon did not start, a command failed)."""


@dataclass
class WorldSpec:
    """What to build. Defaults make a run that sees its first scan within ~10 s."""

    seed: int = 1
    prefix: str = "ntpg-l-"
    operators: int = 18            # each holds one /48 with 1-3 IPv6 NTP servers
    harvesters: int = 4            # how many of those addresses harvest
    v4_servers: int = 8            # IPv4-only servers in 0., 1., 3.
    lag_min: float = 1.0           # seconds from first packet to scan (2016: 6-47 s)
    lag_max: float = 5.0
    cooldown: float = 60.0         # a source is not scanned again within this
    scan_ports: str = "1-120"
    scanners: int = 4              # scanner addresses in SCAN_NET
    ttl: int = 150                 # DNS TTL of the pool answers
    temp_prefered_lft: int = 30    # RFC 4941 rotation; kernel needs > regen_advance (~5 s)
    temp_valid_lft: int = 120
    chrony_client: bool = True     # start the protected host's time daemon
    chrony_minpoll: int = 1        # lab-fast polling (2 s .. 8 s); a real host polls 64 s+
    chrony_maxpoll: int = 3
    topology: str = "host"         # "host", "gateway" or "fleet"
    lan_clients: int = 2           # gateway topology only
    fleet_hosts: int = 3           # fleet topology only


@dataclass
class Server:
    address: str
    operator: str              # its /48
    harvester: bool = False


def plan_servers(spec: WorldSpec) -> list[Server]:
    """Deterministic server layout for a seed: operators' /48s, addresses, which harvest.

    Pure. Harvesters are spread over operators that also run clean servers in the same /48,
    so a verdict that blocks a whole /48 marks a clean server: the lab catches that mistake.
    """
    rng = random.Random(spec.seed)
    nets = rng.sample(range(0x100, 0xF000), spec.operators)
    servers: list[Server] = []
    for net in nets:
        op = f"2001:db8:{net:x}::/48"
        for _ in range(rng.choice((1, 1, 2, 3))):
            host = ipaddress.IPv6Address(f"2001:db8:{net:x}::") + rng.randrange(1, 1 << 32)
            servers.append(Server(str(host), op))
    if spec.harvesters > len(servers):
        raise WorldError(f"{spec.harvesters} harvesters but only {len(servers)} servers")
    for s in rng.sample(servers, spec.harvesters):
        s.harvester = True
    for i in range(spec.v4_servers):
        net = ("198.51.100", "203.0.113")[i % 2]
        servers.append(Server(f"{net}.{10 + i}", f"{net}.0/24"))
    return servers


def chrony_server_conf(workdir: Path) -> str:
    return "\n".join([
        "# lab pool servers: one chronyd -x answers on every address of the namespace",
        "local stratum 2",
        "allow all",
        "port 123",
        "cmdport 0",
        "bindcmdaddress /",
        f"pidfile {workdir}/chronyd.pid",
        "",
    ])


def start_chrony_server(ns: Namespace, workdir: Path, **popen: Any) -> subprocess.Popen:
    """One chronyd -x answering NTP on every address of the namespace (the lab's pool
    servers); its config and pid file in workdir."""
    # chronyd drops to _chrony: its pid file dir must be writable by it.
    shutil.chown(workdir, user="_chrony", group="_chrony")
    (workdir / "chronyd.conf").write_text(chrony_server_conf(workdir))
    return ns.popen(["chronyd", "-x", "-d", "-f", str(workdir / "chronyd.conf")], **popen)


def chrony_client_conf(spec: WorldSpec) -> str:
    """Debian 12's /etc/chrony/chrony.conf, with lab-fast polling."""
    poll = f"minpoll {spec.chrony_minpoll} maxpoll {spec.chrony_maxpoll}"
    return "\n".join([
        "# Debian's default pool line (lab: faster polling)",
        f"pool 2.debian.pool.ntp.org iburst {poll}",
        "# ntpguard timeconf --write puts ntpguard.sources here; `chronyc reload sources`",
        "sourcedir /etc/chrony/sources.d",
        "keyfile /etc/chrony/chrony.keys",
        "# (no driftfile/logdir: chronyd -x never adjusts the clock, and nothing of the lab",
        "# may land in the root namespace's /var)",
        "maxupdateskew 100.0",
        "makestep 1 3",
        "leapsectz right/UTC",
        "",
    ])


def nft_observer(gateway: bool = False, prefix_out: str = LOG_PREFIX_OUT,
                 prefix_in: str = LOG_PREFIX_IN) -> str:
    """The guard's logging: outbound NTP and every new inbound connection.

    Only `log` statements, no verdicts: the lab observes and ntpguard's own table decides.
    Each rule logs to two NFLOG groups (ulogd2 LOGEMU text and JSON; a ulogd2 stack is a
    line, so one group per output). queue-threshold 1: NFLOG batches ~1 s without it. A gateway
    also logs what it forwards: the LAN's NTP out, new connections into the LAN.
    """
    def log(prefix: str) -> str:
        return " ".join(
            f'log prefix "{prefix}" group {g} queue-threshold 1'
            for g in (LOG_GROUP_TEXT, LOG_GROUP_JSON)
        )

    forward = f"""
    chain forward {{
        type filter hook forward priority -50; policy accept;
        iifname "lan*" udp dport 123 {log(prefix_out)}
        oifname "lan*" ct state new meta l4proto {{ tcp, udp }} {log(prefix_in)}
    }}""" if gateway else ""
    return f"""
table inet lab_observe {{
    chain output {{
        type filter hook output priority -50; policy accept;
        udp dport 123 {log(prefix_out)}
    }}
    chain input {{
        type filter hook input priority -50; policy accept;
        ct state new iifname != "lo" meta l4proto {{ tcp, udp }} {log(prefix_in)}
    }}{forward}
}}
"""


def ulogd_conf(workdir: Path) -> str:
    plug = "/usr/lib/x86_64-linux-gnu/ulogd"
    plugins = ["inppkt_NFLOG", "raw2packet_BASE", "filter_IFINDEX", "filter_IP2STR",
               "filter_PRINTPKT", "output_LOGEMU", "output_JSON"]
    lines = ["[global]", f'logfile="{workdir}/ulogd.log"', "loglevel=3"]
    lines += [f'plugin="{plug}/ulogd_{p}.so"' for p in plugins]
    lines += [
        "stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU",
        "stack=log2:NFLOG,base2:BASE,ifi2:IFINDEX,ip2str2:IP2STR,json1:JSON",
        "[log1]", f"group={LOG_GROUP_TEXT}",
        "[log2]", f"group={LOG_GROUP_JSON}",
        "[emu1]", f'file="{workdir}/firewall.log"', "sync=1",
        "[json1]", f'file="{workdir}/firewall.json"', "sync=1",
        "[ip2str1]", "[ip2str2]",
    ]
    return "\n".join(lines) + "\n"


def run_in(ns: Namespace, cmd: list[str], run_dir: Path) -> list[str]:
    """A command line that runs cmd in ns with run_dir mounted over /run.

    chronyd and chronyc meet at /run/chrony/chronyd.sock, as on a real host; `ip netns exec`
    already gives the command a private (slave) mount namespace, so the bind mount is seen
    by this command only and never by the root namespace.
    """
    script = 'mount --bind "$0" /run && exec "$@"'
    return ["ip", "netns", "exec", ns.name, "sh", "-c", script, str(run_dir), *cmd]


@dataclass
class Client:
    """A machine whose NTP traffic reaches the pool: the host itself, or a LAN client."""

    ns: Namespace
    dir: Path
    net: str          # its /64
    gw: str           # its IPv6 default gateway
    stable: str       # the mngtmpaddr address temporary addresses are made from

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"


class World:
    """Build, run and tear down one lab world. A context manager; teardown always runs.

    `guard` is where ntpguard runs and the firewall log is written (the host, or the
    gateway); `clients` are where NTP traffic starts (the host, or the LAN clients); `host`
    is the first client.
    """

    def __init__(self, spec: WorldSpec, workdir: Path) -> None:
        if spec.topology not in ("host", "gateway", "fleet"):
            raise WorldError(f"unknown topology {spec.topology!r}")
        self.spec = spec
        self.workdir = Path(workdir)
        self.servers = plan_servers(spec)
        self.lab: Optional[Lab] = None
        self.dns: Optional[PoolDNS] = None
        rng = random.Random(spec.seed + 1)
        self.scanners = [f"2001:db8:5ca::{0xb001 + i:x}" for i in range(spec.scanners)]
        rng.shuffle(self.scanners)
        self.clients: list[Client] = []
        self.guard_client: Optional[Client] = None  # the gateway's own chronyd
        self.ca_file: Optional[Path] = None  # fleet: the lab CA the collector's cert is from
        self._nginx: Optional[subprocess.Popen] = None
        self._rng = random.Random(spec.seed + 2)
        self.inet: Namespace
        self.scan: Namespace
        self.guard: Namespace

    # -- what the world is ---------------------------------------------------------------
    @property
    def gateway(self) -> bool:
        return self.spec.topology == "gateway"

    @property
    def fleet(self) -> bool:
        return self.spec.topology == "fleet"

    @property
    def harvesters(self) -> list[str]:
        return [s.address for s in self.servers if s.harvester]

    @property
    def clean(self) -> list[str]:
        return [s.address for s in self.servers if not s.harvester]

    @property
    def zones(self) -> dict[str, list[str]]:
        v6 = [s.address for s in self.servers if ":" in s.address]
        v4 = [s.address for s in self.servers if ":" not in s.address]
        return pool_zones(v6, v4)

    @property
    def host(self) -> Namespace:
        return self.clients[0].ns

    @property
    def guard_dir(self) -> Path:
        return self.workdir / ("gw" if self.gateway else "coll" if self.fleet else "host")

    @property
    def truth_path(self) -> Path:
        return self.workdir / "truth.jsonl"

    @property
    def firewall_log(self) -> Path:
        return self.guard_dir / "firewall.log"

    @property
    def firewall_json(self) -> Path:
        return self.guard_dir / "firewall.json"

    @property
    def guard_run(self) -> Path:
        return self.guard_dir / "run"

    # -- build ---------------------------------------------------------------------------
    def start(self) -> World:
        try:
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self) -> None:
        spec, w = self.spec, self.workdir
        if w.exists():
            shutil.rmtree(w)
        for d in ("inet", "scan"):
            (w / d).mkdir(parents=True)
        (w / "world.json").write_text(json.dumps({
            "spec": asdict(spec),
            "servers": [asdict(s) for s in self.servers],
            "scanners": self.scanners, "scan_net": SCAN_NET, "dns": DNS_ADDR,
            "host_net": HOST_NET if not self.gateway else SITE_NET,
        }, indent=1))
        self.lab = Lab(spec.prefix)
        self.inet, self.scan = self.lab.ns("inet"), self.lab.ns("scan")
        self._core_network()
        if self.gateway:
            self._gateway_network()
        elif self.fleet:
            self._fleet_network()
        else:
            self._host_network()
        self._internet()
        if self.fleet:
            for c in self.clients:
                self._logging(c.ns, c.dir, False)
            self._fleet_services()
        else:
            self._logging(self.guard, self.guard_dir, self.gateway)
        for c in self.clients:
            self._wait(lambda c=c: bool(self.temp_addresses(c)), f"{c.ns.name} temporary address")
        if spec.chrony_client:
            for c in self.clients:
                self.start_chrony_client(c)
            if self.guard_client is not None:
                self.start_chrony_client(self.guard_client)

    def _core_network(self) -> None:
        lab, inet, scan = self.lab, self.inet, self.scan
        assert lab is not None
        lab.link(inet, "s0", scan, "eth0")
        inet.sysctl("net.ipv6.conf.all.forwarding", "1")
        inet.sysctl("net.ipv4.ip_forward", "1")
        inet.addr("s0", SCAN_GW + "/64")
        inet.addr("lo", DNS_ADDR + "/128")
        for s in self.servers:
            inet.addr("lo", s.address + ("/128" if ":" in s.address else "/32"))
        for a in self.scanners:
            scan.addr("eth0", a + "/64")
        scan.run("ip", "-6", "route", "add", "default", "via", SCAN_GW)

    def _temp_sysctls(self, ns: Namespace) -> None:
        # Temporary addresses need use_tempaddr on the device before the mngtmpaddr address;
        # `default` makes a veth inherit it when it is created.
        ns.sysctl("net.ipv6.conf.default.use_tempaddr", "2")
        ns.sysctl("net.ipv6.conf.default.temp_prefered_lft", str(self.spec.temp_prefered_lft))
        ns.sysctl("net.ipv6.conf.default.temp_valid_lft", str(self.spec.temp_valid_lft))
        ns.sysctl("net.ipv6.conf.default.max_desync_factor", "1")

    def _client(self, ns: Namespace, dirname: str, net: str, gw: str, v4: str,
                v4_gw: str) -> Client:
        base = net.split("::/")[0]
        c = Client(ns, self.workdir / dirname, net, gw, f"{base}::100")
        for d in ("run", "etc/chrony/sources.d"):
            (c.dir / d).mkdir(parents=True, exist_ok=True)
        ns.run("ip", "-6", "addr", "add", c.stable + "/64", "dev", "eth0", "mngtmpaddr",
               "nodad")
        ns.addr("eth0", v4)
        ns.run("ip", "-6", "route", "add", "default", "via", gw)
        ns.run("ip", "route", "add", "default", "via", v4_gw)
        self._etc(ns, c.dir)
        self.clients.append(c)
        return c

    def _etc(self, ns: Namespace, d: Path) -> None:
        """/etc/netns/NAME/{resolv.conf,chrony}: bind-mounted over /etc by `ip netns exec`,
        so chronyd, chronyc and `ntpguard timeconf --write` there never touch the real /etc."""
        ns.resolv_conf(DNS_ADDR)
        (d / "etc/chrony/sources.d").mkdir(parents=True, exist_ok=True)
        (d / "etc/chrony/chrony.conf").write_text(chrony_client_conf(self.spec))
        (d / "etc/chrony/chrony.keys").write_text("")
        etc = Path(f"/etc/netns/{ns.name}/chrony")
        if etc.exists():
            shutil.rmtree(etc)
        shutil.copytree(d / "etc/chrony", etc)

    def _host_network(self) -> None:
        assert self.lab is not None
        host = self.lab.ns("host")
        self._temp_sysctls(host)
        self.lab.link(self.inet, "h0", host, "eth0")
        self.inet.addr("h0", HOST_GW + "/64")
        self.inet.addr("h0", HOST_V4_GW + "/24")
        self.guard = host
        c = self._client(host, "host", HOST_NET, HOST_GW, HOST_V4 + "/24", HOST_V4_GW)
        assert c.stable == HOST_STABLE

    def _gateway_network(self) -> None:
        lab, inet = self.lab, self.inet
        assert lab is not None
        gw = lab.ns("gw")
        self.guard = gw
        (self.workdir / "gw" / "run").mkdir(parents=True)
        lab.link(inet, "h0", gw, "wan0")
        inet.addr("h0", UPLINK_GW + "/64")
        inet.addr("h0", HOST_V4_GW + "/24")
        gw.addr("wan0", UPLINK_ROUTER + "/64")
        gw.addr("wan0", "192.0.2.2/24")
        gw.run("ip", "-6", "route", "add", "default", "via", UPLINK_GW)
        gw.run("ip", "route", "add", "default", "via", HOST_V4_GW)
        gw.sysctl("net.ipv6.conf.all.forwarding", "1")
        gw.sysctl("net.ipv4.ip_forward", "1")
        inet.run("ip", "-6", "route", "add", SITE_NET, "via", UPLINK_ROUTER)
        inet.run("ip", "route", "add", SITE_V4, "via", "192.0.2.2")
        # The router keeps its own time too (and ntpguard's timeconf on it needs a chronyd).
        self.guard_client = Client(gw, self.workdir / "gw", "2001:db8:4057:ff::/64", UPLINK_GW,
                                   UPLINK_ROUTER)
        self._etc(gw, self.workdir / "gw")
        for i in range(1, self.spec.lan_clients + 1):
            lan = lab.ns(f"lan{i}")
            self._temp_sysctls(lan)
            lab.link(gw, f"lan{i}", lan, "eth0")
            net = f"2001:db8:4057:{i:x}::/64"
            gw.addr(f"lan{i}", f"2001:db8:4057:{i:x}::1/64")
            gw.addr(f"lan{i}", f"10.57.{i}.1/24")
            self._client(lan, f"lan{i}", net, f"2001:db8:4057:{i:x}::1", f"10.57.{i}.100/24",
                         f"10.57.{i}.1")

    def _internet(self) -> None:
        w = self.workdir / "inet"
        os.chmod(w, 0o755)
        self.dns = PoolDNS(self.zones, listen=DNS_ADDR, port=53, workdir=w, ns=self.inet,
                           ttl=self.spec.ttl).start()
        with open(w / "chronyd.log", "ab") as log:
            start_chrony_server(self.inet, w, stdout=log, stderr=subprocess.STDOUT)
        cfg = {
            "harvesters": self.harvesters, "scan_ns": self.scan.name, "scan_dev": "eth0",
            "scanners": self.scanners, "lag_min": self.spec.lag_min,
            "lag_max": self.spec.lag_max, "cooldown": self.spec.cooldown,
            "ports": self.spec.scan_ports, "seed": self.spec.seed,
            "truth": str(self.truth_path),
        }
        (w / "harvester.json").write_text(json.dumps(cfg, indent=1))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(w / "harvester.log", "ab") as log:
            self.inet.popen([sys.executable, "-m", "lab.harvester", str(w / "harvester.json")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait(lambda: any(e["event"] == "ready" for e in self.truth()), "harvester")
        self._wait(lambda: self._ntp_answers(self.clean[0]), "chronyd server")

    def _logging(self, ns: Namespace, w: Path, gateway: bool) -> None:
        """ulogd2 and the observer's nft log rules where ntpguard runs (the guard, or each
        host of a fleet)."""
        (w / "state").mkdir(parents=True, exist_ok=True)
        (w / "ulogd.conf").write_text(ulogd_conf(w))
        with open(w / "ulogd.stderr", "ab") as log:
            ns.popen(["ulogd", "-c", str(w / "ulogd.conf")], stdout=log,
                     stderr=subprocess.STDOUT)
        ns.run("nft", "-f", "-", input=nft_observer(gateway=gateway))
        self._wait(lambda: (w / "firewall.log").exists() and (w / "firewall.json").exists(),
                   f"ulogd in {ns.name}")

    def _fleet_network(self) -> None:
        """Hosts h1..hN, each on a link of its own to the router, and the collector."""
        from lab import fleet

        lab, inet = self.lab, self.inet
        assert lab is not None
        for i in range(1, self.spec.fleet_hosts + 1):
            h = lab.ns(f"h{i}")
            self._temp_sysctls(h)
            lab.link(inet, f"f{i}", h, "eth0")
            net, gw, v4, v4_gw = fleet.host_net(i)
            inet.addr(f"f{i}", gw + "/64")
            inet.addr(f"f{i}", v4_gw + "/24")
            self._client(h, f"h{i}", net, gw, v4, v4_gw)
        coll = lab.ns("coll")
        self.guard = coll
        lab.link(inet, "c0", coll, "eth0")
        inet.addr("c0", fleet.COLL_GW + "/64")
        coll.addr("eth0", fleet.COLL_ADDR + "/64")
        coll.run("ip", "-6", "route", "add", "default", "via", fleet.COLL_GW)
        (self.guard_dir / "run").mkdir(parents=True)
        self._etc(coll, self.guard_dir)

    def _fleet_services(self) -> None:
        """The collector's rsyslogd and nginx (HTTPS with the lab CA), each host's rsyslogd."""
        from lab import fleet

        d = self.guard_dir
        for sub in ("rsyslog", "remote", "www", "nginx-tmp", "state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        ca, cert, key = fleet.make_certs(d / "tls")
        (d / "rsyslog.conf").write_text(fleet.rsyslog_collector_conf(d))
        with open(d / "rsyslog.log", "ab") as log:
            self.guard.popen(["rsyslogd", "-n", "-f", str(d / "rsyslog.conf"), "-i",
                              str(d / "rsyslog.pid")], stdout=log, stderr=subprocess.STDOUT)
        (d / "nginx.conf").write_text(fleet.nginx_conf(d, cert, key))
        with open(d / "nginx.log", "ab") as log:
            self._nginx = self.guard.popen(
                ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e",
                 str(d / "nginx-error.log"), "-g", "daemon off;"],
                stdout=log, stderr=subprocess.STDOUT)
        for c in self.clients:
            (c.dir / "rsyslog").mkdir(exist_ok=True)
            (c.dir / "rsyslog.conf").write_text(
                fleet.rsyslog_host_conf(c.dir, c.ns.name[len(self.spec.prefix):],
                                        c.dir / "firewall.log"))
            with open(c.dir / "rsyslog.log", "ab") as log:
                c.ns.popen(["rsyslogd", "-n", "-f", str(c.dir / "rsyslog.conf"), "-i",
                            str(c.dir / "rsyslog.pid")], stdout=log, stderr=subprocess.STDOUT)
        self._wait(lambda: (d / "nginx.pid").exists() and (d / "rsyslog.pid").exists(),
                   "collector's nginx and rsyslogd")
        self.ca_file = ca

    def start_chrony_client(self, client: Optional[Client] = None) -> None:
        c = client or self.clients[0]
        cmd = run_in(c.ns, ["chronyd", "-x", "-d", "-u", "root"], c.run_dir)
        with open(c.dir / "chronyd.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        c.ns.procs.append(proc)
        self._wait(lambda: (c.run_dir / "chrony" / "chronyd.sock").exists(),
                   f"chronyd client in {c.ns.name}")

    # -- helpers -------------------------------------------------------------------------
    def _wait(self, ok: Any, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ok():
                return
            time.sleep(0.1)
        raise WorldError(f"{what} not ready after {timeout:.0f} s\n" + self.dump_logs())

    def _ntp_answers(self, server: str) -> bool:
        out = self.inet.run("ntpdate", "-q", "-t", "1", server, check=False, timeout=10)
        return out.returncode == 0

    def _pick(self, client: Optional[Client]) -> Client:
        return client or self.clients[0]

    def truth(self) -> list[dict[str, Any]]:
        try:
            text = self.truth_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def scans(self) -> list[dict[str, Any]]:
        return [e for e in self.truth() if e["event"] == "scan"]

    def temp_addresses(self, client: Optional[Client] = None) -> list[str]:
        """A client's current RFC 4941 temporary addresses (newest first)."""
        c = self._pick(client)
        out = c.ns.run("ip", "-6", "-j", "addr", "show", "dev", "eth0", "temporary")
        infos = [a for i in json.loads(out.stdout or "[]") for a in i.get("addr_info", [])]
        return [a["local"] for a in infos if a.get("family") == "inet6"]

    def chronyc(self, *args: str, client: Optional[Client] = None) -> str:
        c = self._pick(client)
        out = subprocess.run(run_in(c.ns, ["chronyc", "-n", *args], c.run_dir),
                             capture_output=True, text=True, timeout=20)
        return out.stdout + out.stderr

    def synced(self, client: Optional[Client] = None) -> bool:
        """The client's chronyd has a selected source (`*` in `chronyc sources`)."""
        return any(line.startswith("^*")
                   for line in self.chronyc("sources", client=client).splitlines())

    def wait_synced(self, timeout: float = 30.0) -> None:
        for c in self.clients:
            self._wait(lambda c=c: self.synced(c), f"time daemon sync in {c.ns.name}", timeout)

    def poke(self, addresses: list[str], client: Optional[Client] = None) -> None:
        """One NTP query from a client to each address (ntpdate -q), as a client's first poll."""
        if addresses:
            self._pick(client).ns.run("ntpdate", "-q", "-t", "1", *addresses, check=False,
                                      timeout=60)

    def rotate_address(self, client: Optional[Client] = None) -> str:
        """A fresh random address in the client's /64, made its source for everything.

        What RFC 4941 rotation does every `temp_prefered_lft` s, on demand: scenario tests get
        one clean "test" per address without waiting for the kernel. The default route's
        `src` overrides the kernel's temporary-address preference from then on.
        """
        c = self._pick(client)
        net = ipaddress.IPv6Network(c.net)
        addr = str(net[self._rng.randrange(1 << 32, 1 << 64)])
        c.ns.run("ip", "-6", "addr", "add", addr + "/64", "dev", "eth0", "nodad")
        c.ns.run("ip", "-6", "route", "replace", "default", "via", c.gw, "src", addr)
        return addr

    def live(self, passes: int = 4, per_round: int = 2, settle: Optional[float] = None,
             client: Optional[Client] = None) -> list[str]:
        """Months of pool life in seconds: every IPv6 server is met `passes` times, each time
        from a fresh address together with per_round - 1 others (one group test each).

        Ends by waiting `settle` s (default: the lab config's detect lookback + 2) and one
        last contact from a fresh address, so the log's clock passes every test's lookback
        and an address that was not scanned counts as a negative. Returns the addresses used.
        """
        pool = [s.address for s in self.servers if ":" in s.address]
        used = []
        for _ in range(passes):
            order = pool[:]
            self._rng.shuffle(order)
            for i in range(0, len(order), per_round):
                used.append(self.rotate_address(client))
                self.poke(order[i:i + per_round], client)
        time.sleep(settle if settle is not None else lab_lookback(self.spec) + 2)
        used.append(self.rotate_address(client))
        self.poke(self.clean[:1], client)
        return used

    def scan_now(self, target: str, scanner: Optional[str] = None) -> str:
        """A scan not caused by a harvester (the demo's proof); recorded in the ground truth
        as "manual-scan" so it is never mistaken for a harvester's."""
        scanner = scanner or self.scanners[0]
        start = time.time()
        out = self.scan.run("nmap", "-6", "-n", "-sS", "-Pn", "-p", self.spec.scan_ports,
                            "--max-retries", "0", "-e", "eth0", "-S", scanner, target,
                            check=False, timeout=60)
        line = json.dumps({"event": "manual-scan", "t_start": start, "t_end": time.time(),
                           "target": target, "scanner": scanner, "rc": out.returncode})
        with open(self.truth_path, "a") as fh:
            fh.write(line + "\n")
        return out.stdout

    def log_lines(self) -> list[dict[str, Any]]:
        """The guard's firewall log as ulogd2 JSON records."""
        try:
            text = self.firewall_json.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line being written right now
        return out

    def dump_logs(self, tail: int = 40) -> str:
        """Every log of the world, tails only: what a failing test prints."""
        parts = []
        for p in sorted(self.workdir.rglob("*")):
            if p.is_file() and p.suffix in (".log", ".jsonl", ".json", ".stderr", ".conf"):
                lines = p.read_text(errors="replace").splitlines()
                parts.append(f"==> {p.relative_to(self.workdir)} ({len(lines)} lines) <==")
                parts.extend(lines[-tail:])
        if self.lab is not None:
            for c in self.clients:
                parts.append(f"==> {c.ns.name}: ip -6 addr <==")
                parts.append(c.ns.run("ip", "-6", "addr", check=False).stdout)
        return "\n".join(parts)

    def stop(self) -> None:
        if self._nginx is not None:
            # SIGTERM, so the master reaps its worker: a worker SIGKILLed after its master
            # is left a zombie wherever PID 1 does not reap orphans (containers).
            self._nginx.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._nginx.wait(timeout=10)
            self._nginx = None
        if self.dns is not None:
            self.dns.stop()
            self.dns = None
        if self.lab is not None:
            self.lab.close()
            self.lab = None

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def lab_lookback(spec: WorldSpec) -> float:
    """detect.lookback for the lab: well above the lab's lags, short enough for a test."""
    return max(10.0, 2 * spec.lag_max)


def ntpguard_config(world: Optional[World] = None, extra: str = "",
                    overrides: Optional[dict[str, dict[str, Any]]] = None) -> str:
    """An ntpguard config for the lab guard: the lab DNS, documentation addresses allowed,
    gateway mode in the gateway topology. `overrides` sets or adds keys per section, e.g.
    {"rules": {"backend": "iptables"}}; `extra` is appended as raw TOML (new sections only)."""
    mode = "gateway" if world is not None and world.gateway else "host"
    lookback = lab_lookback(world.spec if world is not None else WorldSpec())
    sections: dict[str, list[tuple[str, Any, str]]] = {
        "pool": [
            ("nameservers", [DNS_ADDR], ""),
            ("allow_nonglobal", True, "documentation addresses in the lab"),
            # 60 quick rounds of 4-of-~31 draws miss a given server with p = (27/31)^60 =
            # 0.0002: the pool is known after one resolve and a later sync finds nothing new.
            ("rounds", 60, "the lab's TTL means nothing to a test run: see the whole pool"),
            ("interval", 0, ""),
        ],
        "timeconf": [
            ("daemon", "chrony", "the lab hosts run chronyd; never probe for the real ones"),
        ],
        "rules": [
            ("mode", mode, ""),
            ("log_group", LOG_GROUP_JSON,
             "ntpguard's own log lines go to the lab guard's ulogd2, not the kernel log"),
        ],
        "detect": [
            ("lookback", lookback,
             "lab lags are seconds: an address not scanned is a negative test within the run"),
        ],
    }
    if world is not None:
        sections["sync"] = [("log_sources", [str(world.firewall_json)],
                             "the guard's ulogd2 JSON log (the lab has no journald)")]
    for name, keys in (overrides or {}).items():
        entries = sections.setdefault(name, [])
        for key, value in keys.items():
            entries[:] = [e for e in entries if e[0] != key] + [(key, value, "override")]
    lines = ["# written by lab/world.py for the lab's ntpguard host"]
    for name, entries in sections.items():
        lines.append(f"[{name}]")
        for key, value, why in entries:
            if why:
                lines.append(f"# {why}")
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n" + extra


def run_ntpguard(world: World, *args: str, config: Optional[Path] = None,
                 timeout: float = 300, client: Optional[Client] = None
                 ) -> subprocess.CompletedProcess:
    """HOOK: `ntpguard ARGS` on the guard (the host, or the gateway), as cron would run it;
    with `client`, on that machine instead (a fleet's hosts).

    Runs `python3 -m ntpguard` from this tree inside the guard's namespace, with its own /run
    (so `chronyc reload sources` reaches the lab host's chronyd), /etc/chrony (bind-mounted
    from /etc/netns), a state dir and a config of its own.
    """
    ns, w = (client.ns, client.dir) if client is not None else (world.guard, world.guard_dir)
    if not Path(f"/etc/netns/{ns.name}/chrony").is_dir():
        # Without the bind mount, timeconf --write would edit the real /etc/chrony.
        raise WorldError(f"{ns.name} has no /etc/netns chrony dir: refusing to run")
    if config is None:
        config = w / "ntpguard.toml"
        if not config.exists():
            config.write_text(ntpguard_config(world))
    env = dict(os.environ, PYTHONPATH=str(ROOT), NTPGUARD_STATE_DIR=str(w / "state"),
               NTPGUARD_CONFIG=str(config))
    cmd = run_in(ns, ["/usr/bin/python3", "-m", "ntpguard", *args], w / "run")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def summary(world: World) -> dict[str, Any]:
    """Counts for progress lines: scans, contacts, log lines by prefix."""
    truth = world.truth()
    logs = world.log_lines()
    return {
        "contacts": sum(e["event"] == "contact" for e in truth),
        "harvests": sum(e["event"] == "harvest" for e in truth),
        "scans": sum(e["event"] == "scan" for e in truth),
        "log_out": sum(str(r.get("oob.prefix", "")).startswith("lab-ntp-out") for r in logs),
        "log_in": sum(str(r.get("oob.prefix", "")).startswith("lab-in") for r in logs),
    }
