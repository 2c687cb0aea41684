"""What a firewall plan is made from, digested in milliseconds, and what the last apply made of
it: a `rules apply` (or a `sync`'s canaries and rules steps) whose inputs, kernel and clock are
as they were then stops before reading the state or building anything.

Reading the state and building the plan takes ~0.4 s of CPU with 2,000 servers, a year of
scans and a 100k-entry list (benchmarks/scale.py); a run every 15 minutes on a Raspberry Pi
pays that 5-10 times over. The digest instead reads:

- the code's version and the configuration: the exact bytes of the file it was loaded from
  (configfile.Source.identity), or every value of one made otherwise;
- the state's revision (ntpguard.revision: triggers change it with every change to servers,
  verdicts, scans, canaries or which servers were contacted);
- the stored and shipped lists' files (name, size, modification time, inode);
- this host's addresses and routes, from /proc (hostinfo.kernel_facts);
- and what was asked: --force, the backend.

The kernel: the nft generation ntpguard's last transaction (or check) left (nft_gen: any
commit by anyone since changes it), in the same boot and network namespace. The clock: the
next time a canary rotates or expires (canary.next_change; nothing else in a plan depends on
the time), and at most REBUILD_AFTER. Anything unreadable means "read everything": the
digest is None.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Optional

from ntpguard import __version__, configfile, files, hostinfo, listfiles, revision
from ntpguard.backends import nft_gen
from ntpguard.errors import NtpguardError
from ntpguard.records import record

if TYPE_CHECKING:  # records only: the run that finds nothing to do imports none of them
    from ntpguard.backends import Result
    from ntpguard.config import Config
    from ntpguard.plan import Plan

RECORD_NAME = "applied-inputs.json"
# A record holds at most this long: whatever the digest should have seen and did not (an
# input added to the plan and not here, a kernel that reports a change where this does not
# look) is taken in by a plan built at least this often; a 15-minute sync builds one in four.
REBUILD_AFTER = 3600.0
# Version 2: the configuration named by its file (config, configured_backend, builtin).
FORMAT = "ntpguard-applied-inputs-2"
log = logging.getLogger("ntpguard")


@record
class Record:
    """The inputs a plan was built from and what became of it: the kernel held that plan at
    `generation` (in `scope`), valid until `until` (epoch seconds)."""

    digest: str
    backend: str  # as asked: nft, iptables or auto
    # What the configuration file said (see unchanged_before_loading): its identity (empty
    # for settings not loaded from a file), [rules] backend and the shipped lists' paths.
    config: str
    configured_backend: str
    builtin: list[str]
    force: bool
    fallback: bool  # built with NTP to unknown servers allowed (sync's plan on a new host)
    scope: str
    generation: int
    until: float
    time: float  # when it was applied
    result: dict[str, Any]  # Result.as_dict() of an unchanged apply, for printing
    plan: dict[str, Any]  # Plan.counts()
    notes: list[str]
    describe: str  # Plan.describe()


def digest(config: Config, state_dir: str) -> Optional[str]:
    """The digest of everything a plan is made from (see the module docstring); None if any
    part cannot be read."""
    return _digest(_settings(config), state_dir, listfiles.builtin_paths(config))


def _settings(config: Config) -> str:
    """The settings, for the digest: the file they were loaded from, else every value."""
    return config.source.identity if config.source is not None else repr(config)


def _digest(settings: str, state_dir: str, builtin: list[str]) -> Optional[str]:
    rev = revision.read(state_dir)
    host = hostinfo.kernel_facts()
    if rev is None or host is None:
        return None
    h = hashlib.sha256()
    for part in (__version__, code_stamp(), settings, os.path.abspath(state_dir), str(rev),
                 host, _list_files(state_dir, builtin)):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def unchanged(config: Config, state_dir: str, backend: str, force: bool, fallback_ok: bool,
              now: float) -> Optional[Record]:
    """The record of the last apply if it still holds: same inputs, same kernel generation,
    before its deadline, asked the same way. None: build the plan."""
    record = load(state_dir)
    if record is None or not _holds(record, backend, force, fallback_ok, now):
        return None
    return record if digest(config, state_dir) == record.digest else None


def unchanged_before_loading(config_path: Optional[str], state_dir: Optional[str],
                             backend: Optional[str], force: bool, now: float
                             ) -> Optional[Record]:
    """unchanged() for `rules apply` before the settings are loaded and checked (~30 ms of
    imports): the record holds when the configuration file has the exact bytes the last
    apply loaded (so they loaded without error then, with this code: the digest has its
    version) and the rest is as unchanged() finds it. None: load the settings and go on."""
    try:
        source = configfile.read(config_path)
    except NtpguardError:
        return None  # loading the settings words the error
    state_dir = configfile.state_dir(state_dir, lambda: configfile.configured_state_dir(source))
    record = load(state_dir)
    if (record is None or not record.config or record.config != source.identity
            or not _holds(record, backend or record.configured_backend, force, False, now)):
        return None
    return record if _digest(record.config, state_dir, record.builtin) == record.digest \
        else None


def _holds(record: Record, backend: str, force: bool, fallback_ok: bool, now: float) -> bool:
    """The record was asked for the same way, is before its deadline, and the kernel's
    nftables generation is the one the apply left."""
    if (record.backend != backend or record.force != force
            or (record.fallback and not fallback_ok) or now >= record.until):
        return False
    scope = nft_gen.scope()
    return scope is not None and scope == record.scope and nft_gen.genid() == record.generation


def load(state_dir: str) -> Optional[Record]:
    path = os.path.join(state_dir, RECORD_NAME)
    try:
        data = json.loads(files.read_regular(path, 1 << 20))
        if data.pop("format", None) != FORMAT:
            return None
        return Record(**data)
    except (OSError, ValueError, TypeError):
        return None  # none yet, damaged or from another version: build the plan


def save(state_dir: str, record: Record) -> None:
    """Remember the record; failing to is a warning (the next run builds the plan)."""
    try:
        # Not synced: it holds only in this boot (scope), so no crash leaves it trusted.
        files.atomic_write(os.path.join(state_dir, RECORD_NAME),
                           json.dumps({"format": FORMAT, **asdict(record)}).encode(),
                           durable=False)
    except OSError as exc:
        log.warning("%s: cannot write: %s", RECORD_NAME, exc.strerror)


def remember(config: Config, state_dir: str, found: Optional[str], backend: str,
             result: Result, plan: Plan, force: bool, fallback: bool, until: float,
             now: float) -> None:
    """After an apply: the record the next run compares with, if the inputs were digested
    (`found`, before the plan was built from them) and the backend knows the generation at
    which the kernel holds the plan; else no record (the next run builds the plan)."""
    scope = nft_gen.scope()
    if found is None or result.generation is None or scope is None:
        forget(state_dir)
        return
    from ntpguard.backends import Result

    save(state_dir, Record(found, backend,
                           config.source.identity if config.source is not None else "",
                           config.rules.backend,
                           listfiles.builtin_paths(config), force, fallback, scope,
                           result.generation, min(until, now + REBUILD_AFTER), now,
                           Result(result.backend, "unchanged").as_dict(),
                           dict(plan.counts()), list(plan.notes), plan.describe()))


def forget(state_dir: str) -> None:
    """No record: the next apply builds the plan (after anything that changed the rules
    other than through a recorded apply)."""
    try:
        os.unlink(os.path.join(state_dir, RECORD_NAME))
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s: cannot remove: %s", RECORD_NAME, exc.strerror)


def code_stamp() -> str:
    """Installed code replaced (a package upgrade renames new files into place) shows in the
    package directories' modification times; the version alone may not change in between."""
    here = os.path.dirname(os.path.abspath(__file__))
    stamps = []
    for d in (here, os.path.join(here, "backends")):
        try:
            stamps.append(str(os.stat(d).st_mtime_ns))
        except OSError:
            stamps.append("-")
    return ",".join(stamps)


def _list_files(state_dir: str, builtin: list[str]) -> str:
    """Name, size, mtime and inode of every file of the stored lists and the shipped ones."""
    out = []
    directory = listfiles.list_dir(state_dir)
    paths = [os.path.join(directory, n) for n in sorted(_listdir(directory))]
    for path in [*paths, *builtin]:
        try:
            st = os.lstat(path)
        except OSError:
            out.append(f"{path}:-")
            continue
        out.append(f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_mode}")
    return "\n".join(out)


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []
