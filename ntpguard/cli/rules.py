"""`ntpguard rules apply|show|remove`: state + lists + [rules] → firewall, through a backend."""

from __future__ import annotations

import argparse
import os
import time

from ntpguard import backends
from ntpguard.enforce import plan_from_state


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


def run(ctx, args: argparse.Namespace) -> int:
    name = args.backend or ctx.config.rules.backend
    if args.action == "show":
        return _show(ctx, name, args.full)
    if args.action == "remove":
        return _remove(ctx, args)
    started = time.time()
    # The writer lock also serialises applies, which share the nft element cache.
    with ctx.open_state(write=not args.dry_run) as state:
        plan = plan_from_state(ctx.config, state, ctx.state_dir, force=args.force)
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
