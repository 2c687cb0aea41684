"""`ntpguard rules apply|show|remove`: state + lists + [rules] → firewall, through a backend."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from ntpguard import backends, hostinfo
from ntpguard.plan import HostFacts, Plan, PrefixEntry, ServerStatus, build


def register(sub, common) -> None:
    p = sub.add_parser(
        "rules", parents=[common], help="write, show or remove the firewall rules",
        description="Let NTP reach clean servers only and drop packets from scanner prefixes. "
        "The rules live in `table inet ntpguard` (nft) or in NTPGUARD-* chains and ntpguard-* "
        "ipsets (iptables-legacy); nothing else is touched.",
    )
    p.add_argument("action", choices=("apply", "show", "remove"))
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and the exact ruleset; change nothing")
    p.add_argument("--force", action="store_true",
                   help='apply even with no clean server while rules.unknown = "block"')
    p.add_argument("--backend", choices=("auto", *backends.NAMES),
                   help="firewall backend (default: rules.backend from the config)")
    p.add_argument("--full", action="store_true",
                   help="show: include every set element (can be 100k lines)")
    p.set_defaults(func=run)


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


def plan_from_state(ctx: Any, state: Any, force: bool = False) -> Plan:
    """The plan `rules apply` (and `sync`) enforces: inputs from state, host facts gathered now."""
    servers, scanners, harvesters = inputs_from_state(ctx.config, state, ctx.state_dir)
    host: HostFacts = hostinfo.gather()
    return build(servers, scanners, harvesters, ctx.config.rules, host, force=force)


def run(ctx, args: argparse.Namespace) -> int:
    name = args.backend or ctx.config.rules.backend
    if args.action == "show":
        return _show(ctx, name, args.full)
    if args.action == "remove":
        return _remove(ctx, args)
    started = time.time()
    # The writer lock also serialises applies, which share the nft element cache.
    with ctx.open_state(write=not args.dry_run) as state:
        plan = plan_from_state(ctx, state, force=args.force)
        if args.dry_run:
            text = backends.dry_run(name, plan)
            print("\n".join(f"# {line}" for line in plan.describe().splitlines()))
            print(text, end="")
            return 0
        backend = backends.get(name, ctx.state_dir)
        result = backend.apply(plan)
        message = result if isinstance(result, str) else result.describe()
        state.record_run("rules apply", started, time.time(), True,
                         {"backend": backend.name, "result": message, **plan.counts()})
    print(message)
    print(plan.describe())
    return 0


def _show(ctx, name: str, full: bool) -> int:
    backend = backends.get(name, ctx.state_dir)
    text = backend.show() if backend.name != "nft" else backend.show(terse=not full)
    if not text:
        print(f"{backend.name}: no ntpguard rules in place")
        return 0
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _remove(ctx, args: argparse.Namespace) -> int:
    """Remove ntpguard's rules from the chosen backend, or from every backend that has them."""
    names = [args.backend] if args.backend and args.backend != "auto" else list(backends.NAMES)
    with ctx.open_state() as _state:
        for name in names:
            if name == "iptables" and args.backend is None and not _iptables_usable():
                continue
            backend = backends.get(name, ctx.state_dir)
            if args.dry_run:
                print(f"{name}: would remove ntpguard's rules")
                continue
            result = backend.remove()
            print(result if isinstance(result, str) else result.describe())
    return 0


def _iptables_usable() -> bool:
    """Removal without --backend skips iptables where python3-iptables or the tools are absent."""
    try:
        import iptc  # noqa: F401
    except Exception:
        return False
    return os.path.exists("/usr/sbin/ip6tables-legacy-save")
