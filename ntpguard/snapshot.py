"""Gathering what decisions are made from: the state, the lists in force, the configuration and
this host's facts, read at one moment (the actor in front of ntpguard.status and plan).

`take` gives the status snapshot every command reads; `statuses` the effective status of every
server from it; `firewall_plan` the plan `rules apply` enforces, `enforceable_plan` the one
`sync` (and a restore with no plan applied yet) enforces. Nothing here decides
anything: precedence lives in status.py, the rules in plan.py.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

from ntpguard import canary, hostinfo, lists
from ntpguard.config import Config
from ntpguard.plan import (
    HostFacts,
    Listed,
    Plan,
    UnsafePlan,
    build,
    canaries,
    scanner_prefixes,
)
from ntpguard.state import State
from ntpguard.status import ServerStatus, Snapshot, effective


def take(config: Config, state: State) -> Snapshot:
    """Known servers, every source's latest verdicts, the lists in force, trusted servers."""
    return Snapshot(
        servers={s.address: s for s in state.servers()},
        verdicts=state.latest_verdicts(),
        lists=tuple(lists.load_all(config, state.directory)),
        trusted=config.servers.trusted,
        trusted_from=config.path or "the configuration",
    )


def statuses(config: Config, state: State) -> dict[str, ServerStatus]:
    """The effective status of every server (status.effective over `take`)."""
    return effective(take(config, state))


def list_prefixes(snapshot: Snapshot) -> tuple[list[Listed], list[Listed]]:
    """(scanner, harvester) parts of the enforced lists, compiled, each naming where it came
    from."""
    scanners: list[Listed] = []
    harvesters: list[Listed] = []
    for loaded in snapshot.lists:
        if loaded.trust != "enforce":
            continue
        origin = loaded.origin or loaded.name
        if loaded.compiled.scanner.count:
            scanners.append(Listed(origin, loaded.compiled.scanner))
        if loaded.compiled.harvester.count:
            harvesters.append(Listed(origin, loaded.compiled.harvester))
    return scanners, harvesters


def firewall_plan(config: Config, state: State, force: bool = False,
                  host: Optional[HostFacts] = None, unknown: Optional[str] = None,
                  now: Optional[float] = None,
                  taken: Optional[tuple[Snapshot, dict[str, ServerStatus]]] = None) -> Plan:
    """The plan `rules apply` and `sync` enforce: statuses, lists, recorded scans and the
    canaries in force from the state, host facts gathered now (unless given). `unknown`
    overrides rules.unknown. `taken`: a snapshot and its statuses the caller already made,
    if the verdicts did not change since (~50 ms each with 2,000 servers)."""
    snap, status = taken if taken is not None else (None, None)
    if snap is None or status is None:
        snap = take(config, state)
        status = effective(snap)
    host = hostinfo.gather() if host is None else host
    listed_scanners, listed_harvesters = list_prefixes(snap)
    blocked = {a for a, s in status.items() if s.status.blocked}
    scanners = scanner_prefixes(state.scans(), blocked, host)
    rules = config.rules if unknown is None else dataclasses.replace(config.rules,
                                                                     unknown=unknown)
    canary_part = None
    if canary.why_not(config) is None:
        usable = [a for a, s in status.items() if s.usable]
        mapping, spare, live = canary.in_force(state.canaries(), usable,
                                               time.time() if now is None else now)
        if spare is not None:
            trusted = config.servers.trusted if config.canary.exempt_trusted else ()
            canary_part = canaries(mapping, spare, live, host, trusted)
    return build(status.values(), scanners, [], rules, host, force=force,
                 canaries=canary_part, listed_scanners=listed_scanners,
                 listed_harvesters=listed_harvesters)


# What `sync` says when it had to let NTP reach unknown servers (enforceable_plan).
FALLBACK_NOTE = "no usable server known yet: NTP to unknown servers allowed for now"


def enforceable_plan(config: Config, state: State, host: Optional[HostFacts] = None
                     ) -> tuple[Plan, list[str]]:
    """The plan to enforce unattended, and notes on it.

    When no server is usable yet (a new host), blocking all NTP would stop time sync, and
    doing nothing would leave scanners and known harvesters in and log nothing (and without
    logs no server is ever cleared). So: enforce what is known to be bad, let NTP reach
    unknown servers for now, and log, until some server is known.
    """
    try:
        return firewall_plan(config, state, force=config.sync.force_rules, host=host), []
    except UnsafePlan:
        return (firewall_plan(config, state, host=host, unknown="allow"),
                [FALLBACK_NOTE])
