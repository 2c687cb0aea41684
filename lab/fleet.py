"""The lab's fleet: three protected hosts that ship their firewall logs to a collector, which
judges on them together and publishes a signed list the hosts follow (WorldSpec(topology=
"fleet"), docs/fleet.md).

    h1, h2, h3 (each its own /64, temporary addresses)          coll (2001:db8:c011::10)
    nft log → ulogd2 LOGEMU firewall.log                         rsyslogd: imtcp :10514 →
    rsyslogd: imfile firewall.log → omfwd tcp ───── inet ──────▶   remote/HOST/kern.log
    ntpguard sync: subscribes to https://[coll]/fleet.json      ntpguard sync: [collector],
    (pubkey, ca_file), applies the rules                         [publish] → www/fleet.json
                                                                 nginx: HTTPS (lab CA) on www

Every daemon is Debian's own, started here in its namespace with a configuration, pid file
and work directory under the world's directory; none reads /etc (rsyslog loads no imuxsock,
so no /dev/log is created; nginx gets -p, -c and -e). The lab CA is made with openssl.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

COLL_NET = "2001:db8:c011::/64"
COLL_GW = "2001:db8:c011::1"
COLL_ADDR = "2001:db8:c011::10"
SYSLOG_PORT = 10514
LIST_NAME = "fleet.json"


def host_net(i: int) -> tuple[str, str, str, str]:
    """Host i's /64 and gateway, its IPv4 address and gateway (i from 1)."""
    return (f"2001:db8:4057:{0xf0 + i:x}::/64", f"2001:db8:4057:{0xf0 + i:x}::1",
            f"10.58.{i}.100/24", f"10.58.{i}.1")


