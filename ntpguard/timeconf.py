"""Clean servers → time-daemon configuration (chrony, timesyncd, ntpsec/ntp, openntpd).

Selection and rendering are pure. `write` only touches the file ntpguard owns (chrony's
sources.d drop-in, timesyncd's conf.d drop-in) and reloads the daemon when the content changed.
ntpsec/ntp and openntpd have no drop-in directory by default, so for them ntpguard prints the
lines and the admin adds them once: ntpguard never edits an admin's file.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence

from ntpguard.errors import NtpguardError, UsageError
from ntpguard.files import atomic_write
from ntpguard.sntp import SntpResult

FORMATS = ("chrony", "timesyncd", "ntpsec", "ntp", "openntpd")
HEADER = "Written by ntpguard (`ntpguard timeconf --write`); edits are overwritten."
NTPSEC_SNIPPET = "/etc/ntpsec/ntpguard.conf"
NTP_SNIPPET = "/etc/ntpguard/ntp-servers.conf"


class ReloadError(NtpguardError):
    """The file was written but the daemon could not be told; it picks it up on restart."""


@dataclass(frozen=True)
class Candidate:
    """A known server that may be used: its effective status allows NTP to it."""

    address: str
    last_seen: float
    times_seen: int = 0
    cleared: bool = False  # detection (or the admin) said clean, not merely "not bad"


def candidates(servers: Iterable, statuses: Mapping[str, str], now: float, max_age: float,
               usable: Sequence[str] = ("clean",)) -> list[Candidate]:
    """Servers (state.Server-like) whose status is usable and that DNS served recently."""
    out = []
    for s in servers:
        status = statuses.get(s.address, "unknown")
        if status in usable and now - s.last_seen <= max_age:
            out.append(Candidate(s.address, s.last_seen, s.times_seen, status == "clean"))
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
    Servers cleared by evidence come before merely unjudged ones, and the `current` sources
    before new ones, so a daemon is not reloaded for a mere re-ranking.
    """
    pool = list(cands)
    kept = set(current)
    if checks is not None:
        pool = [c for c in pool if c.address in checks and checks[c.address].ok]
        pool.sort(key=lambda c: (not c.cleared, c.address not in kept,
                                 checks[c.address].delay > max_delay,
                                 checks[c.address].delay, c.address))
    else:
        pool.sort(key=lambda c: (not c.cleared, c.address not in kept, -c.times_seen,
                                 -c.last_seen, c.address))
    chosen: list[str] = []
    used = set()
    for c in pool:  # first pass: one per prefix
        g = _group(c.address, spread_v6, spread_v4)
        if g not in used and len(chosen) < count:
            chosen.append(c.address)
            used.add(g)
    for c in pool:  # then fill up, if there are not enough prefixes
        if len(chosen) >= count:
            break
        if c.address not in chosen:
            chosen.append(c.address)
    return chosen


# -- rendering -----------------------------------------------------------------------------------


