"""NTP canaries: every NTP packet leaves from a throwaway address that only its server sees.

Each server in use gets a *canary*: a random address of the host's /64 that nothing else
uses, added like a probe address (`nodad`, deprecated, so the host's own traffic never picks
it) and put in the firewall's map server → canary; an nftables `snat` rewrites the source of
every NTP packet to the canary of its destination, so the time daemon needs no change and no
server ever learns one of the host's real addresses. Servers without a canary yet (answers the
pool gave the time daemon before ntpguard heard of them) share the *spare*, replaced hourly.

Inbound to a canary only replies pass (conntrack reverses the NAT before the input hook, so a
reply is addressed to the real address there); anything else is logged with its own prefix
and dropped. A scan of a canary therefore convicts exactly its server at once, and the canary
is retired; a scan of the spare is a group test of the servers that met it. Canaries rotate
(`[canary] rotate`), so a harvester that harvests only some clients meets new ones.

Pure parts (which canaries to keep, add and retire; which scans convict whom) take data and
return data; the side effects (iproute2) are in the functions at the end.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import field, replace
from typing import TYPE_CHECKING, Callable, Collection, Iterable, Mapping, Optional, Sequence

from ntpguard import backends, commands, hostinfo
from ntpguard.addr import address_int, nonglobal_reason_int
from ntpguard.config import Canary as Settings
from ntpguard.config import Config, Detect, Probe
from ntpguard.errors import NtpguardError
from ntpguard.fresh import ProbeError, Target, find_target, fresh_address
from ntpguard.records import record
from ntpguard.status import ServerStatus, Source, Status, Verdict

if TYPE_CHECKING:
    from ntpguard.facts import Scan
    from ntpguard.state import State

SPARE = ""  # the server of the spare canary
CANARY = Source("canary")
# After retirement an address stays for the lookback and the scan window (plus a minute of
# slack), so a late scan still meets it and is logged; the kernel then removes it.
_AFTERLIFE_SLACK = 60.0
# A canary in use outlives its rotation by a day: if syncs stop (the timer broken, the host
# asleep), NTP keeps leaving from it for that long before the kernel takes it away.
_GRACE = 86400.0


class CanaryError(NtpguardError):
    """A canary address could not be added or changed."""


@record
class Canary:
    """One canary address: whose it is (SPARE for the spare) and its life."""

    address: str
    server: str
    interface: str
    created: float
    expires: float             # the kernel removes the address then (its valid_lft)
    retired: Optional[float] = None  # no longer in the map; kept for late scans
    scanned: Optional[float] = None  # when a scan of it was first seen

    @property
    def active(self) -> bool:
        return self.retired is None


@record
class Change:
    """What one maintenance run does: addresses to add, and to retire."""

    add: tuple[Canary, ...] = ()
    retire: tuple[Canary, ...] = ()  # the retired versions (retired and expires set)

    @property
    def empty(self) -> bool:
        return not (self.add or self.retire)


# -- pure --------------------------------------------------------------------------------------


def exempt(server: str, host_blocks: Collection[int], trusted: Collection[str] = ()) -> bool:
    """Destinations that keep the host's normal source: not a public server (link-local, ULA,
    multicast...), on-link (in one of the host's /64s: `host_blocks`, as
    HostFacts.blocks64 gives them), an admin's trusted server."""
    family, value = address_int(server)
    if family != 6 or server in trusted:
        return True
    if nonglobal_reason_int(6, value) in ("unspecified", "loopback", "link-local", "multicast",
                                          "unique local (ULA)", "IPv4-mapped"):
        return True
    return value >> 64 in host_blocks


def after_retirement(detect: Detect) -> float:
    """Seconds a retired canary is kept: a scan may start up to the lookback after the last
    packet, and takes up to the window."""
    return detect.lookback + detect.window + _AFTERLIFE_SLACK


