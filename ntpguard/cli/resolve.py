"""`ntpguard resolve`: query the pool names and merge the answers into the known servers."""

from __future__ import annotations

import argparse
import time

from ntpguard import pool
from ntpguard.cli import Context, Subparsers
from ntpguard.cli._fmt import table
from ntpguard.config import with_options


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "resolve", parents=[common],
        help="query the pool's DNS names and add the servers to the known set",
        description="Query the A and AAAA records of the configured pool names for several "
        "rounds and merge every answer into the known-server set. Reports queries, answers, "
        "new servers and an estimate of how many servers each zone holds that were never seen.",
    )
    p.add_argument("--rounds", type=int, metavar="N", help="rounds of queries (pool.rounds)")
    p.add_argument("--interval", type=float, metavar="SECONDS",
                   help="pause between rounds (pool.interval)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def report_dict(report: pool.ResolveReport, known: int) -> dict:
    zones = []
    for (name, rdtype), entry in report.names.items():
        est = report.estimates.get((name, 6 if rdtype == "AAAA" else 4))
        zones.append({
            "name": name, "rdtype": rdtype, "queries": entry.queries, "answers": entry.answers,
            "records": entry.records, "new": entry.new, "rejected": entry.rejected,
            "errors": entry.errors,
            "observed": est.observed if est else 0,
            "estimated": round(est.estimated, 1) if est else 0,
            "unseen": round(est.unseen, 1) if est else 0,
        })
    return {
        "rounds": report.rounds, "queries": report.queries, "answers": report.answers,
        "new_servers": report.new_servers, "known_servers": known, "zones": zones,
    }


def run(ctx: Context, args: argparse.Namespace) -> int:
    settings = with_options(ctx.config.pool, rounds=args.rounds, interval=args.interval)
    started = time.time()

    def progress(number: int, rep: pool.ResolveReport) -> None:
        if not args.json and args.verbose:
            ctx.progress.clear()
            print(f"round {number}: {rep.queries} queries, {rep.answers} answers, "
                  f"{len(rep.new_servers)} new so far", flush=True)

    with ctx.open_state() as state, ctx.progress:
        report = pool.resolve(settings, state, progress=progress, show=ctx.progress)
        known = len(state.servers())
        data = report_dict(report, known)
        ok = not report.failed_names
        state.record_run("resolve", started, time.time(), ok, data)
    if args.json:
        from ntpguard.cli import print_json
        print_json(data)
    else:
        print(f"resolve: {report.queries} queries, {report.answers} answers, "
              f"{len(report.new_servers)} new servers, {known} known")
        rows = [["name", "type", "answers", "seen", "estimated", "unseen", "problems"]]
        for z in data["zones"]:
            problems = f"{len(z['errors'])} failed: {z['errors'][-1]}" if z["errors"] else ""
            if z["rejected"]:
                problems = (problems + "; " if problems else "") + f"{z['rejected']} rejected"
            rows.append([z["name"], z["rdtype"], str(z["answers"]), str(z["observed"]),
                         f"{z['estimated']:.0f}", f"{z['unseen']:.0f}", problems])
        print(table(rows))
    if report.all_failed:
        return 1
    return 4 if report.failed_names else 0
