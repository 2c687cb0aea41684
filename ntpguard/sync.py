"""`ntpguard sync`: the unattended job: resolve, ingest logs, refresh lists, decide, enforce.

Every step works under the one state lock, and a step that fails (DNS down, journal unreadable,
list unreachable, firewall refusing) is reported while the later steps still run with the last
good data: a broken list server must not stop the firewall from learning about a new harvester.
The lock is let go only while the run waits (the pause between DNS rounds, a probe's wait for
its answer; pool.resolve and probe.run), so an admin's `mark` never waits minutes behind the
timer; each later step reads the state afresh under the lock, marks made meanwhile included.
A dry run works on a scratch copy of the state directory, so it can do everything for real
except touch the firewall, the time daemon and the real state.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import field
from typing import Any, Callable, Optional

from ntpguard import backends, canary, enforce, evidence, inputs, snapshot, timeconf
from ntpguard.config import Config
from ntpguard.errors import NtpguardError
from ntpguard.logs.read import order_sources, unreadable
from ntpguard.progress import Show, lock_wait, prefixed, quiet
from ntpguard.records import record
from ntpguard.state import DB_NAME, State


@record(frozen=False)
class Step:
    """One step of a sync and how it went."""

    name: str
    ok: bool = True
    skipped: bool = False
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    trace: str = ""  # the traceback of an unexpected failure (printed with -v)


@record(frozen=False)
class SyncReport:
    """Every step of one sync, and the servers' counts by status at its end."""

    dry_run: bool
    steps: list[Step] = field(default_factory=list)
    servers: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [s.name for s in self.steps if not s.ok]

    @property
    def exit_code(self) -> int:
        """0 all good; 4 some steps failed (the others ran); 1 every step that ran failed
        (writing the metrics about that does not count as work done)."""
        ran = [s for s in self.steps if not s.skipped and s.name != "metrics"]
        if ran and all(not s.ok for s in ran):
            return 1
        return 4 if self.failed else 0

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def line(self) -> str:
        """The one summary line for stdout and syslog."""
        s = self.servers
        logs = self.step("logs")
        rules = self.step("rules")
        tc = self.step("timeconf")
        parts = [
            f"servers {s.get('known', 0)} known/{s.get('clean', 0)} clean/"
            f"{s.get('harvester', 0)} harvester/{s.get('suspect', 0)} suspect",
            f"scans {logs.data.get('scans', 0)} new",
            f"rules {rules.data.get('action', 'skipped' if rules.skipped else 'failed')}",
            f"time daemon {tc.data.get('action', 'skipped' if tc.skipped else 'failed')}",
        ]
        if self.failed:
            parts.append("failed: " + ", ".join(self.failed))
        return ("sync (dry run): " if self.dry_run else "sync: ") + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "exit": self.exit_code, "servers": self.servers,
            "failed": self.failed,
            "steps": {s.name: {"ok": s.ok, "skipped": s.skipped, "message": s.message, **s.data}
                      for s in self.steps},
        }


def default_log_sources(exists: Callable[[str], bool] = os.path.exists) -> tuple[str, ...]:
    """journald on Debian 12+ (no rsyslog by default), else the classic kernel log files."""
    if exists("/run/systemd/journal/socket"):
        return ("journal",)
    for path in ("/var/log/kern.log", "/var/log/ulog/syslogemu.log"):
        if exists(path):
            return (path,)
    return ()


def _scratch_copy(state_dir: str, into: str) -> str:
    """A consistent copy of the state directory for a dry run (SQLite's online backup)."""
    target = os.path.join(into, "state")
    os.makedirs(target)
    src = os.path.join(state_dir, DB_NAME)
    if os.path.exists(src):
        with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as a, \
                sqlite3.connect(os.path.join(target, DB_NAME)) as b:
            a.backup(b)
    for name in os.listdir(state_dir) if os.path.isdir(state_dir) else ():
        path = os.path.join(state_dir, name)
        if os.path.islink(path):
            continue  # never followed (a planted link must not make the copy read elsewhere)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(target, name), symlinks=True)
        elif not name.startswith(DB_NAME) and name != "lock" and os.path.isfile(path):
            shutil.copy2(path, os.path.join(target, name))
    return target


