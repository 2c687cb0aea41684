"""`ntpguard status`: what ntpguard knows and when it last ran."""

from __future__ import annotations

import argparse
from collections import Counter

from ntpguard import __version__
from ntpguard.cli._fmt import iso
from ntpguard.cli.servers import server_rows
from ntpguard.estimate import chao2


def register(sub, common) -> None:
    p = sub.add_parser("status", parents=[common], help="summary of the state",
                       description="Summarise the known servers by family and status, how "
                       "complete each pool zone is, and the last run of each command.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(ctx, args: argparse.Namespace) -> int:
    with ctx.open_state(write=False) as state:
        rows = server_rows(state, ctx.config)
        zones = []
        for zone, rdtype, answers, last in state.zones():
            fam = 6 if rdtype == "AAAA" else 4
            samples, counts = state.zone_incidence(zone, fam)
            est = chao2(samples, counts)
            zones.append({"name": zone, "rdtype": rdtype, "answers": answers,
                          "last_answer": iso(last), "observed": est.observed,
                          "estimated": round(est.estimated, 1)})
        last_resolve = state.last_run("resolve")
        data = {
            "version": __version__,
            "state_dir": state.directory,
            "schema": state.schema_version,
            "servers": len(rows),
            "by_family": {
                f"ipv{f}": n for f, n in sorted(Counter(r["family"] for r in rows).items())
            },
            "by_status": dict(sorted(Counter(r["status"] for r in rows).items())),
            "zones": zones,
            "last_resolve": iso(last_resolve["finished"]) if last_resolve else None,
        }
    if args.json:
        from ntpguard.cli import print_json
        print_json(data)
        return 0
    print(f"ntpguard {data['version']}, state {data['state_dir']} (schema {data['schema']})")
    fam = ", ".join(f"{n} {k}" for k, n in data["by_family"].items()) or "none"
    print(f"servers: {data['servers']} known ({fam})")
    if data["by_status"]:
        print("status:  " + ", ".join(f"{n} {k}" for k, n in data["by_status"].items()))
    for z in zones:
        print(f"zone {z['name']} {z['rdtype']}: {z['observed']} seen of about "
              f"{z['estimated']:.0f}, {z['answers']} answers, last {z['last_answer']}")
    print(f"last resolve: {data['last_resolve'] or 'never'}")
    return 0
