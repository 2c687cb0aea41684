"""What `sync` tells Prometheus: a node-exporter textfile ([metrics] textfile).

prometheus-node-exporter's textfile collector reads every `*.prom` file in its directory
(Debian: /var/lib/prometheus/node-exporter) at each scrape, so a host that already runs the
exporter needs nothing else. The file is replaced by rename (a scrape never reads half of
it; the temporary name does not end in .prom, so it is never read at all).

Names follow Prometheus' conventions (the exposition format and "Metric and label naming"):
`ntpguard_` first, the unit in the name (`_seconds`), `_total` for counters, times as
`_timestamp_seconds` (an age is `time() - ...` in PromQL, true at any scrape, where an age
written by the last sync would be stale until the next). `render` is pure; `gather` reads the
state and the sync's report.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any, Iterable, Optional

from ntpguard import files
from ntpguard.errors import NtpguardError, UsageError
from ntpguard.records import record

STATUSES = ("harvester", "suspect", "clean", "unknown")


@record
class Metric:
    """One metric in Prometheus' text format: name, type, help and samples."""

    name: str
    kind: str  # gauge | counter
    help: str
    samples: tuple[tuple[tuple[tuple[str, str], ...], float], ...]  # (labels, value)


@record(frozen=False)
class Facts:
    """Everything the textfile says, gathered at the end of one sync."""

    servers: dict[str, int] = field(default_factory=dict)  # known servers by status
    scans: int = 0
    canary_convictions: int = 0
    canaries: int = 0
    canaries_scanned: int = 0
    sync_started: float = 0.0
    sync_seconds: float = 0.0
    last_success: Optional[float] = None  # finish time of the newest sync with no failed step
    steps: dict[str, bool] = field(default_factory=dict)  # step → failed in this sync
    step_failures: dict[str, int] = field(default_factory=dict)  # step → failures, all syncs
    lists: list[dict[str, Any]] = field(default_factory=list)  # name, entries, fetched, checked
    rules_in_place: bool = False
    collector_hosts: list[dict[str, Any]] = field(default_factory=list)  # host, last_time
    published: Optional[dict[str, Any]] = None  # entries, generated


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() and abs(value) < 2 ** 53 else \
        repr(float(value))


def metrics(f: Facts) -> list[Metric]:
    """The metric families of these facts (pure)."""
    out = [
        Metric("ntpguard_servers", "gauge", "Known NTP servers by effective status.",
               tuple(((("status", s),), float(f.servers.get(s, 0))) for s in STATUSES)),
        Metric("ntpguard_scans_total", "counter",
               "Port scans of local addresses found in the firewall logs (stored evidence).",
               (((), float(f.scans)),)),
        Metric("ntpguard_canary_convictions_total", "counter",
               "Servers convicted because their own NTP canary was scanned.",
               (((), float(f.canary_convictions)),)),
        Metric("ntpguard_canaries", "gauge", "NTP canary addresses held now.",
               (((), float(f.canaries)),)),
        Metric("ntpguard_canaries_scanned", "gauge",
               "NTP canary addresses held now that have been scanned.",
               (((), float(f.canaries_scanned)),)),
        Metric("ntpguard_sync_start_timestamp_seconds", "gauge",
               "When the last sync started (Unix time).", (((), f.sync_started),)),
        Metric("ntpguard_sync_duration_seconds", "gauge", "How long the last sync took.",
               (((), f.sync_seconds),)),
        Metric("ntpguard_sync_step_failed", "gauge",
               "1 if this step failed in the last sync, 0 if it ran or was skipped.",
               tuple(((("step", s),), float(failed)) for s, failed in sorted(f.steps.items()))),
        Metric("ntpguard_sync_step_failures_total", "counter",
               "Syncs in which this step failed, over the state's whole history.",
               tuple(((("step", s),), float(f.step_failures.get(s, 0)))
                     for s in sorted(set(f.steps) | set(f.step_failures)))),
        Metric("ntpguard_rules_in_place", "gauge",
               "1 if the last sync applied the firewall rules or found them as planned.",
               (((), 1.0 if f.rules_in_place else 0.0),)),
    ]
    if f.last_success is not None:
        out.append(Metric("ntpguard_sync_last_success_timestamp_seconds", "gauge",
                          "When the newest sync in which no step failed finished (Unix time).",
                          (((), f.last_success),)))
    lists = sorted(f.lists, key=lambda x: str(x["name"]))
    if lists:
        out.append(Metric("ntpguard_list_entries", "gauge",
                          "Entries of each list in force (its last good copy).",
                          tuple(((("list", str(x["name"])),), float(x["entries"]))
                                for x in lists)))
        for key, name, text in (
                ("fetched", "ntpguard_list_updated_timestamp_seconds",
                 "When the list's last good copy was stored (Unix time)."),
                ("checked", "ntpguard_list_checked_timestamp_seconds",
                 "When the list's source last answered with a good list or 'not modified'.")):
            samples = tuple(((("list", str(x["name"])),), float(x[key])) for x in lists
                            if isinstance(x.get(key), (int, float)))
            if samples:
                out.append(Metric(name, "gauge", text, samples))
    if f.collector_hosts:
        out.append(Metric("ntpguard_collector_log_timestamp_seconds", "gauge",
                          "Time of the newest firewall log line read from each host.",
                          tuple(((("host", str(h["host"])),), float(h["last_time"]))
                                for h in sorted(f.collector_hosts, key=lambda h: h["host"]))))
    if f.published is not None:
        out.append(Metric("ntpguard_published_entries", "gauge",
                          "Entries of the list this host publishes ([publish]).",
                          (((), float(f.published["entries"])),)))
        out.append(Metric("ntpguard_published_generated_timestamp_seconds", "gauge",
                          "When the published list's entries last changed (Unix time).",
                          (((), float(f.published["generated"])),)))
    return out


