"""`ntpguard watch`: the watcher ntpguard-watch.service runs; one line per restore."""

from __future__ import annotations

import argparse
import signal
import sys
import syslog
from typing import Any

from ntpguard import watch
from ntpguard.cli import Context, Subparsers
from ntpguard.cli.sync import stdout_is_journal


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "watch", parents=[common], help="put the rules back whenever something removes them",
        description="Follow nftables' change events (nft monitor) and, within a second of "
        "anything removing or changing table inet ntpguard (an nftables restart or reload, "
        "`nft flush ruleset`, another tool), put the last applied plan back, as `rules "
        "restore` does. Runs until stopped; exits 0 at once under the iptables backend, "
        "whose rules send no events.",
    )
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    to_syslog = not stdout_is_journal(sys.stdout.fileno())
    if to_syslog:
        syslog.openlog("ntpguard", 0, syslog.LOG_DAEMON)

    def say(line: str) -> None:
        print(line, flush=True)
        if to_syslog:
            syslog.syslog(syslog.LOG_WARNING if "failed" in line else syslog.LOG_INFO, line)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)  # unwinds through the stream, which stops nft monitor

    signal.signal(signal.SIGTERM, stop)
    return watch.run(ctx.config, ctx.state_dir, say)