def render(fmt: str, servers: Sequence[str], options: str = "iburst",
           fallback: Sequence[str] = ()) -> str:
    """The file content for one daemon; an empty server list is an error, not an empty file
    (a time daemon without sources drifts silently)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if not servers:
        raise UsageError("no clean servers to write: run `ntpguard sync` (or resolve) first, "
                         "or check `ntpguard servers`")
    for s in servers:
        ipaddress.ip_address(s)  # addresses only: the point is not to ask the pool's DNS
    opts = f" {options}" if options else ""
    if fmt == "timesyncd":
        lines = [f"# {HEADER}", "[Time]", "NTP=" + " ".join(servers)]
        if fallback:
            lines.append("FallbackNTP=" + " ".join(fallback))
        return "\n".join(lines) + "\n"
    if fmt == "openntpd":
        # openntpd knows no per-server options like iburst.
        body = [f"server {s}" for s in servers]
    else:
        body = [f"server {s}{opts}" for s in servers]
    return "\n".join([f"# {HEADER}", *body]) + "\n"


def instructions(fmt: str, snippet_path: str) -> str:
    """What the admin adds by hand where no drop-in directory exists (printed, never done)."""
    if fmt in ("ntpsec", "ntp"):
        conf = "/etc/ntpsec/ntp.conf" if fmt == "ntpsec" else "/etc/ntp.conf"
        return (f"# Save the lines above as {snippet_path}, then add this one line to {conf}\n"
                f"# and comment out its `pool` lines (the pool would hand out harvesters again):\n"
                f"#   includefile {snippet_path}\n")
    if fmt == "openntpd":
        return ("# openntpd has no include directive: put the lines above into\n"
                "# /etc/openntpd/ntpd.conf in place of its `servers ...pool.ntp.org` lines.\n")
    return ""


# -- detection -----------------------------------------------------------------------------------


def _running_commands(proc: str = "/proc") -> set[str]:
    names = set()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return names
    for pid in pids:
        try:
            with open(os.path.join(proc, pid, "comm")) as fh:
                names.add(fh.read().strip())
        except OSError:
            continue
    return names


def detect_daemon(running: Optional[set[str]] = None,
                  exists: Callable[[str], bool] = os.path.exists) -> Optional[str]:
    """The time daemon in use: a running one first, else the one installed.

    All four Conflict with each other in Debian (they Provide `time-daemon`), so at most one
    is installed; `ntpd` is either ntpsec or openntpd, told apart by its config directory.
    """
    running = _running_commands() if running is None else running
    if "chronyd" in running:
        return "chrony"
    if "systemd-timesyn" in running or "systemd-timesyncd" in running:  # comm is 15 chars
        return "timesyncd"
    installed_ntpd: Optional[str] = None
    for conf, name in (("/etc/ntpsec/ntp.conf", "ntpsec"), ("/etc/openntpd/ntpd.conf", "openntpd"),
                       ("/etc/ntp.conf", "ntp")):
        if exists(conf):
            installed_ntpd = name
            break
    if "ntpd" in running and installed_ntpd:
        return installed_ntpd
    if exists("/usr/sbin/chronyd"):
        return "chrony"
    if installed_ntpd:
        return installed_ntpd
    if exists("/lib/systemd/systemd-timesyncd") or exists("/usr/lib/systemd/systemd-timesyncd"):
        return "timesyncd"
    return None


# -- writing -------------------------------------------------------------------------------------

RELOAD = {
    "chrony": ["chronyc", "reload", "sources"],
    "timesyncd": ["systemctl", "try-restart", "systemd-timesyncd.service"],
}


def owned_path(fmt: str, chrony_sources: str, timesyncd_dropin: str) -> Optional[str]:
    """The file ntpguard may write for this daemon, or None where it must not write any."""
    return {"chrony": chrony_sources, "timesyncd": timesyncd_dropin}.get(fmt)


def write(fmt: str, content: str, path: str, reload: bool = True,
          reload_command: Optional[Sequence[str]] = None) -> bool:
    """Write `content` to ntpguard's own file if it differs, then reload; return changed.

    Atomic (temp file + rename), so the daemon never reads half a file. Raises ReloadError
    after a successful write when the reload fails: the caller knows the file changed.
    """
    if fmt not in RELOAD:
        raise UsageError(f"{fmt}: ntpguard writes no file for this daemon (no drop-in "
                         "directory); use the printed lines and include line")
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == content:
                return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        atomic_write(path, content.encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    if reload:
        cmd = list(reload_command or RELOAD[fmt])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReloadError(f"wrote {path}, but `{' '.join(cmd)}` failed: {exc}") from None
        if proc.returncode != 0:
            why = (proc.stderr or proc.stdout).strip().splitlines()
            raise ReloadError(f"wrote {path}, but `{' '.join(cmd)}` failed: "
                              f"{why[-1] if why else f'exit {proc.returncode}'}")
    return True


def remove(path: str) -> bool:
    """Remove ntpguard's own file (package removal / `timeconf --remove`)."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


# -- the step `timeconf` and `sync` run ----------------------------------------------------------


def allowed_servers(config, state) -> set[str]:
    """The servers the firewall plan would let NTP reach, whatever this host's own facts."""
    from ntpguard.enforce import inputs_from_state
    from ntpguard.plan import HostFacts, build

    servers, scanners, harvesters = inputs_from_state(config, state, state.directory)
    plan = build(servers, scanners, harvesters, config.rules, HostFacts(), force=True)
    return set(plan.clean4) | set(plan.clean6)


def current_servers(path: Optional[str]) -> list[str]:
    """The servers in a file ntpguard wrote earlier (chrony `server` lines, timesyncd NTP=)."""
    try:
        with open(path or "", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "server":
            out.append(words[1])
        elif line.startswith("NTP="):
            out.extend(line[4:].split())
    return out


def choose(config, state, now: float, check: Optional[bool] = None, count: Optional[int] = None,
           port: int = 123, current: Sequence[str] = ()) -> tuple[list[str], dict[str, SntpResult]]:
    """Known servers + verdicts → the servers to configure (and SNTP results when checked)."""
    from ntpguard.precedence import effective
    from ntpguard.sntp import query_many

    tc = config.timeconf
    latest = state.latest_verdicts()
    statuses = {}
    for address, by_source in latest.items():
        v = effective(by_source)
        if v is not None:
            statuses[address] = v.status
    # Exactly the servers the firewall plan lets NTP reach (known, not harvester or suspect,
    # not inside a listed harvester or scanner prefix); servers cleared by evidence come first.
    reachable = allowed_servers(config, state)
    cands = [c for c in candidates(state.servers(), statuses, now, tc.max_age,
                                   ("clean", "unknown")) if c.address in reachable]
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


@dataclass(frozen=True)
class Outcome:
    daemon: Optional[str]
    servers: tuple[str, ...]
    path: Optional[str]  # the file written, None where ntpguard writes none
    changed: bool
    message: str = ""


def configure_daemon(config, state, now: float, dry_run: bool = False) -> Outcome:
    """`sync`'s step: write the detected daemon's drop-in if it changed; never raises for
    "nothing to do" (no daemon, no clean servers, a daemon without drop-ins)."""
    tc = config.timeconf
    daemon = detect_daemon() if tc.daemon == "auto" else (None if tc.daemon == "none"
                                                          else tc.daemon)
    if daemon is None:
        return Outcome(None, (), None, False, "no time daemon found (or [timeconf] daemon = none)")
    path = owned_path(daemon, tc.chrony_sources, tc.timesyncd_dropin)
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
        try:
            with open(path, encoding="utf-8") as fh:
                same = fh.read() == content
        except OSError:
            same = False
        return Outcome(daemon, tuple(servers), path, not same, "dry run: not written")
    changed = write(daemon, content, path, tc.reload)
    return Outcome(daemon, tuple(servers), path, changed)
