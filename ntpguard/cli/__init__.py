"""The `ntpguard` command: argparse and printing only; the work is in the library modules.

Each sub-command lives in its own module here with `register(subparsers, common)`, which adds
the parser and sets `func(ctx, args) -> int` (and may set `early(ctx, args)`, run before the
settings are loaded: an exit code, or None to go on). Expected failures are NtpguardError
subclasses and become one line `ntpguard: <message>` with the error's exit code; anything else
is one line too (the traceback only with -v), never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, NoReturn, Optional, TextIO, cast

from ntpguard import __version__, commands, configfile
from ntpguard.cli import _fmt
from ntpguard.cli._fmt import VisibleControls
from ntpguard.cli._progress import Line
from ntpguard.errors import NtpguardError
from ntpguard.progress import lock_wait

if TYPE_CHECKING:  # imported when a command opens it: the state pulls in most of ntpguard
    from ntpguard.config import Config
    from ntpguard.state import State

# Sub-command modules, in the order `--help` lists them.
COMMANDS = [
    "sync", "resolve", "detect", "probe", "rules", "watch", "timeconf", "list", "servers",
    "status", "mark", "explain",
]

EXIT_CODES = """exit status:
  0  success
  1  the operation failed (DNS, firewall, files); state and rules are as before
  2  bad usage, configuration or input
  3  another ntpguard run holds the state lock
  4  partly done: some steps or names failed, the rest succeeded
  5  ntpguard's rules are missing or differ from the last applied plan (rules show, status)
"""
# The packages that hold the modules ntpguard imports from outside the standard library:
# a missing one (pip without its dependencies, a venv without Debian's site packages) is
# named, not shown as a traceback.
PACKAGES = {
    "dns": "python3-dnspython (PyPI: dnspython)",
    "nftables": "python3-nftables (Debian's, not on PyPI)",
    "iptc": "python3-iptables (PyPI: python-iptables)",
    "tomli": "python3-tomli (PyPI: tomli)",
    "cryptography": "python3-cryptography (PyPI: cryptography)",
}
# `rules show` and `status` when the kernel lacks the last applied rules or holds others.
RULES_NOT_IN_PLACE = 5

log = logging.getLogger("ntpguard")
# What each command module's register() gets: `add_parser` on it makes the command's parser.
Subparsers = argparse._SubParsersAction


class Context:
    """What every command needs: the loaded config, a way to open the state, and the progress
    line for waits longer than a moment (drawn only on a terminal, never with --json)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: Optional[Config] = None
        self.progress = Line.on_terminal(sys.stderr, json=bool(getattr(args, "json", False)))

    @property
    def config(self) -> Config:
        if self._config is None:
            from ntpguard import config  # not before a command needs the settings (see early)

            self._config = config.load(self.args.config)
            commands.set_timeout(self._config.general.command_timeout)
        return self._config

    @property
    def state_dir(self) -> str:
        return configfile.state_dir(self.args.state_dir, lambda: self.config.general.state_dir)

    def open_state(self, write: bool = True) -> State:
        """Open the state database; with write=True take the exclusive run lock first (with
        --wait, the progress line names the holder while this waits)."""
        from ntpguard.state import State

        state = State.open(
            self.state_dir,
            lock=write,
            wait=self.args.wait,
            holder=f"ntpguard {self.args.command}",
            waiting=lock_wait(self.progress),
        )
        self.progress.clear()
        return state


def print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False))


def chosen_command(argv: list[str]) -> Optional[str]:
    """The sub-command named in argv, if it can be told without parsing: the first word that
    is not an option or the value of --config/--state-dir (also abbreviated, or written
    with '='). None when there is none, or it is not a command (argparse then words the
    error with every command's parser)."""
    takes_value = ("--config", "--state-dir")
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--":
            return None
        if word.startswith("-"):
            skip = "=" not in word and len(word) > 2 and \
                any(o.startswith(word) for o in takes_value)
            continue
        return word if word in COMMANDS else None
    return None


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its help as wide as the terminal, found without shutil: for
    each option added, argparse makes a help formatter (printed or not), whose width it
    asks of shutil, which imports bz2 and lzma: ~3 ms of every command."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        # typeshed's formatter_class type names prog alone; every HelpFormatter takes width.
        return self.formatter_class(prog=self.prog, width=_help_width())  # type: ignore[call-arg]


