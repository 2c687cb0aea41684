"""One truth about each server: its effective status, decided in one place (pure).

Every command and sync step asks `effective(snapshot)` (or `status_of` for one address) and
nothing else works out precedence. Sources rank (README, "Precedence"):

1. manual: the admin's `ntpguard mark`; a decision, not evidence. A manual `unknown`
   withdraws the admin's mark, so the others decide again;
2. trusted: `[servers] trusted` in the configuration (the admin's own or NTS servers): clean;
3. local evidence: first `canary` (a scan of the throwaway address only that server ever saw:
   ntpguard.canary, exact), then `detect` (the attribution model over this host's firewall logs) and
   `probe` (its own probes);
4. lists: enforced shared lists (`list:NAME`), somebody else's evidence.

Within a rank the newest verdict wins. A server is *known* (the firewall may let NTP reach it,
timeconf may name it) when the pool's DNS served it, the admin trusts or marked it, or this
host's own evidence judged it; an address only a list names is blocked, never known.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

from ntpguard.prefixes import Key, address_value, text_prefix
from ntpguard.records import record

if TYPE_CHECKING:  # records only; at run time nothing here imports the actors
    from ntpguard.lists import LoadedList
    from ntpguard.state import Server


class Status(str, enum.Enum):
    """What a server is believed to be. A str, so it is stored and printed as its value."""

    HARVESTER = "harvester"
    SUSPECT = "suspect"
    CLEAN = "clean"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def blocked(self) -> bool:
        """NTP never reaches a harvester or a suspect."""
        return self in (Status.HARVESTER, Status.SUSPECT)


# Source kinds by rank (lower wins); `list` sources carry the list's name.
# Within local evidence a canary's scan comes first: it is exact (nobody else knew that
# address), where detection and probes are inferences from groups.
RANKS = {"manual": 0, "trusted": 1, "canary": 2, "detect": 3, "probe": 3, "list": 4}


@record
class Source:
    """Who gave a verdict: manual, trusted, detect, probe, or list:NAME."""

    kind: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> Source:
        kind, _, name = text.partition(":")
        if kind not in RANKS or (kind == "list") != bool(name):
            raise ValueError(f"unknown verdict source {text!r}")
        return cls(kind, name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind

    @property
    def rank(self) -> int:
        return RANKS[self.kind]

    @property
    def local(self) -> bool:
        """This host's own findings (what `list export` publishes)."""
        return self.kind in ("manual", "detect", "probe", "canary")


MANUAL, TRUSTED, DETECT = Source("manual"), Source("trusted"), Source("detect")


@record
class Verdict:
    """One source's judgement of one address, with the evidence behind it (JSON-able)."""

    address: str
    status: Status
    source: Source
    evidence: Mapping[str, Any]
    time: float

    @classmethod
    def of(cls, address: str, status: str, source: str,
           evidence: Optional[Mapping[str, Any]] = None, time: float = 0.0) -> Verdict:
        """From the stored (text) form; ValueError names what is not a status or source."""
        return cls(address, Status(status), Source.parse(source), dict(evidence or {}),
                   float(time))


@record
class ServerStatus:
    """A server's effective status, the verdict that decided it, and why, in one line."""

    address: str
    status: Status
    verdict: Optional[Verdict]  # None: no source has spoken
    reason: str
    known: bool

    @classmethod
    def of(cls, address: str, status: str, known: bool = True) -> ServerStatus:
        """A status stated directly, not decided (a plan built by hand, a benchmark)."""
        return cls(address, Status(status), None, "stated", known)

    @property
    def source(self) -> Optional[Source]:
        return self.verdict.source if self.verdict else None

    @property
    def usable(self) -> bool:
        """The firewall lets NTP reach it and timeconf may name it."""
        return self.known and not self.status.blocked


@record
class Snapshot:
    """What the status of every server is decided from, read at one moment."""

    servers: Mapping[str, Server]  # the pool's servers, by address
    verdicts: Mapping[str, Mapping[str, Verdict]]  # address -> source -> its latest verdict
    lists: tuple[LoadedList, ...] = ()  # every list in force; only `enforce` ones count
    trusted: tuple[str, ...] = ()  # [servers] trusted, canonical
    trusted_from: str = "the configuration"


# -- deciding -----------------------------------------------------------------------------------


