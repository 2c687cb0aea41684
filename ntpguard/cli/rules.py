"""`ntpguard rules apply|show|remove`: statuses + lists + [rules] → firewall, through a backend."""

from __future__ import annotations

import argparse
import time

from ntpguard import backends, canary, snapshot
from ntpguard.cli import Context, Subparsers


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rules", parents=[common], help="write, show or remove the firewall rules",
        description="Let NTP reach usable servers only and drop unsolicited packets from "
        "scanner prefixes. The rules live in `table inet ntpguard` (nft) or in NTPGUARD-* "
        "chains and ntpguard-* ipsets (iptables-legacy); nothing else is touched.",
    )
    p.add_argument("action", choices=("apply", "show", "remove"))
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and the exact ruleset; change nothing")
    p.add_argument("--force", action="store_true",
                   help='apply even with no usable server while rules.unknown = "block"')
    p.add_argument("--backend", choices=("auto", *backends.NAMES),
                   help="firewall backend (default: rules.backend from the config)")
    p.add_argument("--full", action="store_true",
                   help="show: include every set element (can be 100k lines)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    from ntpguard.cli import print_json

    name = args.backend or ctx.config.rules.backend
    if args.action == "show":
        return _show(ctx, name, args)
    if args.action == "remove":
        return _remove(ctx, args)
    started = time.time()
    # The writer lock also serialises applies, which share the nft element cache.
    with ctx.open_state(write=not args.dry_run) as state:
        if not args.dry_run:
            # Canaries are part of the firewall: give new servers theirs before the plan maps
            # them (a dry run shows the canaries in force as they are).
            canary.maintain(ctx.config, state, snapshot.statuses(ctx.config, state),
                            time.time())
        plan = snapshot.firewall_plan(ctx.config, state, force=args.force)
        if args.dry_run:
            text = backends.render(name, plan)
            if args.json:
                print_json({"dry_run": True, "plan": plan.counts(), "notes": list(plan.notes),
                            "ruleset": text})
                return 0
            print("\n".join(f"# {line}" for line in plan.describe().splitlines()))
            print(text, end="")
            return 0
        backend = backends.get(name, ctx.state_dir)
        result = backend.apply(plan)
        state.record_run("rules apply", started, time.time(), True,
                         {**result.as_dict(), **plan.counts()})
    if args.json:
        print_json({**result.as_dict(), "plan": plan.counts(), "notes": list(plan.notes)})
        return 0
    print(result.describe())
    print(plan.describe())
    return 0


def _show(ctx: Context, name: str, args: argparse.Namespace) -> int:
    backend = backends.get(name, ctx.state_dir)
    text = backend.show(full=args.full)
    if args.json:
        from ntpguard.cli import print_json
        print_json({"backend": backend.name, "in_place": bool(text), "ruleset": text})
        return 0
    if not text:
        print(f"{backend.name}: no ntpguard rules in place")
        return 0
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _remove(ctx: Context, args: argparse.Namespace) -> int:
    """Remove ntpguard's rules from the chosen backend, or from every backend that works here."""
    from ntpguard.cli import print_json

    if args.backend and args.backend != "auto":
        names = [args.backend]
    else:
        names = [n for n in backends.NAMES if backends.backend_class(n).is_supported()]
    results: list[dict[str, object]] = []
    with ctx.open_state() as state:
        for name in names:
            if args.dry_run:
                results.append({"backend": name, "action": "would remove",
                                "message": f"{name}: would remove ntpguard's rules"})
                continue
            results.append(backends.get(name, ctx.state_dir).remove().as_dict())
        if not args.dry_run and state.canaries():
            n = canary.remove_all(state, time.time())
            results.append({"backend": "canary", "action": "removed", "removed": n,
                            "message": f"canaries: {n} addresses removed"})
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(r["message"])
    return 0
