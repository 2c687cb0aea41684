"""Shared harvester/scanner lists: parse, validate, store the last good copy, export.

Two formats (README "Shared lists"):

text   one entry a line: ADDRESS-OR-PREFIX KIND [# comment]; KIND is `harvester` or `scanner`;
       blank lines and lines starting with `#` are ignored. The format of existing blocklists
       (maltrail's `IP # comment`), plus the kind column. A list without kinds can be read with a
       default kind (`list import --kind scanner`).
json   {"format": "ntpguard-list", "version": 1, "generated": ISO-8601, "entries": [
         {"address": "...", "kind": "...", "comment": "...", "evidence": {"NAME": count, ...},
          "first_seen": ISO-8601, "last_seen": ISO-8601}, ...]}

Validation is strict and all-or-nothing: a list with one bad line is refused as a whole (with
every problem's line number), because a list that is half applied is worse than the last good
copy, which stays in force. Parsing and exporting are pure; `store`/`load_stored` are the only
functions here that touch files.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Optional

from ntpguard.addr import IPNetwork, nonglobal_reason, parse_prefix
from ntpguard.errors import UsageError
from ntpguard.files import atomic_write

if TYPE_CHECKING:
    from ntpguard.status import Verdict

KINDS = ("harvester", "scanner")
TRUSTS = ("enforce", "report")
JSON_FORMAT = "ntpguard-list"
JSON_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# Problems listed in one error message; the rest are counted. One line is the CLI's contract.
_SHOWN_PROBLEMS = 5


class ListError(UsageError):
    """A list that failed validation; never replaces the last good copy."""

    def __init__(self, source: str, problems: list[str]) -> None:
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        more = len(problems) - _SHOWN_PROBLEMS
        suffix = f"; and {more} more" if more > 0 else ""
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: list refused ({len(problems)} {noun}): {shown}{suffix}")
        self.source = source
        self.problems = problems


@dataclass(frozen=True)
class Entry:
    """One listed address or prefix. A single address is a /128 (or /32) network."""

    network: IPNetwork
    kind: str
    comment: str = ""
    line: int = 0  # where it came from (1-based line, or JSON entry index + 1); 0 = not parsed
    evidence: tuple[tuple[str, int], ...] = ()  # e.g. (("scans", 3), ("triggers", 5))
    first_seen: Optional[float] = None
    last_seen: Optional[float] = None

    @property
    def address(self) -> str:
        """The entry as written in lists: bare address for a single host, else CIDR."""
        n = self.network
        return str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)


@dataclass(frozen=True)
class Limits:
    """What a list may contain; from the [lists] config section or a subscription."""

    max_entries: int = 100_000
    min_prefixlen_v6: int = 32
    min_prefixlen_v4: int = 16
    allow_nonglobal: bool = False
    default_kind: str = ""  # kind for text lines that carry none; "" = a kind is required


@dataclass(frozen=True)
class ParsedList:
    format: str  # "text" or "json"
    entries: tuple[Entry, ...]
    sha256: str  # of the raw bytes as received
    raw: bytes = field(repr=False, default=b"")


# -- parsing -------------------------------------------------------------------------------------


def detect_format(raw: bytes) -> str:
    """JSON lists start with `{`; everything else is read as text."""
    return "json" if raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else "text"


def parse(raw: bytes, source: str, limits: Limits = Limits(), fmt: str = "auto") -> ParsedList:
    """Parse and validate a whole list; raise ListError naming every bad line."""
    if fmt == "auto":
        fmt = detect_format(raw)
    text = _decode(raw, source)
    if fmt == "json":
        entries = _parse_json(text, source, limits)
    elif fmt == "text":
        entries = _parse_text(text, source, limits)
    else:
        raise UsageError(f"unknown list format {fmt!r} (text or json)")
    return ParsedList(fmt, tuple(entries), hashlib.sha256(raw).hexdigest(), raw)


def _decode(raw: bytes, source: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ListError(source, [f"line {line}: not valid UTF-8 (byte {exc.start})"]) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ListError(source, [f"line {line}: NUL byte (a binary file, not a list)"])
    return text


def _parse_text(text: str, source: str, limits: Limits) -> list[Entry]:
    problems: list[str] = []
    entries: list[Entry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        body, _, comment = line.partition("#")
        fields = body.split()
        if not fields:
            continue
        if len(fields) > 2:
            problems.append(f"line {number}: expected ADDRESS KIND [# comment], "
                            f"got {line.strip()!r}")
            continue
        kind = fields[1] if len(fields) == 2 else limits.default_kind
        if not kind:
            problems.append(f"line {number}: no kind (harvester or scanner) after {fields[0]!r}")
            continue
        entry = _entry(fields[0], kind, comment.strip(), number, limits, problems, f"line {number}")
        if entry is not None:
            entries.append(entry)
    _check_whole(entries, limits, problems, "line")
    if problems:
        raise ListError(source, problems)
    return entries


def _entry(address: str, kind: str, comment: str, number: int, limits: Limits,
           problems: list[str], where: str) -> Optional[Entry]:
    if kind not in KINDS:
        problems.append(f"{where}: unknown kind {kind!r} (harvester or scanner)")
        return None
    try:
        net = parse_prefix(address, limits.min_prefixlen_v6, limits.min_prefixlen_v4)
    except UsageError as exc:
        problems.append(f"{where}: {exc}")
        return None
    if not limits.allow_nonglobal:
        # Both ends: a prefix may start in global space and reach into a reserved block.
        why = nonglobal_reason(net.network_address) or nonglobal_reason(net.broadcast_address)
        if why:
            problems.append(f"{where}: {address} is not a global address ({why})")
            return None
    return Entry(net, kind, comment, number)


def _check_whole(entries: list[Entry], limits: Limits, problems: list[str], unit: str) -> None:
    seen: dict[IPNetwork, Entry] = {}
    for e in entries:
        first = seen.get(e.network)
        if first is None:
            seen[e.network] = e
        elif first.kind == e.kind:
            problems.append(f"{unit} {e.line}: duplicate of {unit} {first.line} ({e.address})")
        else:
            problems.append(f"{unit} {e.line}: {e.address} is listed as {e.kind} here and as "
                            f"{first.kind} on {unit} {first.line}")
    if len(entries) > limits.max_entries:
        problems.append(f"{len(entries)} entries, more than max_entries {limits.max_entries}")


def _parse_json(text: str, source: str, limits: Limits) -> list[Entry]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ListError(source, [f"line {exc.lineno}: invalid JSON: {exc.msg}"]) from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        raise ListError(source, [f'not an ntpguard list (no "format": "{JSON_FORMAT}")'])
    if doc.get("version") != JSON_VERSION:
        raise ListError(source, [f"unsupported version {doc.get('version')!r} "
                                 f"(this ntpguard reads {JSON_VERSION})"])
    items = doc.get("entries")
    if not isinstance(items, list):
        raise ListError(source, ['"entries" must be a list'])
    problems: list[str] = []
    entries: list[Entry] = []
    for index, item in enumerate(items, start=1):
        where = f"entry {index}"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object")
            continue
        address, kind = item.get("address"), item.get("kind")
        comment = item.get("comment", "")
        if not isinstance(address, str) or not isinstance(kind, str):
            problems.append(f'{where}: "address" and "kind" must be strings')
            continue
        if not isinstance(comment, str) or "\n" in comment:
            problems.append(f'{where}: "comment" must be a one-line string')
            continue
        try:
            evidence = _evidence(item.get("evidence", {}))
            first = _timestamp(item.get("first_seen"), "first_seen")
            last = _timestamp(item.get("last_seen"), "last_seen")
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        e = _entry(address, kind, comment, index, limits, problems, where)
        if e is not None:
            entries.append(Entry(e.network, e.kind, e.comment, index, evidence, first, last))
    _check_whole(entries, limits, problems, "entry")
    if problems:
        raise ListError(source, problems)
    return entries


def _evidence(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise ValueError('"evidence" must map names to counts (non-negative integers)')
    return tuple(sorted(value.items()))


def _timestamp(value: Any, key: str) -> Optional[float]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f'"{key}" must be an ISO 8601 time string')
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f'"{key}": not an ISO 8601 time: {value!r}') from None
    if parsed.tzinfo is None:
        raise ValueError(f'"{key}": {value!r} has no time zone (add Z for UTC)')
    return parsed.timestamp()


def iso(ts: Optional[float]) -> Optional[str]:
    """UTC ISO 8601 with a Z, the form the JSON format writes."""
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- export --------------------------------------------------------------------------------------


def _sorted(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.kind, e.network.version, e.network))


def export_text(entries: Iterable[Entry], header: str = "") -> str:
    """The text format; parse(export_text(x)) gives x back (less evidence and times)."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    for e in _sorted(entries):
        comment = f" # {e.comment}" if e.comment else ""
        lines.append(f"{e.address} {e.kind}{comment}")
    return "\n".join(lines) + "\n"


