"""State and lists → the inputs of the firewall plan; shared by `rules apply` and `sync`."""

from __future__ import annotations

import ipaddress
from typing import Any

from ntpguard import hostinfo
from ntpguard.plan import (
    BLOCKED_STATUSES,
    HostFacts,
    Plan,
    PrefixEntry,
    ServerStatus,
    build,
    protected_reason,
)


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


def detected_scanners(state: Any, bad_servers: set[str], host: HostFacts) -> list[PrefixEntry]:
    """Sources of recorded scans that a harvester (or suspect) among the triggers explains.

    Those are the harvesters' scanners: drop their prefix (IPv6: the /64, as scan6.shodan.io
    spread its work over one /64; IPv4: the address). A scan nobody triggered proves nothing
    about its source, and a prefix that covers this host or its gateway is never dropped.
    """
    from ntpguard.evidence import stored_facts

    scans, _ = stored_facts(state)
    out: dict[str, PrefixEntry] = {}
    for scan in scans:
        if not any(t.server in bad_servers for t in scan.triggers):
            continue
        address = scan.src.split("/")[0]
        net = ipaddress.ip_network(f"{address}/{64 if ':' in address else 32}", strict=False)
        key = str(net)
        if key in out or protected_reason(net, host):
            continue
        out[key] = PrefixEntry(net, f"scan of {scan.dst} detected at {scan.start:.0f}")
    return list(out.values())


def plan_from_state(config: Any, state: Any, state_dir: str, force: bool = False) -> Plan:
    """The plan `rules apply` and `sync` enforce: inputs from state, host facts gathered now."""
    servers, scanners, harvesters = inputs_from_state(config, state, state_dir)
    host: HostFacts = hostinfo.gather()
    bad = {s.address for s in servers if s.status in BLOCKED_STATUSES}
    scanners += detected_scanners(state, bad, host)
    return build(servers, scanners, harvesters, config.rules, host, force=force)
