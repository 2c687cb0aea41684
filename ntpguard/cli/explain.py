"""`ntpguard explain ADDRESS`: everything ntpguard knows about one server, and why its status."""

from __future__ import annotations

import argparse

from ntpguard import lists
from ntpguard.addr import parse_address
from ntpguard.cli._fmt import iso
from ntpguard.precedence import effective, with_lists


def register(sub, common) -> None:
    p = sub.add_parser(
        "explain", parents=[common], help="show one server's full history and verdict",
        description="Show when a server was seen in DNS and under which names, every verdict "
        "any source gave it with its evidence, and which one decides its status now.",
    )
    p.add_argument("address")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(ctx, args: argparse.Namespace) -> int:
    address = str(parse_address(args.address))
    with ctx.open_state(write=False) as state:
        server = next((s for s in state.servers() if s.address == address), None)
        latest = with_lists(state.latest_verdicts(), lists.load_all(ctx.config, state.directory),
                            [address]).get(address, {})
        history = state.verdict_history(address) + [
            v for src, v in latest.items() if src.startswith("list:")]
    decider = effective(latest)
    data = {
        "address": address,
        "known": server is not None,
        "zones": list(server.zones) if server else [],
        "first_seen": iso(server.first_seen) if server else None,
        "last_seen": iso(server.last_seen) if server else None,
        "times_seen": server.times_seen if server else 0,
        "status": decider.status if decider else "unknown",
        "decided_by": decider.source if decider else None,
        "history": [{"time": iso(v.time), "source": v.source, "status": v.status,
                     "evidence": v.evidence} for v in history],
    }
    if args.json:
        from ntpguard.cli import print_json
        print_json(data)
        return 0
    print(f"{address}: {data['status']}"
          + (f" (decided by {data['decided_by']})" if decider else " (no source has a verdict)"))
    if server:
        print(f"  seen in DNS {server.times_seen} times, {data['first_seen']} .. "
              f"{data['last_seen']}, as {', '.join(server.zones)}")
    else:
        print("  never seen in the pool's DNS answers")
    for h in data["history"]:
        ev = ", ".join(f"{k}={v}" for k, v in sorted(h["evidence"].items()))
        print(f"  {h['time']}  {h['source']:<14} {h['status']:<9} {ev}")
    return 0