class _ListIndex:
    """Enforced harvester entries, looked up per (IP version, prefix length), longest first
    (the most specific entry names the server), lists in load order within a length. Each
    group of a compiled list is made a dict (packed network → its index) the first time an
    address of its family is looked up: a few dozen entries in the shipped list, ~15 ms once
    for a 100k-entry harvester list, where a scan of the entries per server took seconds."""

    def __init__(self, loaded: Iterable[LoadedList]) -> None:
        groups = [(key, lst) for lst in loaded if lst.trust == "enforce"
                  for key in lst.compiled.harvester.groups]
        self.groups = sorted(groups, key=lambda g: -g[0][1])  # stable: load order kept
        self._lookup: dict[tuple[str, Key], dict[bytes, int]] = {}

    def _find(self, lst: LoadedList, key: Key, packed: bytes) -> Optional[int]:
        lookup = self._lookup.get((lst.name, key))
        if lookup is None:
            nets = lst.compiled.harvester.groups[key]
            lookup = {r: i for i, r in enumerate(nets.records())}
            self._lookup[(lst.name, key)] = lookup
        return lookup.get(packed)

    def verdict(self, address: str) -> Optional[Verdict]:
        if not self.groups:
            return None
        parsed = address_value(address)
        if parsed is None:
            return None
        fam, value = parsed
        bits = 128 if fam == 6 else 32
        for (gfam, length), lst in self.groups:
            if gfam != fam:
                continue
            masked = value >> (bits - length) << (bits - length)
            index = self._find(lst, (gfam, length), masked.to_bytes(bits // 8, "big"))
            if index is not None:
                part = lst.compiled.harvester
                return Verdict(address, Status.HARVESTER, Source("list", lst.name),
                               {"entry": text_prefix(fam, masked, length),
                                "line": part.line((gfam, length), index),
                                "comment": part.comment((gfam, length), index)},
                               float(lst.meta.get("fetched", 0) or 0))
        return None


def _voices(address: str, snapshot: Snapshot, index: _ListIndex) -> list[Verdict]:
    """Every verdict that may decide an address, the withdrawn manual mark left out."""
    voices = [v for v in snapshot.verdicts.get(address, {}).values()
              if not (v.source == MANUAL and v.status == Status.UNKNOWN)]
    if address in snapshot.trusted:
        voices.append(Verdict(address, Status.CLEAN, TRUSTED, {}, 0.0))
    listed = index.verdict(address)
    if listed is not None:
        voices.append(listed)
    return voices


def _reason(v: Optional[Verdict], snapshot: Snapshot) -> str:
    if v is None:
        return "no verdict from any source yet"
    ev = v.evidence
    kind = v.source.kind
    if kind == "manual":
        note = ev.get("note")
        return f"marked {v.status} by the admin" + (f": {note}" if note else "")
    if kind == "trusted":
        return f"trusted in {snapshot.trusted_from} ([servers] trusted)"
    if kind == "list":
        where = f", line {ev['line']}" if ev.get("line") else ""
        return f"{ev.get('entry', v.address)} is listed as harvester by {v.source}{where}"
    counts = ", ".join(f"{k} {ev[k]}" for k in ("positive", "negative", "sole", "probability")
                       if k in ev)
    return f"{kind}: {v.status}" + (f" ({counts})" if counts else "")


def _decide(address: str, snapshot: Snapshot, index: _ListIndex, known: bool) -> ServerStatus:
    voices = _voices(address, snapshot, index)
    winner = min(voices, key=lambda v: (v.source.rank, -v.time)) if voices else None
    status = winner.status if winner else Status.UNKNOWN
    return ServerStatus(address, status, winner, _reason(winner, snapshot), known)


def _is_known(address: str, snapshot: Snapshot) -> bool:
    if address in snapshot.servers or address in snapshot.trusted:
        return True
    return any(v.source.rank < RANKS["list"] and not
               (v.source == MANUAL and v.status == Status.UNKNOWN)
               for v in snapshot.verdicts.get(address, {}).values())


def _is_address(text: str) -> bool:
    return address_value(text) is not None


def effective(snapshot: Snapshot) -> dict[str, ServerStatus]:
    """The effective status of every known server (see the module docstring), by address,
    plus every other address with a verdict that blocks it."""
    index = _ListIndex(snapshot.lists)
    out = {}
    for address in sorted({*snapshot.servers, *snapshot.trusted, *snapshot.verdicts}):
        s = _entry(address, snapshot, index)
        if s is not None:
            out[address] = s
    return out


def update(previous: Mapping[str, ServerStatus], snapshot: Snapshot,
           addresses: Iterable[str]) -> dict[str, ServerStatus]:
    """effective() of a state that differs from the one `previous` was decided from only in
    what concerns `addresses` (their verdicts, whether the pool served them): those are
    decided again from `snapshot`, which must hold everything about them (the others'
    entries may be missing from it); every other entry is kept as it was."""
    index = _ListIndex(snapshot.lists)
    out = dict(previous)
    for address in addresses:
        s = _entry(address, snapshot, index)
        if s is None:
            out.pop(address, None)
        else:
            out[address] = s
    return dict(sorted(out.items()))


def _entry(address: str, snapshot: Snapshot, index: _ListIndex) -> Optional[ServerStatus]:
    """An address's entry in effective(): None if it has none (not an address, or neither
    known nor blocked)."""
    if not _is_address(address):
        return None  # a prefix verdict (older versions) is no server
    known = _is_known(address, snapshot)
    s = _decide(address, snapshot, index, known)
    return s if known or s.status.blocked else None


def status_of(snapshot: Snapshot, address: str) -> ServerStatus:
    """One address's effective status, known or not (for `explain`)."""
    return _decide(address, snapshot, _ListIndex(snapshot.lists), _is_known(address, snapshot))


def local_only(verdicts: Mapping[str, Mapping[str, Verdict]]) -> Snapshot:
    """A snapshot of this host's own findings only: manual marks, detection, probes."""
    return Snapshot({}, {a: {k: v for k, v in by.items() if v.source.local}
                         for a, by in verdicts.items()})
