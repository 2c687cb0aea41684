"""Facts about this host that a blocklist must never cover: its addresses and default gateways.

The only side effect behind plan.HostFacts: it asks rtnetlink in the current network namespace
(and answers in the shape of `ip -j`, iproute2's JSON output, which tests compare it with), so
the same code serves a host and a namespace in the tests.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from typing import TYPE_CHECKING, Any, Optional

from ntpguard import netlink
from ntpguard.errors import FirewallError

if TYPE_CHECKING:  # the record only: kernel_facts serves runs that build no plan
    from ntpguard.plan import HostFacts

def addresses() -> list[dict[str, Any]]:
    """Every interface's addresses, as `ip -j addr show` gives them (the fields ntpguard
    reads): [{"ifindex", "ifname", "addr_info": [{"family": "inet"|"inet6", "local",
    "prefixlen", "scope", "valid_life_time", "preferred_life_time", and "temporary",
    "secondary", "deprecated", "tentative", "dadfailed" when set}]}], asked of rtnetlink
    (~0.3 ms; `ip` as a process is ~5 ms, and a rules apply with canaries asked ~6 times).
    FirewallError if rtnetlink cannot be asked."""
    message = netlink.request(_RTM_GETADDR, netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP,
                              _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
    links: dict[int, dict[str, Any]] = {}
    for kind, data, body, end in _dump(message, "addresses"):
        if kind != _RTM_NEWADDR or end - body < _IFADDRMSG.size:
            continue
        family, prefixlen, low_flags, scope, index = _IFADDRMSG.unpack_from(data, body)
        attrs = netlink.attributes(data, body + _IFADDRMSG.size, end) or {}
        raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
        if not raw or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        flags = low_flags
        if len(attrs.get(_IFA_FLAGS, b"")) == 4:
            flags = struct.unpack("=I", attrs[_IFA_FLAGS])[0]
        info: dict[str, Any] = {
            "family": "inet6" if family == socket.AF_INET6 else "inet",
            "local": socket.inet_ntop(family, raw), "prefixlen": prefixlen,
            "scope": _SCOPES.get(scope, str(scope))}
        for bit, name in _ADDR_FLAGS:
            if flags & bit:
                info["secondary" if name == "temporary" and family == socket.AF_INET
                     else name] = True
        cache = attrs.get(_IFA_CACHEINFO, b"")
        if len(cache) >= 8:
            info["preferred_life_time"], info["valid_life_time"] = struct.unpack_from(
                "=II", cache)
        link = links.get(index)
        if link is None:
            try:
                name = socket.if_indextoname(index)
            except OSError:
                continue  # the interface went away meanwhile
            link = links[index] = {"ifindex": index, "ifname": name, "addr_info": []}
        link["addr_info"].append(info)
    return [links[i] for i in sorted(links)]


def default_route_list(family: int) -> list[dict[str, Any]]:
    """The main table's default routes of one family (4 or 6), as `ip -j -4|-6 route show
    default` gives them (the fields ntpguard reads): [{"dst": "default", "gateway", "dev",
    "metric", "nexthops": [{"gateway", "dev"}]}], a field only when the route has it.
    FirewallError if rtnetlink cannot be asked."""
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    out = []
    for kind, data, body, end in _dump(_route_request(af), "routes"):
        try:
            route = _default_route(kind, data, body, end)
        except ValueError:
            raise FirewallError("rtnetlink: a route this code does not understand") from None
        if route is None:
            continue
        _, _, attrs = route
        item: dict[str, Any] = {"dst": "default", **_hop(af, attrs)}
        if len(attrs.get(_RTA_PRIORITY, b"")) == 4:
            item["metric"] = struct.unpack("=I", attrs[_RTA_PRIORITY])[0]
        hops, at = [], 0
        multipath = attrs.get(_RTA_MULTIPATH, b"")
        while at + _RTNEXTHOP.size <= len(multipath):
            size, _, _, index = _RTNEXTHOP.unpack_from(multipath, at)
            if size < _RTNEXTHOP.size:
                break
            inner = netlink.attributes(multipath, at + _RTNEXTHOP.size, at + size) or {}
            hops.append(_hop(af, {**inner, _RTA_OIF: struct.pack("=i", index)}))
            at += (size + 3) & ~3
        if hops:
            item["nexthops"] = hops
        out.append(item)
    return out


def _hop(af: int, attrs: dict[int, bytes]) -> dict[str, Any]:
    """The gateway and interface of a route or one of its next hops."""
    hop: dict[str, Any] = {}
    gateway = attrs.get(_RTA_GATEWAY, b"")
    if len(gateway) == (16 if af == socket.AF_INET6 else 4):
        hop["gateway"] = socket.inet_ntop(af, gateway)
    if len(attrs.get(_RTA_OIF, b"")) == 4:
        with contextlib.suppress(OSError):
            hop["dev"] = socket.if_indextoname(struct.unpack("=i", attrs[_RTA_OIF])[0])
    return hop


def _dump(message: bytes, what: str) -> list[tuple[int, bytes, int, int]]:
    try:
        found = netlink.dump(_NETLINK_ROUTE, message, 2.0, strict=True)
    except OSError as exc:
        raise FirewallError(f"rtnetlink: cannot ask for the {what}: {exc}") from None
    if found is None:
        raise FirewallError(f"rtnetlink: the {what} asked for came back as an error")
    return found


def gather(links: Optional[list[dict[str, Any]]] = None) -> HostFacts:
    """Every local address (all interfaces) and every default route's gateway (v4 and v6);
    `links`: addresses() if the caller has them."""
    from ntpguard.plan import HostFacts

    local = set()
    for link in addresses() if links is None else links:
        for info in link.get("addr_info", []):
            if info.get("local"):
                local.add(info["local"])
    gateways = set()
    for fam in (4, 6):
        for route in default_route_list(fam):
            if route.get("gateway"):
                gateways.add(route["gateway"])
            for hop in route.get("nexthops", []):
                if hop.get("gateway"):
                    gateways.add(hop["gateway"])
    return HostFacts(tuple(sorted(local)), tuple(sorted(gateways)))


_NETLINK_ROUTE = 0
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, interface index
_IFA_ADDRESS, _IFA_LOCAL, _IFA_CACHEINFO, _IFA_FLAGS = 1, 2, 6, 8
# The address flags ntpguard reads, named as `ip` names them (IFA_F_TEMPORARY is "secondary"
# on an IPv4 address).
_ADDR_FLAGS = ((0x01, "temporary"), (0x08, "dadfailed"), (0x20, "deprecated"),
               (0x40, "tentative"))
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_RTA_OIF, _RTA_GATEWAY, _RTA_PRIORITY, _RTA_MULTIPATH = 4, 5, 6, 9
_RTNEXTHOP = struct.Struct("=HBBi")  # length, flags, hops, interface index
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
    try:
        found = netlink.dump(_NETLINK_ROUTE, _route_request(family), 2.0, strict=True)
        routes = None if found is None else [_default_route(*m) for m in found]
    except (OSError, ValueError):
        return None
    return None if routes is None else sorted(_facts(*r) for r in routes if r)


def parse_routes(data: bytes) -> tuple[bool, Optional[list[str]]]:
    """(the dump ended, the default routes of the main table in these messages); None for
    an error answer or a message this code does not understand."""
    done, found = netlink.walk(data)
    try:
        routes = None if found is None else [_default_route(k, data, b, e) for k, b, e in found]
    except ValueError:
        return True, None
    return (True, None) if routes is None else (done, [_facts(*r) for r in routes if r])


def _route_request(family: int) -> bytes:
    return netlink.request(_RTM_GETROUTE, netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP,
                           _RTMSG.pack(family, 0, 0, 0, _RT_TABLE_MAIN, 0, 0, 0, 0))


def _default_route(kind: int, data: bytes, body: int, end: int
                   ) -> Optional[tuple[int, int, dict[int, bytes]]]:
    """(family, type, attributes) of a default route of the main table; None for any other
    message; ValueError for one this code does not understand."""
    if kind != _RTM_NEWROUTE or end - body < _RTMSG.size:
        return None
    family, dst_len, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(data, body)
    attrs = netlink.attributes(data, body + _RTMSG.size, end)
    if attrs is None:
        raise ValueError("a route's attributes do not add up")
    if _RTA_TABLE in attrs and len(attrs[_RTA_TABLE]) == 4:
        table = struct.unpack("=I", attrs[_RTA_TABLE])[0]
    return (family, rtype, attrs) if dst_len == 0 and table == _RT_TABLE_MAIN else None


def _facts(family: int, rtype: int, attrs: dict[int, bytes]) -> str:
    return f"{family}/{rtype}/" + "/".join(
        f"{a}:{attrs[a].hex()}" for a in _ROUTE_ATTRS if a in attrs)
