"""Facts about this host that a blocklist must never cover: its addresses and default gateways.

The only side effect behind plan.HostFacts: it asks `ip -j` (iproute2's JSON output) in the
current network namespace, so the same code serves a host and a namespace in the tests.
"""

from __future__ import annotations

import json
import subprocess

from ntpguard.errors import FirewallError
from ntpguard.plan import HostFacts


def _ip_json(*args: str) -> list:
    try:
        proc = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"cannot ask iproute2 for this host's addresses: {exc}") from None
    if proc.returncode != 0:
        raise FirewallError(f"ip -j {' '.join(args)} failed: {proc.stderr.strip()}")
    try:
        data = json.loads(proc.stdout or "[]")
    except ValueError:
        raise FirewallError(f"ip -j {' '.join(args)}: unreadable output") from None
    return data if isinstance(data, list) else []


def gather() -> HostFacts:
    """Every local address (all interfaces) and every default route's gateway (v4 and v6)."""
    addresses = set()
    for link in _ip_json("addr", "show"):
        for info in link.get("addr_info", []):
            if info.get("local"):
                addresses.add(info["local"])
    gateways = set()
    for fam in ("-4", "-6"):
        for route in _ip_json(fam, "route", "show", "default"):
            if route.get("gateway"):
                gateways.add(route["gateway"])
            for hop in route.get("nexthops", []):
                if hop.get("gateway"):
                    gateways.add(hop["gateway"])
    return HostFacts(tuple(sorted(addresses)), tuple(sorted(gateways)))
