#!/usr/bin/python3
"""Rule writer benchmark: 100k scanner prefixes + 2k servers, then 100-entry updates (as root).

Everything runs inside network namespaces this script creates (prefix ntpg-r-b-); the root
namespace's firewall is never touched. Prints:
  - plan build time for the full input,
  - ntpguard's full apply (nft backend, per-length hash sets) and the mean/max 100-entry update,
  - a plain `nft -f` load of the same prefixes as interval sets, measured in the same run,
  - how many NTP packets to a non-clean server got through while updates ran (must be 0).
Targets (issue 5): full apply < 1 s, 100-entry update < 0.1 s, 0 packets through.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SCANNERS = 100_000
SERVERS = 2_000
UPDATES = 20
V6_LENGTHS = [32, 40, 48, 56, 64, 64, 64, 96, 128, 128]
V4_LENGTHS = [16, 20, 24, 24, 32, 32]
BLOCKED_SERVER = "2001:db8:77::99"  # a harvester the sender keeps trying during updates
CLEAN_SERVER = "2001:db8:77::1"


def _prefix(rng: random.Random, v6: bool) -> str:
    if v6:
        length = rng.choice(V6_LENGTHS)
        value = (0x2600 << 112) | rng.getrandbits(112)
        bits = 128
    else:
        length = rng.choice(V4_LENGTHS)
        value = (rng.randint(130, 160) << 24) | rng.getrandbits(24)
        bits = 32
    value = value >> (bits - length) << (bits - length)
    cls = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    return f"{cls(value)}/{length}"


def inputs(seed: int = 5):
    from ntpguard.plan import PrefixEntry
    from ntpguard.status import ServerStatus

    rng = random.Random(seed)
    scanners = [PrefixEntry(_prefix(rng, i % 5 != 0), f"bench:{i}") for i in range(SCANNERS)]
    servers = [ServerStatus.of(f"2a01:4f8:{i // 256:x}::{i % 256:x}", "clean")
               for i in range(SERVERS // 2)]
    servers += [ServerStatus.of(f"185.{i // 250}.{i % 250}.1", "clean")
                for i in range(SERVERS // 2)]
    servers += [ServerStatus.of(CLEAN_SERVER, "clean"),
                ServerStatus.of(BLOCKED_SERVER, "harvester")]
    return rng, scanners, servers


def inner() -> None:
    """Runs inside the bench namespace: the measurements."""
    from ntpguard import plan as planmod
    from ntpguard.backends.nft import NftBackend
    from ntpguard.config import Rules
    from ntpguard.status import ServerStatus

    rules = Rules(max_prefix_v6=32, max_prefix_v4=16)
    host = planmod.HostFacts(("2001:db8:77::2",), ())
    rng, scanners, servers = inputs()
    t = time.perf_counter()
    plan = planmod.build(servers, scanners, [], rules, host)
    plan_s = time.perf_counter() - t
    cache = tempfile.mkdtemp(prefix="ntpg-r-bench")
    backend = NftBackend(cache)
    t = time.perf_counter()
    first = backend.apply(plan)
    full_s = time.perf_counter() - t
    assert first.action in ("created", "replaced"), first
    # From now until the updates end, a sender keeps trying NTP to a harvester and a clean server.
    sender = subprocess.Popen([sys.executable, "-c", SENDER, "120"], stdout=subprocess.PIPE,
                              text=True)
    time.sleep(0.3)

    # 100-entry updates: 90 scanner prefixes swapped for new ones of lengths already present,
    # 10 clean servers turned harvester (deleted from the clean set).
    present = {(s.family, s.length) for s in plan.scanners}
    update_s, kernel_s = [], []
    for round_no in range(UPDATES):
        drop = set(rng.sample(range(len(scanners)), 90))
        fresh = []
        while len(fresh) < 90:
            p = _prefix(rng, rng.random() < 0.8)
            net = ipaddress.ip_network(p)
            if (net.version, net.prefixlen) in present:
                fresh.append(planmod.PrefixEntry(p, f"update{round_no}"))
        scanners = [s for i, s in enumerate(scanners) if i not in drop] + fresh
        flip = set(rng.sample(range(SERVERS - 10), 10))
        servers = [ServerStatus.of(s.address, "harvester") if i in flip else s
                   for i, s in enumerate(servers)]
        new_plan = planmod.build(servers, scanners, [], rules, host)
        t = time.perf_counter()
        res = backend.apply(new_plan)
        update_s.append(time.perf_counter() - t)
        kernel_s.append(res.seconds)
        assert res.action == "updated", res
    t = time.perf_counter()
    again = backend.apply(new_plan)
    noop_s = time.perf_counter() - t
    assert again.action == "unchanged", again
    sender.terminate()
    sender.wait()

    # Plain interval sets with the same content, one `nft -f` run.
    v4 = [f"{n}/{s.length}" for s in new_plan.scanners if s.family == 4 for n in s.networks]
    v6 = [f"{n}/{s.length}" for s in new_plan.scanners if s.family == 6 for n in s.networks]
    text = (
        "table inet bench {\n"
        f"\tset s6 {{ type ipv6_addr; flags interval; elements = {{ {', '.join(v6)} }} }}\n"
        f"\tset s4 {{ type ipv4_addr; flags interval; elements = {{ {', '.join(v4)} }} }}\n"
        "}\n"
    )
    t = time.perf_counter()
    subprocess.run(["nft", "-f", "-"], input=text, text=True, check=True)
    interval_s = time.perf_counter() - t
    t = time.perf_counter()
    backend.remove()
    subprocess.run(["nft", "delete", "table", "inet", "bench"], check=True)
    remove_s = time.perf_counter() - t
    shutil.rmtree(cache, ignore_errors=True)
    json.dump({
        "plan_s": plan_s, "full_s": full_s, "update_mean_s": sum(update_s) / len(update_s),
        "update_max_s": max(update_s), "update_kernel_max_s": max(kernel_s), "noop_s": noop_s,
        "interval_s": interval_s, "remove_s": remove_s,
        "elements": sum(new_plan.counts().values()), "sets": len(new_plan.scanners) + 2,
        "via": backend.nft.via,
    }, sys.stdout)


SENDER = f"""
import socket, time, errno, sys
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sent = refused = 0
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for dst in ({BLOCKED_SERVER!r}, {CLEAN_SERVER!r}):
        try:
            s6.sendto(b"\\x23" + b"\\0" * 47, (dst, 123))
            sent += 1
        except OSError as exc:
            refused += exc.errno == errno.EPERM
    time.sleep(0.0005)