def plan(current: Sequence[Canary], wanted: Sequence[str], now: float, settings: Settings,
         detect: Detect, target: Target, taken: Iterable[str],
         new_address: Callable[[ipaddress.IPv6Network, set[str]], str]) -> Change:
    """The canaries to add and retire so that each wanted server (most used first, at
    most `settings.max`) has exactly one active canary younger than `settings.rotate`, and
    one spare younger than `settings.spare_rotate` exists.

    A scanned canary is retired at once (its server is convicted; a new canary would only
    feed the harvester). Canaries of servers no longer wanted, or on another interface or
    prefix (the /64 changed), are retired too. `new_address(prefix, taken)` makes one address.
    """
    keep_after = after_retirement(detect)
    wanted = list(dict.fromkeys(wanted))[: settings.max]
    wanted_set = set(wanted)
    # The target prefix as integers: an ipaddress object per canary took ~8 µs (256 of them).
    shift = 128 - target.prefix.prefixlen
    on_target = int(target.prefix.network_address) >> shift
    used = set(taken) | {c.address for c in current}
    add: list[Canary] = []
    retire: list[Canary] = []
    live = [c for c in current if c.expires > now]
    have: dict[str, Canary] = {}
    for c in live:
        if not c.active:
            continue
        stale = (c.scanned is not None
                 or c.interface != target.interface
                 or address_int(c.address)[1] >> shift != on_target
                 or now - c.created >= (settings.spare_rotate if c.server == SPARE
                                        else settings.rotate)
                 or (c.server != SPARE and c.server not in wanted_set)
                 or c.server in have)
        if stale:
            retire.append(replace(c, retired=now, expires=min(c.expires, now + keep_after)))
        else:
            have[c.server] = c
    for server in [SPARE, *wanted]:
        if server in have:
            continue
        address = new_address(target.prefix, used)
        used.add(address)
        life = (settings.spare_rotate if server == SPARE else settings.rotate) + _GRACE
        add.append(Canary(address, server, target.interface, now, now + life))
    return Change(tuple(add), tuple(retire))


def next_change(canaries: Iterable[Canary], now: float, settings: Settings) -> float:
    """The first time after `now` at which `plan` or `in_force` would answer otherwise with
    nothing else changed: a live canary expires, or an active one reaches its rotation age
    (infinity without live canaries). Until then a plan built now stays the plan."""
    times = [math.inf]
    for c in canaries:
        if c.expires <= now:
            continue
        times.append(c.expires)
        if c.active:
            times.append(c.created + (settings.spare_rotate if c.server == SPARE
                                      else settings.rotate))
    return min(times)


def in_force(canaries: Iterable[Canary], usable: Iterable[str], now: float
             ) -> tuple[dict[str, str], Optional[str], list[str]]:
    """(server → canary for usable servers, the spare, every live address) for the plan."""
    usable = set(usable)
    mapping: dict[str, str] = {}
    spare: Optional[str] = None
    live = []
    for c in canaries:
        if c.expires <= now:
            continue
        live.append(c.address)
        if not c.active:
            continue
        if c.server == SPARE:
            spare = c.address
        elif c.server in usable:
            mapping[c.server] = c.address
    return mapping, spare, sorted(live, key=address_int)


def convictions(scans: Iterable[Scan], canaries: Iterable[Canary],
                already: Mapping[str, Verdict]) -> tuple[list[Verdict], list[Canary]]:
    """Harvester verdicts for the servers whose own canary was scanned (exact: nobody else
    knew the address), and those canaries marked scanned. `already`: each server's current
    canary verdict, so a conviction is recorded once per canary. The spare convicts nobody:
    its scans are group tests (the servers that met it, from the log)."""
    by_address = {c.address: c for c in canaries}
    verdicts: dict[str, Verdict] = {}
    marked: dict[str, Canary] = {}
    for scan in sorted(scans, key=lambda s: s.start):
        c = by_address.get(scan.dst)
        if c is None or c.server == SPARE or scan.start < c.created:
            continue
        if c.scanned is None and c.address not in marked:
            marked[c.address] = replace(c, scanned=scan.start)
        prev = already.get(c.server)
        if prev is not None and prev.evidence.get("canary") == c.address:
            continue
        if c.server not in verdicts:
            verdicts[c.server] = Verdict(c.server, Status.HARVESTER, CANARY, {
                "canary": c.address, "scanner": scan.src, "ports": scan.ports,
                "lag": round(scan.start - c.created, 3)}, scan.start)
    return list(verdicts.values()), list(marked.values())


