"""Effective statuses + lists + [rules] config → the desired firewall state (pure, printable).

Nothing here touches the system: the host's own addresses and gateways come in as `HostFacts`
(gathered by ntpguard.hostinfo), so every safety check is tested without root. Backends turn a
`Plan` into nft or ip6tables/ipset rules; two equal plans must give the same ruleset.

The plan follows the servers' effective statuses (ntpguard.status) and decides nothing about
a server itself: usable servers are let through before any harvester prefix is looked at, so
an admin's `clean` (or a trusted server) inside a listed harvester prefix stays reachable.
"""

from __future__ import annotations

import ipaddress
from dataclasses import field
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

from ntpguard.addr import IPNetwork, address_int
from ntpguard.compiled import Part
from ntpguard.errors import FirewallError, UsageError
from ntpguard.prefixes import (
    BITS,
    WIDTH,
    Key,
    Networks,
    collapse,
    find,
    inside_range,
    merge,
    ntop,
)
from ntpguard.records import record
from ntpguard.status import ServerStatus

if TYPE_CHECKING:
    from ntpguard.config import Rules
    from ntpguard.facts import Scan
# `ntpguard probe` marks its packets (SO_MARK, "ntpg"): they may reach a blocked server, since
# confirming a suspect means sending it one packet. Setting a mark needs CAP_NET_ADMIN.
PROBE_MARK = 0x6E747067

