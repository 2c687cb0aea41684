"""Sets of address prefixes as packed bytes: what a 100k-entry list costs in memory and time.

A list of 100k prefixes as Python objects (an `ipaddress` network, or even one str, per entry)
is ~100 MB and a second of work to build each time it is used. Here every group of networks of
one family and prefix length is one `bytes` of big-endian addresses (4 or 16 bytes each),
sorted and unique: 100k IPv6 prefixes are 1.6 MB, loaded from a file in a millisecond,
compared with another version of themselves by a memcmp, and turned into text only where nft
needs text. Everything here is pure.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any, Iterable, Iterator, Optional, Union, overload

BITS = {4: 32, 6: 128}
WIDTH = {4: 4, 6: 16}
# (family, prefix length): the key of a group of networks everywhere below.
Key = tuple[int, int]
# (family, network as int, prefix length): one prefix before it is packed.
Item = tuple[int, int, int]


def ntop(family: int, packed: bytes) -> str:
    """The canonical (RFC 5952, as `ipaddress` prints it) text of one packed address.

    inet_ntop takes 0.2 µs where ipaddress takes 2 µs; it prints the addresses whose first 80
    bits are zero (IPv4-compatible and -mapped) in dotted form, which ipaddress does not, so
    those few go through ipaddress."""
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    if packed[:10] == b"\0" * 10:
        return str(ipaddress.IPv6Address(packed))
    return socket.inet_ntop(socket.AF_INET6, packed)


def pton(family: int, text: str) -> bytes:
    """The packed form of one address in canonical or any other form ipaddress reads."""
    try:
        return socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET, text)
    except (OSError, UnicodeError, ValueError):
        return ipaddress.ip_address(text).packed


def address_value(text: str) -> Optional[tuple[int, int]]:
    """(IP version, integer value) of an address, None if it is not one: inet_pton first
    (~0.3 µs), ipaddress for what it reads and inet_pton does not (a zone index), ~5 µs where
    every address of a few thousand servers went through ipaddress twice per status."""
    family = 6 if ":" in text else 4
    try:
        packed = socket.inet_pton(socket.AF_INET6 if family == 6 else socket.AF_INET, text)
        return family, int.from_bytes(packed, "big")
    except (OSError, UnicodeError, ValueError):
        pass
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.version, int(ip)


class Networks(Sequence[str]):
    """Network addresses of one family, sorted numerically and unique, packed.

    A Sequence of canonical address strings (decoded on demand), equal to another Networks
    with the same content or to a tuple or list of the same strings.
    """

    __slots__ = ("_digest", "family", "packed")

    def __init__(self, family: int, packed: bytes = b"") -> None:
        if family not in WIDTH:
            raise ValueError(f"unknown address family {family!r}")
        if len(packed) % WIDTH[family]:
            raise ValueError(f"{len(packed)} bytes are not whole IPv{family} addresses")
        self.family = family
        self.packed = bytes(packed)
        self._digest: Optional[str] = None

    @classmethod
    def of(cls, family: int, addresses: Iterable[Union[str, int]]) -> Networks:
        """From address strings or integers in any order (duplicates dropped)."""
        width = WIDTH[family]
        values = {a if isinstance(a, int) else int.from_bytes(pton(family, a), "big")
                  for a in addresses}
        return cls(family, b"".join(v.to_bytes(width, "big") for v in sorted(values)))

    @classmethod
    def from_sorted_ints(cls, family: int, values: Iterable[int]) -> Networks:
        """From integers already sorted and unique (not checked: the caller sorted them)."""
        width = WIDTH[family]
        return cls(family, b"".join(v.to_bytes(width, "big") for v in values))

    @property
    def width(self) -> int:
        return WIDTH[self.family]

    def __len__(self) -> int:
        return len(self.packed) // WIDTH[self.family]

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[str, tuple[str, ...]]:
        if isinstance(index, slice):
            return tuple(self)[index]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("Networks index out of range")
        w = WIDTH[self.family]
        return ntop(self.family, self.packed[index * w:(index + 1) * w])

    def __iter__(self) -> Iterator[str]:
        family, packed, w = self.family, self.packed, WIDTH[self.family]
        for i in range(0, len(packed), w):
            yield ntop(family, packed[i:i + w])

    def records(self) -> list[bytes]:
        """Each packed address as its own bytes (for set arithmetic on a few groups)."""
        packed, w = self.packed, WIDTH[self.family]
        return [packed[i:i + w] for i in range(0, len(packed), w)]

    def ints(self) -> Iterator[int]:
        packed, w = self.packed, WIDTH[self.family]
        for i in range(0, len(packed), w):
            yield int.from_bytes(packed[i:i + w], "big")

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            try:
                key = pton(self.family, item)
            except ValueError:
                return False
        elif isinstance(item, int):
            key = item.to_bytes(self.width, "big")
        else:
            return False
        return find(self.packed, self.width, key) >= 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Networks):
            return self.family == other.family and self.packed == other.packed
        if isinstance(other, (tuple, list)):
            return len(other) == len(self) and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.family, self.packed))

    def __repr__(self) -> str:
        shown = ", ".join(repr(a) for a in self[:3])
        more = f", ... {len(self)} in all" if len(self) > 3 else ""
        return f"Networks({self.family}, [{shown}{more}])"

    def digest(self) -> str:
        """SHA-256 of the packed content (remembered: the content never changes)."""
        if self._digest is None:
            # Imported here: hashlib loads OpenSSL's libcrypto (~3 ms), which `ntpguard
            # detect`, importing this module for the statuses, never needs.
            import hashlib

            self._digest = hashlib.sha256(bytes([self.family]) + self.packed).hexdigest()
        return self._digest


# -- searching packed, sorted records ------------------------------------------------------------


def bisect_left(packed: bytes, width: int, key: bytes) -> int:
    """Index of the first record >= key (big-endian bytes compare as the numbers do)."""
    lo, hi = 0, len(packed) // width
    while lo < hi:
        mid = (lo + hi) // 2
        if packed[mid * width:mid * width + width] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


def find(packed: bytes, width: int, key: bytes) -> int:
    """Index of the record equal to key, or -1."""
    i = bisect_left(packed, width, key)
    return i if packed[i * width:i * width + width] == key else -1


def covering(groups: dict[Key, Networks], family: int, value: int, length: int
             ) -> Optional[Key]:
    """The key of a group holding a prefix that contains (or equals) value/length, or None."""
    bits, width = BITS[family], WIDTH[family]
    for (fam, glen), nets in groups.items():
        if fam != family or glen > length or not nets.packed:
            continue
        masked = value >> (bits - glen) << (bits - glen)
        if find(nets.packed, width, masked.to_bytes(width, "big")) >= 0:
            return (fam, glen)
    return None


def inside_range(nets: Networks, value: int, length: int) -> tuple[int, int]:
    """(first, end) indexes of the networks of `nets` that lie inside value/length."""
    bits, width = BITS[nets.family], nets.width
    start = value >> (bits - length) << (bits - length)
    end = start + (1 << (bits - length))
    lo = bisect_left(nets.packed, width, start.to_bytes(width, "big"))
    hi = len(nets) if end >> bits else bisect_left(nets.packed, width,
                                                   end.to_bytes(width, "big"))
    return lo, hi


def overlapping(groups: dict[Key, Networks], family: int, value: int, length: int
                ) -> Optional[tuple[Key, int]]:
    """A network of `groups` that overlaps value/length (contains it or lies inside it), as
    (its key, its index), or None."""
    bits, width = BITS[family], WIDTH[family]
    for (fam, glen), nets in groups.items():
        if fam != family or not nets.packed:
            continue
        if glen <= length:
            masked = value >> (bits - glen) << (bits - glen)
            i = find(nets.packed, width, masked.to_bytes(width, "big"))
            if i >= 0:
                return (fam, glen), i
        else:
            lo, hi = inside_range(nets, value, length)
            if lo < hi:
                return (fam, glen), lo
    return None


# -- collapsing ----------------------------------------------------------------------------------


def collapse(items: Iterable[Item]) -> dict[Key, list[int]]:
    """Drop duplicates and prefixes inside another item; group by (family, length), sorted.

    Overlapping elements would count twice and nft rejects overlaps in interval sets; siblings
    are not merged, so an entry can later be deleted exactly as it was added.
    """
    groups: dict[Key, list[int]] = {}
    for fam in (4, 6):
        bits = BITS[fam]
        last_net, last_len = -1, 0
        for _, net, length in sorted(i for i in items if i[0] == fam):
            if last_net >= 0 and (net >> (bits - last_len)) == (last_net >> (bits - last_len)):
                continue  # inside (or equal to) the previous kept prefix
            groups.setdefault((fam, length), []).append(net)
            last_net, last_len = net, length
    return groups


def packed_groups(groups: dict[Key, list[int]]) -> dict[Key, Networks]:
    return {key: Networks.from_sorted_ints(key[0], nets) for key, nets in groups.items()}


def inside_others(groups: dict[Key, Networks]) -> dict[Key, list[int]]:
    """Indexes of the networks that lie inside another network of the groups (a collapse
    would drop them), by key; keys with none are left out."""
    items: list[tuple[int, int, int, int]] = []
    for (fam, length), nets in groups.items():
        items.extend((fam, v, length, i) for i, v in enumerate(nets.ints()))
    items.sort()
    out: dict[Key, list[int]] = {}
    last: dict[int, tuple[int, int]] = {}
    for fam, net, length, index in items:
        bits = BITS[fam]
        prev = last.get(fam)
        if prev is not None and (net >> (bits - prev[1])) == (prev[0] >> (bits - prev[1])):
            out.setdefault((fam, length), []).append(index)
            continue
        last[fam] = (net, length)
    return out


def without(nets: Networks, indexes: Iterable[int]) -> Networks:
    """nets less the records at these indexes."""
    drop = sorted(set(indexes))
    if not drop:
        return nets
    w, packed = nets.width, nets.packed
    parts, start = [], 0
    for i in drop:
        parts.append(packed[start * w:i * w])
        start = i + 1
    parts.append(packed[start * w:])
    return Networks(nets.family, b"".join(parts))


def merge(sources: Sequence[dict[Key, Networks]], extra: Iterable[Item] = ()
          ) -> dict[Key, Networks]:
    """The collapsed union of groups that are each already collapsed, and of loose items:
    what a plan's harvester or scanner sets are made of.

    The common case is one big list and a few dozen other prefixes (the shipped lists,
    scanners detected here, blocked servers): the big groups are taken whole, and each small
    prefix is looked up in them (dropped when a big prefix covers it, cutting out the big
    prefixes it covers), ~100 binary searches per small prefix instead of a pass over 100k.
    When two sources are both big, everything is sorted and collapsed once (~2 µs a prefix).
    """
    ordered = sorted(sources, key=lambda g: -sum(len(n) for n in g.values()))
    rest = ordered[1:]
    extra = list(extra)
    if ordered and sum(len(n) for g in rest for n in g.values()) + len(extra) <= _SMALL:
        small = [(fam, v, length) for g in rest for (fam, length), nets in g.items()
                 for v in nets.ints()]
        return _merge_small(ordered[0], collapse(small + extra))
    items = [(fam, v, length) for g in ordered for (fam, length), nets in g.items()
             for v in nets.ints()]
    return packed_groups(collapse(items + extra))


# More loose prefixes than this and a full sort is cheaper than looking each one up in ~100
# groups of the big source (measured: ~3 µs a lookup, ~2 µs a prefix to sort and collapse).
_SMALL = 2000


def _merge_small(big: dict[Key, Networks], small: dict[Key, list[int]]) -> dict[Key, Networks]:
    out = dict(big)
    cut: dict[Key, set[int]] = {}
    add: dict[Key, list[int]] = {}
    for (fam, length), values in small.items():
        for value in values:
            if covering(big, fam, value, length) is not None:
                continue
            for key, nets in big.items():
                if key[0] == fam and key[1] > length:
                    lo, hi = inside_range(nets, value, length)
                    if lo < hi:
                        cut.setdefault(key, set()).update(range(lo, hi))
            add.setdefault((fam, length), []).append(value)
    for key, indexes in cut.items():
        out[key] = without(out[key], indexes)
    for key, values in add.items():
        old = out.get(key)
        out[key] = Networks.of(key[0], values) if old is None else insert(old, values)
    return {k: v for k, v in out.items() if len(v)}


def insert(nets: Networks, values: Iterable[int]) -> Networks:
    """nets with these addresses added (those already there are not added twice)."""
    w, packed = nets.width, nets.packed
    parts, start = [], 0
    for value in sorted(set(values)):
        key = value.to_bytes(w, "big")
        i = bisect_left(packed, w, key)
        if packed[i * w:i * w + w] == key:
            continue
        parts.append(packed[start * w:i * w])
        parts.append(key)
        start = i
    parts.append(packed[start * w:])
    return Networks(nets.family, b"".join(parts))


def text_prefix(family: int, value: int, length: int) -> str:
    """value/length as text (a bare address for a full-length prefix)."""
    address = ntop(family, value.to_bytes(WIDTH[family], "big"))
    return address if length == BITS[family] else f"{address}/{length}"


def as_network(family: int, value: int, length: int) -> Any:
    """An ipaddress network (for the few places that want one: messages, exports)."""
    cls = ipaddress.IPv6Network if family == 6 else ipaddress.IPv4Network
    return cls((value, length))
