"""Facts about this host that a blocklist must never cover: its addresses and default gateways.

The only side effect behind plan.HostFacts: it asks `ip -j` (iproute2's JSON output) in the
current network namespace, so the same code serves a host and a namespace in the tests.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import TYPE_CHECKING, Any, Optional

from ntpguard import commands, netlink
from ntpguard.errors import FirewallError

if TYPE_CHECKING:  # the record only: kernel_facts serves runs that build no plan
    from ntpguard.plan import HostFacts

# ip_json's answers in this process, with the kernel_facts they were given under.
_asked: dict[tuple[str, ...], tuple[str, list[Any]]] = {}


def ip_json(*args: str) -> list[Any]:
    """`ip -j ARGS` in this network namespace, parsed (a list of objects; the caller's to
    read, not change). Asked again only when the kernel's addresses or routes changed since
    (kernel_facts): a `rules apply` wants the addresses and routes four times (canaries,
    their target, the plan), ~5 ms a process each. Everyone asks for `addr show` of both
    families (and keeps the IPv6 ones where that is all it wants): one process, not two."""
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


_NETLINK_ROUTE = 0
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_RT_TABLE_MAIN, _RTA_TABLE = 254, 15
# What a default route is made of, for the facts: its interface, gateway, metric, next hops
# (multipath), table, IPv4 gateway of an IPv6 route, preference. Not its cache info and
# expiry (a router's advertised route counts down), which change by the second.
_ROUTE_ATTRS = (4, 5, 6, 9, 15, 18, 20)
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol,
#                                       scope, type, flags


def kernel_facts() -> Optional[str]:
    """This host's addresses and default routes as the kernel has them in this network
    namespace, in about a millisecond: /proc/net/if_inet6 (IPv6 addresses with their flags),
    /proc/net/fib_trie (IPv4 ones) and the main table's default routes asked of rtnetlink
    (/proc/net/ipv6_route lists every route, 4,900 lines and 80 ms with 1,000 canary
    addresses, and /proc/net/route no second next hop). Everything `ip` tells gather() and
    the canaries, so a change they would see shows here (not the other way round: then they
    are only asked again); None when something cannot be read."""
    parts = []
    for name in ("if_inet6", "fib_trie"):
        try:
            with open(os.path.join("/proc/net", name), encoding="ascii",
                      errors="replace") as fh:
                parts.append(fh.read())
        except FileNotFoundError:  # no IPv6 (or IPv4) in this kernel: nothing to list
            parts.append("-")
        except OSError:
            return None
    for family in (socket.AF_INET, socket.AF_INET6):
        routes = default_routes(family)
        if routes is None:
            return None
        parts.append("\n".join(routes))
    return "\n\0".join(parts)


def default_routes(family: int) -> Optional[list[str]]:
    """The main table's default routes of one family, each as its facts (see _ROUTE_ATTRS) in
    hex, sorted; None if rtnetlink cannot be asked."""
    message = netlink.request(_RTM_GETROUTE, netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP,
                              _RTMSG.pack(family, 0, 0, 0, _RT_TABLE_MAIN, 0, 0, 0, 0))
    out: list[str] = []
    try:
        with netlink.asked(_NETLINK_ROUTE, message, 2.0, strict=True) as receive:
            while True:
                data = receive()
                if not data:
                    return None
                done, routes = parse_routes(data)
                if routes is None:
                    return None
                out += routes
                if done:
                    return sorted(out)
    except OSError:
        return None


def parse_routes(data: bytes) -> tuple[bool, Optional[list[str]]]:
    """(the dump ended, the default routes of the main table in these messages); None for
    an error answer or a message this code does not understand."""
    routes: list[str] = []
    offset = 0
    header = netlink.HEADER
    while offset + header.size <= len(data):
        length, kind, _, _, _ = header.unpack_from(data, offset)
        if length < header.size or offset + length > len(data):
            return True, None
        if kind == netlink.NLMSG_DONE:
            return True, routes
        if kind == netlink.NLMSG_ERROR:
            return True, None
        body = offset + header.size
        if kind == _RTM_NEWROUTE and length >= header.size + _RTMSG.size:
            family, dst_len, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(data, body)
            attrs = netlink.attributes(data, body + _RTMSG.size, offset + length)
            if attrs is None:
                return True, None
            if _RTA_TABLE in attrs and len(attrs[_RTA_TABLE]) == 4:
                table = struct.unpack("=I", attrs[_RTA_TABLE])[0]
            if dst_len == 0 and table == _RT_TABLE_MAIN:
                routes.append(f"{family}/{rtype}/" + "/".join(
                    f"{a}:{attrs[a].hex()}" for a in _ROUTE_ATTRS if a in attrs))
        offset += (length + 3) & ~3
    return False, routes