def _help_width() -> int:
    """What argparse gets from shutil.get_terminal_size: $COLUMNS, else the terminal's width
    on stdout, else 80; less 2."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        out = sys.__stdout__
        try:
            columns = os.get_terminal_size(out.fileno()).columns if out is not None else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns if columns > 0 else 80) - 2


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, that command's alone: each command module imports what
    its command needs (the firewall, the log parser, DNS...), and importing all twelve
    costs ~0.2 s and ~20 MB of a `rules apply` that has nothing to change."""
    parser = _Parser(
        prog="ntpguard",
        description="Find NTP pool servers that harvest client addresses for port scanners, "
        "and keep your hosts' NTP away from them.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ntpguard {__version__}")
    _global_options(parser, None, False, 0)
    # The same options after the command; SUPPRESS keeps a command's parser from resetting
    # what was given before it (`ntpguard --config F status` and `ntpguard status --config F`).
    common = _Parser(add_help=False)
    _global_options(common, argparse.SUPPRESS, argparse.SUPPRESS, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in [only] if only else COMMANDS:
        module = importlib.import_module(f"ntpguard.cli.{name}")
        module.register(sub, common)
    return parser


def _global_options(parser: argparse.ArgumentParser, text: Any, flag: Any, count: Any) -> None:
    parser.add_argument(
        "--config", metavar="FILE", default=text,
        help=f"configuration file (default: $NTPGUARD_CONFIG or {configfile.DEFAULT_PATH})",
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", default=text,
        help=f"state directory (default: $NTPGUARD_STATE_DIR or {configfile.DEFAULT_STATE_DIR})",
    )
    parser.add_argument("--wait", action="store_true", default=flag,
                        help="wait for the state lock instead of failing")
    parser.add_argument("-v", "--verbose", action="count", default=count,
                        help="more detail on stderr (-v -v: debugging, with tracebacks)")


def command() -> NoReturn:
    """The `ntpguard` program (`python3 -m ntpguard` and the installed script): main(), then
    the exit of a process with nothing left to clean up. Python's own exit tears every module
    and object down one by one and frees the libnftables context, which then holds the sets
    it fetched for the transaction: 17-23 ms of a ~0.2 s `rules apply` after one change,
    measured; the kernel takes the whole process back at once. What a command writes is
    closed before main() returns (files by `with`, the state database by its context
    manager, a worker pool by its own); only the output streams are left to flush. Under a
    profiler or a coverage tracer (`python3 -m cProfile -m ntpguard ...`), which write what
    they gathered at Python's exit, it is Python's exit."""
    code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    logging.shutdown()  # flushes the stderr handler, as Python's exit would
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # a reader that went away (`ntpguard status | head -1`), a closed stream
        except OSError as exc:
            # `> file` on a full disk: what was printed is lost, so the command failed. It
            # was a traceback, Python's "Exception ignored" and exit status 120.
            code = code or 1
            if stream is sys.stdout:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(f"ntpguard: cannot write the output: {exc.strerror}\n")
                    sys.stderr.flush()
    os._exit(code)


def missing_module(exc: ModuleNotFoundError) -> str:
    """What to install for a module that could not be imported."""
    name = (exc.name or "").partition(".")[0]
    package = PACKAGES.get(name)
    return (f"the Python module {name!r} is missing: install {package}" if package
            else f"the Python module {exc.name!r} is missing ({exc})")


def main(argv: Optional[list[str]] = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words == ["--version"]:
        # What argparse prints for it, without importing every command to build the whole
        # parser first (~0.1 s; what package checks and monitoring scripts run).
        print(f"ntpguard {__version__}")
        return 0
    if sys.stdout.isatty() and not isinstance(sys.stdout, VisibleControls):
        sys.stdout = cast(TextIO, VisibleControls(sys.stdout, _fmt.OUTPUT))
    if sys.stderr.isatty() and not isinstance(sys.stderr, VisibleControls):
        sys.stderr = cast(TextIO, VisibleControls(sys.stderr, _fmt.MESSAGES))
    try:
        parser = build_parser(chosen_command(words))
    except ModuleNotFoundError as exc:  # every command's module is imported for --help
        print(f"ntpguard: {missing_module(exc)}", file=sys.stderr)
        return 1
    args = parser.parse_args(words)
    logging.basicConfig(
        format="ntpguard: %(message)s",
        level=logging.WARNING - 10 * min(args.verbose, 2),
    )
    ctx = Context(args)
    handlers = logging.getLogger().handlers
    for handler in handlers:  # a warning wipes the progress line before it is printed
        handler.addFilter(ctx.progress.before_log)
    try:
        with ctx.progress:  # cleared before the error line below, too
            # A command that can tell from what its last run left that it has nothing to do
            # (`rules apply`: ntpguard.inputs) answers before the settings are loaded: what
            # it checks names the configuration file's exact bytes, which loaded then.
            early = getattr(args, "early", None)
            code = early(ctx, args) if early is not None else None
            if code is not None:
                return int(code)
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
    except ModuleNotFoundError as exc:
        print(f"ntpguard: {missing_module(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an unforeseen failure: still one line, exit 1
        if args.verbose:
            traceback.print_exc()
        print(f"ntpguard: unexpected {type(exc).__name__}: {exc} (run with -v for the "
              "traceback)", file=sys.stderr)
        return 1
    finally:
        for handler in handlers:
            handler.removeFilter(ctx.progress.before_log)
