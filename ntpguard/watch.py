"""`ntpguard watch`: put the rules back within a second of anything removing or changing them.

It reads `nft monitor`, which prints every committed nftables transaction as its changes, one
a line, then `# new generation N by process PID (NAME)`. A transaction that touches `table inet
ntpguard` is ntpguard's own when it also adds a generation token to the table (every apply,
update and restore does: backends/nft.py); any other is foreign: nftables.service's `flush
ruleset` (on restart, reload and stop), `nft delete table`, a rule deleted or added by hand.
When a foreign one ends, the last applied plan goes back at once, through the same code path
as `ntpguard rules restore`: every moment the table is away counts, since a time daemon
retries a server it cannot reach every few seconds (chrony: every 2 s, measured), and a
restore of a small plan takes ~10 ms. Between events the process sleeps in select(): no
polling.

x_tables (the legacy iptables backend) sends no events, so there is nothing to watch there;
`sync` puts those rules back (it verifies them on every run).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable

from ntpguard import applied, backends, commands, enforce
from ntpguard.backends.nft import FAMILY, TABLE
from ntpguard.config import Config
from ntpguard.errors import FirewallError, NtpguardError
from ntpguard.records import record

# Seconds of quiet after which lines without a closing `# new generation` (nft before 0.9.1
# prints none) count as one transaction.
IDLE = 0.05
# A tool that removes the table as soon as it is back would make us fight it at full speed:
# BURST restores at once, then at most RATE a second, so the table is never away for longer
# than 1/RATE seconds and the fight costs a few milliseconds a second.
BURST, RATE = 10, 1.0
GENERATION = "# new generation"
LOST = "# ERROR"  # nft monitor: "# ERROR: We lost some netlink events!"


@record(frozen=False)
class Transaction:
    """One nftables transaction as `nft monitor` prints it, judged line by line (a full
    apply of 100k elements is 100k lines: nothing is kept but two flags)."""

    touched: bool = False
    token: bool = False

    def feed(self, line: str) -> None:
        words = line.split(None, 4)
        if len(words) >= 4 and words[2] == FAMILY and words[3] == TABLE:
            self.touched = True
            if words[:2] == ["add", "element"] and len(words) == 5 \
                    and words[4].startswith("generation "):
                self.token = True

    @property
    def foreign(self) -> bool:
        return self.touched and not self.token


class Limiter:
    """A token bucket: `burst` events at once, then `rate` a second."""

    def __init__(self, burst: int = BURST, rate: float = RATE) -> None:
        self.burst, self.rate = burst, rate
        self.tokens, self.last = float(burst), 0.0

    def _fill(self, now: float) -> None:
        if self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def wait(self, now: float) -> float:
        """Seconds until one more event is allowed (0: now)."""
        self._fill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def note(self, now: float) -> None:
        self._fill(now)
        self.tokens -= 1


def notify_ready() -> None:
    """Tell systemd (Type=notify) that events are being watched."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(b"READY=1")


def watched_backend(config: Config, state_dir: str) -> str:
    """The backend whose rules are to be kept: the one that last applied, else the config's."""
    record = applied.load_or_none(state_dir)
    name = record.backend if record else config.rules.backend
    return backends.auto_name() if name == "auto" else name


def run(config: Config, state_dir: str, say: Callable[[str], None],
        ready: Callable[[], None] = notify_ready,
        clock: Callable[[], float] = time.monotonic) -> int:
    """Watch until `nft monitor` ends (then FirewallError) or the process is stopped; 0 at
    once where there is nothing to watch."""
    name = watched_backend(config, state_dir)
    if name != "nft":
        say(f"watch: the {name} backend's rules get no change events; nothing to watch "
            "(every sync puts them back)")
        return 0
    limiter, warned = Limiter(), -1.0

    def put_back() -> None:
        nonlocal warned
        delay = limiter.wait(clock())
        if delay:
            if warned < 0 or clock() - warned > 60:  # once a minute at most
                warned = clock()
                say(f"watch: another tool keeps changing table {FAMILY} {TABLE}: restoring "
                    f"at most {limiter.rate:g} times a second")
            time.sleep(delay)
        limiter.note(clock())
        try:
            done = enforce.restore(config, state_dir, from_state=False)
        except NtpguardError as exc:
            say(f"watch: restore failed: {exc}")
            return
        if done.changed:
            say(f"watch: {done.describe()}")

    with commands.Stream(["nft", "monitor"], error=FirewallError) as stream:
        put_back()  # whatever happened while nothing watched
        say(f"watch: watching table {FAMILY} {TABLE} (nft monitor)")
        ready()
        current, lost = Transaction(), False
        for line in stream.lines(IDLE):
            if line is None or line.startswith(GENERATION):
                if current.foreign or lost:
                    put_back()
                current, lost = Transaction(), False
            elif line.startswith(LOST):  # events lost: whatever they were, check
                lost = True
            else:
                current.feed(line)
        status = stream.close()
    raise FirewallError(f"nft monitor ended (exit {status}): {stream.last or 'no output'}")
