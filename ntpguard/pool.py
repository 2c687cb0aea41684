"""Pool names → DNS answers → the known-server set.

The pool's GeoDNS answers a query with at most 4 records out of its country view, rotating, so
enumerating a zone takes many rounds spread over time. A round's answers are merged into the
state as soon as the round is asked; a failed query is reported for its name and never removes
anything. The queries and the pauses between rounds (minutes at the defaults) run without the
state's writer lock, so an admin's `mark` never waits behind them; only the merges take it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import field
from typing import Callable, Optional

import dns.exception
import dns.rdatatype
import dns.resolver

from ntpguard.addr import nonglobal_reason, parse_address
from ntpguard.config import Pool
from ntpguard.errors import NtpguardError
from ntpguard.estimate import ZoneEstimate, chao2
from ntpguard.progress import Show, count, countdown, duration, lock_wait, quiet
from ntpguard.records import record
from ntpguard.state import State

log = logging.getLogger("ntpguard")


@record(frozen=False)
class Answer:
    """One query's outcome: the usable addresses, or an error text for the report."""

    name: str
    rdtype: str
    addresses: list[tuple[str, int]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    ttl: Optional[int] = None
    error: Optional[str] = None


@record(frozen=False)
class NameReport:
    """What one pool name and record type answered over a resolve."""

    name: str
    rdtype: str
    queries: int = 0
    answers: int = 0
    records: int = 0
    new: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


@record(frozen=False)
class ResolveReport:
    """What one resolve asked, got and learned."""

    rounds: int = 0
    queries: int = 0
    answers: int = 0
    new_servers: list[str] = field(default_factory=list)
    names: dict[tuple[str, str], NameReport] = field(default_factory=dict)
    estimates: dict[tuple[str, int], ZoneEstimate] = field(default_factory=dict)

    @property
    def failed_names(self) -> list[str]:
        return sorted({f"{r.name}/{r.rdtype}" for r in self.names.values()
                       if r.errors and not r.answers and r.queries})

    @property
    def all_failed(self) -> bool:
        return self.queries > 0 and self.answers == 0 and bool(self.failed_names)


def make_resolver(settings: Pool) -> dns.resolver.Resolver:
    """The system resolver by default (GeoDNS answers follow it), else the configured servers."""
    if settings.nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = list(settings.nameservers)
        resolver.port = settings.port
    else:
        try:
            resolver = dns.resolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:
            raise NtpguardError(
                "no system resolver configured (/etc/resolv.conf); set pool.nameservers"
            ) from None
    resolver.timeout = settings.timeout
    resolver.lifetime = settings.timeout
    resolver.cache = None
    return resolver


def _describe(exc: Exception) -> str:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "NXDOMAIN (no such name)"
    if isinstance(exc, dns.resolver.NoAnswer):
        return "no records of this type"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "SERVFAIL or unusable answer from every nameserver"
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"bad answer: {text[:200]}"


def query(resolver: dns.resolver.Resolver, name: str, rdtype: str,
          allow_nonglobal: bool) -> Answer:
    """Ask one question; classify the records. Never raises for DNS trouble."""
    answer = Answer(name, rdtype)
    try:
        result = resolver.resolve(name, rdtype, search=False, raise_on_no_answer=True)
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        answer.error = _describe(exc)
        return answer
    want = dns.rdatatype.from_text(rdtype)
    rrset = result.rrset
    answer.ttl = rrset.ttl if rrset is not None else None
    for rdata in rrset or ():
        if rdata.rdtype != want:
            answer.rejected.append(f"{rdata} (wrong type)")
            continue
        ip = parse_address(rdata.address)
        why = None if allow_nonglobal else nonglobal_reason(ip)
        if why:
            answer.rejected.append(f"{ip} ({why})")
            continue
        answer.addresses.append((str(ip), ip.version))
    return answer


def _merge(state: State, report: ResolveReport, answer: Answer, when: float) -> None:
    """Count one answer into the report and merge its servers into the state (a write)."""
    name, rdtype = answer.name, answer.rdtype
    entry = report.names.setdefault((name, rdtype), NameReport(name, rdtype))
    report.queries += 1
    entry.queries += 1
    entry.rejected += len(answer.rejected)
    for why in answer.rejected:
        log.info("%s %s: ignored %s", name, rdtype, why)
    if answer.error:
        # NoAnswer for A/AAAA is normal (only 2.* has AAAA): not an error.
        if answer.error != "no records of this type":
            entry.errors.append(answer.error)
            log.warning("%s %s: %s", name, rdtype, answer.error)
        return
    report.answers += 1
    entry.answers += 1
    entry.records += len(answer.addresses)
    new = state.record_answer(name, rdtype, answer.addresses, when)
    entry.new += len(new)
    report.new_servers.extend(new)


def resolve(settings: Pool, state: State, rounds: Optional[int] = None,
            interval: Optional[float] = None,
            resolver: Optional[dns.resolver.Resolver] = None,
            sleep: Callable[[float], None] = time.sleep,
            now: Callable[[], float] = time.time,
            progress: Optional[Callable[[int, ResolveReport], None]] = None,
            show: Show = quiet) -> ResolveReport:
    """Run `rounds` rounds of A/AAAA queries for every pool name, merging each round's answers.

    `progress` hears each finished round; `show` gets a line of progress before each query and
    each second of the pauses ("resolve 2/3: ...; round 3 in 2:25").
    """
    rounds = settings.rounds if rounds is None else rounds
    interval = settings.interval if interval is None else interval
    resolver = resolver or make_resolver(settings)
    report = ResolveReport()
    questions = [(name, rdtype) for name in settings.names for rdtype in settings.record_types]

    def found() -> str:
        return (f"{count(len(report.new_servers), 'new server')} in "
                f"{count(report.answers, 'answer')}")

    for number in range(1, rounds + 1):
        asked: list[tuple[Answer, float]] = []
        # Waiting only (the pause, the DNS round trips): other runs may write meanwhile.
        with state.unlocked(waiting=lock_wait(show)):
            if number > 1:
                line = f"resolve {number - 1}/{rounds} done: {found()}; round {number} in "

                def pause(left: float, line: str = line) -> str:
                    return line + duration(left)

                countdown(interval, pause, show, sleep)
            for index, (name, rdtype) in enumerate(questions, 1):
                show(f"resolve {number}/{rounds}: {found()}; asking {name} {rdtype} "
                     f"({index}/{len(questions)})")
                asked.append((query(resolver, name, rdtype, settings.allow_nonglobal), now()))
        for answer, when in asked:
            _merge(state, report, answer, when)
        report.rounds = number
        if progress:
            progress(number, report)
    for name in settings.names:
        for rdtype in settings.record_types:
            fam = 6 if rdtype == "AAAA" else 4
            samples, counts = state.zone_incidence(name, fam)
            if samples:
                report.estimates[(name, fam)] = chao2(samples, counts)
    return report
