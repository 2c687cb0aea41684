"""Active confirmation: one NTP packet to one server from a brand-new address of the host's /64.

Passive evidence is confounded when one local address talks to several servers: a scan then
says only "one of these harvests". A probe is a group test of exactly one server: a fresh
random address that nothing else ever uses sends one SNTP request to the server. If that
address is scanned within the lookback, the server handed it on (a *sole* positive); if not,
a negative. The probe's contact is stored with the log's contacts (State.record_probe_contacts),
and the scan, if any, arrives through the firewall log like every other one: the verdicts of
`detect --record` / `sync` then use it without knowing it was a probe.

The address is added as `/128 nodad valid_lft L preferred_lft 0`: deprecated, so the kernel
never picks it as the source of the host's own traffic (RFC 4862 5.5.4), and removed by the
kernel itself after L seconds, so a crashed or killed run leaves nothing behind for long. L
must outlast the lookback, or a late scan finds no address, is never logged, and the probe
counts as a false negative.

Pure parts (choosing the prefix, making the address, picking suspects) take data and return
data; the side effects (iproute2, the socket) are in the functions below them.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import time
from typing import TYPE_CHECKING, Callable, ContextManager, Iterable, Mapping

from ntpguard import commands, sntp
from ntpguard.addr import nonglobal_reason, parse_address
from ntpguard.config import Config, Detect, Probe
from ntpguard.errors import UsageError
from ntpguard.fresh import ProbeError, Target, find_target, fresh_address
from ntpguard.hostinfo import addresses
from ntpguard.plan import PROBE_MARK
from ntpguard.progress import TICK, Show, duration, quiet
from ntpguard.records import record
from ntpguard.status import ServerStatus, Status
from ntpguard.verdict import Finding

if TYPE_CHECKING:
    from ntpguard.state import State

NTP_PORT = 123
# Never a probe target, even in a lab (pool.allow_nonglobal): no route leads there.
_NEVER = ("unspecified", "loopback", "link-local", "multicast", "IPv4-mapped")


@record
class Result:
    """One probe: the server, the fresh source address, when, and what happened."""

    server: str
    source: str
    time: float
    sent: bool
    answered: bool = False
    detail: str = ""

    def as_dict(self) -> dict:
        return {"server": self.server, "source": self.source, "time": round(self.time, 3),
                "sent": self.sent, "answered": self.answered, "detail": self.detail}


# -- pure --------------------------------------------------------------------------------------

def check_servers(texts: Iterable[str], allow_nonglobal: bool = False) -> list[str]:
    """Canonical IPv6 server addresses, in order, without repeats; UsageError on bad input.

    IPv4 servers cannot be probed: a host has one IPv4 address, nothing fresh to send from.
    """
    out: list[str] = []
    for text in texts:
        ip = parse_address(text)
        if ip.version != 6:
            raise UsageError(f"{ip}: IPv4 servers cannot be probed (a host has no fresh IPv4 "
                             "source addresses); probe its IPv6 servers")
        why = nonglobal_reason(ip)
        if why in _NEVER:
            raise UsageError(f"{ip} is {why}: a probe goes to a server's routed address")
        if why and not allow_nonglobal:
            raise UsageError(f"{ip} is {why}, not a public NTP server "
                             "(pool.allow_nonglobal = true allows it)")
        if str(ip) not in out:
            out.append(str(ip))
    return out


def lifetime(settings: Probe, detect: Detect) -> int:
    """Seconds a probe address lives: configured, else lookback + window (a scan that
    starts at the end of the lookback still gets its window of ports logged)."""
    if settings.lifetime:
        if settings.lifetime < detect.lookback:
            raise UsageError(f"probe.lifetime ({settings.lifetime:g} s) is shorter than "
                             f"detect.lookback ({detect.lookback:g} s): a late scan would find "
                             "no address and the probe would count as a negative")
        return int(settings.lifetime + 0.999)
    return int(detect.lookback + detect.window + 0.999)


def live_probes(links: list, target: Target) -> set[str]:
    """Probe addresses still on the interface: deprecated /128s inside the prefix."""
    out = set()
    for link in links:
        if link.get("ifname") != target.interface:
            continue
        for info in link.get("addr_info", []):
            if (info.get("family") == "inet6" and info.get("prefixlen") == 128
                    and info.get("preferred_life_time") == 0
                    and ipaddress.IPv6Address(info["local"]) in target.prefix):
                out.add(str(ipaddress.IPv6Address(info["local"])))
    return out


def pending_servers(first_contacts: dict[tuple[str, str], float], live: set[str], now: float,
                    lookback: float) -> set[str]:
    """Servers probed from a still-present probe address less than `lookback` ago: their
    result is not in yet, and another probe would only cost one more address."""
    return {server for (address, server), t in first_contacts.items()
            if address in live and t > now - lookback}


def select_suspects(statuses: Mapping[str, ServerStatus], detected: Mapping[str, Finding],
                    pending: set[str], limit: int) -> list[str]:
    """IPv6 servers worth a probe, most likely harvesters first, at most `limit`: status
    suspect, or unknown with positive evidence; not those with a probe still pending.

    `statuses`: the effective status of each server (ntpguard.status); `detected`: this run's
    group-testing findings (for the evidence counts and probability).
    """
    picked = []
    for address in set(statuses) | set(detected):
        if ":" not in address or address in pending:
            continue
        s = statuses.get(address)
        status = s.status if s else Status.UNKNOWN
        v = detected.get(address)
        if status == Status.SUSPECT or (status == Status.UNKNOWN and v is not None
                                        and v.positive > 0):
            picked.append((-(v.probability if v else 0.0), -(v.positive if v else 0), address))
    return [a for _, _, a in sorted(picked)[:limit]]


# -- side effects ------------------------------------------------------------------------------

def suspects_from_state(config: Config, state: State, now: float) -> list[str]:
    """The `--suspects` (and sync step) choice: effective statuses (ntpguard.status), this
    moment's group-testing evidence, minus servers whose probe is still pending."""
    from ntpguard import evidence, snapshot

    statuses = snapshot.statuses(config, state)
    detected, _ = evidence.compute_verdicts(state, config.detect, record=False)
    live = live_probes(addresses(), find_target(config.probe))
    pending = pending_servers(state.contacts().first, live, now, config.detect.lookback)
    return select_suspects(statuses, detected, pending, config.probe.max_per_run)


