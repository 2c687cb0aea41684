"""Usable servers → time-daemon configuration (chrony, timesyncd, ntpsec/ntp, openntpd).

Selection is pure; ntpguard.daemons knows each daemon's syntax and files. `write` only touches
the file ntpguard owns (chrony's sources.d drop-in, timesyncd's conf.d drop-in) and reloads the
daemon when the content changed. The servers offered are exactly those the firewall plan lets
NTP reach: the `usable` ones of ntpguard.status.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Mapping, Optional, Sequence

from ntpguard import commands, daemons, snapshot
from ntpguard.config import Config
from ntpguard.errors import NtpguardError, UsageError
from ntpguard.files import atomic_write, read_regular
from ntpguard.records import record
from ntpguard.sntp import SntpResult, query_many
from ntpguard.state import Server, State
from ntpguard.status import RANKS, ServerStatus, Status

FORMATS = daemons.NAMES


class ReloadError(NtpguardError):
    """The file was written but the daemon could not be told; it picks it up on restart."""


@record
class Candidate:
    """A usable server: the firewall lets NTP reach it."""

    address: str
    last_seen: float
    times_seen: int = 0
    # 0: the admin vouches for it (manual clean, trusted); 1: evidence cleared it; 2: unjudged.
    preference: int = 2


def candidates(statuses: Mapping[str, ServerStatus], servers: Mapping[str, Server],
               now: float, max_age: float) -> list[Candidate]:
    """Usable servers; those from the pool only if DNS served them within max_age (the pool
    drops dead servers), the admin's own and those this host's evidence found at any age."""
    out = []
    for address, st in statuses.items():
        if not st.usable:
            continue
        if st.status != Status.CLEAN or st.source is None:
            preference = 2
        else:
            preference = 0 if st.source.rank < RANKS["canary"] else 1
        pool = servers.get(address)
        if pool is not None and now - pool.last_seen > max_age and preference:
            continue
        out.append(Candidate(address, pool.last_seen if pool else 0.0,
                             pool.times_seen if pool else 0, preference))
    return out


def _group(address: str, spread_v6: int, spread_v4: int) -> ipaddress._BaseNetwork:
    ip = ipaddress.ip_address(address)
    bits = spread_v6 if ip.version == 6 else spread_v4
    return ipaddress.ip_network(f"{ip}/{bits}", strict=False)


def select_servers(cands: Sequence[Candidate], count: int, spread_v6: int = 48,
                   spread_v4: int = 24, checks: Optional[Mapping[str, SntpResult]] = None,
                   max_delay: float = 0.5, current: Sequence[str] = ()) -> list[str]:
    """Pick `count` servers, at most one per /48 (IPv4 /24) while others remain.

    One operator often holds many addresses in one prefix; spreading keeps one operator (or
    one harvester we have not caught yet) from being all our sources. With `checks`, servers
    that failed the SNTP query are dropped and the rest ranked by delay (those above max_delay
    last); without, the servers DNS served most often and most recently come first.
    Servers the admin vouches for come first, then those cleared by evidence, then merely
    unjudged ones, and the `current` sources before new ones, so a daemon is not reloaded for a
    mere re-ranking.
    """
    pool = list(cands)
    kept = set(current)
    if checks is not None:
        pool = [c for c in pool if c.address in checks and checks[c.address].ok]
        pool.sort(key=lambda c: (c.preference, c.address not in kept,
                                 checks[c.address].delay > max_delay,
                                 checks[c.address].delay, c.address))
    else:
        pool.sort(key=lambda c: (c.preference, c.address not in kept, -c.times_seen,
                                 -c.last_seen, c.address))
    chosen: list[str] = []
    used = set()
    for c in pool:  # first pass: one per prefix
        if len(chosen) >= count:
            break  # the rest cannot be chosen: 2,000 servers cost 2,000 prefixes made
        g = _group(c.address, spread_v6, spread_v4)
        if g not in used:
            chosen.append(c.address)
            used.add(g)
    for c in pool:  # then fill up, if there are not enough prefixes
        if len(chosen) >= count:
            break
        if c.address not in chosen:
            chosen.append(c.address)
    return chosen


# -- writing -------------------------------------------------------------------------------------

def render(fmt: str, servers: Sequence[str], options: str = "iburst",
           fallback: Sequence[str] = ()) -> str:
    """The file content for one daemon (ntpguard.daemons)."""
    return daemons.get(fmt).render(servers, options, fallback)


def write(fmt: str, content: str, path: str, reload: bool = True,
          reload_command: Optional[Sequence[str]] = None) -> bool:
    """Write `content` to ntpguard's own file if it differs, then reload; return changed.

    Atomic (temp file + rename), so the daemon never reads half a file. Raises ReloadError
    after a successful write when the reload fails: the caller knows the file changed.
    """
    daemon = daemons.get(fmt)
    if daemon.reload is None:
        raise UsageError(f"{fmt}: ntpguard writes no file for this daemon (no drop-in "
                         "directory); use the printed lines and include line")
    now = read_owned(path)
    if now == content:
        return False
    if now and not now.startswith(OWNED):
        # `--path` at the admin's own chrony sources or timesyncd.conf replaced it whole.
        raise UsageError(f"{path}: not written by ntpguard (its first line is not "
                         f"'{OWNED} ...'); refused: move it away or write elsewhere")
    directory = os.path.dirname(path) or "."
    # A missing directory is not made (only timesyncd's, which its package does not ship):
    # /etc/chrony/sources.d missing means chrony is not installed, or too old to read it, and
    # a typo in --path would otherwise become a new tree nothing reads.
    make = not os.path.isdir(directory)
    if make:
        # The one directory made here needs its parent: no /etc/systemd means no systemd,
        # so no timesyncd to read it (a sysvinit host, a container without it).
        ours = os.path.abspath(directory) == daemon.unshipped_dir
        missing = os.path.dirname(directory) if ours else directory
        if not ours or not os.path.isdir(missing):
            raise UsageError(f"{path}: cannot write: {missing} does not exist"
                             + (f" (is {daemon.name} installed?)" if ours else ""))
    try:
        if make:
            os.mkdir(directory, mode=0o755)
        atomic_write(path, content.encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    if reload:
        cmd = list(reload_command or daemon.reload)
        try:
            commands.run(cmd, error=ReloadError)
        except ReloadError as exc:
            raise ReloadError(f"wrote {path}, but {exc}") from None
    return True


# -- the step `timeconf` and `sync` run ----------------------------------------------------------


# ntpguard's own drop-in holds a few server lines; anything near this size is not its file.
MAX_DROPIN_BYTES = 1 << 20
# How every file ntpguard wrote begins (daemons.HEADER, its words unchanged since the first
# release).
OWNED = f"# {daemons.MARK}"


def read_owned(path: str) -> Optional[str]:
    """ntpguard's own drop-in as it is now, None if there is none. A link, a FIFO, a device
    or a huge file there is not ntpguard's: refused (UnsafePathError), never followed, waited
    on or read whole."""
    try:
        return read_regular(path, MAX_DROPIN_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def current_servers(path: Optional[str]) -> list[str]:
    """The servers in a file ntpguard wrote earlier (chrony `server` lines, timesyncd NTP=)."""
    text = read_owned(path) if path else None
    return daemons.TimeDaemon.servers_in(text) if text else []


def choose(config: Config, state: State, now: float, check: Optional[bool] = None,
           count: Optional[int] = None, port: int = 123, current: Sequence[str] = ()
           ) -> tuple[list[str], dict[str, SntpResult]]:
    """Effective statuses → the servers to configure (and SNTP results when checked)."""
    tc = config.timeconf
    # Exactly the servers the firewall plan lets NTP reach (ServerStatus.usable).
    cands = candidates(snapshot.statuses(config, state),
                       {s.address: s for s in state.servers()}, now, tc.max_age)
    want = count or tc.count
    checks: dict[str, SntpResult] = {}
    do_check = tc.check if check is None else check
    if do_check and cands:
        # Query a few more than needed (ranked as without checks) so failures can be replaced,
        # but not the whole pool: each query is a packet a harvester would see.
        ranked = select_servers(cands, len(cands), tc.spread_v6, tc.spread_v4)[: want * 3]
        checks = query_many(ranked, tc.check_timeout, port)
        cands = [c for c in cands if c.address in checks]
    chosen = select_servers(cands, want, tc.spread_v6, tc.spread_v4,
                            checks if do_check else None, tc.max_delay, current)
    # A stable order too: the same set in another order would rewrite and reload for nothing.
    chosen.sort(key=lambda a: (":" not in a, ipaddress.ip_address(a)))
    return chosen, checks


@record
class Outcome:
    """What writing the time daemon's server lines did."""

    daemon: Optional[str]
    servers: tuple[str, ...]
    path: Optional[str]  # the file written, None where ntpguard writes none
    changed: bool
    message: str = ""


