"""nftables backend: one owned `table inet ntpguard`, changed only in whole transactions.

Sets are plain hash sets, one per prefix length, looked up with a mask (`ip6 saddr & ffff:: @s`):
100k load in 0.77 s and a 100-element update takes 0.02 s, against 28 s for the same update of
one interval set (measured with nft 1.0.6; deleting from interval sets is the slow part). A
full apply replaces the table in one transaction (`table` + `delete table` + definition);
later applies whose rules are unchanged only add and
delete set elements, also in one transaction. Which elements the kernel holds is remembered in a
cache file next to the state, tied to the kernel by a random token kept in the table's
`generation` set: a cache that does not match the kernel is never trusted (full replace instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from dataclasses import field
from typing import Any, Iterable, Mapping, Optional, Union

from ntpguard import commands, setstore
from ntpguard.backends import DRIFTED, IN_PLACE, MISSING, Check, Result, nft_gen
from ntpguard.errors import FirewallError, UnsafePathError
from ntpguard.files import atomic_write, read_regular
from ntpguard.plan import PROBE_MARK, Plan, PrefixSet
from ntpguard.prefixes import Networks, ntop
from ntpguard.records import record

FAMILY, TABLE = "inet", "ntpguard"
CACHE_NAME = "rules-nft.json"
NTP_PORT = 123
# Log prefixes the detector reads (documented in notes/README-rules.md); <= 127 chars for nft.
LOG_NTP_OUT = "ntpguard-ntp-out: "
LOG_NTP_FWD = "ntpguard-ntp-fwd: "
LOG_IN = "ntpguard-in: "
LOG_FWD_IN = "ntpguard-fwd-in: "
LOG_CANARY_IN = "ntpguard-canary-in: "
# The priority of ntpguard's filter base chains: before the chains other firewalls put at
# `filter` (ufw, 0) or `filter + 10` (firewalld), so their drops cannot hide a packet from
# ntpguard's log (a drop in any chain is final, and chains of equal priority run newest
# first); still after conntrack (-200), which the `ct state` matches need.
FILTER_PRIORITY = "filter - 10"


# A set's elements: text (addresses, map entries, intervals) or, for the prefix sets that may
# hold 100k, packed networks (ntpguard.prefixes.Networks), made text only when nft needs it.
Elements = Union[list[str], Networks]


def _digest(elements: Elements) -> str:
    if isinstance(elements, Networks):
        return elements.digest()
    return hashlib.sha256("\n".join(elements).encode()).hexdigest()


@record(frozen=False)
class Rendered:
    """A plan as nft text: the rule skeleton (no elements) and each set's elements."""

    skeleton: str
    sets: dict[str, Elements] = field(default_factory=dict)

    def full_text(self, token: int) -> str:
        """One transaction that replaces (or creates) the table with exactly this content."""
        parts = [f"table {FAMILY} {TABLE}\n", f"delete table {FAMILY} {TABLE}\n", self.skeleton]
        parts.append(f"add element {FAMILY} {TABLE} generation {{ {token:#x} }}\n")
        for name, elements in self.sets.items():
            if elements:
                parts.append(_add(name, elements))
        return "".join(parts)

    def digest(self) -> str:
        """SHA-256 of the skeleton and every set's elements: equal digests, equal tables."""
        h = hashlib.sha256(self.skeleton.encode())
        for name in sorted(self.sets):
            h.update(f"\0{name}\0{_digest(self.sets[name])}".encode())
        return h.hexdigest()


def _add(name: str, elements: Iterable[str]) -> str:
    return f"add element {FAMILY} {TABLE} {name} {{ {', '.join(elements)} }}\n"


def _delete(name: str, elements: Iterable[str]) -> str:
    return f"delete element {FAMILY} {TABLE} {name} {{ {', '.join(elements)} }}\n"


def set_name(kind: str, ps: PrefixSet) -> str:
    return f"{kind}{ps.family}_{ps.length}"


def _match(direction: str, kind: str, ps: PrefixSet) -> str:
    """`ip6 saddr & ffff:ffff:ffff:ffff:: @scan6_64` (no mask for full-length sets)."""
    proto = "ip6" if ps.family == 6 else "ip"
    mask = "" if ps.full else f" & {ps.mask()}"
    return f"{proto} {direction}{mask} @{set_name(kind, ps)}"


