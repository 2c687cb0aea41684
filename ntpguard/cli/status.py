"""`ntpguard status`: what ntpguard knows, when it last ran, and whether its rules are in
place (exit 5 when they are missing or drifted from the last applied plan)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any, Optional

from ntpguard import __version__, canary, enforce, hostinfo
from ntpguard.cli import RULES_NOT_IN_PLACE, Context, Subparsers
from ntpguard.cli._fmt import iso
from ntpguard.cli.servers import server_rows
from ntpguard.errors import NtpguardError
from ntpguard.estimate import chao2
from ntpguard.state import State

# The exposure status reports: a week of logs (README, "NTP canaries").
EXPOSURE_WINDOW = 7 * 86400.0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="summary of the state",
                       description="Summarise the known servers by family and status, how "
                       "complete each pool zone is, the last resolve, the canaries and the "
                       "exposure of the last 7 days, and whether the rules last applied are "
                       "in place (exit 5 when they are missing or drifted).")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.open_state(write=False) as state:
        rows = server_rows(state, ctx.config)
        zones = []
        for zone, rdtype, answers, last in state.zones():
            family = 6 if rdtype == "AAAA" else 4
            samples, counts = state.zone_incidence(zone, family)
            est = chao2(samples, counts)
            zones.append({"name": zone, "rdtype": rdtype, "answers": answers,
                          "last_answer": iso(last), "observed": est.observed,
                          "estimated": round(est.estimated, 1)})
        last_resolve = last_resolved(state)
        now = time.time()
        made = state.canaries()
        host = hostinfo.gather()
        prefixes = frozenset(host.blocks64())
        trusted = ctx.config.servers.trusted if ctx.config.canary.exempt_trusted else ()
        real, scanned = canary.exposure(
            state.contacts().runs, state.probe_addresses(), made, now - EXPOSURE_WINDOW,
            lambda server: canary.exempt(server, prefixes, trusted))
        live = [c for c in made if c.expires > now]
        canaries_seen = {
            "mode": ctx.config.canary.mode,
            "in_use": sum(1 for c in live if c.active and c.server),
            "retiring": sum(1 for c in live if not c.active),
            "why_not": canary.why_not(ctx.config),
        }
        by_family = Counter(r["family"] for r in rows)
        by_status = Counter(r["status"] for r in rows)
        data: dict[str, Any] = {
            "version": __version__,
            "state_dir": state.directory,
            "schema": state.schema_version,
            "servers": len(rows),
            "by_family": {f"ipv{f}": n for f, n in sorted(by_family.items())},
            "by_status": dict(sorted(by_status.items())),
            "zones": zones,
            "last_resolve": iso(last_resolve),
            # From the logs, the last 7 days: who saw a real address of this host or its LAN.
            "exposure": {"days": EXPOSURE_WINDOW / 86400,
                         "servers_that_saw_a_real_address": len(real),
                         "of_them_ipv6": sum(1 for s in real if ":" in s),
                         "canaries_scanned": scanned},
            "canaries": canaries_seen,
            "rules": rules_status(ctx.state_dir),
        }
    rules = data["rules"]
    code = RULES_NOT_IN_PLACE if rules["state"] in ("missing", "drifted") else 0
    if args.json:
        from ntpguard.cli import print_json
        print_json(data)
        return code
    print(f"ntpguard {data['version']}, state {data['state_dir']} (schema {data['schema']})")
    fam = ", ".join(f"{n} ipv{k}" for k, n in sorted(by_family.items())) or "none"
    print(f"servers: {data['servers']} known ({fam})")
    if by_status:
        print("status:  " + ", ".join(f"{n} {k}" for k, n in sorted(by_status.items())))
    for z in zones:
        print(f"zone {z['name']} {z['rdtype']}: {z['observed']} seen of about "
              f"{z['estimated']:.0f}, {z['answers']} answers, last {z['last_answer']}")
    print(f"last resolve: {data['last_resolve'] or 'never'}")
    if canaries_seen["why_not"]:
        print(f"canaries: off ({canaries_seen['why_not']})")
    else:
        print(f"canaries: {canaries_seen['in_use']} servers have their own, "
              f"{canaries_seen['retiring']} retiring")
    v6 = sum(1 for s in real if ":" in s)
    print(f"exposure, last 7 days: {len(real)} servers ({v6} IPv6, {len(real) - v6} IPv4) saw "
          f"a real address of this host or its LAN; {scanned} canaries scanned")
    where = f" ({rules['backend']}, applied {rules['applied']})" if rules["applied"] else ""
    detail = f": {rules['detail']}" if rules["detail"] else ""
    print(f"rules:   {rules['state']}{where}{detail}")
    return code


def rules_status(state_dir: str) -> dict[str, Any]:
    """The kernel's rules against the last applied plan; "unknown" when they cannot be read
    (not root: listing netfilter needs CAP_NET_ADMIN)."""
    try:
        s = enforce.check(state_dir)
    except NtpguardError as exc:
        return {"state": "unknown", "detail": str(exc), "backend": None, "applied": None}
    return {"state": s.state, "detail": s.detail, "backend": s.backend or None,
            "applied": iso(s.applied)}


def last_resolved(state: State) -> Optional[float]:
    """When the pool was last resolved: by `resolve`, or by a `sync` whose resolve step ran."""
    times = []
    resolve = state.last_run("resolve")
    if resolve:
        times.append(resolve["finished"])
    for run in state.runs("sync", limit=50):
        step = run["summary"].get("steps", {}).get("resolve", {})
        if step.get("ok") and not step.get("skipped"):
            times.append(run["finished"])
            break
    return max(times) if times else None