# Traffic the host needs whatever a blocklist says: dropping packets from these would break
# loopback, neighbour discovery or DHCP, so a scanner entry overlapping them is an error.
_PROTECTED = [
    (ipaddress.ip_network(n), why)
    for n, why in [
        ("::/128", "the unspecified address"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
        ("::ffff:0:0/96", "IPv4-mapped addresses"),
        ("0.0.0.0/8", "the unspecified network"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
    ]
]


class PlanInputError(UsageError):
    """An entry that must not become a firewall rule; the message names it and its source."""


class UnsafePlan(FirewallError):
    """A plan that would cut the host off (e.g. from all time sync); applied only with --force."""


@record
class PrefixEntry:
    """An address or prefix from a list or a verdict; `source` is for error messages.

    `prefix` is text, or an ipaddress network already parsed (lists.Entry.network): 100k
    entries parse in ~0.5 s, so they are not parsed twice.
    """

    prefix: Union[str, IPNetwork]
    source: str


@record
class HostFacts:
    """What must stay reachable: the host's own addresses and its default gateways."""

    addresses: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()

    def blocks64(self) -> list[int]:
        """The /64s of the host's IPv6 addresses as their top 64 bits (an address's value
        >> 64), sorted: one each, however many addresses (with its canaries the host holds
        ~260 in one /64)."""
        return sorted({address_int(a.split("%")[0])[1] >> 64 for a in self.addresses
                       if ":" in a})


@record
class Listed:
    """One list's entries of one kind, as the rules take them: compiled (packed groups by
    IP version and length, each entry's line) and where the list came from (for messages)."""

    origin: str
    part: Part


@record
class PrefixSet:
    """All prefixes of one family and length: one hash set each in the kernel.

    A hash set per prefix length (looked up with a mask) loaded 100k prefixes in 0.77 s and
    took a 100-element update in 0.02 s; one interval set of the same prefixes needed 28 s for
    that update (deleting from an interval set is the slow part; nft 1.0.6, kernel 6.x).
    `networks` is packed (ntpguard.prefixes.Networks); a tuple of address strings given
    here is packed too.
    """

    family: int
    length: int
    networks: Networks  # network addresses, sorted numerically

    def __post_init__(self) -> None:
        nets: Any = self.networks
        if not isinstance(nets, Networks):
            packed = Networks(self.family, nets) if isinstance(nets, bytes) else \
                Networks.of(self.family, nets)
            object.__setattr__(self, "networks", packed)

    @property
    def full(self) -> bool:
        return self.length == BITS[self.family]

    def mask(self) -> str:
        """The netmask in address notation (ffff:ffff:: or 255.255.0.0); one for each of the
        ~100 sets of a big list, by integers (an ipaddress network took ~20 µs)."""
        bits = BITS[self.family]
        ones = (1 << bits) - (1 << (bits - self.length))
        return ntop(self.family, ones.to_bytes(bits // 8, "big"))


# Destinations that keep the host's own source address even with canaries: never a public
# server (ntpguard.canary.exempt says the same of one address).
_NOT_PUBLIC6 = ("::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8")


@record
class Canaries:
    """The canary part of a plan (ntpguard.canary): NTP's source rewritten per server."""

    mapping: tuple[tuple[str, str], ...]  # (server, its canary), by server
    spare: str                            # the source of NTP to servers without a canary
    addresses: tuple[str, ...]            # every live canary: inbound, only replies pass
    exempt: tuple[str, ...]               # prefixes that keep the normal source, collapsed


def canaries(mapping: dict[str, str], spare: str, addresses: list[str], host: HostFacts,
             trusted: tuple[str, ...] = ()) -> Canaries:
    """The plan's canaries; exempt: not-public ranges, the host's on-link /64s (its global
    IPv6 addresses' prefixes) and `trusted` addresses, overlaps removed (nft refuses them in
    an interval set)."""
    items = [(6, block << 64, 64) for block in host.blocks64()]
    for net in (*(ipaddress.IPv6Network(text) for text in _NOT_PUBLIC6),
                *(ipaddress.IPv6Network(f"{a}/128") for a in trusted if ":" in a)):
        items.append((6, int(net.network_address), net.prefixlen))
    exempt = [f"{ipaddress.IPv6Address(n)}/{length}" for (_, length), nets in
              sorted(collapse(items).items(), key=lambda kv: kv[0][1]) for n in sorted(nets)]
    return Canaries(tuple(sorted(mapping.items())), spare, tuple(addresses), tuple(exempt))


@record
class Plan:
    """The desired firewall state. Addresses are canonical strings, every tuple sorted."""

    mode: str = "host"
    unknown: str = "block"
    log: bool = True
    log_rate: int = 20
    log_burst: int = 100
    log_group: int = 0
    clean4: tuple[str, ...] = ()
    clean6: tuple[str, ...] = ()
    harvesters: tuple[PrefixSet, ...] = ()
    scanners: tuple[PrefixSet, ...] = ()
    canaries: Optional[Canaries] = None
    forced: bool = False
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def gateway(self) -> bool:
        return self.mode == "gateway"

    def counts(self) -> dict[str, int]:
        return {
            "clean4": len(self.clean4),
            "clean6": len(self.clean6),
            "harvester_prefixes": sum(len(s.networks) for s in self.harvesters),
            "scanner_prefixes": sum(len(s.networks) for s in self.scanners),
            "canaries": len(self.canaries.mapping) if self.canaries else 0,
        }

    def describe(self) -> str:
        """Human-readable plan, one fact per line."""
        c = self.counts()
        lines = [
            f"mode {self.mode}: NTP out{' and forwarded' if self.gateway else ''} "
            + ("to known usable servers only" if self.unknown == "block"
               else "to anything but harvesters and suspects"),
            f"usable servers: {c['clean6']} IPv6, {c['clean4']} IPv4",
            f"harvester prefixes: {c['harvester_prefixes']}",
            f"scanner prefixes dropped: {c['scanner_prefixes']} in {len(self.scanners)} sets",
            "logging: " + (f"{self.log_rate}/s burst {self.log_burst}"
                           + (f" to NFLOG group {self.log_group}" if self.log_group else "")
                           if self.log else "off"),
            "canaries: " + (f"{c['canaries']} servers have their own, the others share "
                            f"{self.canaries.spare}" if self.canaries
                            else "off (NTP leaves from the host's own addresses)"),
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- building -------------------------------------------------------------------------------


def _parse_network(entry: PrefixEntry, rules: Rules) -> tuple[int, int, int]:
    """(family, network int, length) of an entry; refuses host bits and too-broad prefixes."""
    if isinstance(entry.prefix, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        net = entry.prefix
    else:
        text = entry.prefix.strip()
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            why = ("has host bits set" if "host bits" in str(exc)
                   else "is not an IP address or prefix")
            raise PlanInputError(f"{entry.source}: {text!r} {why}") from None
    limit = rules.max_prefix_v6 if net.version == 6 else rules.max_prefix_v4
    if net.prefixlen < limit:
        raise PlanInputError(
            f"{entry.source}: {net} is broader than the limit /{limit} "
            f"(rules.max_prefix_v{net.version})"
        )
    return net.version, int(net.network_address), net.prefixlen


def _overlaps(fam: int, a: int, la: int, b: int, lb: int) -> bool:
    shift = BITS[fam] - min(la, lb)
    return (a >> shift) == (b >> shift)


def _protected(host: HostFacts) -> dict[int, list[tuple[int, int, str]]]:
    out: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
    for net, why in _PROTECTED:
        out[net.version].append((int(net.network_address), net.prefixlen, why))
    for kind, addrs in (("this host's address", host.addresses),
                        ("this host's default gateway", host.gateways)):
        for text in addrs:
            fam, value = address_int(text.split("%")[0])
            shown = ntop(fam, value.to_bytes(WIDTH[fam], "big"))  # not ipaddress: ~20x as slow
            out[fam].append((value, BITS[fam], f"{kind} {shown}"))
    return out


def protected_reason(network: Union[str, IPNetwork], host: HostFacts) -> Optional[str]:
    """What a prefix would cut off if its packets were dropped (None: nothing protected)."""
    net = ipaddress.ip_network(network)
    fam, value, length = net.version, int(net.network_address), net.prefixlen
    for pnet, plen, why in _protected(host)[fam]:
        if _overlaps(fam, value, length, pnet, plen):
            return why
    return None


def _sets(groups: dict[Key, Networks], always: Iterable[Key] = ()) -> tuple[PrefixSet, ...]:
    """A set per (family, length) that has prefixes, and one for each of `always` even when
    empty. The harvesters' /128 and /32 sets are always there: a verdict on one server then
    adds or deletes one of their elements (an update in place, ~0.02 s), where a set of its
    own appearing changed the firewall's skeleton, so the whole table was replaced (~0.5 s
    with a 100k-entry list loaded)."""
    keys = {k for k, nets in groups.items() if len(nets)} | set(always)
    return tuple(PrefixSet(fam, length, groups.get((fam, length)) or Networks.of(fam, ()))
                 for (fam, length) in sorted(keys, key=lambda k: (-k[0], -k[1])))


def _check_listed(listed: Listed, protected: dict[int, list[tuple[int, int, str]]]) -> None:
    """Refuse a list whose scanner entries cover a protected address (loopback, this host,
    its gateways...): the entry with the lowest line among those that do, named with its list
    and line, as a check entry by entry would have named it. A lookup per protected prefix
    and group, never a pass over the entries. The protected addresses are taken by their /64
    (IPv6) or /16 (IPv4) block: the host's own addresses include every canary (256 by
    default, one /64), and a group with nothing in a block is asked once for all of them,
    where a pass over each address and group was ~30k steps (~5 ms of every plan)."""
    found: list[tuple[int, int, str, str]] = []
    coarse_len = {4: 16, 6: 64}
    # Per family: the prefixes wider than a block, each on its own; the others by block.
    wide: dict[int, list[tuple[int, int, int, int, str]]] = {}
    blocks: dict[int, dict[int, list[tuple[int, int, int, int, str]]]] = {}
    order = 0
    for fam, prefixes in protected.items():
        cut = BITS[fam] - coarse_len[fam]
        for pnet, plen, why in prefixes:
            order += 1
            entry = (order, pnet, pnet | ((1 << (BITS[fam] - plen)) - 1), plen, why)
            if plen >= coarse_len[fam]:
                blocks.setdefault(fam, {}).setdefault(pnet >> cut, []).append(entry)
            else:
                wide.setdefault(fam, []).append(entry)
    for (gfam, glen), nets in listed.part.groups.items():
        if not nets.packed:
            continue
        bits, width, coarse = BITS[gfam], WIDTH[gfam], coarse_len[gfam]
        # What the group spans, first network to the end of the last: most protected blocks
        # (the special ranges, this host's addresses) lie outside it and need no lookup.
        low = int.from_bytes(nets.packed[:width], "big")
        high = int.from_bytes(nets.packed[-width:], "big") | ((1 << (bits - glen)) - 1)
        candidates = [e for e in wide.get(gfam, ()) if e[1] <= high and e[2] >= low]
        for block, entries in blocks.get(gfam, {}).items():
            start = block << (bits - coarse)
            if start > high or start | ((1 << (bits - coarse)) - 1) < low:
                continue
            if glen <= coarse:
                # One network of the group holds the whole block or none of it: the block's
                # first address stands for all (the lowest order among them is reported).
                candidates.append(entries[0])
                continue
            lo, hi = inside_range(nets, start, coarse)
            if lo < hi:
                candidates.extend(entries)
        for order, pnet, _, plen, why in candidates:
            if glen <= plen:
                masked = pnet >> (bits - glen) << (bits - glen)
                i = find(nets.packed, width, masked.to_bytes(width, "big"))
                hits = range(i, i + 1) if i >= 0 else range(0)
            else:
                hits = range(*inside_range(nets, pnet, plen))
            for i in hits:
                shown = f"{nets[i]}/{glen}"
                found.append((listed.part.line((gfam, glen), i), order, shown, why))
    if found:
        line, _, shown, why = min(found)
        raise PlanInputError(f"{listed.origin}:{line}: scanner prefix "
                             f"{ipaddress.ip_network(shown)} covers {why}; refusing to drop it")


def build(
    statuses: Iterable[ServerStatus],
    scanners: Iterable[PrefixEntry],
    harvesters: Iterable[PrefixEntry],
    rules: Rules,
    host: HostFacts,
    force: bool = False,
    canaries: Optional[Canaries] = None,
    listed_scanners: Sequence[Listed] = (),
    listed_harvesters: Sequence[Listed] = (),
) -> Plan:
    """The desired firewall state; raises PlanInputError or UnsafePlan instead of guessing.

    Usable servers (known, not harvester or suspect: ServerStatus.usable) may receive NTP;
    harvesters and suspects may not, nor (with rules.unknown = "allow") anything inside a
    harvester prefix. Scanner prefixes lose their unsolicited inbound traffic; entries broader
    than the limit, or overlapping loopback, link-local, multicast, the host's addresses or its
    gateways, are refused. rules.unknown = "auto" allows unknown servers when the plan has
    canaries (each then sees only a throwaway address) and blocks them otherwise.

    `listed_*` are the lists in force, compiled (validated under these rules' prefix limits
    when they were compiled): their groups are taken whole, only the other prefixes are
    merged into them (ntpguard.prefixes.merge), so a 100k-entry list costs no pass over its
    entries here.
    """
    unknown = rules.unknown if rules.unknown != "auto" else (
        "allow" if canaries is not None else "block")
    harvest_items: list[tuple[int, int, int]] = []
    allowed: list[tuple[int, int]] = []
    for s in statuses:
        fam, value = address_int(s.address)
        if s.status.blocked:
            harvest_items.append((fam, value, BITS[fam]))
        elif s.usable:
            allowed.append((fam, value))
    harvest_items += [_parse_network(e, rules) for e in harvesters]

    protected = _protected(host)
    for listed in listed_scanners:
        _check_listed(listed, protected)
    scan_items = []
    for entry in scanners:
        fam, net, length = _parse_network(entry, rules)
        for pnet, plen, why in protected[fam]:
            if _overlaps(fam, net, length, pnet, plen):
                shown = ipaddress.ip_network((net, length))
                raise PlanInputError(
                    f"{entry.source}: scanner prefix {shown} covers {why}; refusing to drop it"
                )
        scan_items.append((fam, net, length))

    harvest_groups = merge([lst.part.collapsed() for lst in listed_harvesters], harvest_items)
    notes = []
    clean: dict[int, set[int]] = {4: set(), 6: set()}
    for fam, value in allowed:
        clean[fam].add(value)
    inside = _inside_count(allowed, harvest_groups)
    if inside:
        notes.append(f"{inside} usable server(s) inside harvester prefixes: let through, "
                     "a higher-ranked source (manual, trusted, local evidence) says so")
    if unknown == "block" and not (clean[4] or clean[6]):
        if not force:
            raise UnsafePlan(
                'no usable NTP server is known and rules.unknown = "block": these rules would '
                "stop all time sync; keeping the previous rules (run `ntpguard resolve` first, "
                "name your own servers in [servers] trusted, or use --force)"
            )
        notes.append("forced: no usable server, all NTP is rejected")

    return Plan(
        mode=rules.mode,
        unknown=unknown,
        log=rules.log,
        log_rate=rules.log_rate,
        log_burst=rules.log_burst,
        log_group=rules.log_group,
        clean4=tuple(ntop(4, v.to_bytes(4, "big")) for v in sorted(clean[4])),
        clean6=tuple(ntop(6, v.to_bytes(16, "big")) for v in sorted(clean[6])),
        harvesters=_sets(harvest_groups, always=((6, 128), (4, 32))),
        scanners=_sets(merge([lst.part.collapsed() for lst in listed_scanners], scan_items)),
        canaries=canaries,
        forced=force,
        notes=tuple(notes),
    )


def _inside_count(allowed: list[tuple[int, int]], groups: dict[Key, Networks]) -> int:
    """How many allowed addresses lie inside a prefix of the groups: one dict per group
    (a few dozen entries usually) and a lookup per group and address."""
    lookup = {key: set(nets.records()) for key, nets in groups.items()}
    count = 0
    for fam, value in allowed:
        bits, width = BITS[fam], WIDTH[fam]
        for (gfam, length), records in lookup.items():
            if gfam == fam and (value >> (bits - length) << (bits - length)).to_bytes(
                    width, "big") in records:
                count += 1
                break
    return count


def scanner_prefixes(scans: Iterable[Scan], blocked: set[str], host: HostFacts
                     ) -> list[PrefixEntry]:
    """Sources of recorded scans that a blocked server among the triggers explains.

    Those are the harvesters' scanners: drop their prefix (IPv6: the /64, as scan6.shodan.io
    spread its work over one /64 in 2016; IPv4: the address). A scan nobody triggered proves
    nothing about its source, and a prefix that covers this host or its gateway is never
    dropped.
    """
    out: dict[str, PrefixEntry] = {}
    for scan in scans:
        if not any(t.server in blocked for t in scan.triggers):
            continue
        address = scan.src.split("/")[0]
        net = ipaddress.ip_network(f"{address}/{64 if ':' in address else 32}", strict=False)
        key = str(net)
        if key in out or protected_reason(net, host):
            continue
        out[key] = PrefixEntry(net, f"scan of {scan.dst} detected at {scan.start:.0f}")
    return list(out.values())