def rules_for(plan: Plan) -> Rendered:
    """The exact nft ruleset for a plan (pure; equal plans give equal text)."""
    sets: dict[str, Elements] = {}
    decl = ["\tset generation {\n\t\ttype mark\n\t}\n"]

    def declare(name: str, family: int, elements: Union[tuple[str, ...], Networks],
                kind: str = "", what: str = "set") -> None:
        kind = kind or ("ipv6_addr" if family == 6 else "ipv4_addr")
        decl.append(f"\t{what} {name} {{\n\t\ttype {kind}\n\t}}\n")
        sets[name] = elements if isinstance(elements, Networks) else list(elements)

    declare("clean4", 4, plan.clean4)
    declare("clean6", 6, plan.clean6)
    if plan.unknown != "block":
        for ps in plan.harvesters:
            declare(set_name("harv", ps), ps.family, ps.networks)
    for ps in plan.scanners:
        declare(set_name("scan", ps), ps.family, ps.networks)
    can = plan.canaries
    if can is not None:
        # Elements, not rules, change when canaries rotate: an update, never a full replace.
        declare("canary6", 6, tuple(f"{s} : {c}" for s, c in can.mapping),
                "ipv6_addr : ipv6_addr", "map")
        declare("spare6", 6, (f"{NTP_PORT} : {can.spare}",), "inet_service : ipv6_addr", "map")
        declare("canaries6", 6, can.addresses)
        declare("keep6", 6, can.exempt, "ipv6_addr; flags interval")

    def log(prefix: str) -> str:
        if not plan.log:
            return ""
        group = f" group {plan.log_group}" if plan.log_group else ""
        return (f" limit rate {plan.log_rate}/second burst {plan.log_burst} packets"
                f' log prefix "{prefix}"{group}')

    ntp = f"udp dport {NTP_PORT} ct direction original"
    new = "meta l4proto { tcp, udp } ct state new"
    reject = "counter reject with icmpx type admin-prohibited"
    # (name, (type, hook, priority) for a base chain or None, rules)
    chains: list[tuple[str, Optional[tuple[str, str, str]], list[str]]] = []
    # NTP to a non-clean server: rejected (admin-prohibited), so the daemon moves on at once.
    # Usable servers first: a server the admin (or this host's evidence) cleared stays
    # reachable inside a listed harvester prefix.
    ntp_rules = ["ip daddr @clean4 return", "ip6 daddr @clean6 return"]
    if plan.unknown == "block":
        ntp_rules.append(reject)
    else:
        ntp_rules += [f"{_match('daddr', 'harv', ps)} {reject}" for ps in plan.harvesters]
    chains.append(("ntp", None, ntp_rules))
    chains.append(("scanners", None,
                   [f"{_match('saddr', 'scan', ps)} counter drop" for ps in plan.scanners]))
    # With canaries NTP is logged after the source rewrite (postrouting below): the address a
    # server saw is the evidence, the one the daemon sent from is not.
    log_ntp_here = plan.log and can is None
    out = ['oifname "lo" return']
    if log_ntp_here:
        out.append(ntp + log(LOG_NTP_OUT))
    # ntpguard's own probes (logged above) may reach the servers they confirm.
    out.append(f"meta mark {PROBE_MARK:#x} return")
    out.append(f"{ntp} jump ntp")
    chains.append(("output", ("filter", "output", FILTER_PRIORITY), out))
    # Scanner ingress is unsolicited traffic only: replies to what this host sent (NTP from a
    # usable server that shares a prefix with a scanner, say) pass.
    established = "ct state established,related return"
    inp = ['iifname "lo" return']
    if can is not None:
        # A canary takes replies only (conntrack undoes the rewrite before this hook, so a
        # reply is addressed to the real address here); the kernel's neighbour discovery for
        # it must pass, since it solicits from the rewritten source. The rest is a scan.
        inp += ["ip6 daddr @canaries6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert }"
                " return",
                f"ip6 daddr @canaries6 ct state new{log(LOG_CANARY_IN)} counter drop"]
    if plan.log:
        inp.append(new + log(LOG_IN))
    inp += [established, "jump scanners"]
    chains.append(("input", ("filter", "input", FILTER_PRIORITY), inp))
    if plan.gateway:
        fwd = []
        if log_ntp_here:
            fwd.append(ntp + log(LOG_NTP_FWD))
        if plan.log:
            fwd.append(new + log(LOG_FWD_IN))
        fwd += [f"{ntp} jump ntp", established, "jump scanners"]
        chains.append(("forward", ("filter", "forward", FILTER_PRIORITY), fwd))
    if can is not None:
        # Every NTP packet to a public server leaves from its server's canary, or the spare
        # when it has none yet (a map without the key does not match: the next rule runs).
        keep = f"udp dport {NTP_PORT} ct direction original ip6 daddr != @keep6"
        chains.append(("canary_nat", ("nat", "postrouting", "srcnat"), [
            f"{keep} snat ip6 to ip6 daddr map @canary6",
            f"{keep} snat ip6 to udp dport map @spare6"]))
        if plan.log:
            # After the rewrite: the source logged is the canary the server saw. Forwarded
            # packets have an input interface (for the host's own the lookup fails).
            chains.append(("canary_log", ("filter", "postrouting", "srcnat + 10"), [
                f"meta iif != 0 {ntp}{log(LOG_NTP_FWD)} return", ntp + log(LOG_NTP_OUT)]))

    body = []
    for name, hook, rules in chains:
        body.append(f"\tchain {name} {{\n")
        if hook:
            kind, hooked, priority = hook
            body.append(f"\t\ttype {kind} hook {hooked} priority {priority}; policy accept;\n")
        body += [f"\t\t{r}\n" for r in rules]
        body.append("\t}\n")
    skeleton = f"table {FAMILY} {TABLE} {{\n{''.join(decl)}{''.join(body)}}}\n"
    return Rendered(skeleton, sets)