def list_url() -> str:
    return f"https://[{COLL_ADDR}]/{LIST_NAME}"


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """A lab CA and the collector's certificate for its address: (ca, cert, key)."""
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = d / "ca.pem", d / "ca.key"
    cert, key, csr = d / "coll.pem", d / "coll.key", d / "coll.csr"
    ext = d / "coll.ext"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=ntpguard lab CA", "-keyout", str(ca_key),
            "-out", str(ca))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=collector", "-keyout", str(key), "-out", str(csr))
    ext.write_text(f"subjectAltName=IP:{COLL_ADDR}\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return ca, cert, key


def rsyslog_host_conf(d: Path, host: str, firewall_log: Path) -> str:
    """A host's rsyslogd: read the firewall log as it grows (imfile, inotify) and forward every
    line over TCP (omfwd) to the collector, with RFC 5424 stamps (microseconds), retrying
    while the collector is away (an in-memory queue)."""
    return f"""
global(workDirectory="{d}/rsyslog" localHostname="{host}")
module(load="imfile")
input(type="imfile" File="{firewall_log}" Tag="ulogd:" ruleset="forward")
ruleset(name="forward") {{
    action(type="omfwd" target="{COLL_ADDR}" port="{SYSLOG_PORT}" protocol="tcp"
           template="RSYSLOG_SyslogProtocol23Format" queue.type="LinkedList"
           action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"""


def rsyslog_collector_conf(d: Path) -> str:
    """The collector's rsyslogd: imtcp, one file per sending host (%HOSTNAME%), each line in
    RFC 3339 with the sender's own time (RSYSLOG_FileFormat: microseconds)."""
    return f"""
global(workDirectory="{d}/rsyslog")
module(load="imtcp")
template(name="perhost" type="string" string="{d}/remote/%HOSTNAME%/kern.log")
ruleset(name="hosts") {{
    action(type="omfile" dynaFile="perhost" template="RSYSLOG_FileFormat" dirCreateMode="0755"
           fileCreateMode="0644" flushOnTXEnd="on")
}}
input(type="imtcp" address="{COLL_ADDR}" port="{SYSLOG_PORT}" ruleset="hosts")
"""


def nginx_conf(d: Path, cert: Path, key: Path) -> str:
    """nginx serving d/www over HTTPS on the collector's address; every path its own."""
    # The worker runs as root: the world lives under pytest's 0700 temporary directory,
    # which www-data cannot enter (a real collector serves /var/www as www-data).
    return f"""
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log {d}/nginx-access.log;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    types {{ application/json json; text/plain minisig txt; }}
    server {{
        listen [{COLL_ADDR}]:443 ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {d}/www;
    }}
}}
"""


# -- the story: what the lab test and `make demo --topology fleet` run -------------------------


def host_config(world: Any, c: Any, pubkey: str) -> str:
    """A fleet host's ntpguard: its own log too, ntpguard's log lines into the file rsyslog
    forwards, no canaries (so the collector sees each harvest as a scan of a real address
    after its contact; canary convictions stay on the host that made them), subscribed to the
    collector's list with its key and the lab CA."""
    from lab.world import LOG_GROUP_TEXT, ntpguard_config

    return ntpguard_config(world, overrides={
        "rules": {"log_group": LOG_GROUP_TEXT},
        "sync": {"log_sources": [str(c.dir / "firewall.log")],
                 "configure_time_daemon": False},
        "lists": {"allow_nonglobal": True},  # the lab's servers are documentation addresses
    }, extra=(
        '[canary]\nmode = "off"\n'
        f'[metrics]\ntextfile = "{c.dir}/ntpguard.prom"\n'
        '[[lists.subscriptions]]\nname = "fleet"\n'
        f'url = "{list_url()}"\npubkey = "{pubkey}"\nca_file = "{world.ca_file}"\n'
        "timeout = 10\n"))


def collector_config(world: Any) -> str:
    """The collector's ntpguard: the hosts' forwarded logs, no firewall or time daemon of
    its own to manage, the signed list into nginx's root, metrics."""
    from lab.world import ntpguard_config

    d = world.guard_dir
    return ntpguard_config(world, overrides={
        "sync": {"log_sources": [], "apply_rules": False, "configure_time_daemon": False},
    }, extra=(
        f'[collector]\nhosts_from = ["{d}/remote/*/kern.log"]\n'
        f'[publish]\npath = "{d}/www/{LIST_NAME}"\nkey = "{d}/publish.key"\n'
        f'[metrics]\ntextfile = "{d}/ntpguard.prom"\n'))


def setup_ntpguard(world: Any) -> str:
    """Key pair and configurations; the public key line the hosts trust."""
    from lab.world import WorldError, run_ntpguard

    d = world.guard_dir
    (d / "ntpguard.toml").write_text(collector_config(world))
    p = run_ntpguard(world, "list", "keygen", "-s", str(d / "publish.key"), "-p",
                     str(d / "publish.pub"), "--json")
    if p.returncode != 0:
        raise WorldError(f"list keygen failed: {p.stderr}")
    pubkey = str(json.loads(p.stdout)["pubkey"])
    for c in world.clients:
        (c.dir / "ntpguard.toml").write_text(host_config(world, c, pubkey))
    return pubkey


def meet(world: Any, plan: dict[int, list[str]], passes: int, per_round: int) -> list[str]:
    """Each host (index into world.clients) meets its servers `passes` times, each time from
    a fresh address with per_round - 1 others, all hosts at once (threads); then the log's
    clock passes every lookback, as World.live does for one. Returns the addresses used."""
    from lab.world import lab_lookback

    used: list[str] = []
    lock = threading.Lock()

    def one(index: int, servers: list[str]) -> None:
        c = world.clients[index]
        rng = random.Random(world.spec.seed * 100 + index)
        for _ in range(passes):
            order = servers[:]
            rng.shuffle(order)
            for i in range(0, len(order), per_round):
                addr = world.rotate_address(c)
                with lock:
                    used.append(addr)
                world.poke(order[i:i + per_round], c)

    threads = [threading.Thread(target=one, args=item) for item in plan.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(lab_lookback(world.spec) + 2)
    for c in world.clients:  # one last contact each: every host's log passes the lookback
        used.append(world.rotate_address(c))
        world.poke(world.clean[:1], c)
    return used


def forwarded(world: Any, addresses: list[str], timeout: float = 30.0) -> bool:
    """Whether every address has reached the collector's per-host files (rsyslog forwards
    within a second or so); waits up to `timeout` s."""
    import ipaddress

    remote = world.guard_dir / "remote"
    # ulogd2 prints addresses compressed, the kernel's LOG expanded: either will do.
    want = {(str(ipaddress.ip_address(a)) + " ", ipaddress.ip_address(a).exploded + " ")
            for a in addresses}
    deadline = time.monotonic() + timeout
    while True:
        text = "".join(p.read_text(errors="replace") for p in remote.glob("*/kern.log"))
        missing = {a for a in want if a[0] not in text and a[1] not in text}
        if not missing or time.monotonic() > deadline:
            return not missing
        time.sleep(0.5)