print(sent, refused)
"""


def outer() -> int:
    from lab.netns import Lab

    with Lab("ntpg-r-b-") as lab:
        host, peer = lab.ns("host"), lab.ns("peer")
        lab.link(host, "eth0", peer, "eth0")
        host.addr("eth0", "2001:db8:77::2/64")
        peer.addr("eth0", f"{BLOCKED_SERVER}/64")
        peer.addr("eth0", f"{CLEAN_SERVER}/64")
        peer.run("nft", "-f", "-", input=(
            "table inet count {\n chain in {\n  type filter hook input priority 0;\n"
            f"  ip6 daddr {BLOCKED_SERVER} udp dport 123 counter\n"
            f"  ip6 daddr {CLEAN_SERVER} udp dport 123 counter\n"
            " }\n}\n"))
        env = {**os.environ, "PYTHONPATH": ROOT}
        proc = subprocess.run(
            ["ip", "netns", "exec", host.name, sys.executable, os.path.abspath(__file__),
             "--inner"], capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        r = json.loads(proc.stdout)
        counters = peer.run("nft", "list", "table", "inet", "count").stdout
        got = [int(line.split("packets")[1].split()[0]) for line in counters.splitlines()
               if "packets" in line]
    print(f"input: {SCANNERS} scanner prefixes (80% IPv6, lengths v6 {sorted(set(V6_LENGTHS))}, "
          f"v4 {sorted(set(V4_LENGTHS))}) + {SERVERS} servers; {r['elements']} elements after "
          f"collapse in {r['sets']} sets; nft via {r['via']}")
    print(f"plan build (pure Python)          {r['plan_s']:.3f} s")
    print(f"ntpguard full apply (hash sets)   {r['full_s']:.3f} s   target < 1 s")
    print(f"ntpguard 100-entry update         mean {r['update_mean_s']:.3f} s, max "
          f"{r['update_max_s']:.3f} s (transaction max {r['update_kernel_max_s']:.3f} s) over "
          f"{UPDATES} updates   target < 0.1 s")
    print(f"ntpguard re-apply unchanged       {r['noop_s']:.3f} s")
    print(f"plain nft -f interval-set load    {r['interval_s']:.3f} s (same prefixes)")
    print(f"remove both tables                {r['remove_s']:.3f} s")
    print(f"NTP packets that reached the harvester during updates: {got[0]} (must be 0); "
          f"reached the clean server: {got[1]}")
    return 0 if got[0] == 0 else 1


if __name__ == "__main__":
    if "--inner" in sys.argv:
        inner()
    else:
        if os.geteuid() != 0:
            sys.exit("benchmarks/rules.py: run as root (it builds network namespaces)")
        sys.exit(outer())
