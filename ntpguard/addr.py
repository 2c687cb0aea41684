"""Address parsing shared by every module: one canonical (RFC 5952) form, one idea of "global".

Kernel log lines print IPv6 fully expanded with leading zeros; DNS, lists and users print it
compressed. Everything that stores or compares an address goes through `canonical()` first.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Optional, Union

from ntpguard.errors import UsageError

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Ranges that never belong to a public NTP server or a scanner on the internet.
_NONGLOBAL: list[tuple[IPNetwork, str]] = [
    (ipaddress.ip_network(n), why)
    for n, why in [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
        ("fc00::/7", "unique local (ULA)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared address space (CGN)"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
    ]
]


def parse_address(text: str) -> IPAddress:
    """Parse one address in any textual form; raise UsageError with the text on failure."""
    if "%" in text:  # a scope id (fe80::1%eth0) names a link, never a server
        raise UsageError(f"not an IP address: {text!r}")
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise UsageError(f"not an IP address: {text!r}") from None


def address_int(text: str) -> tuple[int, int]:
    """(IP version, value as an integer) of an address as ipaddress.ip_address reads it, in
    ~1 µs where ip_address takes ~8 (2,000 servers are read this way by every plan and canary
    run): inet_pton for the forms it reads, anything else (and every error: ValueError)
    through ipaddress."""
    family = 6 if ":" in text else 4
    try:
        packed = socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET, text)
    except (OSError, ValueError, UnicodeError):
        ip = ipaddress.ip_address(text)
        return ip.version, int(ip)
    return family, int.from_bytes(packed, "big")


def canonical(text: str) -> str:
    """The RFC 5952 form of an address (lower case, zeros compressed, longest run as ::)."""
    return str(parse_address(text))


# (network as int, netmask as int, why) per IP version: integer tests, as lists of 100k
# entries check every entry (ipaddress's `in` was most of a list's parse time).
_NONGLOBAL_INT: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
for _net, _why in _NONGLOBAL:
    _NONGLOBAL_INT[_net.version].append((int(_net.network_address), int(_net.netmask), _why))


def nonglobal_reason(address: IPAddress) -> Optional[str]:
    """Why an address can't be a public server (e.g. "link-local"), or None if it can."""
    return nonglobal_reason_int(address.version, int(address))


def _top_values(family: int) -> frozenset[int]:
    """The values of an address's top 16 (IPv6) or 8 (IPv4) bits that some non-global range
    starts with: an address with any other top bits is global after one set lookup, where
    trying every range took ~1 µs (twice per list entry: both ends of a prefix)."""
    shift = 112 if family == 6 else 24
    out: set[int] = set()
    for net, mask, _ in _NONGLOBAL_INT[family]:
        last = net | (~mask & ((1 << (128 if family == 6 else 32)) - 1))
        out.update(range(net >> shift, (last >> shift) + 1))
    return frozenset(out)


_MAYBE_NONGLOBAL = {4: _top_values(4), 6: _top_values(6)}
_TOP_SHIFT = {4: 24, 6: 112}


def nonglobal_reason_int(family: int, value: int) -> Optional[str]:
    """nonglobal_reason of an address given as its IP version and integer value."""
    if value >> _TOP_SHIFT[family] not in _MAYBE_NONGLOBAL[family]:
        return None
    for net, mask, why in _NONGLOBAL_INT[family]:
        if value & mask == net:
            return why
    return None


def parse_prefix(text: str, max_v6: int = 32, max_v4: int = 16) -> IPNetwork:
    """Parse an address or prefix; refuse host bits and prefixes broader than /max_v6 or /max_v4.

    A too-broad prefix in a blocklist can cut a host off the internet, so it is an error,
    never silently narrowed.
    """
    raw = text.strip()
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            raise UsageError(f"prefix has host bits set: {raw!r}") from None
        raise UsageError(f"not an IP address or prefix: {raw!r}") from None
    limit = max_v6 if net.version == 6 else max_v4
    if net.prefixlen < limit:
        raise UsageError(f"prefix {net} is broader than the limit /{limit}")
    return net


def parse_prefix_int(text: str, max_v6: int = 32, max_v4: int = 16) -> tuple[int, int, int]:
    """parse_prefix as (IP version, network as an integer, prefix length): the same addresses
    accepted, the same errors, no ipaddress object made.

    An address inet_pton reads (only ASCII hex digits, ':' and '.', in the forms ipaddress
    reads too: tests/test_lists.py compares them) with a length of 1-3 ASCII digits takes
    ~1 µs here where ipaddress.ip_network takes ~10 µs, the bulk of a 100k-entry list's
    validation; anything else, and every error, goes through parse_prefix for its message."""
    raw = text.strip()
    address, slash, length_text = raw.partition("/")
    if not slash or (0 < len(length_text) <= 3 and length_text.isdigit()
                     and length_text.isascii()):
        family = 6 if ":" in address else 4
        try:
            packed = socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET,
                                      address)
        except (OSError, ValueError, UnicodeError):
            packed = b""
        bits = 128 if family == 6 else 32
        length = int(length_text) if slash else bits
        if packed and length <= bits:
            value = int.from_bytes(packed, "big")
            if value & ((1 << (bits - length)) - 1):
                raise UsageError(f"prefix has host bits set: {raw!r}")
            limit = max_v6 if family == 6 else max_v4
            if length < limit:
                net = ipaddress.ip_network((value, length))
                raise UsageError(f"prefix {net} is broader than the limit /{limit}")
            return family, value, length
    net = parse_prefix(raw, max_v6, max_v4)
    return net.version, int(net.network_address), net.prefixlen