# -- talking to nftables ---------------------------------------------------------------------


# Bytes of transaction text above which the nft command runs it, not libnftables in this
# process (Nft.run): ~30,000 prefixes. Below it the library saves the ~10 ms of a process.
BIG_TRANSACTION = 1 << 20


def _nft_command() -> bool:
    """Whether the nft command is on the PATH."""
    return commands.which("nft") is not None


class Nft:
    """libnftables through Debian's python3-nftables where importable, else `nft -f FILE`.

    Either way a change is one netlink batch, which the kernel commits whole or not at all.
    libnftables parses the whole text in this process and sends the batch in one sendmsg(), so
    a kill leaves the old table or the new one. The nft command gets the transaction as a
    private file written in full before nft starts: through a pipe (`nft -f -`), nft commits
    whatever complete lines it has when its input ends, so killing ntpguard mid-write left a
    partial table (measured on a 15,504-prefix apply: 81 sets created, 14 of them filled).
    A killed ntpguard's nft goes on with the whole file and commits the new table.
    """

    def __init__(self) -> None:
        self._lib: Any = None
        try:
            import nftables  # Debian's python3-nftables; not on PyPI

            lib = nftables.Nftables()
            lib.set_json_output(False)
            self._lib = lib
        except (ImportError, OSError):
            if not _nft_command():
                raise FirewallError(
                    "nftables is not available (neither python3-nftables nor the nft command)"
                ) from None

    @property
    def via(self) -> str:
        return "libnftables" if self._lib is not None else "nft -f FILE"

    def run(self, text: str, json_out: bool = False, reading: bool = False) -> str:
        """Run commands as one transaction; FirewallError with nft's message on failure.

        A transaction of more than BIG_TRANSACTION bytes goes to the nft command even where
        libnftables is loaded: parsing it takes libnftables ~44 MiB (a 100k-prefix table), which
        in this process came on top of its own ~40 MiB (83 MiB peak for the first apply of a
        100k list); in a child of its own the peak of the whole run is the larger of the two.
        """
        big = not reading and len(text) > BIG_TRANSACTION and _nft_command()
        if self._lib is not None and not big:
            self._lib.set_json_output(json_out)
            try:
                rc, out, err = self._lib.cmd(text)
            finally:
                self._lib.set_json_output(False)
        else:
            flags = ["-j"] if json_out else []
            if reading:
                # `nft -j -f FILE` prints nothing for list commands: reads go on the command line.
                proc = commands.run(["nft", *flags, *text.split()], check=False,
                                    error=FirewallError)
            else:
                proc = self._run_file(text, flags)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        if rc != 0:
            first = next((ln for ln in (err or "").splitlines() if ln.strip()), f"exit {rc}")
            if reading:
                raise FirewallError(f"nft {text.split(chr(10))[0]!r} failed: {first.strip()}")
            raise FirewallError(f"nft refused the change, nothing was changed: {first.strip()}")
        return out or ""

    @staticmethod
    def _run_file(text: str, flags: list[str]) -> subprocess.CompletedProcess[str]:
        """`nft -f FILE` with the whole transaction written (and flushed) before nft starts.

        FILE is a temporary file without a name (TemporaryFile: O_TMPFILE, mode 0600) that nft
        opens as /proc/self/fd/N, so nobody else can read the ruleset and nothing is left on
        disk, not even when ntpguard is killed while nft runs.
        """
        import tempfile  # here: with shutil and random ~2.5 ms of every apply that needs no file

        with tempfile.TemporaryFile(prefix="ntpguard-nft-") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            fd = fh.fileno()
            return commands.run(["nft", *flags, "-f", f"/proc/self/fd/{fd}"], pass_fds=(fd,),
                                check=False, error=FirewallError)

    def table_exists(self) -> bool:
        out = self.run(f"list tables {FAMILY}", reading=True)
        return any(line.split()[-1:] == [TABLE] for line in out.splitlines()
                   if line.startswith("table "))

    def token(self) -> Optional[int]:
        """The generation token in the kernel's table, or None without table or token.

        `list set` of the tiny generation set in JSON takes 0.1 ms; `list tables` takes 75 ms
        with 100k elements loaded (libnftables fetches every set), so this is the existence test.
        """
        try:
            data = json.loads(self.run(f"list set {FAMILY} {TABLE} generation", json_out=True,
                                       reading=True))
        except (FirewallError, ValueError):
            return None
        for item in data.get("nftables", []):
            elems = item.get("set", {}).get("elem")
            if elems and isinstance(elems[0], int):
                return int(elems[0])
        return None


