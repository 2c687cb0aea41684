"""Gathering what decisions are made from: the state, the lists in force, the configuration and
this host's facts, read at one moment (the actor in front of ntpguard.status and plan).

`take` gives the status snapshot every command reads; `statuses` the effective status of every
server from it (remembered in the state, and after new verdicts decided again for their
addresses only); `firewall_plan` the plan `rules apply` enforces, `enforceable_plan` the one
`sync` (and a restore with no plan applied yet) enforces. Nothing here decides
anything: precedence lives in status.py, the rules in plan.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Iterable, Optional

from ntpguard import __version__, canary, hostinfo, lists
from ntpguard.config import Config
from ntpguard.inputs import code_stamp
from ntpguard.lists import LoadedList
from ntpguard.plan import (
    HostFacts,
    Listed,
    Plan,
    UnsafePlan,
    build,
    canaries,
    scanner_prefixes,
)
from ntpguard.state import State
from ntpguard.status import ServerStatus, Snapshot, Verdict, effective
from ntpguard.status import update as status_update


def take(config: Config, state: State) -> Snapshot:
    """Known servers, every source's latest verdicts, the lists in force, trusted servers."""
    return _take(config, state, tuple(lists.load_all(config, state.directory)))


def _take(config: Config, state: State, loaded: tuple[LoadedList, ...],
          only: Optional[set[str]] = None) -> Snapshot:
    """The snapshot; `only`: of these addresses' servers and verdicts alone."""
    if only is None:
        verdicts = state.latest_verdicts()
    else:
        verdicts = {a: _latest(state.verdict_history(a)) for a in only}
    return Snapshot(
        servers={s.address: s for s in state.servers(only=only)},
        verdicts=verdicts,
        lists=loaded,
        trusted=config.servers.trusted,
        trusted_from=config.path or "the configuration",
    )


# More addresses than this with new verdicts: deciding every server again is as quick.
_UPDATE_AT_MOST = 200


def statuses(config: Config, state: State,
             loaded: Optional[tuple[LoadedList, ...]] = None) -> dict[str, ServerStatus]:
    """The effective status of every server: status.effective over `take`, the same as
    remembered in the state (ntpguard.state.status_memo) when nothing they are decided from
    changed since, or with only the addresses of the verdicts added since decided again
    (status.update); remembered again when this run may write. Reading and deciding 2,000
    servers takes ~50 ms, the remembered ones ~10. `loaded`: the lists in force, if the
    caller loaded them already."""
    loaded = tuple(lists.load_all(config, state.directory)) if loaded is None else loaded
    key = _memo_key(config, state, loaded)
    verdicts = state.revision(("verdicts",))
    if key is None or verdicts is None:  # an older or damaged state: nothing to go by
        return effective(_take(config, state, loaded))
    seen_here = _DECIDED.get(state.directory)
    if seen_here is not None and seen_here[0] == (key, verdicts):
        return dict(seen_here[1])
    out = _decided(config, state, loaded, key, verdicts)
    _DECIDED[state.directory] = ((key, verdicts), out)
    return dict(out)


# What this process decided last, by state directory, with what it was decided from: a sync
# asks for the statuses in several steps.
_DECIDED: dict[str, tuple[tuple[str, str], dict[str, ServerStatus]]] = {}


def _decided(config: Config, state: State, loaded: tuple[LoadedList, ...], key: str,
             verdicts: str) -> dict[str, ServerStatus]:
    memo = state.status_memo()
    if memo is not None and memo[0][0] == key:
        (_, seen, last_id, rows), known = memo
        if seen == verdicts:
            return known
        newest, count = state.verdict_rows()
        added, changed = state.verdicts_after(last_id)
        # Rows only ever get added: any other change (a row deleted or rewritten by hand, a
        # restored backup) shows as a count that is not the old one plus the new rows.
        if changed and len(changed) <= _UPDATE_AT_MOST and count == rows + added:
            out = status_update(known, _take(config, state, loaded, changed), changed)
            if state.writable:
                state.save_status_memo((key, verdicts, newest, count), out, changed)
            return out
    snap = _take(config, state, loaded)
    out = effective(snap)
    if state.writable:
        newest, count = state.verdict_rows()
        state.save_status_memo((key, verdicts, newest, count), out)
    return out