# -- side effects ------------------------------------------------------------------------------


def add_address(c: Canary, now: float) -> None:
    """Add (or re-add, after a reboot) a canary: deprecated at once, gone at `expires`;
    without the /128 route the kernel would add to the main table for each (the address is
    local either way): with daily rotation ~500-800 of them, every one walked by each route
    dump (`ip route`, hostinfo.kernel_facts: 18 ms with 3,900)."""
    valid = max(1, int(c.expires - now))
    proc = commands.run(["ip", "-6", "addr", "replace", f"{c.address}/128", "dev", c.interface,
                         "nodad", "noprefixroute", "valid_lft", str(valid), "preferred_lft",
                         "0"],
                        check=False, error=CanaryError)
    if proc.returncode != 0:
        raise CanaryError(f"cannot add canary {c.address} to {c.interface}: "
                          f"{proc.stderr.strip() or 'ip failed'}")


def add_addresses(canaries: Sequence[Canary], now: float) -> None:
    """add_address for many in one `ip -batch` (a first `rules apply` makes ~257: one
    process each took ~0.5 s). If the batch fails, they are added one by one, so the error
    names the canary (a replace that already happened is done again, harmlessly)."""
    if len(canaries) < 2:
        for c in canaries:
            add_address(c, now)
        return
    lines = "".join(f"addr replace {c.address}/128 dev {c.interface} nodad noprefixroute "
                    "valid_lft "
                    f"{max(1, int(c.expires - now))} preferred_lft 0\n" for c in canaries)
    proc = commands.run(["ip", "-batch", "-"], input=lines, check=False, error=CanaryError)
    if proc.returncode != 0:
        for c in canaries:
            add_address(c, now)


def remove_addresses(canaries: Sequence[Canary]) -> None:
    """Take canaries off their interfaces in one `ip -force -batch` (a process each made a
    `rules remove` with 257 canaries start 257). Best effort, as before: one already gone (it
    expired, an admin removed it) is not an error, and -force goes on past it."""
    if canaries:
        lines = "".join(f"addr del {c.address}/128 dev {c.interface}\n" for c in canaries)
        commands.run(["ip", "-force", "-batch", "-"], input=lines, check=False,
                     error=CanaryError)


def new_address(prefix: ipaddress.IPv6Network, taken: set[str]) -> str:
    return fresh_address(prefix, taken)


@record(frozen=False)
class Report:
    """What a maintenance run found and did (the sync step's message)."""

    available: bool
    reason: str = ""  # why canaries cannot work here
    added: int = 0
    retired: int = 0
    convicted: list[str] = field(default_factory=list)
    servers: int = 0  # servers with a canary of their own

    def message(self) -> str:
        if not self.available:
            return f"off: {self.reason}"
        parts = [f"{self.servers} servers have their own", f"{self.added} added",
                 f"{self.retired} retired"]
        if self.convicted:
            parts.append("scanned, so harvester: " + ", ".join(self.convicted))
        return ", ".join(parts)


def why_not(config: Config) -> Optional[str]:
    """Why canaries cannot work with this configuration (None: they may)."""
    if config.canary.mode == "off":
        return "[canary] mode = off"
    backend = config.rules.backend
    if (backend if backend != "auto" else backends.auto_name()) != "nft":
        return "canaries need the nft backend (the legacy iptables one has no inet nat)"
    return None