# The element cache: what ntpguard's last transaction left in the kernel (format 3: small
# sets inline, big packed prefix sets as files of their own beside it, named by their content
# (ntpguard.setstore), so an apply that changed one server rewrites and re-reads none of the
# 100k listed prefixes; formats 1 and 2 are not read: the first apply after an upgrade
# replaces the table whole).
CACHE_FORMAT, CACHE_VERSION = "ntpguard-nft-cache", 3

# A cached set: text elements, or the JSON value naming packed networks (setstore), read only
# when its content is needed (a set whose name matches the new one's digest is not read).
Cached = Union[list[str], dict[str, Any], Networks]


def _load_cache(path: Optional[str]) -> Optional[dict[str, Any]]:
    """{"token", "genid", "skeleton", "digest", "sets", "dir"} of the cache file; None when
    there is none, or it is damaged or of another format (then nothing it says is trusted)."""
    if not path:
        return None
    try:
        # A planted link or a FIFO here must not be followed or hang the apply.
        data = json.loads(read_regular(path, 64 << 20))
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or \
                data.get("version") != CACHE_VERSION:
            return None
        genid = data.get("genid")
        here = nft_gen.scope()
        if here is None or data.get("scope") != here:
            genid = None  # another boot's or namespace's number: it says nothing here
        sets: dict[str, Cached] = {}
        for name, value in data["sets"].items():
            text = isinstance(value, list) and all(isinstance(e, str) for e in value)
            if not (text or isinstance(value, dict)):
                return None
            sets[str(name)] = value
        return {"token": int(data["token"]), "genid": None if genid is None else int(genid),
                "skeleton": str(data["skeleton"]), "digest": str(data["digest"]),
                "sets": sets, "dir": setstore.directory_for(path)}
    except (OSError, ValueError, UnsafePathError, KeyError, TypeError, AttributeError):
        return None  # no trusted cache: the apply replaces the whole table


