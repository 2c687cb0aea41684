"""`ntpguard mark ADDRESS STATUS`: the admin's own verdict, which outranks every other source."""

from __future__ import annotations

import argparse
import time

from ntpguard.addr import nonglobal_reason, parse_address
from ntpguard.errors import UsageError

MARKS = ("harvester", "clean", "unknown")


def register(sub, common) -> None:
    p = sub.add_parser(
        "mark", parents=[common], help="mark a server harvester, clean or unknown by hand",
        description="Record your own verdict for a server. It outranks local detection and "
        "shared lists. `unknown` withdraws your earlier mark, so the other sources decide again.",
    )
    p.add_argument("address", help="the server's address")
    p.add_argument("status", choices=MARKS)
    p.add_argument("--note", default="", help="why, kept in the history (`ntpguard explain`)")
    p.set_defaults(func=run)


def run(ctx, args: argparse.Namespace) -> int:
    ip = parse_address(args.address)
    why = nonglobal_reason(ip)
    if why and not ctx.config.pool.allow_nonglobal:
        raise UsageError(f"{ip} is {why}, not a public NTP server "
                         "(pool.allow_nonglobal = true allows it)")
    evidence = {"note": args.note} if args.note else {}
    with ctx.open_state() as state:
        state.add_verdict(str(ip), args.status, "manual", evidence, time.time())
        known = any(s.address == str(ip) for s in state.servers())
    suffix = "" if known else " (not a known pool server yet)"
    print(f"{ip}: marked {args.status}{suffix}")
    return 0