def configure_daemon(config: Config, state: State, now: float, dry_run: bool = False
                     ) -> Outcome:
    """`sync`'s step: write the detected daemon's drop-in if it changed; never raises for
    "nothing to do" (no daemon, no clean servers, a daemon without drop-ins)."""
    tc = config.timeconf
    daemon = daemons.detect() if tc.daemon == "auto" else (None if tc.daemon == "none"
                                                           else tc.daemon)
    if daemon is None:
        return Outcome(None, (), None, False, "no time daemon found (or [timeconf] daemon = none)")
    path = daemons.get(daemon).dropin(tc)
    # Keep the sources the daemon already has while they stay usable: re-ranking on every
    # run would restart its source selection (and reload it) for nothing.
    servers, _ = choose(config, state, now, current=current_servers(path))
    if not servers:
        return Outcome(daemon, (), None, False, "no clean servers yet; daemon left as it is")
    content = render(daemon, servers, tc.options, tc.fallback)
    if path is None:
        return Outcome(daemon, tuple(servers), None, False,
                       f"{daemon} has no drop-in directory: see `ntpguard timeconf`")
    if dry_run:
        same = read_owned(path) == content
        return Outcome(daemon, tuple(servers), path, not same, "dry run: not written")
    changed = write(daemon, content, path, tc.reload)
    return Outcome(daemon, tuple(servers), path, changed)