def _save_cache(path: Optional[str], token: int, genid: Optional[int],
                rendered: Rendered) -> None:
    """Atomic write; a failure only costs the next apply a full replace. `genid`: the
    kernel's generation right after ntpguard's transaction, if nothing else was committed with
    it (None: unknown, so the next check lists the table)."""
    if not path:
        return
    # Nothing here is synced: the cache holds only in this boot (scope), and a set file that
    # is damaged or missing after a crash fails its digest check, so the cache is not used.
    # Syncing a 100k-entry list's set (1.7 MB) was ~0.1 s of a first apply.
    writer = setstore.Writer(setstore.directory_for(path), durable=False)
    sets = {k: writer.encode(v) if isinstance(v, Networks) else list(v)
            for k, v in rendered.sets.items()}
    data = json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION, "token": token,
                       "genid": genid, "scope": nft_gen.scope(), "skeleton": rendered.skeleton,
                       "digest": rendered.digest(), "sets": sets})
    try:
        writer.commit()
        atomic_write(path, data.encode("utf-8"), durable=False)
    except (OSError, UnsafePathError):
        with contextlib.suppress(OSError):
            os.unlink(path)  # an older cache must not outlive the kernel content it described
        return
    setstore.sweep(writer.directory, writer.names)


def _new_token(old: Optional[int]) -> int:
    while True:
        token = int.from_bytes(os.urandom(4), "big")
        if token not in (0, old):  # 1 .. 2**32-1, a new one
            return token


def _changes(old: Cached, new: Elements, directory: str) -> tuple[list[str], list[str]]:
    """(elements to delete, elements to add) from old to new; in text. ValueError if a cached
    set file cannot be read (the caller trusts the cache no further)."""
    if isinstance(old, dict):
        if isinstance(new, Networks) and setstore.same(old, new):
            return [], []
        old = setstore.decode(directory, old)
    if isinstance(old, Networks) and isinstance(new, Networks) and old.family == new.family:
        if old.packed == new.packed:
            return [], []
        before, after = set(old.records()), set(new.records())
        fam = new.family
        return ([ntop(fam, r) for r in sorted(before - after)],
                [ntop(fam, r) for r in sorted(after - before)])
    old_set = set(old)
    new_list = list(new)
    new_set = set(new_list)
    return sorted(old_set - new_set), [e for e in new_list if e not in old_set]


def diff_text(cached: Mapping[str, Any], rendered: Rendered, new_token: int
              ) -> tuple[str, int, int]:
    """The add/delete transaction from cached contents to rendered ones; ("", 0, 0) if equal.

    Deleting an element the kernel lacks aborts the whole transaction (nft checks it), and
    the old token is deleted too: if the kernel drifted from the cache, nothing changes and the
    caller falls back to a full replace. ValueError if a cached set cannot be read.
    """
    parts, added, deleted = [], 0, 0
    for name, elements in rendered.sets.items():
        gone, fresh = _changes(cached["sets"].get(name, []), elements, cached.get("dir", ""))
        if gone:
            parts.append(_delete(name, gone))
            deleted += len(gone)
        if fresh:
            parts.append(_add(name, fresh))
            added += len(fresh)
    if not parts:
        return "", 0, 0
    parts.append(f"delete element {FAMILY} {TABLE} generation {{ {int(cached['token']):#x} }}\n")
    parts.append(f"add element {FAMILY} {TABLE} generation {{ {new_token:#x} }}\n")
    return "".join(parts), added, deleted


def _after(before: Optional[int], after: Optional[int]) -> Optional[int]:
    """The generation to remember after one transaction of ntpguard's: `after` if it is the
    very next one (nothing else was committed with it), else None."""
    return after if before is not None and after == before + 1 else None


