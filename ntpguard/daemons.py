"""The time daemons ntpguard configures: what each one's file looks like, where ntpguard may
write it and how the daemon is told (one class each, one registry, one way to find the one in
use).

chrony and systemd-timesyncd read drop-in directories, so ntpguard owns one file there and
reloads the daemon when it changes. ntpsec/ntp and openntpd have no drop-in directory by
default: for them ntpguard prints the lines and the admin adds them once, because ntpguard never
edits an admin's file. A new daemon is one class here and one line in `REGISTRY`.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Callable, Optional, Sequence

from ntpguard.config import Timeconf
from ntpguard.errors import UsageError

# How every file ntpguard writes begins (timeconf.write overwrites no file without it).
MARK = "Written by ntpguard"
HEADER = f"{MARK} (`ntpguard timeconf --write`); edits are overwritten."
NTPSEC_SNIPPET = "/etc/ntpsec/ntpguard.conf"
NTP_SNIPPET = "/etc/ntpguard/ntp-servers.conf"


class TimeDaemon:
    """One daemon's syntax and how ntpguard hands it servers (the shared behaviour: one
    `server ADDRESS OPTIONS` line per server under a header comment)."""

    name = ""
    reload: Optional[tuple[str, ...]] = None  # run after ntpguard's file changed
    # The drop-in directory the daemon reads that its own Debian package does not ship (the
    # admin is expected to create it): the only directory timeconf.write ever creates.
    unshipped_dir: Optional[str] = None

    def render(self, servers: Sequence[str], options: str, fallback: Sequence[str]) -> str:
        """The file content; an empty server list is an error, not an empty file (a time
        daemon without sources drifts silently)."""
        if not servers:
            raise UsageError("no clean servers to write: run `ntpguard sync` (or resolve) "
                             "first, name your own in [servers] trusted, or check "
                             "`ntpguard servers`")
        for s in servers:
            ipaddress.ip_address(s)  # addresses only: the point is not to ask the pool's DNS
        return "\n".join([f"# {HEADER}", *self.lines(servers, options, fallback)]) + "\n"

    def lines(self, servers: Sequence[str], options: str, fallback: Sequence[str]) -> list[str]:
        opts = f" {options}" if options else ""
        return [f"server {s}{opts}" for s in servers]

    def dropin(self, settings: Timeconf) -> Optional[str]:
        """The file ntpguard may write for this daemon, or None where it must write none."""
        return None

    def instructions(self) -> str:
        """What the admin adds by hand where there is no drop-in directory (printed only)."""
        return ""

    @staticmethod
    def servers_in(text: str) -> list[str]:
        """The servers in a file ntpguard wrote earlier (`server` lines, timesyncd NTP=)."""
        out = []
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "server":
                out.append(words[1])
            elif line.startswith("NTP="):
                out.extend(line[4:].split())
        return out


class Chrony(TimeDaemon):
    # Debian's chrony.conf has `sourcedir /etc/chrony/sources.d` (*.sources: server lines).
    name = "chrony"
    reload = ("chronyc", "reload", "sources")

    def dropin(self, settings: Timeconf) -> Optional[str]:
        return settings.chrony_sources


class Timesyncd(TimeDaemon):
    name = "timesyncd"
    reload = ("systemctl", "try-restart", "systemd-timesyncd.service")
    # systemd-timesyncd ships /etc/systemd/timesyncd.conf only; timesyncd.conf(5) has the admin
    # create this directory for drop-ins. ntpguard's .deb ships it (the sandboxed unit cannot
    # create it), an install from source makes it on the first write.
    unshipped_dir = "/etc/systemd/timesyncd.conf.d"

    def lines(self, servers: Sequence[str], options: str, fallback: Sequence[str]) -> list[str]:
        out = ["[Time]", "NTP=" + " ".join(servers)]
        if fallback:
            out.append("FallbackNTP=" + " ".join(fallback))
        return out

    def dropin(self, settings: Timeconf) -> Optional[str]:
        return settings.timesyncd_dropin


class Ntpsec(TimeDaemon):
    name = "ntpsec"
    conf = "/etc/ntpsec/ntp.conf"
    snippet = NTPSEC_SNIPPET

    def instructions(self) -> str:
        return (f"# Save the lines above as {self.snippet}, then add this one line to "
                f"{self.conf}\n"
                "# and comment out its `pool` lines (the pool would hand out harvesters "
                "again):\n"
                f"#   includefile {self.snippet}\n")


class Ntp(Ntpsec):
    # The classic ntpd's file; on Debian `ntp` is a transitional package to ntpsec.
    name = "ntp"
    conf = "/etc/ntp.conf"
    snippet = NTP_SNIPPET


class Openntpd(TimeDaemon):
    name = "openntpd"

    def lines(self, servers: Sequence[str], options: str, fallback: Sequence[str]) -> list[str]:
        return [f"server {s}" for s in servers]  # openntpd knows no options like iburst

    def instructions(self) -> str:
        return ("# openntpd has no include directive: put the lines above into\n"
                "# /etc/openntpd/ntpd.conf in place of its `servers ...pool.ntp.org` lines.\n")


REGISTRY: dict[str, TimeDaemon] = {d.name: d for d in (Chrony(), Timesyncd(), Ntpsec(), Ntp(),
                                                         Openntpd())}
NAMES = tuple(REGISTRY)


def get(name: str) -> TimeDaemon:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown format {name!r} (one of {', '.join(NAMES)})") from None


# -- finding the one in use ----------------------------------------------------------------------


def _running_commands(proc: str = "/proc") -> set[str]:
    names: set[str] = set()
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


def detect(running: Optional[set[str]] = None,
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