def export_json(entries: Iterable[Entry], generated: float) -> str:
    items = []
    for e in _sorted(entries):
        item: dict[str, Any] = {"address": e.address, "kind": e.kind}
        if e.comment:
            item["comment"] = e.comment
        if e.evidence:
            item["evidence"] = dict(e.evidence)
        if e.first_seen is not None:
            item["first_seen"] = iso(e.first_seen)
        if e.last_seen is not None:
            item["last_seen"] = iso(e.last_seen)
        items.append(item)
    doc = {"format": JSON_FORMAT, "version": JSON_VERSION, "generated": iso(generated),
           "entries": items}
    return json.dumps(doc, indent=1) + "\n"


# -- stored copies -------------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsageError(f"list name {name!r}: use lower-case letters, digits, '.', '_', '-' "
                         "(up to 63, starting with a letter or digit)")
    return name


def list_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "lists")


def store(state_dir: str, name: str, parsed: ParsedList, meta: dict[str, Any]) -> str:
    """Keep a validated list as STATE/lists/NAME.{txt,json} with NAME.meta.json beside it.

    Only call with a list that `parse` accepted: this is what makes it the "last good copy".
    The list is written before its metadata, so a crash between them leaves metadata that
    describes an older copy (a refetch without ETag fixes it), never a list without validation.
    """
    check_name(name)
    directory = list_dir(state_dir)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        ext = "json" if parsed.format == "json" else "txt"
        path = os.path.join(directory, f"{name}.{ext}")
        atomic_write(path, parsed.raw)
        other = os.path.join(directory, f"{name}.{'txt' if ext == 'json' else 'json'}")
        full = dict(meta, format=parsed.format, sha256=parsed.sha256, entries=len(parsed.entries))
        atomic_write(os.path.join(directory, f"{name}.meta.json"),
                      (json.dumps(full, indent=1, sort_keys=True) + "\n").encode())
        if os.path.exists(other):
            os.unlink(other)
    except OSError as exc:
        raise UsageError(f"{directory}: cannot store list {name}: {exc.strerror}") from None
    return path


