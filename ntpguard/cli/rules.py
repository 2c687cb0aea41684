"""`ntpguard rules apply|show|remove|restore`: statuses + lists + [rules] → firewall, through
a backend; the last applied plan back (restore); missing or drifted rules are exit 5."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from ntpguard import backends
from ntpguard.cli import RULES_NOT_IN_PLACE, Context, Subparsers
from ntpguard.cli._fmt import iso


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rules", parents=[common], help="write, show or remove the firewall rules",
        description="Let NTP reach usable servers only and drop unsolicited packets from "
        "scanner prefixes. The rules live in `table inet ntpguard` (nft) or in NTPGUARD-* "
        "chains and ntpguard-* ipsets (iptables-legacy); nothing else is touched. `restore` "
        "puts the last applied plan back (no DNS, no logs: what the boot unit and the "
        "watcher run); `show` exits 5 when the rules are missing or differ from it.",
    )
    p.add_argument("action", choices=("apply", "show", "remove", "restore"))
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and the exact ruleset; change nothing")
    p.add_argument("--force", action="store_true",
                   help='apply even with no usable server while rules.unknown = "block"')
    p.add_argument("--backend", choices=("auto", *backends.NAMES),
                   help="firewall backend (default: rules.backend from the config)")
    p.add_argument("--full", action="store_true",
                   help="show: include every set element (can be 100k lines)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run, early=_unchanged)


def run(ctx: Context, args: argparse.Namespace) -> int:
    from ntpguard.cli import print_json

    name = args.backend or ctx.config.rules.backend
    if args.action == "show":
        return _show(ctx, name, args)
    if args.action == "remove":
        return _remove(ctx, args)
    if args.action == "restore":
        return _restore(ctx, args)
    from ntpguard import canary, enforce, inputs, lists, snapshot

    started = time.time()
    # The state lock for what writes the state (canaries, the run record); enforce.apply
    # takes the rules lock, which serialises the kernel and the nft element cache.
    with ctx.open_state(write=not args.dry_run) as state:
        taken = None
        found = None
        if not args.dry_run:
            # Canaries are part of the firewall: give new servers theirs before the plan maps
            # them (a dry run shows the canaries in force as they are). Their statuses serve
            # the plan too unless a canary convicted a server meanwhile.
            loaded = tuple(lists.load_all(ctx.config, state.directory))
            statuses = snapshot.statuses(ctx.config, state, loaded)
            report = canary.maintain(ctx.config, state, statuses, time.time())
            taken = None if report.convicted else (loaded, statuses)
            # What the plan is built from, digested under the state lock after the canaries
            # changed what they will, so the next run with nothing new stops at the digest.
            found = inputs.digest(ctx.config, ctx.state_dir)
        plan = snapshot.firewall_plan(ctx.config, state, force=args.force, taken=taken)
        if args.dry_run:
            text = backends.render(name, plan)
            if args.json:
                print_json({"dry_run": True, "plan": plan.counts(), "notes": list(plan.notes),
                            "ruleset": text})
                return 0
            print("\n".join(f"# {line}" for line in plan.describe().splitlines()))
            print(text, end="")
            return 0
        result = enforce.apply(ctx.state_dir, name, plan)
        now = time.time()
        inputs.remember(ctx.config, ctx.state_dir, found, name, result, plan, args.force,
                        False, canary.next_change(state.canaries(live_at=now), now,
                                                  ctx.config.canary), now)
        state.record_run("rules apply", started, now, True,
                         {**result.as_dict(), **plan.counts()})
    if args.json:
        print_json({**result.as_dict(), "plan": plan.counts(), "notes": list(plan.notes)})
        return 0
    print(result.describe())
    print(plan.describe())
    return 0


def _unchanged(ctx: Context, args: argparse.Namespace) -> Optional[int]:
    """`rules apply` with nothing to do: print what the last apply did and exit 0 when nothing
    it was built from changed since (ntpguard.inputs): same configuration file, state,
    lists, host addresses, kernel generation, and no canary due. Runs before the settings
    are loaded (`early`): reads no state, builds no plan (~0.06 s, not ~0.25 s)."""
    if args.action != "apply" or args.dry_run:
        return None
    from ntpguard import inputs

    record = inputs.unchanged_before_loading(args.config, args.state_dir, args.backend,
                                             args.force, time.time())
    if record is None:
        return None
    if args.json:
        from ntpguard.cli import print_json
        print_json({**record.result, "plan": record.plan, "notes": record.notes})
    else:
        print(record.result["message"])
        print(record.describe)
    return 0


def _show(ctx: Context, name: str, args: argparse.Namespace) -> int:
    """The rules as the kernel has them, checked against the last applied plan."""
    from ntpguard import enforce

    status = enforce.check(ctx.state_dir)
    backend = backends.get(args.backend or status.backend or name, ctx.state_dir)
    text = backend.show(full=args.full)
    code = 0 if status.ok else RULES_NOT_IN_PLACE
    if args.json:
        from ntpguard.cli import print_json
        print_json({"backend": backend.name, "in_place": bool(text), "state": status.state,
                    "detail": status.detail, "applied": iso(status.applied),
                    "ruleset": text})
        return code
    if text:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        print(f"{backend.name}: no ntpguard rules in place")
    if not status.ok:
        print(f"ntpguard: the rules applied {iso(status.applied)} are {status.state}: "
              f"{status.detail}; `ntpguard rules restore` puts them back", file=sys.stderr)
    return code


def _restore(ctx: Context, args: argparse.Namespace) -> int:
    """The last applied plan back in the kernel, under the rules lock only (never waits for
    a sync's state lock: see ntpguard.applied)."""
    from ntpguard import enforce

    done = enforce.restore(ctx.config, ctx.state_dir)
    if args.json:
        from ntpguard.cli import print_json
        print_json(done.as_dict())
    else:
        print(done.describe())
    return 0


def _remove(ctx: Context, args: argparse.Namespace) -> int:
    """Remove ntpguard's rules from the chosen backend, or from every backend that works here."""
    from ntpguard import canary, enforce
    from ntpguard.cli import print_json

    if args.backend and args.backend != "auto":
        names = [args.backend]
    else:
        names = [n for n in backends.NAMES if backends.backend_class(n).is_supported()]
    results: list[dict[str, object]] = []
    with ctx.open_state() as state:
        if args.dry_run:
            results = [{"backend": name, "action": "would remove",
                        "message": f"{name}: would remove ntpguard's rules"} for name in names]
        else:
            results = [r.as_dict() for r in enforce.remove(ctx.state_dir, names)]
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
