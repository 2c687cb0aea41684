"""Changing ntpguard's rules: apply a plan and remember it, remove the rules, put the last
applied plan back (`restore`), and say whether the kernel still holds it (`check`).

Every change holds the rules lock and leaves `applied-plan.json` saying what the kernel was
made to hold (see ntpguard.applied for why the rules lock, not the state lock). A restore is
the boot unit's and the watcher's one code path: the persisted plan (or, when nothing was
ever applied, the plan `sync` would enforce from what the state holds: the shipped lists on a
new host), the `PREPARE` hooks, then the backend's apply; no DNS, no logs, no verdicts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import time
from typing import Callable, Optional

from ntpguard import applied, backends, canary, hostinfo, snapshot
from ntpguard.backends import IN_PLACE, MISSING, Check, Result
from ntpguard.config import Config
from ntpguard.errors import NtpguardError, StateError
from ntpguard.plan import Plan
from ntpguard.records import record
from ntpguard.state import State

log = logging.getLogger("ntpguard")

# Run by a restore, in order, on the plan it is about to apply: "module:function", each
# called as fn(config, state_dir, plan) -> plan. This is where host state the rules rely on
# goes back first after a reboot. A hook that fails is reported and the rules go in anyway:
# they are what keeps real addresses from the harvesters.
PREPARE: tuple[str, ...] = ("ntpguard.enforce:readd_canaries",)

# What a check says when there is nothing to compare the kernel with.
NOT_APPLIED, REMOVED = "not applied", "removed"


def apply(state_dir: str, backend_name: str, plan: Plan, replace: bool = False,
          now: Callable[[], float] = time.time) -> Result:
    """Make the kernel hold the plan and remember it. A backend that finds nothing to change
    (its cache agrees) is asked to verify, so a table someone changed is replaced whole."""
    with applied.rules_lock(state_dir, "ntpguard rules apply"):
        backend = backends.get(backend_name, state_dir)
        result = backend.apply(plan, replace=replace)
        _remember(state_dir, backend.name, plan, now())
        if result.action in ("unchanged", "updated") and not result.exact:
            check = backend.verify(plan)
            if not check.ok:
                again = backend.apply(plan, replace=True)
                result = dataclasses.replace(
                    again, detail=f"{check.state} rules ({check.detail}): {again.detail}")
    return result


def remove(state_dir: str, names: list[str], now: Callable[[], float] = time.time
           ) -> list[Result]:
    """Take ntpguard's rules out of the given backends; from then on a restore leaves them
    out (until the next apply)."""
    with applied.rules_lock(state_dir, "ntpguard rules remove"):
        before = applied.load_or_none(state_dir)
        applied.save(state_dir, before.backend if before else ",".join(names), None, now())
        try:
            return [backends.get(name, state_dir).remove() for name in names]
        except BaseException:
            if before is not None:  # the rules are still (partly) there: keep restoring them
                applied.save(state_dir, before.backend, before.plan, before.time)
            raise


@record
class Restored:
    """What a restore found and did."""

    source: str  # "applied" (the persisted plan) | "state" (nothing applied yet) | REMOVED | ""
    backend: str = ""
    found: Optional[Check] = None
    result: Optional[Result] = None
    message: str = ""

    @property
    def changed(self) -> bool:
        return self.result is not None and self.result.action != "unchanged"

    def describe(self) -> str:
        if self.message:
            return self.message
        assert self.found is not None and self.result is not None
        if not self.changed:
            return f"{self.backend}: the last applied rules are in place; nothing to restore"
        what = "the last applied plan" if self.source == "applied" else \
            "a plan from the state (none applied yet)"
        why = f"rules {self.found.state}" + (f" ({self.found.detail})" if self.found.detail
                                              else "")
        return f"{why}: {what} restored ({self.result.describe()})"

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "backend": self.backend,
                "found": self.found.state if self.found else None,
                "detail": self.found.detail if self.found else "",
                "action": self.result.action if self.result else None,
                "seconds": round(self.result.seconds, 3) if self.result else 0.0,
                "message": self.describe()}


def restore(config: Config, state_dir: str, from_state: bool = True,
            now: Callable[[], float] = time.time) -> Restored:
    """Put the last applied plan back if the kernel lacks it or holds something else.

    Nothing applied yet: with from_state, the plan `sync` would enforce from what the state
    holds (the shipped lists on a new host, NTP to unknown servers allowed since none is
    known), remembered as applied; without it (the watcher), nothing.
    """
    with applied.rules_lock(state_dir, "ntpguard rules restore"):
        try:
            record = applied.load(state_dir)
        except StateError as exc:
            if not from_state:
                raise
            log.warning("%s; restoring a plan from the state instead", exc)
            record = None
        if record is None:
            if not from_state:
                return Restored("", message="no rules applied yet; nothing to restore")
            if not config.sync.apply_rules:
                return Restored("", message="no rules applied yet and sync.apply_rules = "
                                "false; nothing to restore")
            plan, source, name = _plan_from_state(config, state_dir), "state", \
                config.rules.backend
        elif record.plan is None:
            return Restored(REMOVED, record.backend, message=(
                "the rules were removed by `ntpguard rules remove`; nothing to restore "
                "(`ntpguard rules apply` puts them back)"))
        else:
            plan, source, name = record.plan, "applied", record.backend
        for hook in PREPARE:
            try:
                plan = _hook(hook)(config, state_dir, plan)
            except NtpguardError as exc:
                log.warning("before restoring the rules: %s", exc)
        backend = backends.get(name, state_dir)
        found = backend.verify(plan)
        if found.state == IN_PLACE:
            result = Result(backend.name, "unchanged")
        else:
            result = backend.apply(plan, replace=found.state != MISSING)
        if source == "state":
            _remember(state_dir, backend.name, plan, now())
        return Restored(source, backend.name, found, result)


def _remember(state_dir: str, backend: str, plan: Plan, now: float) -> None:
    """Save the plan the kernel now holds. The kernel changed whatever happens here, so a
    failure (a full disk) is a warning, not the apply's failure."""
    try:
        applied.save(state_dir, backend, plan, now)
    except StateError as exc:
        log.warning("%s; a restore would put back the rules applied before", exc)


