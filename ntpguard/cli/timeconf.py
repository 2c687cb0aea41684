"""`ntpguard timeconf`: time-daemon configuration that uses clean servers only."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from ntpguard import daemons, timeconf
from ntpguard.cli import Context, Subparsers
from ntpguard.config import with_options
from ntpguard.errors import UsageError


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "timeconf", parents=[common], help="time-daemon configuration with clean servers",
        description="Print (or, for chrony and timesyncd, write and reload) a configuration "
        "that points the time daemon at clean servers only, spread over different /48s. "
        "For ntpsec/ntp and openntpd it prints the lines and the one include line to add: "
        "ntpguard never edits an admin's file.")
    p.add_argument("--format", choices=timeconf.FORMATS,
                   help="daemon syntax (default: [timeconf] daemon, else the detected daemon)")
    p.add_argument("--count", type=int, help="number of servers (default: [timeconf] count, 4)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                   help="send one SNTP query to each candidate and prefer the best")
    p.add_argument("--write", action="store_true",
                   help="write ntpguard's own drop-in (chrony, timesyncd) and reload the daemon")
    p.add_argument("--path", help="write here instead of the configured drop-in path")
    p.add_argument("--no-reload", action="store_true", help="write without reloading")
    p.add_argument("--reload-command", metavar="CMD",
                   help="command run after a change (default: chronyc reload sources / "
                   "systemctl try-restart systemd-timesyncd)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    tc = with_options(ctx.config.timeconf, count=args.count)
    cfg = dataclasses.replace(ctx.config, timeconf=tc)
    fmt = args.format
    if fmt is None:
        fmt = tc.daemon if tc.daemon not in ("auto", "none") else daemons.detect()
        if fmt is None:
            raise UsageError("no time daemon detected: pass --format")
    daemon = daemons.get(fmt)
    path = args.path or daemon.dropin(tc)
    with ctx.open_state(write=False) as state:
        servers, checks = timeconf.choose(cfg, state, time.time(), args.check,
                                          current=timeconf.current_servers(path))
    content = timeconf.render(fmt, servers, tc.options, tc.fallback)
    changed = None
    if args.write:
        if path is None or daemon.reload is None:
            raise UsageError(f"--write: ntpguard writes no file for {fmt} (no drop-in "
                             "directory); add the printed lines and include line yourself")
        reload_cmd = args.reload_command.split() if args.reload_command else None
        changed = timeconf.write(fmt, content, path, reload=tc.reload and not args.no_reload,
                                 reload_command=reload_cmd)
    if args.json:
        from ntpguard.cli import print_json
        print_json({"format": fmt, "servers": servers, "path": path, "changed": changed,
                    "content": content,
                    "checks": {a: r.__dict__ for a, r in checks.items()}})
        return 0
    if args.write:
        print(f"{path}: {'updated' if changed else 'unchanged'} ({len(servers)} servers)")
        return 0
    sys.stdout.write(content)
    sys.stdout.write(daemon.instructions())
    for address, r in checks.items():
        result = f"stratum {r.stratum}, delay {r.delay * 1000:.1f} ms" if r.ok else r.error
        print(f"# checked {address}: {result}", file=sys.stderr)
    return 0
