"""`ntpguard mark ADDRESS STATUS`: the admin's own verdict, which outranks every other source."""

from __future__ import annotations

import argparse
import time

from ntpguard import snapshot
from ntpguard.addr import nonglobal_reason, parse_address
from ntpguard.cli import Context, Subparsers
from ntpguard.errors import UsageError
from ntpguard.status import MANUAL, Status, Verdict, status_of

MARKS = ("harvester", "clean", "unknown")


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mark", parents=[common], help="mark a server harvester, clean or unknown by hand",
        description="Record your own verdict for a server. It outranks every other source. "
        "`clean` makes a server known and usable even if the pool never named it (your own or "
        "an NTS server). `unknown` withdraws your earlier mark, so the other sources decide "
        "again.",
    )
    p.add_argument("address", help="the server's address")
    p.add_argument("status", choices=MARKS)
    p.add_argument("--note", default="", help="why, kept in the history (`ntpguard explain`)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    ip = parse_address(args.address)
    why = nonglobal_reason(ip)
    if why and not ctx.config.pool.allow_nonglobal:
        raise UsageError(f"{ip} is {why}, not a public NTP server "
                         "(pool.allow_nonglobal = true allows it)")
    evidence = {"note": args.note} if args.note else {}
    with ctx.open_state() as state:
        state.add_verdict(Verdict(str(ip), Status(args.status), MANUAL, evidence, time.time()))
        st = status_of(snapshot.take(ctx.config, state), str(ip))
    if args.json:
        from ntpguard.cli import print_json
        print_json({"address": str(ip), "marked": args.status, "status": st.status.value,
                    "decided_by": str(st.source) if st.source else None, "known": st.known,
                    "reason": st.reason})
        return 0
    now = f"now {st.status}" + (f" by {st.source}" if st.source else "")
    print(f"{ip}: marked {args.status}; {now}" + ("" if st.known else " (not a known server)"))
    return 0