def render(families: Iterable[Metric]) -> str:
    """The text exposition format (version 0.0.4)."""
    lines = []
    for m in families:
        lines.append(f"# HELP {m.name} {m.help}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            label = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{m.name}{{{label}}} {_number(value)}" if label else
                         f"{m.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> None:
    try:
        files.atomic_write(path, text.encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot write metrics: {exc.strerror}") from None


def gather(config: Any, state: Any, report: Any, started: float, finished: float) -> Facts:
    """The facts of a sync that just ran (its report) and of the state after it."""
    from ntpguard import lists as lists_mod

    counts = state.counts()
    held = state.canaries(live_at=finished)
    last = state.last_ok_run("sync")
    if not report.failed:
        last = {"finished": finished}
    rules = next((s for s in report.steps if s.name == "rules"), None)
    facts = Facts(
        servers={k: v for k, v in report.servers.items() if k != "known"},
        scans=counts["scans"], canary_convictions=counts["canary_convictions"],
        canaries=len(held),
        canaries_scanned=sum(1 for c in held if c.scanned),
        sync_started=started, sync_seconds=max(0.0, finished - started),
        last_success=last["finished"] if last else None,
        steps={s.name: not s.ok for s in report.steps},
        step_failures=dict(state.step_failures("sync")),
        rules_in_place=bool(rules is not None and rules.ok and not rules.skipped
                            and rules.data.get("action") not in (None, "planned")),
    )
    # This run is recorded after the metrics are gathered: count its failures here.
    for name in report.failed:
        facts.step_failures[name] = facts.step_failures.get(name, 0) + 1
    try:
        for lst in lists_mod.load_all(config, state.directory):
            facts.lists.append({"name": lst.name, "entries": lst.count,
                                "fetched": lst.meta.get("fetched"),
                                "checked": lst.meta.get("checked")})
    except NtpguardError:  # a broken stored list: its step reports it, the rest still counts
        pass
    facts.collector_hosts = [{"host": h, "last_time": t}
                             for h, t in sorted(state.hosts_coverage().items())]
    published = next((s for s in report.steps if s.name == "publish"), None)
    if published is not None and published.ok and "entries" in published.data:
        facts.published = {"entries": published.data["entries"],
                           "generated": published.data["generated"]}
    return facts
