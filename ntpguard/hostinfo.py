"""Facts about this host that a blocklist must never cover: its addresses and default gateways.

The only side effect behind plan.HostFacts: it asks `ip -j` (iproute2's JSON output) in the
current network namespace, so the same code serves a host and a namespace in the tests.
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Any, Optional

from ntpguard import commands
from ntpguard.errors import FirewallError

if TYPE_CHECKING:  # the record only: kernel_facts serves runs that build no plan
    from ntpguard.plan import HostFacts

# ip_json's answers in this process, with the kernel_facts they were given under.
_asked: dict[tuple[str, ...], tuple[str, list[Any]]] = {}


def ip_json(*args: str) -> list[Any]:
    """`ip -j ARGS` in this network namespace, parsed (a list of objects; the caller's to
    read, not change). Asked again only when the kernel's addresses or routes changed since
    (kernel_facts): a `rules apply` wants the addresses and routes four times (canaries,
    their target, the plan), ~5 ms a process each."""
    facts = kernel_facts()
    hit = _asked.get(args)
    if facts is not None and hit is not None and hit[0] == facts:
        return hit[1]
    proc = commands.run(["ip", "-j", *args], error=FirewallError)
    try:
        data = json.loads(proc.stdout or "[]")
    except ValueError:
        raise FirewallError(f"ip -j {' '.join(args)}: unreadable output") from None
    data = data if isinstance(data, list) else []
    if facts is not None:
        _asked[args] = (facts, data)
    return data


def gather() -> HostFacts:
    """Every local address (all interfaces) and every default route's gateway (v4 and v6)."""
    from ntpguard.plan import HostFacts

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


# The default routes in /proc/net/ipv6_route (destination ::/0; columns: destination, its
# length, source, its length, next hop, metric, references, use, flags, device) and in
# /proc/net/route (tab-separated: interface, destination, gateway, flags, references, use,
# metric, mask...; destination and mask 0), without the references and use counters (they
# change with every packet routed). Only default routes are host facts: their gateways, and
# the interface the canaries and probes go on.
_DEFAULT6 = re.compile(r"^(0{32} 00 \S+ \S+ \S+ \S+) \S+ \S+ (.*)$", re.M)
_DEFAULT4 = re.compile(r"^([^\t]*\t00000000\t[^\t]*\t[^\t]*)\t[^\t]*\t[^\t]*\t([^\t]*\t00000000"
                       r"\t.*)$", re.M)


def kernel_facts() -> Optional[str]:
    """This host's addresses and default routes as the kernel lists them in this network
    namespace, in well under a millisecond: /proc/net/if_inet6 (IPv6 addresses with their
    flags), fib_trie (IPv4 ones), the default routes of ipv6_route and route. Everything `ip`
    tells gather() and the canaries, so a change they would see shows here (not the other
    way round: then they are only asked again); None when /proc cannot be read."""
    parts = []
    for name in ("if_inet6", "fib_trie", "route", "ipv6_route"):
        try:
            with open(os.path.join("/proc/net", name), encoding="ascii",
                      errors="replace") as fh:
                text = fh.read()
        except FileNotFoundError:  # no IPv6 (or IPv4) in this kernel: nothing to list
            text = "-"
        except OSError:
            return None
        parts.append(default_routes(name, text) if name in ("route", "ipv6_route") else text)
    return "\n\0".join(parts)


def default_routes(name: str, text: str) -> str:
    """The default routes of a /proc/net route table (route or ipv6_route), without their
    counters."""
    pattern = _DEFAULT6 if name == "ipv6_route" else _DEFAULT4
    return "\n".join(" ".join(m) for m in pattern.findall(text))