def run(config: Config, state_dir: str, dry_run: bool = False, wait: bool = False,
        now: Callable[[], float] = time.time,
        progress: Optional[Callable[[Step], None]] = None,
        show: Show = quiet, resolve: bool = True) -> SyncReport:
    """One sync; see the module docstring. `progress` hears each finished step, `show` gets
    lines of progress while they run; resolve=False skips the DNS rounds (`--no-resolve`)
    and uses the known-server set as it is."""
    show = prefixed("sync: ", show)
    if not dry_run:
        with State.open(state_dir, lock=True, wait=wait, holder="ntpguard sync",
                        waiting=lock_wait(show)) as real:
            return _run_steps(config, real, state_dir, False, now, progress, show, resolve)
    with tempfile.TemporaryDirectory(prefix="ntpguard-dry-") as tmp:
        # The real state's lock only while it is copied: the dry run's DNS rounds must not
        # keep others out of the state it never writes.
        with State.open(state_dir, lock=True, wait=wait, holder="ntpguard sync --dry-run",
                        waiting=lock_wait(show)):
            scratch_dir = _scratch_copy(state_dir, tmp)
        with State.open(scratch_dir, lock=True, holder="ntpguard sync --dry-run") as scratch:
            return _run_steps(config, scratch, scratch_dir, True, now, progress, show, resolve)


