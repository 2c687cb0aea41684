"""`ntpguard detect`: find scans in firewall logs, their NTP triggers, and harvester verdicts."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import time
from typing import Any, Optional

from ntpguard.cli import Context, Subparsers, print_json
from ntpguard.cli._fmt import table
from ntpguard.config import Detect, with_options
from ntpguard.errors import UsageError
from ntpguard.facts import Contacts, Scan
from ntpguard.logs import ReadStats
from ntpguard.logs.parse import FORMATS, boot_time_now, parse_when
from ntpguard.logs.read import JOURNAL, order_sources
from ntpguard.status import Status
from ntpguard.verdict import Estimates, Finding, attribute

log = logging.getLogger("ntpguard")


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "detect", parents=[common], help="find harvester-triggered scans in firewall logs",
        description="Read netfilter LOG / nft log / ulogd2 lines, find port scans of local "
        "addresses, the outbound NTP packets shortly before each (its possible triggers), and "
        "judge each NTP server from all scans and non-scans (lags and harvest rates fitted "
        "to the data).")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="log files (plain or .gz, oldest first is found by name); - for stdin")
    p.add_argument("--journal", action="store_true",
                   help="read kernel messages from the journal (journalctl -k)")
    p.add_argument("--journal-file", action="append", default=[], metavar="FILE",
                   help="read kernel messages from a journal file (journalctl --file), e.g. "
                   "one copied from another machine")
    p.add_argument("--hosts", action="store_true",
                   help="on a collector: every host's forwarded log ([collector] hosts_from), "
                   "each read on its own, judged together")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="force the line format instead of recognising it per line")
    p.add_argument("--boot-time", metavar="TIME",
                   help="boot time for dmesg [uptime] stamps: epoch or ISO 8601 "
                   "(default: this machine's current boot)")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines: one object per scan, then one per server")
    p.add_argument("--record", action="store_true",
                   help="store the evidence in the state database, resuming each file and "
                   "the journal where the last --record stopped; verdicts use all of it")
    p.add_argument("--any-port", action="store_true",
                   help="any outbound packet can be a trigger, not only UDP to the NTP port")
    p.add_argument("--min-ports", type=int, metavar="N", help="ports that make a scan")
    p.add_argument("--window", type=float, metavar="SECONDS", help="scan detection window")
    p.add_argument("--lookback", type=float, metavar="SECONDS",
                   help="how long before a scan a packet may have triggered it")
    p.set_defaults(func=run)


def _settings(ctx: Context, args: argparse.Namespace) -> Detect:
    return with_options(ctx.config.detect, trigger_any_port=args.any_port or None,
                        min_ports=args.min_ports, window=args.window, lookback=args.lookback)


def run(ctx: Context, args: argparse.Namespace) -> int:
    from ntpguard import evidence

    settings = _settings(ctx, args)
    sources = order_sources(list(args.files))
    if args.journal:
        sources.append(JOURNAL)
    sources += [f"{JOURNAL}:{os.path.abspath(f)}" for f in args.journal_file]
    if args.hosts:
        if sources:
            raise UsageError("detect: --hosts reads the hosts' logs only (no FILE or --journal)")
        return _run_hosts(ctx, args, settings)
    if not sources:
        raise UsageError("detect: give log files (- for stdin), --journal or --journal-file")
    if sources.count("-") > 1:
        raise UsageError("detect: stdin (-) can be read only once")
    boot = parse_when(args.boot_time) if args.boot_time else boot_time_now()
    started = time.time()
    if args.record:
        with ctx.open_state(write=True) as state:
            summary = evidence.ingest(state, sources, settings, args.format, boot)
            verdicts, estimates = evidence.compute_verdicts(state, settings)
            stats, scans, sides = summary.stats, summary.scans, summary.sides
            state.record_run("detect", started, time.time(), True, summary.as_dict())
    else:
        stats = ReadStats()
        scans, contacts = evidence.detect_sources(sources, settings, args.format, boot,
                                                  None, stats)
        verdicts, estimates = attribute(contacts.runs, scans, contacts.end, settings)
        sides = contacts.sides
    if args.json:
        _print_json(scans, verdicts, estimates, {"sides": sides})
    else:
        print(report(scans, verdicts, estimates, stats, sides))
    return 0


def _run_hosts(ctx: Context, args: argparse.Namespace, settings: Detect) -> int:
    """`detect --hosts`: the collector's view, each host's log through its own detector."""
    from ntpguard import collector, evidence

    config = dataclasses.replace(ctx.config, detect=settings)
    patterns = config.collector.hosts_from
    if not patterns:
        raise UsageError("detect --hosts: no [collector] hosts_from in the configuration")
    started = time.time()
    stats = ReadStats()
    if args.record:
        with ctx.open_state(write=True) as state:
            reads = collector.ingest(state, config, started)
            verdicts, estimates = evidence.compute_verdicts(state, settings)
            scans = [s for r in reads for s in r.scans]
            state.record_run("detect", started, time.time(), True,
                             {"hosts": [r.as_dict() for r in reads]})
    else:
        reads = [collector.read_host(h, collector.settings_for(config, h.host), None)
                 for h in collector.discover(patterns)]
        contacts = Contacts()
        covered: dict[str, float] = {}
        for r in reads:
            contacts.merge(r.contacts)
            if r.contacts.end is not None:
                covered.update((a, r.contacts.end) for a, _ in r.contacts.runs)
        scans = sorted((s for r in reads for s in r.scans), key=lambda s: s.start)
        verdicts, estimates = attribute(contacts.runs, scans, contacts.end, settings,
                                        covered=covered)
    for r in reads:
        stats.add(r.stats)
        if r.error:
            log.warning("detect: %s: %s", r.host, r.error)
    if not reads:
        log.warning("detect: no host's log matches [collector] hosts_from")
    if args.json:
        _print_json(scans, verdicts, estimates, {"hosts": [r.as_dict() for r in reads]})
    else:
        print(report(scans, verdicts, estimates, stats))
        print(f"Hosts: {len(reads)} ({', '.join(r.host for r in reads) or 'none'}).")
    return 0 if not any(r.error for r in reads) else 4


def _print_json(scans: list[Scan], verdicts: dict[str, Finding], est: Estimates,
                extra: dict[str, Any]) -> None:
    """`detect --json`, one host or many: a line per scan, per server, then the model's."""
    for s in scans:
        print_json(scan_json(s))
    for v in sorted(verdicts.values(), key=_rank):
        print_json({"type": "server", "address": v.address, "status": v.status.value,
                    "positive": v.positive, "negative": v.negative, "sole": v.sole,
                    "probability": v.probability, "harvest_rate": v.harvest_rate,
                    "explained": v.explained})
    print_json({"type": "model", **dataclasses.asdict(est), **extra})


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def _rank(v: Finding) -> tuple:
    return (("harvester", "suspect", "unknown", "clean").index(v.status), -v.probability,
            v.address)


