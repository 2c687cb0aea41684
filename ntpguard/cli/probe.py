"""`ntpguard probe`: one packet to each server from its own fresh address (ntpguard.probe)."""

from __future__ import annotations

import argparse
import time

from ntpguard.cli import Context, Subparsers, print_json
from ntpguard.cli._fmt import iso
from ntpguard.errors import UsageError
from ntpguard.progress import lock_wait


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "probe", parents=[common], help="confirm harvesters: probe servers from fresh addresses",
        description="Send one NTP request to each server, each from a brand-new random "
        "address of this host's /64 that nothing else uses. If that address is scanned within "
        "detect.lookback, exactly that server handed it on; if not, it is evidence of a clean "
        "server. The verdict comes with the next `sync` or `detect --record` after the "
        "lookback, which reads the scans from the firewall log. Needs root (adds addresses).")
    p.add_argument("servers", nargs="*", metavar="ADDRESS", help="IPv6 server addresses")
    p.add_argument("--suspects", action="store_true",
                   help="probe the servers judged suspect, or unknown with positive evidence "
                   "(most likely first, at most probe.max_per_run)")
    p.add_argument("--json", action="store_true", help="JSON Lines: one object per probe")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    from ntpguard import probe as probing

    cfg = ctx.config
    if args.suspects and args.servers:
        raise UsageError("probe: give server addresses or --suspects, not both")
    if not args.suspects and not args.servers:
        raise UsageError("probe: give server addresses to probe, or --suspects")
    servers = probing.check_servers(args.servers, cfg.pool.allow_nonglobal)
    if len(servers) > cfg.probe.max_per_run:
        raise UsageError(f"probe: {len(servers)} servers, more than probe.max_per_run "
                         f"({cfg.probe.max_per_run}) in one run")
    probing.lifetime(cfg.probe, cfg.detect)  # a bad lifetime fails before anything is sent
    started = time.time()
    with ctx.open_state(write=True) as state:
        if args.suspects:
            servers = probing.suspects_from_state(cfg, state, time.time())
            if not servers:
                if not args.json:
                    print("no suspects to probe (none suspect, none unknown with positive "
                          "evidence, or their probes are still pending)")
                return 0

        def record(r: probing.Result) -> None:
            state.record_probe_contacts([(r.source, r.server, r.time)])

        with ctx.progress:
            target, valid, results = probing.run(
                servers, cfg.probe, cfg.detect, record, show=ctx.progress,
                idle=lambda: state.unlocked(waiting=lock_wait(ctx.progress)))
        sent = [r for r in results if r.sent]
        state.record_run("probe", started, time.time(), len(sent) == len(results), {
            "interface": target.interface, "prefix": str(target.prefix), "lifetime": valid,
            "probes": [r.as_dict() for r in results]})
    if args.json:
        for r in results:
            print_json({"type": "probe", **r.as_dict(), "time": iso(r.time),
                        "expires": iso(r.time + valid),
                        "verdict_after": iso(r.time + cfg.detect.lookback)})
    else:
        for r in results:
            print(f"{r.server}: from {r.source}: {r.detail}")
        if sent:
            ready = max(r.time for r in sent) + cfg.detect.lookback
            print(f"{len(sent)} probe(s) sent from {target.prefix} on {target.interface}. "
                  f"A harvester has them scanned within detect.lookback "
                  f"({cfg.detect.lookback:g} s): the first `ntpguard sync` or `detect --record` "
                  f"after {iso(ready)} reads the scans and gives the verdicts. The probe "
                  f"addresses expire after {valid} s.")
    if not sent:
        return 1
    return 4 if len(sent) < len(results) else 0