def _memo_key(config: Config, state: State, loaded: tuple[LoadedList, ...]) -> Optional[str]:
    """What statuses depend on besides the verdicts, digested: this code, whether the pool
    served each address (the servers' revision), the trusted servers and where they are
    configured, and each enforced list's content and time (a list's verdict carries it)."""
    servers = state.revision(("servers",))
    if servers is None:
        return None
    h = hashlib.sha256()
    for part in (__version__, code_stamp(), servers, repr(config.servers.trusted),
                 config.path or "", *(repr((lst.name, lst.trust, lst.compiled.sha256,
                                            lst.compiled.limits, lst.meta.get("fetched")))
                                      for lst in loaded)):
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def _latest(history: list[Verdict]) -> dict[str, Verdict]:
    """Each source's newest verdict (history oldest first, as State.verdict_history)."""
    out: dict[str, Verdict] = {}
    for v in history:
        out[str(v.source)] = v
    return out


def list_prefixes(loaded_lists: Iterable[LoadedList]) -> tuple[list[Listed], list[Listed]]:
    """(scanner, harvester) parts of the enforced lists, compiled, each naming where it came
    from."""
    scanners: list[Listed] = []
    harvesters: list[Listed] = []
    for loaded in loaded_lists:
        if loaded.trust != "enforce":
            continue
        origin = loaded.origin or loaded.name
        if loaded.compiled.scanner.count:
            scanners.append(Listed(origin, loaded.compiled.scanner))
        if loaded.compiled.harvester.count:
            harvesters.append(Listed(origin, loaded.compiled.harvester))
    return scanners, harvesters


def firewall_plan(config: Config, state: State, force: bool = False,
                  host: Optional[HostFacts] = None, unknown: Optional[str] = None,
                  now: Optional[float] = None,
                  taken: Optional[tuple[tuple[LoadedList, ...], dict[str, ServerStatus]]] = None
                  ) -> Plan:
    """The plan `rules apply` and `sync` enforce: statuses, lists, recorded scans and the
    canaries in force from the state, host facts gathered now (unless given). `unknown`
    overrides rules.unknown. `taken`: the lists in force and the statuses the caller already
    has, if the verdicts did not change since."""
    if taken is None:
        loaded = tuple(lists.load_all(config, state.directory))
        taken = loaded, statuses(config, state, loaded)
    loaded, status = taken
    host = hostinfo.gather() if host is None else host
    listed_scanners, listed_harvesters = list_prefixes(loaded)
    blocked = {a for a, s in status.items() if s.status.blocked}
    scanners = scanner_prefixes(state.scans(triggered_by=blocked), blocked, host)
    rules = config.rules if unknown is None else dataclasses.replace(config.rules,
                                                                     unknown=unknown)
    canary_part = None
    if canary.why_not(config) is None:
        usable = [a for a, s in status.items() if s.usable]
        at = time.time() if now is None else now
        mapping, spare, live = canary.in_force(state.canaries(live_at=at), usable, at)
        if spare is not None:
            trusted = config.servers.trusted if config.canary.exempt_trusted else ()
            canary_part = canaries(mapping, spare, live, host, trusted)
    return build(status.values(), scanners, [], rules, host, force=force,
                 canaries=canary_part, listed_scanners=listed_scanners,
                 listed_harvesters=listed_harvesters)


# What `sync` says when it had to let NTP reach unknown servers (enforceable_plan).
FALLBACK_NOTE = "no usable server known yet: NTP to unknown servers allowed for now"


def enforceable_plan(config: Config, state: State, host: Optional[HostFacts] = None
                     ) -> tuple[Plan, list[str]]:
    """The plan to enforce unattended, and notes on it.

    When no server is usable yet (a new host), blocking all NTP would stop time sync, and
    doing nothing would leave scanners and known harvesters in and log nothing (and without
    logs no server is ever cleared). So: enforce what is known to be bad, let NTP reach
    unknown servers for now, and log, until some server is known.
    """
    try:
        return firewall_plan(config, state, force=config.sync.force_rules, host=host), []
    except UnsafePlan:
        return (firewall_plan(config, state, host=host, unknown="allow"),
                [FALLBACK_NOTE])
