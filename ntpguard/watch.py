"""`ntpguard watch`: put the rules back within a second of anything removing or changing them.

It reads `nft monitor`, which prints every committed nftables transaction as its changes, one
a line, then `# new generation N by process PID (NAME)`. A transaction that touches `table inet
ntpguard` is ntpguard's own when it also adds a generation token to the table (every apply,
update and restore does: backends/nft.py); any other is foreign: nftables.service's `flush
ruleset` (on restart, reload and stop), `nft delete table`, a rule deleted or added by hand.
After a foreign one, once the stream has been quiet for IDLE seconds (so the two transactions
of an nftables restart cost one restore) but never later than MAX_DELAY, the last applied plan
goes back through the same code path as `ntpguard rules restore`. Between events the process
sleeps in select(): no polling.

x_tables (the legacy iptables backend) sends no events, so there is nothing to watch there;
`sync` puts those rules back (it verifies them on every run).
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from ntpguard import applied, backends, commands, enforce
from ntpguard.backends.nft import FAMILY, TABLE
from ntpguard.config import Config
from ntpguard.errors import FirewallError, NtpguardError

# Seconds of quiet that end a burst of changes, and the longest a restore waits for one. Each
# 0.1 s the table is away lets packets out (chrony sent one to a blocked server in a 0.3 s gap
# in the booted-container test); a burst cut short costs one extra restore (~10 ms).
IDLE, MAX_DELAY = 0.05, 0.5
# A tool that removes the table as soon as it is back would make us fight it: at most this
# many restores in WINDOW seconds, then wait (and say so) until the window has room again.
MAX_RESTORES, WINDOW = 10, 60.0
GENERATION = "# new generation"
LOST = "# ERROR"  # nft monitor: "# ERROR: We lost some netlink events!"


@dataclass
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
    """At most `count` events in any `window` seconds."""

    def __init__(self, count: int = MAX_RESTORES, window: float = WINDOW) -> None:
        self.count, self.window = count, window
        self.times: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more event is allowed (0: now)."""
        while self.times and self.times[0] <= now - self.window:
            self.times.popleft()
        return 0.0 if len(self.times) < self.count else self.times[0] + self.window - now

    def note(self, now: float) -> None:
        self.times.append(now)


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
    limiter = Limiter()

    def put_back() -> None:
        delay = limiter.wait(clock())
        if delay:
            say(f"watch: {limiter.count} restores within {limiter.window:.0f} s: another "
                f"tool keeps changing table {FAMILY} {TABLE}; next restore in {delay:.0f} s")
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
        current, dirty_since = Transaction(), 0.0
        for line in stream.lines(IDLE):
            if line is None or line.startswith(GENERATION):
                if current.foreign and not dirty_since:
                    dirty_since = clock()
                current = Transaction()
            elif line.startswith(LOST):
                dirty_since = dirty_since or clock()
            else:
                current.feed(line)
            if dirty_since and (line is None or clock() - dirty_since >= MAX_DELAY):
                dirty_since = 0.0
                put_back()
        status = stream.close()
    raise FirewallError(f"nft monitor ended (exit {status}): {stream.last or 'no output'}")