class NftBackend:
    """apply / show / remove for `table inet ntpguard`."""

    name = "nft"

    def __init__(self, cache_dir: Optional[str] = None) -> None:
        self.nft = Nft()
        self.cache_path = os.path.join(cache_dir, CACHE_NAME) if cache_dir else None

    @classmethod
    def is_supported(cls) -> bool:
        """libnftables (python3-nftables) or the nft command is there."""
        try:
            import nftables  # noqa: F401 - Debian's python3-nftables
        except (ImportError, OSError):
            return _nft_command()
        return True

    @staticmethod
    def render(plan: Plan) -> str:
        """The exact transaction a full apply would run (token shown as 0x0)."""
        return rules_for(plan).full_text(0)

    def apply(self, plan: Plan, replace: bool = False) -> Result:
        """Make the kernel's table match the plan: no-op, element update, or full replace
        (always the latter with replace=True: the cache cannot see a drifted table). The
        Result is `exact` when the generation shows the kernel holds exactly the plan now."""
        rendered = rules_for(plan)
        cached = _load_cache(self.cache_path)
        kernel_token = self.nft.token()
        before = nft_gen.genid()
        start = time.perf_counter()
        if (not replace and cached and kernel_token is not None
                and cached["token"] == kernel_token
                and cached["skeleton"] == rendered.skeleton):
            # The cache is the kernel's content as ntpguard left it, if nothing was committed
            # since (same generation); else only as far as the token and the diff can tell.
            trusted = before is not None and cached["genid"] == before
            token = _new_token(kernel_token)
            try:
                text, added, deleted = diff_text(cached, rendered, token)
            except ValueError:
                text = None  # a cached set file is gone or damaged: replace below
            if text == "":
                return Result(self.name, "unchanged", exact=trusted,
                              generation=before if trusted else None)
            if text is not None:
                try:
                    self.nft.run(text)
                except FirewallError:
                    pass  # the kernel drifted from the cache: replace the whole table below
                else:
                    after = _after(before, nft_gen.genid())
                    _save_cache(self.cache_path, token, after, rendered)
                    exact = trusted and after is not None
                    return Result(self.name, "updated", time.perf_counter() - start, added,
                                  deleted, exact=exact, generation=after if exact else None)
        token = _new_token(kernel_token)
        self.nft.run(rendered.full_text(token))
        after = _after(before, nft_gen.genid())
        _save_cache(self.cache_path, token, after, rendered)
        return Result(self.name, "replaced" if kernel_token is not None else "created",
                      time.perf_counter() - start, detail=f"table {FAMILY} {TABLE}",
                      exact=True, generation=after)

    def verify(self, plan: Plan) -> Check:
        """Whether the kernel's table is this plan's: its chains (hooks, priorities, policies,
        rule counts) and its sets' elements, read in one listing (~0.6 s with 100k elements;
        a missing table costs one tiny lookup). No listing is needed while the kernel's
        generation is still the one ntpguard's last transaction made (nothing was committed
        since) and that transaction left this very plan (the cache's digest)."""
        token = self.nft.token()
        if token is None:
            try:
                self.nft.run(f"list table {FAMILY} {TABLE}", json_out=True, reading=True)
            except FirewallError as exc:
                if "No such file or directory" in str(exc):
                    return Check(MISSING, f"table {FAMILY} {TABLE} is not in the kernel")
                raise
            return Check(DRIFTED, f"table {FAMILY} {TABLE} has no ntpguard generation token")
        rendered = rules_for(plan)
        cached = _load_cache(self.cache_path)
        ours = cached is not None and cached["token"] == token and \
            cached["digest"] == rendered.digest()
        before = nft_gen.genid()
        if ours and before is not None and cached is not None and cached["genid"] == before:
            return Check(IN_PLACE)
        listing = self.nft.run(f"list table {FAMILY} {TABLE}", json_out=True, reading=True)
        stable = before is not None and nft_gen.genid() == before
        from ntpguard.backends import nft_verify  # only when the table is listed

        problem = nft_verify.compare(rendered.skeleton, rendered.sets, listing)
        if not problem and ours and stable and cached is not None:
            # In place at generation `before`: the next check needs no listing until
            # something is committed again.
            _save_cache(self.cache_path, token, before, rendered)
        return Check(DRIFTED, problem) if problem else Check(IN_PLACE)

    def show(self, full: bool = False) -> str:
        """The table as the kernel has it (without set elements, which can be 100k, unless
        full)."""
        if not self.nft.table_exists():
            return ""
        terse = not full
        if self.nft._lib is not None:
            # libnftables has no per-command terse switch; use its output flag.
            self.nft._lib.set_terse_output(terse)
            try:
                return self.nft.run(f"list table {FAMILY} {TABLE}")
            finally:
                self.nft._lib.set_terse_output(False)
        cmd = ["nft", *(["-t"] if terse else []), "list", "table", FAMILY, TABLE]
        return commands.run(cmd, error=FirewallError).stdout

    def remove(self) -> Result:
        """Delete the table (and only it); the rest of the ruleset stays as it is."""
        if self.cache_path:
            with contextlib.suppress(OSError):
                os.unlink(self.cache_path)
            setstore.sweep(setstore.directory_for(self.cache_path), ())
        if not self.nft.table_exists():
            return Result(self.name, "absent")
        self.nft.run(f"delete table {FAMILY} {TABLE}")
        return Result(self.name, "removed", detail=f"table {FAMILY} {TABLE}")
