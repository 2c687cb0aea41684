"""State and lists → the inputs of the firewall plan; shared by `rules apply` and `sync`."""

from __future__ import annotations

from typing import Any

from ntpguard import hostinfo
from ntpguard.plan import HostFacts, Plan, PrefixEntry, ServerStatus, build


def inputs_from_state(config: Any, state: Any, state_dir: str
                      ) -> tuple[list[ServerStatus], list[PrefixEntry], list[PrefixEntry]]:
    """(known servers with status, scanner entries, harvester entries) for plan.build.

    A server's status is its effective verdict (ntpguard.precedence: manual, then local
    evidence, then lists). Harvester/suspect verdicts on addresses or prefixes that are not known
    servers become harvester entries; enforced lists give scanner and harvester entries, except
    a listed address whose own manual or local verdict says otherwise.
    """
    from ntpguard import lists
    from ntpguard.precedence import LIST_RANK, effective, rank

    verdicts = state.latest_verdicts()
    servers, harvesters, decided_locally = [], [], set()
    known = set()
    for s in state.servers():
        known.add(s.address)
        eff = effective(verdicts.get(s.address, {}))
        if eff is None:
            servers.append(ServerStatus(s.address, "unknown", "state"))
            continue
        servers.append(ServerStatus(s.address, eff.status, f"verdict from {eff.source}"))
        if rank(eff.source) < LIST_RANK:
            decided_locally.add(s.address)
    for address, by_source in verdicts.items():
        if address in known:
            continue
        eff = effective(by_source)
        if eff is not None and eff.status in ("harvester", "suspect"):
            harvesters.append(PrefixEntry(address, f"verdict from {eff.source} on {address}"))
    scanners = []
    for loaded in lists.load_all(config, state_dir):
        if loaded.trust != "enforce":
            continue
        for entry in loaded.entries:
            source = f"{loaded.origin or loaded.name}:{entry.line}"
            if entry.kind == "scanner":
                scanners.append(PrefixEntry(entry.network, source))
            elif entry.address not in decided_locally:
                harvesters.append(PrefixEntry(entry.network, source))
    return servers, scanners, harvesters


def plan_from_state(config: Any, state: Any, state_dir: str, force: bool = False) -> Plan:
    """The plan `rules apply` and `sync` enforce: inputs from state, host facts gathered now."""
    servers, scanners, harvesters = inputs_from_state(config, state, state_dir)
    host: HostFacts = hostinfo.gather()
    return build(servers, scanners, harvesters, config.rules, host, force=force)
