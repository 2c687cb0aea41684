"""`ntpguard explain ADDRESS`: everything ntpguard knows about one server, and why its status."""

from __future__ import annotations

import argparse
import dataclasses

from ntpguard import evidence, snapshot
from ntpguard.addr import parse_address
from ntpguard.cli import Context, Subparsers
from ntpguard.cli._fmt import iso
from ntpguard.cli.detect import estimate_lines
from ntpguard.status import status_of


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "explain", parents=[common], help="show one server's full history and verdict",
        description="Show when a server was seen in DNS and under which names, every verdict "
        "any source gave it with its evidence, and which one decides its status now.",
    )
    p.add_argument("address")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    address = str(parse_address(args.address))
    with ctx.open_state(write=False) as state:
        snap = snapshot.take(ctx.config, state)
        history = state.verdict_history(address)
        # The detection model as all stored evidence fits it now: its lags and rates.
        findings, model = evidence.compute_verdicts(state, ctx.config.detect, record=False)
    finding = findings.get(address)
    st = status_of(snap, address)
    # What no stored row says: a trusted server or a list entry that covers the address.
    if st.verdict is not None and st.verdict.source.kind in ("trusted", "list"):
        history.append(st.verdict)
    server = snap.servers.get(address)
    data = {
        "address": address,
        "known": st.known,
        "in_pool": server is not None,
        "zones": list(server.zones) if server else [],
        "first_seen": iso(server.first_seen) if server else None,
        "last_seen": iso(server.last_seen) if server else None,
        "times_seen": server.times_seen if server else 0,
        "status": st.status.value,
        "decided_by": str(st.source) if st.source else None,
        "reason": st.reason,
        "history": [{"time": iso(v.time) if v.time else None, "source": str(v.source),
                     "status": v.status.value, "evidence": dict(v.evidence)} for v in history],
        "detection": finding.evidence() if finding else None,
        "model": dataclasses.asdict(model),
    }
    if args.json:
        from ntpguard.cli import print_json
        print_json(data)
        return 0
    print(f"{address}: {st.status}"
          + (f" (decided by {st.source}: {st.reason})" if st.source
             else " (no source has a verdict)"))
    if server:
        print(f"  seen in DNS {server.times_seen} times, {data['first_seen']} .. "
              f"{data['last_seen']}, as {', '.join(server.zones)}")
    else:
        print("  never seen in the pool's DNS answers")
    for v in history:
        ev = ", ".join(f"{k}={x}" for k, x in sorted(v.evidence.items()))
        when = iso(v.time) if v.time else "-"
        print(f"  {when:<25}  {v.source!s:<14} {v.status:<9} {ev}")
    if finding is not None:
        print(f"  detection now: {finding.status}, harvest rate {finding.harvest_rate:.0%} if it "
              f"harvests, {finding.explained:.1f} scans credited to it")
    for line in estimate_lines(model):
        print(f"  {line}")
    return 0