def _run_steps(config: Config, state: State, state_dir: str, dry_run: bool,
               now: Callable[[], float], progress: Optional[Callable[[Step], None]],
               show: Show, resolve: bool) -> SyncReport:
    report = SyncReport(dry_run)
    started = now()
    settings = config.sync

    def attempt(name: str, fn: Callable[[Step], None], enabled: bool = True,
                why_not: str = "", doing: str = "") -> None:
        step = Step(name)
        if not enabled:
            step.skipped, step.message = True, why_not
        else:
            show(f"{name}: {doing}" if doing else name)
            try:
                fn(step)
            except NtpguardError as exc:
                step.ok, step.message = False, str(exc)
            except Exception as exc:
                # One step's bug or damaged data must not stop the later steps (README: a
                # failing step leaves the others running).
                step.ok, step.message = False, f"{type(exc).__name__}: {exc}"
                step.trace = traceback.format_exc()
        report.steps.append(step)
        if progress:
            progress(step)

    def do_resolve(step: Step) -> None:
        from ntpguard import pool  # dnspython: ~25 ms and ~4 MB a sync without DNS saves

        rep = pool.resolve(config.pool, state, rounds=settings.resolve_rounds, show=show)
        step.data = {"queries": rep.queries, "answers": rep.answers,
                     "new": len(rep.new_servers)}
        if rep.failed_names:
            step.message = "failed: " + ", ".join(rep.failed_names)
            step.ok = not rep.all_failed
            if rep.all_failed:
                return
        step.message = step.message or f"{rep.answers} answers, {len(rep.new_servers)} new"

    def do_logs(step: Step) -> None:
        hosts_from = config.collector.hosts_from
        # A collector reads its own log only when told (sync.log_sources): its kernel log
        # may well be one of the hosts' files already, and must not count twice.
        sources = list(settings.log_sources or (() if hosts_from else default_log_sources()))
        if not sources and not hosts_from:
            step.skipped, step.message = True, "no firewall log found (set sync.log_sources)"
            return
        parts = []
        # A source that cannot be read (a path mistyped, a log not created yet) is that
        # source's failure: the others are still read (before, the whole step failed and
        # no source was read until it was fixed).
        why = {s: unreadable(s) for s in sources}
        broken = [w for w in why.values() if w]
        readable = [s for s in sources if not why[s]]
        if readable:
            summary = evidence.ingest(state, order_sources(readable), config.detect,
                                      now=now())
            d = summary.as_dict()
            step.data = {"scans": d["scans"], "lines": d["lines"], "events": d["events"],
                         "skipped_lines": d["skipped"], "sources": readable}
            parts.append(f"{d['lines']} lines, {d['events']} firewall events, "
                         f"{d['scans']} scans, {d['skipped']} lines skipped")
        if broken:
            step.data["unreadable"] = broken
            parts.extend(broken)
            step.ok = False
        if hosts_from:
            from ntpguard import collector

            show("logs: reading the hosts' forwarded logs")
            reads = collector.ingest(state, config, now())
            failed = [r for r in reads if r.error]
            for key, value in (("scans", sum(len(r.scans) for r in reads)),
                               ("lines", sum(r.stats.lines for r in reads)),
                               ("events", sum(r.stats.events for r in reads))):
                step.data[key] = step.data.get(key, 0) + value
            step.data["hosts"] = [r.as_dict() for r in reads]
            parts.append(f"{len(reads)} hosts: {sum(r.stats.lines for r in reads)} lines, "
                         f"{sum(len(r.scans) for r in reads)} scans"
                         + "".join(f"; {r.host}: {r.error}" for r in failed))
            # One host's unreadable log is that host's loss; none readable is the step's.
            step.ok = step.ok and (not reads or len(failed) < len(reads))
        step.message = "; ".join(parts)

    def do_lists(step: Step) -> None:
        if not config.lists.subscriptions:
            step.skipped, step.message = True, "no subscriptions"
            return
        from ntpguard import fetch  # http.client and ssl: only with subscriptions

        rep = fetch.refresh_subscriptions(config, state_dir, now=now(), show=show)
        step.data = rep.as_dict()
        step.message = rep.summary()
        step.ok = rep.ok

    def do_verdicts(step: Step) -> None:
        contacts, scans = evidence.age_out(state, config.detect, now())
        state.age_out_history(config.detect.retention_days, now())
        step.data = evidence.record_verdicts(state, config.detect, now=now())
        step.message = ", ".join(f"{n} {k}" for k, n in sorted(step.data.items())) or \
            "no evidence yet"
        if contacts or scans:
            step.message += (f"; {contacts} contacts and {scans} scans older than "
                             f"{config.detect.retention_days:g} days aged out")

    def do_probe(step: Step) -> None:
        # After the verdicts, so the suspects are this run's; the results come with a later
        # sync (after detect.lookback), which reads the scans of the probe addresses.
        from ntpguard import probe

        if dry_run:
            step.skipped, step.message = True, "dry run: no probe sent"
            return
        servers = probe.suspects_from_state(config, state, now())
        if not servers:
            step.message = "no suspects to probe"
            return

        def record(r: probe.Result) -> None:
            state.record_probe_contacts([(r.source, r.server, r.time)])

        _, _, results = probe.run(servers, config.probe, config.detect, record, now, show,
                                  lambda: state.unlocked(waiting=lock_wait(show)))
        sent = [r for r in results if r.sent]
        step.data = {"probes": [r.as_dict() for r in results]}
        step.ok = bool(sent)
        step.message = f"{len(sent)} of {len(results)} suspects probed" + "".join(
            f"; {r.server}: {r.detail}" for r in results if not r.sent)

    # The last apply's record when nothing its plan was made from changed since (the
    # canaries and rules steps then have nothing to do: ntpguard.inputs).
    unchanged: list[inputs.Record] = []
    # The digest of the inputs, taken once the canaries are as they will be (the plan is
    # built from the state as it is then; the lock keeps other writers out meanwhile).
    digested: list[Optional[str]] = []

    def do_canaries(step: Step) -> None:
        # After the verdicts (a harvester gets no canary; a scanned canary convicts) and
        # before the rules, which map each server to its canary.
        record = None if dry_run else inputs.unchanged(
            config, state_dir, config.rules.backend, config.sync.force_rules, True, now())
        if record is not None:
            unchanged.append(record)
            step.data = {"unchanged": True}
            step.message = "as they were: nothing the rules are made from changed since " \
                "the last apply"
            return
        rep = canary.maintain(config, state, snapshot.statuses(config, state), now(),
                              dry_run=dry_run)
        step.data = {"available": rep.available, "added": rep.added, "retired": rep.retired,
                     "servers": rep.servers, "convicted": rep.convicted}
        step.message = rep.message()
        if not rep.available:
            step.skipped = True
        if not dry_run:
            digested.append(inputs.digest(config, state_dir))

    def do_publish(step: Step) -> None:
        # After the canaries (their convictions are verdicts of this run) and before the
        # rules: a firewall that refuses must not keep the fleet from learning.
        if dry_run:
            step.skipped, step.message = True, "dry run: nothing published"
            return
        from ntpguard import publish

        out = publish.run(config, state, now())
        step.data = {"path": out.path, "entries": out.entries, "changed": out.changed,
                     "generated": out.generated}
        step.message = out.describe()

    def do_metrics(step: Step) -> None:
        from ntpguard import metrics

        facts = metrics.gather(config, state, report, started, now())
        if dry_run:
            step.message = "dry run: not written"
            return
        metrics.write(config.metrics.textfile, metrics.render(metrics.metrics(facts)))
        step.message = f"{config.metrics.textfile} written"

    def do_rules(step: Step) -> None:
        if unchanged:
            record = unchanged[0]
            step.data = {**record.plan, "action": "unchanged",
                         "unknown": "allow" if record.fallback else config.rules.unknown}
            step.message = "; ".join([*([snapshot.FALLBACK_NOTE] if record.fallback else []),
                                      str(record.result["message"])])
            return
        found = digested[0] if digested else inputs.digest(config, state_dir)
        plan, notes = snapshot.enforceable_plan(config, state)
        step.data = dict(plan.counts())
        step.data["unknown"] = plan.unknown
        if dry_run:
            backends.render(config.rules.backend, plan)  # renders, so errors show
            step.data["action"] = "planned"
            step.message = "; ".join([*notes, "dry run: not applied"])
            return
        result = enforce.apply(state_dir, config.rules.backend, plan, now=now)
        at = now()
        inputs.remember(config, state_dir, found, config.rules.backend, result, plan,
                        config.sync.force_rules, bool(notes),
                        canary.next_change(state.canaries(live_at=at), at, config.canary), at)
        step.message = "; ".join([*notes, result.describe()])
        step.data["action"] = result.action

    def do_timeconf(step: Step) -> None:
        out = timeconf.configure_daemon(config, state, now(), dry_run=dry_run)
        step.data = {"daemon": out.daemon, "servers": list(out.servers), "path": out.path,
                     "action": "changed" if out.changed else "unchanged"}
        step.message = out.message or (f"{out.path} {'rewritten' if out.changed else 'unchanged'}")

    attempt("resolve", do_resolve, resolve, "--no-resolve: the known servers as they are")
    attempt("logs", do_logs, doing="reading new firewall log lines")
    attempt("lists", do_lists)
    attempt("verdicts", do_verdicts, doing="recomputing them from all evidence")
    attempt("probe", do_probe, config.probe.in_sync, "probe.in_sync = false",
            doing="choosing the suspects")
    attempt("canaries", do_canaries, settings.apply_rules, "sync.apply_rules = false",
            doing="keeping one source address per NTP server")
    attempt("publish", do_publish, bool(config.publish.path), "no [publish] path",
            doing="writing the signed list")
    attempt("rules", do_rules, settings.apply_rules, "sync.apply_rules = false",
            doing="applying the firewall plan")
    attempt("timeconf", do_timeconf, settings.configure_time_daemon,
            "sync.configure_time_daemon = false", doing="writing the time daemon's sources")

    try:
        counts = Counter(s.status.value for s in snapshot.statuses(config, state).values()
                         if s.known)
    except NtpguardError:  # a broken stored list: reported by its step already
        counts = Counter()
    report.servers = {"known": sum(counts.values()), **counts}
    attempt("metrics", do_metrics, bool(config.metrics.textfile), "no [metrics] textfile",
            doing="writing the node-exporter textfile")
    state.record_run("sync", started, now(), not report.failed, report.as_dict())
    return report