def store_meta(state_dir: str, name: str, meta: dict[str, Any]) -> None:
    """Rewrite only the metadata (e.g. the time of a 304 check); the list stays as it is."""
    path = os.path.join(list_dir(state_dir), f"{check_name(name)}.meta.json")
    try:
        atomic_write(path, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def read_meta(state_dir: str, name: str) -> dict[str, Any]:
    path = os.path.join(list_dir(state_dir), f"{name}.meta.json")
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def stored_names(state_dir: str) -> list[str]:
    directory = list_dir(state_dir)
    if not os.path.isdir(directory):
        return []
    names = set()
    for f in os.listdir(directory):
        base, ext = os.path.splitext(f)
        if ext in (".txt", ".json") and not f.endswith(".meta.json") and not f.startswith("."):
            names.add(base)
    return sorted(names)


def load_stored(state_dir: str, name: str, limits: Limits) -> Optional[ParsedList]:
    """The last good copy of list NAME, re-validated, or None if there is none."""
    directory = list_dir(state_dir)
    for ext in ("txt", "json"):
        path = os.path.join(directory, f"{name}.{ext}")
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
        return parse(raw, path, limits, ext if ext == "json" else "text")
    return None


def remove_stored(state_dir: str, name: str) -> bool:
    removed = False
    for suffix in (".txt", ".json", ".meta.json"):
        path = os.path.join(list_dir(state_dir), name + suffix)
        if os.path.exists(path):
            os.unlink(path)
            removed = True
    return removed


# -- the lists in force --------------------------------------------------------------------------

BUILTIN_FILES = ("harvesters.txt", "scanners.txt")
SYSTEM_RULES_DIR = "/usr/share/ntpguard/rules"


@dataclass(frozen=True)
class LoadedList:
    """A list in force: its name (`builtin-harvesters`, a subscription, an import) and trust.

    trust "enforce": entries count as evidence for verdicts and rules (below manual marks and
    local evidence); "report": shown by `list show`/`explain` only.
    """

    name: str
    trust: str
    entries: tuple[Entry, ...]
    origin: str  # file or URL it came from
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def limits_for(config: Any, max_entries: Optional[int] = None, kind: str = "") -> Limits:
    """Limits from the [lists] and [rules] sections (prefix limits are shared with the rules)."""
    rules = getattr(config, "rules", None)
    return Limits(
        max_entries=max_entries if max_entries is not None else config.lists.max_entries,
        min_prefixlen_v6=getattr(rules, "max_prefix_v6", 32),
        min_prefixlen_v4=getattr(rules, "max_prefix_v4", 16),
        allow_nonglobal=config.lists.allow_nonglobal,
        default_kind=kind,
    )


def builtin_dir(config: Any) -> str:
    if config.lists.builtin_dir:
        return config.lists.builtin_dir
    source_tree = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "rules")
    if os.path.isfile(os.path.join(source_tree, BUILTIN_FILES[0])):
        return source_tree
    return SYSTEM_RULES_DIR


