"""`ntpguard servers`: the known NTP servers, their status and why."""

from __future__ import annotations

import argparse
from typing import Any

from ntpguard import snapshot
from ntpguard.cli import Context, Subparsers
from ntpguard.cli._fmt import iso, table
from ntpguard.config import Config
from ntpguard.state import State
from ntpguard.status import effective


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("servers", parents=[common], help="list the known NTP servers",
                       description="List every known server (from the pool's DNS, trusted, "
                       "marked, or judged from this host's logs) with its zones, when DNS last "
                       "served it, and its status with the source that decided it.")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=run)


def server_rows(state: State, config: Config) -> list[dict[str, Any]]:
    """One row per server ntpguard knows or blocks, from the one status model."""
    snap = snapshot.take(config, state)
    rows: list[dict[str, Any]] = []
    for address, st in effective(snap).items():
        pool = snap.servers.get(address)
        rows.append({
            "address": address, "family": 6 if ":" in address else 4,
            "zones": list(pool.zones) if pool else [],
            "first_seen": iso(pool.first_seen) if pool else None,
            "last_seen": iso(pool.last_seen) if pool else None,
            "times_seen": pool.times_seen if pool else 0,
            "known": st.known,
            "status": st.status.value,
            "source": str(st.source) if st.source else None,
            "decided": iso(st.verdict.time) if st.verdict and st.verdict.time else None,
            "reason": st.reason,
        })
    rows.sort(key=lambda r: (":" not in r["address"], r["address"]))
    return rows


def run(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.open_state(write=False) as state:
        rows = server_rows(state, ctx.config)
    if args.json:
        from ntpguard.cli import print_json
        print_json(rows)
        return 0
    if not rows:
        print("no servers known yet: run `ntpguard resolve`, or name yours in [servers] trusted")
        return 0
    out = [["address", "status", "by", "seen", "last seen", "zones"]]
    for r in rows:
        out.append([r["address"], r["status"], r["source"] or "-", str(r["times_seen"]),
                    r["last_seen"] or "-", ",".join(r["zones"]) or "-"])
    print(table(out))
    return 0
