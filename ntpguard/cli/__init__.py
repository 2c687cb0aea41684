"""The `ntpguard` command: argparse and printing only; the work is in the library modules.

Each sub-command lives in its own module here with `register(subparsers)`, which adds the
parser and sets `func(ctx, args) -> int`. Expected failures are NtpguardError subclasses and
become one line `ntpguard: <message>` with the error's exit code; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from typing import Any, Optional

from ntpguard import __version__, config
from ntpguard.errors import NtpguardError

# Sub-command modules, in the order `--help` lists them.
COMMANDS = [
    "sync", "resolve", "detect", "probe", "rules", "timeconf", "list", "servers", "status",
    "mark", "explain",
]

EXIT_CODES = """exit status:
  0  success
  1  the operation failed (DNS, firewall, files); state and rules are as before
  2  bad usage, configuration or input
  3  another ntpguard run holds the state lock
  4  partly done: some steps or names failed, the rest succeeded
"""

log = logging.getLogger("ntpguard")


class Context:
    """What every command needs: the loaded config and a way to open the state."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: Optional[config.Config] = None

    @property
    def config(self) -> config.Config:
        if self._config is None:
            self._config = config.load(self.args.config)
        return self._config

    @property
    def state_dir(self) -> str:
        return (
            self.args.state_dir
            or os.environ.get("NTPGUARD_STATE_DIR")
            or self.config.general.state_dir
        )

    def open_state(self, write: bool = True) -> Any:
        """Open the state database; with write=True take the exclusive run lock first."""
        from ntpguard.state import State

        return State.open(
            self.state_dir,
            lock=write,
            wait=getattr(self.args, "wait", False),
            holder=f"ntpguard {self.args.command}",
        )


def print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ntpguard",
        description="Find NTP pool servers that harvest client addresses for port scanners, "
        "and keep your hosts' NTP away from them.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ntpguard {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE",
        help=f"configuration file (default: $NTPGUARD_CONFIG or {config.DEFAULT_PATH})",
    )
    common.add_argument(
        "--state-dir", metavar="DIR",
        help=f"state directory (default: $NTPGUARD_STATE_DIR or {config.DEFAULT_STATE_DIR})",
    )
    common.add_argument(
        "--wait", action="store_true", help="wait for the state lock instead of failing"
    )
    common.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"ntpguard.cli.{name}")
        module.register(sub, common)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        format="ntpguard: %(message)s",
        level=logging.WARNING - 10 * min(args.verbose, 2),
    )
    try:
        ctx = Context(args)
        ctx.config  # noqa: B018 - a bad config file fails every command, not only some
        return int(args.func(ctx, args) or 0)
    except NtpguardError as exc:
        print(f"ntpguard: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ntpguard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
