"""`ntpguard servers`: the known NTP servers, their status and why."""

from __future__ import annotations

import argparse

from ntpguard import lists
from ntpguard.cli._fmt import iso, table
from ntpguard.precedence import effective, with_lists


def register(sub, common) -> None:
    p = sub.add_parser("servers", parents=[common], help="list the known NTP servers",
                       description="List every known server with its zones, when it was first "
                       "and last seen in DNS, and its status with the source that decided it.")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=run)


def server_rows(state, config) -> list[dict]:
    servers = state.servers()
    latest = with_lists(state.latest_verdicts(), lists.load_all(config, state.directory),
                        [s.address for s in servers])
    rows = []
    for s in servers:
        v = effective(latest.get(s.address, {}))
        rows.append({
            "address": s.address, "family": s.family, "zones": list(s.zones),
            "first_seen": iso(s.first_seen), "last_seen": iso(s.last_seen),
            "times_seen": s.times_seen,
            "status": v.status if v else "unknown",
            "source": v.source if v else None,
            "decided": iso(v.time) if v else None,
        })
    return rows


def run(ctx, args: argparse.Namespace) -> int:
    with ctx.open_state(write=False) as state:
        rows = server_rows(state, ctx.config)
    if args.json:
        from ntpguard.cli import print_json
        print_json(rows)
        return 0
    if not rows:
        print("no servers known yet: run `ntpguard resolve`")
        return 0
    out = [["address", "status", "by", "seen", "last seen", "zones"]]
    for r in rows:
        out.append([r["address"], r["status"], r["source"] or "-", str(r["times_seen"]),
                    r["last_seen"], ",".join(r["zones"])])
    print(table(out))
    return 0
