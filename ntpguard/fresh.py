"""Fresh source addresses, for probes and canaries: where they come from (the interface and
the /64 routed to it: `Target`) and a random address in it that nothing else uses. Kept apart
from the probe itself so that `rules apply`, which makes canaries, does not load the probe's
SNTP client and the detector with it.
"""

from __future__ import annotations

import ipaddress
import os
from typing import AbstractSet, Any, Callable, Optional

from ntpguard.addr import nonglobal_reason
from ntpguard.config import Probe
from ntpguard.errors import NtpguardError, UsageError
from ntpguard.hostinfo import addresses, default_route_list
from ntpguard.records import record

# RFC 5453 reserved interface identifiers: the subnet-router anycast (all zero) and the
# reserved subnet anycast range fdff:ffff:ffff:ff80-ffff. Never a host's unicast address.
_ANYCAST_LOW = 0xFDFF_FFFF_FFFF_FF80


class ProbeError(NtpguardError):
    """The host cannot probe: no global IPv6 prefix, an address cannot be added, no root."""


@record
class Target:
    """Where probes come from: the interface and the prefix routed to it."""

    interface: str
    prefix: ipaddress.IPv6Network


def choose_target(links: list, routes: list, interface: str = "", prefix: str = "") -> Target:
    """The interface (configured, else the IPv6 default route's) and the prefix (configured,
    else the /64 of a global, non-temporary, non-deprecated address on it) from `ip -j`."""
    iface = interface
    if not iface:
        for r in sorted(routes, key=lambda r: r.get("metric", 0)):
            if r.get("dev"):
                iface = r["dev"]
                break
            for hop in r.get("nexthops", []):
                if hop.get("dev"):
                    iface = hop["dev"]
                    break
            if iface:
                break
        if not iface:
            raise ProbeError("no IPv6 default route: set probe.interface (and probe.prefix)")
    if prefix:
        return Target(iface, ipaddress.IPv6Network(prefix))
    link = next((lk for lk in links if lk.get("ifname") == iface), None)
    if link is None:
        raise ProbeError(f"interface {iface!r} not found")
    for info in link.get("addr_info", []):
        if (info.get("family") == "inet6" and info.get("scope") == "global"
                and not info.get("temporary") and not info.get("deprecated")
                and not info.get("tentative") and info.get("prefixlen", 128) <= 64):
            net = ipaddress.IPv6Network(f"{info['local']}/64", strict=False)
            if nonglobal_reason(net.network_address) not in ("link-local", "loopback",
                                                             "multicast"):
                return Target(iface, net)
    raise ProbeError(f"no global IPv6 /64 on {iface}: set probe.prefix")


def fresh_address(prefix: ipaddress.IPv6Network, taken: AbstractSet[str],
                  rand: Callable[[int], int] = lambda bits: int.from_bytes(
                      os.urandom((bits + 7) // 8), "big") >> (-bits % 8)) -> str:
    """A random address in prefix that is none of `taken` (the host's addresses and every
    canary made, as `ip` and ipaddress print them: RFC 5952) and no reserved anycast
    identifier. `rand(bits)` gives a random integer of that many bits. A set lookup, not a
    pass over `taken`: `rules apply` makes ~257 canaries in a row against every canary the
    state keeps (90 days of daily rotation: ~23k)."""
    bits = 128 - prefix.prefixlen
    if bits < 8:
        raise UsageError(f"probe.prefix {prefix} is too small to hold fresh addresses")
    base = int(prefix.network_address)
    for _ in range(1000):
        iid = rand(bits) & ((1 << bits) - 1)
        if iid == 0 or (bits == 64 and iid >= _ANYCAST_LOW) or iid == (1 << bits) - 1:
            continue
        address = str(ipaddress.IPv6Address(base + iid))
        if address not in taken:
            return address
    raise ProbeError(f"no free address found in {prefix}")  # pragma: no cover - 2^-64 odds


def find_target(settings: Probe, links: Optional[list[dict[str, Any]]] = None) -> Target:
    """The target the settings name; `links`: hostinfo.addresses() if the caller has them."""
    return choose_target(addresses() if links is None else links, default_route_list(6),
                         settings.interface, settings.prefix)
