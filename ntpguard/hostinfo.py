"""Facts about this host that a blocklist must never cover: its addresses and default gateways.

The only side effect behind plan.HostFacts: it asks `ip -j` (iproute2's JSON output) in the
current network namespace, so the same code serves a host and a namespace in the tests.
"""

from __future__ import annotations

import json
from typing import Any

from ntpguard import commands
from ntpguard.errors import FirewallError
from ntpguard.plan import HostFacts


def ip_json(*args: str) -> list[Any]:
    """`ip -j ARGS` in this network namespace, parsed (a list of objects)."""
    proc = commands.run(["ip", "-j", *args], error=FirewallError)
    try:
        data = json.loads(proc.stdout or "[]")
    except ValueError:
        raise FirewallError(f"ip -j {' '.join(args)}: unreadable output") from None
    return data if isinstance(data, list) else []


def gather() -> HostFacts:
    """Every local address (all interfaces) and every default route's gateway (v4 and v6)."""
    addresses = set()
    for link in ip_json("addr", "show"):
        for info in link.get("addr_info", []):
            if info.get("local"):
                addresses.add(info["local"])
    gateways = set()
    for fam in ("-4", "-6"):
        for route in ip_json(fam, "route", "show", "default"):
            if route.get("gateway"):
                gateways.add(route["gateway"])
            for hop in route.get("nexthops", []):
                if hop.get("gateway"):
                    gateways.add(hop["gateway"])
    return HostFacts(tuple(sorted(addresses)), tuple(sorted(gateways)))
