"""The last applied plan, kept beside the state so the rules can be put back without DNS, logs
or verdicts: at boot, before any time daemon sends a packet, and whenever something removes or
changes them (nftables reloads start with `flush ruleset`).

`STATE/applied-plan.json` (written atomically) names the backend and holds the plan as it was
last applied, or says that `rules remove` took the rules down. `STATE/rules.lock` guards it,
the backend's element cache and the kernel's rules together: every apply, remove and restore
holds it for one transaction (a fraction of a second; `[general] command_timeout` at worst).
The state lock (`STATE/lock`) guards the database and is held by `sync` for minutes (its DNS
rounds sleep); a restore writes nothing to the database, so it needs only the rules lock and
never waits for a sleeping sync. Commands that hold both take the state lock first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import typing
from typing import Any, Iterator, Optional, Union

from ntpguard import files, setstore
from ntpguard.errors import StateError, UnsafePathError
from ntpguard.files import atomic_write
from ntpguard.plan import Plan
from ntpguard.prefixes import Networks
from ntpguard.records import record
from ntpguard.state import FileLock

PLAN_NAME = "applied-plan.json"
RULES_LOCK_NAME = "rules.lock"
# Version 2 keeps big prefix sets as files beside it (ntpguard.setstore); version 1 (all
# inline) is still read.
FORMAT, VERSION = "ntpguard-applied-plan", 2
_READS = (1, 2)


@record
class Applied:
    """What the rules were last made to be: a plan on a backend, or removed (plan None)."""

    backend: str
    time: float
    plan: Optional[Plan]

    @property
    def removed(self) -> bool:
        return self.plan is None


@contextlib.contextmanager
def rules_lock(state_dir: str, holder: str) -> Iterator[None]:
    """Hold STATE/rules.lock (waiting for it) for one change of the rules."""
    try:
        files.ensure_dir(state_dir, 0o755)  # as State.open: no link, nobody else may write
    except OSError as exc:
        raise StateError(f"{state_dir}: cannot create state directory: {exc.strerror}") from None
    lock = FileLock(os.path.join(state_dir, RULES_LOCK_NAME), holder, wait=True)
    try:
        yield
    finally:
        lock.release()


def save(state_dir: str, backend: str, plan: Optional[Plan], now: float) -> None:
    """Remember the plan just applied (None: the rules were removed). An unchanged record is
    left alone: a sync that changed nothing writes nothing (a set file found missing or
    damaged is written again all the same)."""
    path = os.path.join(state_dir, PLAN_NAME)
    writer = setstore.Writer(setstore.directory_for(path))
    encoded = None if plan is None else encode(plan, writer)
    try:
        writer.commit()
        if not _unchanged(state_dir, backend, encoded):
            body = {"format": FORMAT, "version": VERSION, "backend": backend, "time": now,
                    "removed": plan is None, "plan": encoded}
            atomic_write(path, json.dumps(body, sort_keys=True).encode("utf-8"), mode=0o640)
    except (OSError, UnsafePathError) as exc:
        raise StateError(f"{path}: cannot write: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    setstore.sweep(writer.directory, writer.names)


def _unchanged(state_dir: str, backend: str, encoded: Any) -> bool:
    """Whether the record already says this: compared as parsed JSON, not decoded into a Plan
    (100k prefixes: ~10 ms instead of ~45 ms). Anything unreadable counts as changed."""
    path = os.path.join(state_dir, PLAN_NAME)
    try:
        body = json.loads(files.read_regular(path, 256 << 20))
    except (OSError, ValueError, UnsafePathError):
        return False
    return (isinstance(body, dict) and body.get("format") == FORMAT
            and body.get("version") == VERSION and body.get("backend") == backend
            and bool(body.get("removed")) == (encoded is None)
            and body.get("plan") == encoded)


def load(state_dir: str) -> Optional[Applied]:
    """The last applied plan; None when nothing was ever applied here; StateError for a file
    that cannot be read or was not written by this version's rules."""
    path = os.path.join(state_dir, PLAN_NAME)
    try:
        # No link followed, no FIFO waited on; as big as the plan (100k prefixes: ~2.2 MB).
        body = json.loads(files.read_regular(path, 256 << 20))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnsafePathError) as exc:
        raise StateError(f"{path}: unreadable: {getattr(exc, 'strerror', None) or exc}") \
            from None
    try:
        if body.get("format") != FORMAT or body.get("version") not in _READS:
            raise ValueError(f"not a version {' or '.join(map(str, _READS))} {FORMAT} file")
        backend, when = body["backend"], body["time"]
        if not isinstance(backend, str) or not isinstance(when, (int, float)):
            raise ValueError("bad backend or time")
        plan = None if body.get("removed") else decode(Plan, body["plan"],
                                                       setstore.directory_for(path))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{path}: {exc}") from None
    return Applied(backend, float(when), plan)


def load_or_none(state_dir: str) -> Optional[Applied]:
    """load(), with a damaged file read as none."""
    try:
        return load(state_dir)
    except StateError:
        return None


# -- plan <-> JSON ---------------------------------------------------------------------------
# Generic over the Plan's fields and their type hints, so a field added to Plan (with a
# default) is saved and loaded without a change here, and an older file loads with the
# defaults of the fields it lacks.


def encode(value: Any, writer: setstore.Writer) -> Any:
    """A plan (or any value of its fields) as JSON-able data; decode() reads it back. Packed
    networks are base64 inline if small, else a set file of the writer's (setstore)."""
    if isinstance(value, Networks):
        return writer.encode(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name), writer)
                for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        if all(type(v) is str for v in value):  # the clean servers, the canaries: 1000s
            return list(value)
        return [encode(v, writer) for v in value]
    return value


def decode(hint: Any, value: Any, directory: str) -> Any:
    """`value` (parsed JSON) as the type `hint` names, set files read from `directory`;
    ValueError when it is not one."""
    if hint is Networks:
        if isinstance(value, list):  # written by an earlier version: address strings
            if not all(isinstance(v, str) for v in value):
                raise ValueError("networks: not a list of addresses")
            return tuple(value)  # PrefixSet packs them with its family
        return setstore.decode(directory, value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ValueError(f"{hint.__name__}: not an object")
        hints = typing.get_type_hints(hint)
        names = {f.name for f in dataclasses.fields(hint)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{hint.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
        return hint(**{k: decode(hints[k], v, directory) for k, v in value.items()})
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return decode(inner[0], value, directory)
        raise ValueError(f"unsupported type {hint}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{hint}: not a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v, directory) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{hint}: {len(value)} items")
        return tuple(decode(a, v, directory) for a, v in zip(args, value))
    if hint is bool or hint is str:
        if type(value) is not hint:
            raise ValueError(f"{value!r} is not a {hint.__name__}")
        return value
    if hint is int:
        if type(value) is not int:
            raise ValueError(f"{value!r} is not an integer")
        return value
    if hint is float:
        if type(value) not in (int, float):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    raise ValueError(f"unsupported type {hint}")