def load_builtin(config: Any) -> list[LoadedList]:
    """The shipped lists; [lists] builtin = false switches them off."""
    if not config.lists.builtin:
        return []
    directory = builtin_dir(config)
    out = []
    for fname in BUILTIN_FILES:
        path = os.path.join(directory, fname)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read shipped list: {exc.strerror} "
                             "(set [lists] builtin_dir, or builtin = false)") from None
        parsed = parse(raw, path, limits_for(config), "text")
        name = "builtin-" + fname.rsplit(".", 1)[0]
        out.append(LoadedList(name, config.lists.builtin_trust, parsed.entries, path))
    return out


def load_all(config: Any, state_dir: str) -> list[LoadedList]:
    """Every list in force: shipped, subscribed and imported (their last good copies)."""
    subs = {s.name: s for s in config.lists.subscriptions}
    out = load_builtin(config)
    for name in stored_names(state_dir):
        meta = read_meta(state_dir, name)
        sub = subs.get(name)
        if sub is not None:
            limits, trust = limits_for(config, sub.max_entries, sub.kind), sub.trust
        else:
            limits = limits_for(config, kind=str(meta.get("kind", "")))
            trust = meta.get("trust") if meta.get("trust") in TRUSTS else "enforce"
        parsed = load_stored(state_dir, name, limits)
        if parsed is not None:
            out.append(LoadedList(name, trust, parsed.entries, str(meta.get("source", "")), meta))
    return out


# -- export from local verdicts ------------------------------------------------------------------


def entries_from_verdicts(history: Iterable[Verdict]) -> list[Entry]:
    """This host's own findings as list entries: what `list export` publishes.

    Only local sources (manual marks, detection, probes) count: re-publishing other people's
    lists would launder them into "evidence" on every host that subscribes. A server is
    exported when its effective status from local sources alone (ntpguard.status) is
    `harvester`; evidence counts are the integer fields of the deciding verdict's evidence;
    scanner addresses or prefixes a detection names under evidence "scanners" are exported as
    `scanner` entries.
    """
    from ntpguard.status import Status, effective, local_only

    latest: dict[str, dict[str, Verdict]] = {}
    local: dict[str, list[Verdict]] = {}
    for v in sorted(history, key=lambda v: v.time):
        if v.source.local:
            latest.setdefault(v.address, {})[str(v.source)] = v
            local.setdefault(v.address, []).append(v)
    harvesters: dict[IPNetwork, Entry] = {}
    scanners: dict[IPNetwork, Entry] = {}
    for address, s in effective(local_only(latest)).items():
        decided = s.verdict
        if decided is None or s.status != Status.HARVESTER:
            continue
        net = parse_prefix(address, 0, 0)
        times = [v.time for v in local[address] if v.status == Status.HARVESTER]
        counts = tuple(sorted((k, n) for k, n in decided.evidence.items()
                              if isinstance(n, int) and not isinstance(n, bool) and n >= 0))
        note = decided.evidence.get("note")
        comment = f"{decided.source}: {note}" if isinstance(note, str) and note else \
            str(decided.source)
        harvesters[net] = Entry(net, "harvester", comment.replace("\n", " "), 0, counts,
                                min(times), max(times))
        for v in local[address]:
            named = v.evidence.get("scanners") if v.status == Status.HARVESTER else None
            for text in named if isinstance(named, list) else []:
                try:
                    snet = parse_prefix(str(text), 0, 0)
                except UsageError:
                    continue
                old = scanners.get(snet)
                first = v.time if old is None else min(old.first_seen or v.time, v.time)
                last = v.time if old is None else max(old.last_seen or v.time, v.time)
                scanners[snet] = Entry(snet, "scanner", f"scanned after {address}", 0, (),
                                       first, last)
    return list(harvesters.values()) + [s for n, s in scanners.items() if n not in harvesters]