def maintain(config: Config, state: State, statuses: Mapping[str, ServerStatus], now: float,
             dry_run: bool = False) -> Report:
    """Convict the servers whose canary was scanned, and give every usable IPv6 server in use
    a fresh canary (rotating old ones, replacing the spare); where canaries cannot work,
    retire those still in the state so the firewall falls back to the host's own addresses.
    Addresses are added before the state records them: a crash leaves at most an address
    that expires by itself, never a map entry pointing at no address."""
    current = state.canaries(live_at=now)
    reason = why_not(config)
    target: Optional[Target] = None
    links = None
    if reason is None:
        links = hostinfo.addresses()  # asked once for the target and the host's facts
        try:
            target = find_target(Probe(interface=config.canary.interface,
                                       prefix=config.canary.prefix), links)
        except ProbeError as exc:
            reason = str(exc).replace("probe.", "canary.")
    if target is None:
        retire = tuple(replace(c, retired=now, expires=min(c.expires, now + after_retirement(
            config.detect))) for c in current if c.active and c.expires > now)
        if retire and not dry_run:
            state.save_canaries(Change(retire=retire))
        return Report(False, reason or "no target", retired=len(retire))
    already = {v.address: v for v in state.verdict_history(source=str(CANARY))}  # newest last
    reached = state.scanned_canaries()
    verdicts, scanned = convictions(state.scans(of=[c.address for c in reached]), reached,
                                    already)
    marked = {c.address: c for c in scanned}
    current = [marked.get(c.address, c) for c in current]
    host = hostinfo.gather(links)
    # One /64 per prefix, not per address: the host holds every canary of its own, so with
    # 256 canaries a list per address made 2,000 servers ~500k membership tests (0.3 s).
    prefixes = frozenset(host.blocks64())
    trusted = frozenset(config.servers.trusted if config.canary.exempt_trusted else ())
    contacted = state.contacted_servers()
    convicted = {v.address for v in verdicts}
    wanted = sorted((a for a, s in statuses.items()
                     if s.usable and a not in convicted and not exempt(a, prefixes, trusted)),
                    key=lambda a: (a not in contacted, a))
    change = plan(current, wanted, now, config.canary, config.detect, target, host.addresses,
                  new_address)
    report = Report(True, added=len(change.add), retired=len(change.retire),
                    convicted=sorted(convicted),
                    servers=len([a for a in wanted[: config.canary.max]]))
    if dry_run:
        return report
    add_addresses((*change.add, *change.retire), now)
    for v in verdicts:
        state.add_verdict(v)
    state.save_canaries(change, scanned)
    return report


def remove_all(state: State, now: float) -> int:
    """Take every live canary off its interface (`rules remove`): with the rules gone nothing
    rewrites NTP to them any more. The state keeps them as expired (a canary's address stays
    one: evidence from it is never mistaken for a real address's). Returns how many."""
    current = state.canaries(live_at=now)
    remove_addresses(current)
    state.save_canaries(Change(retire=tuple(replace(c, retired=c.retired or now, expires=now)
                                            for c in current)))
    return len(current)


def exposure(runs: Mapping[tuple[str, str], Sequence[float]], not_real: set[str],
             canaries: Sequence[Canary], since: float,
             kept: Callable[[str], bool] = lambda server: False) -> tuple[set[str], int]:
    """(servers that saw a real address of this host or its LAN since `since`, canaries
    scanned since then), from the contacts the logs recorded.

    A contact from an address that is neither a canary nor a probe address showed the server
    a real one, unless it was an IPv6 packet to a server whose NTP was rewritten then: a log
    written before the rewrite (another ruleset's output hook) shows the real source, the
    server saw a canary. Canaries were in force while a spare was; `kept(server)` says which
    destinations keep their source (ntpguard.canary.exempt)."""
    cover = sorted((c.created, c.retired if c.retired is not None else c.expires)
                   for c in canaries if c.server == SPARE)

    def rewritten(server: str, first: float, last: float) -> bool:
        if ":" not in server or kept(server):
            return False
        t = first
        for lo, hi in cover:  # is [first, last] inside the union of the spares' lives?
            if lo > t:
                return False
            t = max(t, hi)
            if t >= last:
                return True
        return False

    real = {server for (address, server), run in runs.items()
            if address not in not_real and run[1] >= since
            and not rewritten(server, max(run[0], since), run[1])}
    scanned = sum(1 for c in canaries if c.scanned is not None and c.scanned >= since)
    return real, scanned