def add_address(target: Target, address: str, valid: int) -> None:
    """Add the probe address: deprecated at once, gone after `valid` seconds."""
    cmd = ["ip", "-6", "addr", "add", f"{address}/128", "dev", target.interface, "nodad",
           "valid_lft", str(valid), "preferred_lft", "0"]
    proc = commands.run(cmd, check=False, error=ProbeError)
    if proc.returncode != 0:
        raise ProbeError(f"cannot add probe address {address} to {target.interface}: "
                         f"{proc.stderr.strip() or 'ip failed'} (probes need root)")


def remove_address(target: Target, address: str) -> None:
    commands.run(["ip", "-6", "addr", "del", f"{address}/128", "dev", target.interface],
                 check=False, error=ProbeError)


def send(source: str, server: str, timeout: float, port: int = NTP_PORT,
         waiting: Callable[[float], None] = lambda left: None) -> tuple[bool, bool, str]:
    """One SNTP request from `source`; (sent, answered, detail). Never raises for the network.

    `waiting` hears the seconds left for the answer at least once a second (progress.TICK)."""
    transmit = int.from_bytes(os.urandom(8), "big")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            # Without CAP_NET_ADMIN: unmarked, still a probe.
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, PROBE_MARK)
            sock.bind((source, 0))
            sock.connect((server, port))
            t1 = time.time()
            sock.send(sntp.request(transmit))
            # From here on the server has (probably) seen the packet: the probe counts.
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True, False, f"sent; no answer within {timeout:g} s"
                waiting(left)
                sock.settimeout(min(left, TICK))
                try:
                    reply = sock.recv(1024)
                except socket.timeout:
                    continue  # a tick of the wait, or the end of it (checked above)
                except OSError as exc:  # ICMP unreachable / admin-prohibited on the reply
                    return True, False, f"sent; {exc.strerror or exc}"
                r = sntp.evaluate(server, reply, transmit, t1, time.time())
                if r.ok:
                    return True, True, f"answered (stratum {r.stratum})"
                if r.error != "reply does not echo our request":
                    return True, True, f"answered: {r.error}"
    except OSError as exc:
        # EPERM: a firewall rule rejected the packet before it left (the kernel answers a
        # locally generated packet hit by `reject` so, at once, in send()), e.g. ntpguard's own
        # rules for a suspect: nothing reached the server, so no contact is recorded.
        why = exc.strerror or str(exc)
        if exc.errno == errno.EPERM:
            why += " (a firewall rule rejects NTP to it, e.g. ntpguard's own for suspects)"
        return False, False, f"not sent: {why}"


def run(servers: list[str], settings: Probe, detect: Detect,
        record: Callable[[Result], None], now: Callable[[], float] = time.time,
        show: Show = quiet,
        idle: Callable[[], ContextManager[None]] = contextlib.nullcontext
        ) -> tuple[Target, int, list[Result]]:
    """Probe each server once from its own fresh address; `record` stores each sent probe
    before the next one goes out (a crash keeps what was sent). Returns the target, the
    address lifetime and the results.

    Each probe waits up to probe.timeout for its answer (8 s for the default 8 servers):
    `show` counts it down, and the probe runs inside `idle()` (State.unlocked, from the
    callers that hold the state), so other runs may write meanwhile; only `record` writes.
    A second `probe --suspects` started meanwhile may pick a server this run has not
    recorded yet: that server gets two probes, each a test of it alone, so no wrong evidence.
    """
    valid = lifetime(settings, detect)
    target = find_target(settings)
    taken = {i["local"] for lk in addresses()
             for i in lk.get("addr_info", []) if i.get("local")}
    results: list[Result] = []
    for number, server in enumerate(servers, 1):
        line = f"probe {number}/{len(servers)}: {sum(r.sent for r in results)} sent; waiting "

        def waiting(left: float, line: str = line, server: str = server) -> None:
            show(f"{line}{duration(left)} for {server} to answer")

        with idle():
            source = fresh_address(target.prefix, taken)
            taken.add(source)
            add_address(target, source, valid)
            t = now()
            sent, answered, detail = send(source, server, settings.timeout, waiting=waiting)
            if not sent:
                remove_address(target, source)
        result = Result(server, source, t, sent, answered, detail)
        if sent:
            record(result)
        results.append(result)
    return target, valid, results