def scan_json(s: Scan) -> dict:
    return {"type": "scan", "start": _iso(s.start), "end": _iso(s.end), "src": s.src,
            "dst": s.dst, "ports": s.ports, "packets": s.packets,
            "triggers": [{"server": t.server, "dport": t.dport, "sport": t.sport,
                          "time": _iso(t.time), "lag": round(t.lag, 3)} for t in s.triggers]}


def report(scans: list[Scan], verdicts: dict[str, Finding], est: Estimates,
           stats: ReadStats, sides: Optional[dict[str, Any]] = None) -> str:
    """The human report, in the 2016 original's words."""
    out = []
    for s in scans:
        out.append(f"{_iso(s.start)}  scan of {s.dst} from {s.src}: {s.ports} ports "
                   f"({'/'.join(p.lower() for p in s.protocols)}), {s.packets} packets in "
                   f"{s.end - s.start:.1f} s")
        if s.triggers:
            out.append("  one or more of these packets may have triggered the scan:")
            for t in s.triggers:
                out.append(f"    {_iso(t.time)}  {t.proto.lower()} {t.sport} -> "
                           f"[{t.server}]:{t.dport}  {t.lag:.1f} s before")
        else:
            out.append("  no outbound packet from this address in the lookback before it")
    if not scans:
        out.append("No scans found.")
    rows = [["server", "status", "p", "rate", "positive", "negative", "sole", "explained"]]
    for v in sorted(verdicts.values(), key=_rank):
        rate = f"{v.harvest_rate:.0%}" if v.status in (Status.HARVESTER, Status.SUSPECT) else ""
        rows.append([v.address, v.status.value, f"{v.probability:.2f}", rate, str(v.positive),
                     str(v.negative), str(v.sole), f"{v.explained:.1f}"])
    if len(rows) > 1:
        out += ["", table(rows)]
    out += ["", *estimate_lines(est)]
    if sides:
        out.append(sides_line(sides))
    out.append(f"Read {stats.lines} lines: {stats.events} packets, {stats.skipped} skipped "
               f"({stats.not_netfilter} not netfilter, {stats.garbled} garbled or truncated, "
               f"{stats.untimed} without a usable time).")
    return "\n".join(out)


def sides_line(sides: dict[str, Any]) -> str:
    """Which way packets went: the LAN side of forwarded packets and the local prefixes, and
    whether they were configured or learned from the log."""
    lan = ", ".join(sides.get("lan_interfaces", ())) or "none seen"
    wan = ", ".join(sides.get("wan_interfaces", ()))
    prefixes = sides.get("local_prefixes", ())
    how = "learned from the log" if sides.get("lan_learned") else "[detect] lan_interfaces"
    return (f"Directions: LAN interfaces {lan} ({how}{'; WAN ' + wan if wan else ''}); local "
            f"prefixes {', '.join(prefixes[:4]) or 'none'}{' ...' if len(prefixes) > 4 else ''}"
            f" ({'learned' if sides.get('prefixes_learned') else 'configured'}).")


def estimate_lines(est: Estimates) -> list[str]:
    """The fitted model in words: the lag distribution and the harvest rates (also shown by
    `ntpguard explain`)."""
    if est.lag_median is None:
        lag = "Lag from contact to scan: not estimated (no scan followed a contact)."
    else:
        lag = (f"Lag from contact to scan (estimated): median {est.lag_median:.0f} s, 90% "
               f"within {est.lag_p90:.0f} s, 99% within {est.lag_max:.0f} s; "
               f"{est.first_contact_share:.0%} of harvests at the first packet to a server.")
    return [lag,
            f"Harvest rate: likely harvesters take {est.harvest_rate:.0%} of the addresses they "
            f"see (each one's own rate under 'rate'); unrelated scans: "
            f"{est.background_rate:.3g} per address and hour. {est.explained:.0f} of "
            f"{est.scans} scans explained by harvesters, {est.unattributed_scans} with no "
            f"contact in the lookback ({est.contacts} address-server contacts weighed, "
            f"{est.rounds} rounds of the fit)."]