@record
class RulesStatus:
    """The kernel against the last applied plan: IN_PLACE, MISSING, DRIFTED, NOT_APPLIED or
    REMOVED."""

    state: str
    detail: str = ""
    backend: str = ""
    applied: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.state not in (MISSING, backends.DRIFTED)


def check(state_dir: str) -> RulesStatus:
    """Compare the kernel with the last applied plan (under the rules lock where this user
    may take it, so an apply in progress is not mistaken for drift)."""
    if not os.path.isdir(state_dir):
        return RulesStatus(NOT_APPLIED)
    # Who may not write the state directory (not root) compares without the lock.
    lockable = os.access(state_dir, os.W_OK)
    with applied.rules_lock(state_dir, "ntpguard check") if lockable else \
            contextlib.nullcontext():
        return _check(state_dir)


def _check(state_dir: str) -> RulesStatus:
    record = applied.load(state_dir)
    if record is None:
        return RulesStatus(NOT_APPLIED)
    if record.plan is None:
        return RulesStatus(REMOVED, backend=record.backend, applied=record.time)
    found = backends.get(record.backend, state_dir).verify(record.plan)
    return RulesStatus(found.state, found.detail, record.backend, record.time)


def _plan_from_state(config: Config, state_dir: str) -> Plan:
    try:
        state = State.open(state_dir, lock=False)
    except StateError as exc:  # e.g. a schema a newer ntpguard wrote: lists only
        log.warning("%s; restoring the lists' rules only", exc)
        state = State.empty(state_dir)
    with state:
        plan, notes = snapshot.enforceable_plan(config, state)
    for note in notes:
        log.info("%s", note)
    return plan


def readd_canaries(config: Config, state_dir: str, plan: Plan) -> Plan:
    """The live canaries back on their interfaces before the plan's NAT map rewrites NTP to
    them. A reboot takes them away; a `flush ruleset` does not, so only missing ones are
    added (one `ip` call each, ~5 ms: with 256 canaries re-adding all would keep the table
    away for over a second)."""
    if plan.canaries is None:
        return plan
    present = {info.get("local") for link in hostinfo.addresses()
               for info in link.get("addr_info", [])}
    now = time.time()
    with State.open(state_dir, lock=False) as state:
        missing = [c for c in state.canaries(live_at=now) if c.address not in present]
    canary.add_addresses(missing, now)
    if missing:
        log.info("canaries: %d addresses put back", len(missing))
    return plan


def _hook(name: str) -> Callable[[Config, str, Plan], Plan]:
    module, _, function = name.partition(":")
    found: Callable[[Config, str, Plan], Plan] = getattr(importlib.import_module(module),
                                                         function)
    return found
