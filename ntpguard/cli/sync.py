"""`ntpguard sync`: the cron job / timer. One summary line to stdout and syslog."""

from __future__ import annotations

import argparse
import os
import sys
import syslog

from ntpguard import sync
from ntpguard.cli import Context, Subparsers


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sync", parents=[common], help="the periodic job: resolve, detect, decide, enforce",
        description="Resolve the pool, ingest new firewall log lines, refresh subscribed "
        "lists, recompute verdicts, apply the firewall plan and write the time daemon's "
        "configuration. A failing step is reported and the others still run. Every write is "
        "made under the state lock; the pauses between DNS rounds and a probe's wait for an "
        "answer are not, so other commands can write meanwhile. On a terminal a line of "
        "progress shows the step, the round and the time to the next one.",
    )
    p.add_argument("--dry-run", action="store_true",
                   help="do everything on a scratch copy of the state; leave the firewall, "
                   "the time daemon and the state alone")
    p.add_argument("--no-resolve", action="store_true",
                   help="skip the DNS rounds and do the rest now with the known servers as "
                   "they are")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    def progress(step: sync.Step) -> None:
        if args.verbose and not args.json:
            ctx.progress.clear()
            mark = "skipped" if step.skipped else ("ok" if step.ok else "FAILED")
            print(f"  {step.name}: {mark}: {step.message}", flush=True)
            if step.trace:
                print(step.trace, end="", file=sys.stderr, flush=True)

    with ctx.progress:
        report = sync.run(ctx.config, ctx.state_dir, dry_run=args.dry_run, wait=args.wait,
                          progress=progress, show=ctx.progress, resolve=not args.no_resolve)
    line = report.line()
    if args.json:
        from ntpguard.cli import print_json
        print_json(report.as_dict())
    else:
        print(line)
        for step in report.steps:
            if not step.ok and not args.verbose:
                print(f"  {step.name} failed: {step.message}")
    if args.json or not stdout_is_journal(sys.stdout.fileno()):
        syslog.openlog("ntpguard", 0, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_WARNING if report.failed else syslog.LOG_INFO, line)
    return report.exit_code


def stdout_is_journal(fd: int) -> bool:
    """Whether fd is the journal stream systemd gave a service (it names it in $JOURNAL_STREAM
    as device:inode): under the timer the printed line is in the journal already, and a syslog
    copy would log every run twice."""
    try:
        st = os.fstat(fd)
    except (OSError, ValueError):
        return False
    return os.environ.get("JOURNAL_STREAM", "") == f"{st.st_dev}:{st.st_ino}"
