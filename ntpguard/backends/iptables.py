"""Legacy ip6tables/iptables backend: python-iptables (iptc) chains + ipset hash:net sets.

For hosts whose firewall is iptables-legacy, where an nft table would sit beside the admin's
rules unseen. Chains NTPGUARD-OUT, NTPGUARD-IN and (gateway mode) NTPGUARD-FWD live in the filter
table of both ip6tables and iptables, each entered by exactly one jump at the top of OUTPUT,
INPUT, FORWARD. Addresses live in ipsets, refilled by building a new set and `ipset swap`.

All or nothing: the filter tables are saved first (`*-legacy-save`); a failure after anything
changed restores them (`*-legacy-restore`, which replaces the table in one step) and swaps the
old set contents back. python-iptables' known limits are turned into FirewallErrors: it drives
only x_tables (legacy; its maintainers confirm it in its issues); NFLOG with a prefix corrupts
its heap (we never build NFLOG); rule objects go stale after a commit (we rebuild and
`refresh()`), and with autocommit off the next commit fails with EAGAIN unless the table is
refreshed; Debian 13's version fails to parse `udp dport` (upstream issue #353; detected while
building rules, before any change).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import field
from typing import Any, Optional

from ntpguard import commands
from ntpguard.backends import DRIFTED, IN_PLACE, MISSING, Check, Result
from ntpguard.errors import FirewallError
from ntpguard.plan import PROBE_MARK, Plan
from ntpguard.records import record

CHAINS = {"OUTPUT": "NTPGUARD-OUT", "INPUT": "NTPGUARD-IN", "FORWARD": "NTPGUARD-FWD"}
LOG_NTP_OUT = "ntpguard-ntp-out: "
LOG_NTP_FWD = "ntpguard-ntp-fwd: "
LOG_IN = "ntpguard-in: "
LOG_FWD_IN = "ntpguard-fwd-in: "
REJECT = {6: "icmp6-adm-prohibited", 4: "icmp-admin-prohibited"}
SAVE = {6: "ip6tables-legacy-save", 4: "iptables-legacy-save"}
RESTORE = {6: "ip6tables-legacy-restore", 4: "iptables-legacy-restore"}
log = logging.getLogger("ntpguard")


def set_name(kind: str, family: int) -> str:
    return f"ntpguard-{kind}{family}"


def _temp(name: str) -> str:
    """The twin filled beside a live set, then swapped with it (ipset names: <= 31 chars)."""
    return f"{name}-new"


@record
class XRule:
    """One rule, from which both the iptc object and its iptables-save line are made."""

    target: str
    proto: str = ""
    iface: tuple[str, ...] = ()  # ("in"|"out", name) or ()
    matches: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    target_opts: tuple[tuple[str, str], ...] = ()

    def save_line(self, chain: str) -> str:
        """The line `iptables-save` prints for this rule (the idempotency check compares it)."""
        parts = [f"-A {chain}"]
        if self.iface:
            parts.append(f"-{'i' if self.iface[0] == 'in' else 'o'} {self.iface[1]}")
        if self.proto:
            parts.append(f"-p {self.proto}")
        for name, opts in self.matches:
            parts.append(f"-m {name}")
            for key, value in opts:
                parts.append(_save_opt(name, key, value))
        parts.append(f"-j {self.target}")
        for key, value in self.target_opts:
            parts.append(f'--{key.replace("_", "-")} "{value}"' if key == "log_prefix"
                         else f"--{key.replace('_', '-')} {value}")
        return " ".join(parts)


def _save_opt(match: str, key: str, value: str) -> str:
    if match == "limit" and key == "limit":
        number, unit = value.split("/")
        return f"--limit {number}/{unit[:3]}"
    if match == "set" and key == "match_set":
        return f"--match-set {value}"
    return f"--{key.replace('_', '-')} {value}"


@record(frozen=False)
class Rendered:
    """Per family: our chains' save lines, the hooks we jump from, and each set's members."""

    chains: dict[int, dict[str, list[XRule]]] = field(default_factory=dict)
    sets: dict[str, tuple[int, list[str]]] = field(default_factory=dict)

    def text(self) -> str:
        """What `--dry-run` prints: ipset contents and iptables-save lines, per family."""
        out = []
        for name, (fam, members) in self.sets.items():
            out.append(f"create {name} hash:net family {'inet6' if fam == 6 else 'inet'}")
            out += [f"add {name} {m}" for m in members]
        for fam in (6, 4):
            out.append(f"# {'ip6tables' if fam == 6 else 'iptables'} filter table")
            for hook, chain in CHAINS.items():
                if chain in self.chains[fam]:
                    out.append(f":{chain} - [0:0]")
                    out.append(f"-I {hook} 1 -j {chain}")
            for chain, rules in self.chains[fam].items():
                out += [r.save_line(chain) for r in rules]
        return "\n".join(out) + "\n"


def rules_for(plan: Plan) -> Rendered:
    """Chains and sets for a plan (pure)."""
    if plan.log and plan.log_group:
        raise FirewallError(
            "rules.log_group (NFLOG) is not supported by the iptables backend: python-iptables "
            "corrupts its heap on NFLOG prefixes; use log_group = 0 or the nft backend"
        )
    out = Rendered()
    for fam in (6, 4):
        out.sets[set_name("clean", fam)] = (fam, list(plan.clean6 if fam == 6 else plan.clean4))
        if plan.unknown != "block":
            out.sets[set_name("harv", fam)] = (fam, [
                n if s.full else f"{n}/{s.length}"
                for s in plan.harvesters if s.family == fam for n in s.networks])
        out.sets[set_name("scan", fam)] = (fam, [
            n if s.full else f"{n}/{s.length}"
            for s in plan.scanners if s.family == fam for n in s.networks])

    def log(prefix: str, *matches: Any) -> list[XRule]:
        if not plan.log:
            return []
        limit = ("limit", (("limit", f"{plan.log_rate}/second"),
                           ("limit_burst", str(plan.log_burst))))
        return [XRule("LOG", m[0], (), (*m[1:], limit), (("log_prefix", prefix),))
                for m in matches]

    for fam in (6, 4):
        udp123 = ("udp", ("udp", (("dport", "123"),)))
        reply = ("conntrack", (("ctdir", "REPLY"),))
        new = ("conntrack", (("ctstate", "NEW"),))
        # Usable servers first: one the admin (or this host's evidence) cleared stays reachable
        # inside a listed harvester prefix.
        deny = [XRule("RETURN", "udp", (), (udp123[1], ("set", (
            ("match_set", f"{set_name('clean', fam)} dst"),))))]
        if plan.unknown == "block":
            deny.append(XRule("REJECT", "udp", (), (udp123[1],),
                              (("reject_with", REJECT[fam]),)))
        else:
            deny.append(XRule("REJECT", "udp", (), (udp123[1], ("set", (
                ("match_set", f"{set_name('harv', fam)} dst"),))), (("reject_with", REJECT[fam]),)))
        drop = XRule("DROP", "", (), (("set", (("match_set", f"{set_name('scan', fam)} src"),)),))
        # Scanner ingress is unsolicited traffic only: replies to what this host sent pass.
        established = XRule("RETURN", "", (),
                            (("conntrack", (("ctstate", "RELATED,ESTABLISHED"),)),))
        ntp_reply = XRule("RETURN", "udp", (), (udp123[1], reply))
        # ntpguard's own probes (logged above) may reach the servers they confirm.
        probe = XRule("RETURN", "", (), (("mark", (("mark", f"{PROBE_MARK:#x}"),)),))

        def ntp_log(prefix: str, udp: Any = udp123) -> list[XRule]:
            return log(prefix, (udp[0], udp[1]))

        chains = {
            "NTPGUARD-OUT": [XRule("RETURN", "", ("out", "lo")), ntp_reply,
                             *ntp_log(LOG_NTP_OUT), probe, *deny],
            "NTPGUARD-IN": [XRule("RETURN", "", ("in", "lo")),
                            *log(LOG_IN, ("tcp", new), ("udp", new)), established, drop],
        }
        if plan.gateway:
            chains["NTPGUARD-FWD"] = [
                *log(LOG_FWD_IN, ("tcp", new), ("udp", new)), established, drop, ntp_reply,
                *ntp_log(LOG_NTP_FWD), *deny,
            ]
        out.chains[fam] = chains
    return out


# -- side effects ----------------------------------------------------------------------------


def _cmd(*cmd: str, input: Optional[str] = None, check: bool = True) -> str:
    return commands.run(cmd, input=input, check=check, error=FirewallError).stdout


def _import_iptc() -> Any:
    try:
        import iptc  # python3-iptables; imports run ldconfig/modprobe (~0.35 s)
    except Exception as exc:  # the import itself can fail in several ways (XTablesError, OSError)
        raise FirewallError(
            f"the iptables backend needs python3-iptables (python-iptables): {exc}"
        ) from None
    return iptc


def _save(fam: int) -> str:
    return _cmd(SAVE[fam], "-t", "filter")


def _our_lines(save_text: str) -> dict[str, list[str]]:
    """Save lines by chain, for our chains and the jumps into them."""
    out: dict[str, list[str]] = {}
    for line in save_text.splitlines():
        if line.startswith("-A "):
            chain = line.split()[1]
            out.setdefault(chain, []).append(line)
    return out


def _set_members(name: str) -> Optional[set[str]]:
    proc = commands.run(["ipset", "save", name], check=False, error=FirewallError)
    if proc.returncode != 0:
        return None
    members = set()
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "add":
            m = parts[2]
            members.add(re.sub(r"/(128|32)$", "", m) if "/" in m else m)
    return members


class IptablesBackend:
    """apply / show / remove for the NTPGUARD chains and ntpguard-* ipsets."""

    name = "iptables"

    def __init__(self, cache_dir: Optional[str] = None) -> None:
        # cache_dir: unused; ipset and iptables-save show the kernel's state quickly enough.
        for tool in ("ipset", SAVE[6], RESTORE[6], SAVE[4], RESTORE[4]):
            if not commands.which(tool):
                raise FirewallError(f"the iptables backend needs {tool} (packages iptables, ipset)")
        self.iptc = _import_iptc()

    @classmethod
    def is_supported(cls) -> bool:
        """python-iptables imports and the legacy tools and ipset are installed."""
        if not all(commands.which(t) for t in ("ipset", SAVE[6], RESTORE[6], SAVE[4], RESTORE[4])):
            return False
        try:
            _import_iptc()
        except FirewallError:
            return False
        return True

    @staticmethod
    def render(plan: Plan) -> str:
        """What `--dry-run` prints: ipset contents and iptables-save lines, per family."""
        return rules_for(plan).text()

    # -- reading

    def _in_place(self, rendered: Rendered) -> bool:
        """True when the kernel already holds exactly these chains, jumps and set members."""
        for fam in (6, 4):
            lines = _our_lines(_save(fam))
            for hook, chain in CHAINS.items():
                want = chain in rendered.chains[fam]
                jumps = [ln for ln in lines.get(hook, []) if ln.split()[-1] == chain]
                if want and (len(jumps) != 1 or lines[hook][0] != jumps[0]):
                    return False
                if not want and (jumps or chain in lines):
                    return False
            for chain, rules in rendered.chains[fam].items():
                if lines.get(chain, []) != [r.save_line(chain) for r in rules]:
                    return False
        existing = {n for n in _cmd("ipset", "list", "-n").split() if n.startswith("ntpguard-")}
        if existing != set(rendered.sets):
            return False
        for name, (_, members) in rendered.sets.items():
            if _set_members(name) != {re.sub(r"/(128|32)$", "", m) for m in members}:
                return False
        return True

    # -- writing

    def _rule(self, fam: int, spec: XRule) -> Any:
        iptc = self.iptc
        rule = iptc.Rule6() if fam == 6 else iptc.Rule()
        try:
            if spec.proto:
                rule.protocol = spec.proto
            if spec.iface and spec.iface[0] == "in":
                rule.in_interface = spec.iface[1]
            elif spec.iface:
                rule.out_interface = spec.iface[1]
            for name, opts in spec.matches:
                match = rule.create_match(name)
                for key, value in opts:
                    setattr(match, key, value.split() if key == "match_set" else value)
            target = rule.create_target(spec.target)
            for key, value in spec.target_opts:
                setattr(target, key, value)
        except Exception as exc:  # XTablesError/ValueError from libxtables, e.g. issue #353
            detail = str(exc)
            hint = (" (python-iptables issue #353 on Debian 13: use --backend nft)"
                    if "dport" in detail else "")
            raise FirewallError(f"python-iptables cannot build an ntpguard rule: {detail}{hint}") \
                from None
        return rule

    def _build(self, rendered: Rendered) -> dict[int, dict[str, list[Any]]]:
        """Every iptc rule object, before anything changes (catches libxtables errors early)."""
        return {fam: {chain: [self._rule(fam, r) for r in rules]
                      for chain, rules in chains.items()}
                for fam, chains in rendered.chains.items()}

    def _table(self, fam: int) -> Any:
        iptc = self.iptc
        table = (iptc.Table6(iptc.Table6.FILTER) if fam == 6 else iptc.Table(iptc.Table.FILTER))
        table.autocommit = False
        table.refresh()
        return table

    def _commit_table(self, fam: int, chains: dict[str, list[Any]]) -> None:
        """Replace our chains and jumps in one family's filter table: one commit."""
        iptc = self.iptc
        table = self._table(fam)
        try:
            for hook, chain in CHAINS.items():
                base = iptc.Chain(table, hook)
                for rule in list(base.rules):
                    if rule.target.name == chain:
                        base.delete_rule(rule)
            for chain in CHAINS.values():
                if table.is_chain(chain):
                    table.flush_entries(chain)
                    if chain not in chains:
                        table.delete_chain(chain)
            for chain, rules in chains.items():
                c = iptc.Chain(table, chain) if table.is_chain(chain) else table.create_chain(chain)
                for rule in rules:
                    c.append_rule(rule)
            for hook, chain in CHAINS.items():
                if chain in chains:
                    jump = iptc.Rule6() if fam == 6 else iptc.Rule()
                    jump.create_target(chain)
                    iptc.Chain(table, hook).insert_rule(jump)
            table.commit()
        except iptc.IPTCError as exc:
            raise FirewallError(f"{'ip6tables' if fam == 6 else 'iptables'} commit failed: "
                                f"{exc}") from None
        finally:
            table.refresh()  # python-iptables: the next commit fails with EAGAIN otherwise

    def _fill_sets(self, rendered: Rendered) -> list[str]:
        """Create every set (new ones empty) and a filled -new twin; return the live names made."""
        existing = set(_cmd("ipset", "list", "-n").split())
        made, script = [], []
        for name, (fam, members) in rendered.sets.items():
            family = "inet6" if fam == 6 else "inet"
            maxelem = max(65536, 1 << (len(members) * 2).bit_length())
            if name not in existing:
                script.append(f"create {name} hash:net family {family} maxelem {maxelem}")
                made.append(name)
            temp = _temp(name)
            if temp in existing:
                script.append(f"destroy {temp}")
            script.append(f"create {temp} hash:net family {family} maxelem {maxelem}")
            script += [f"add {temp} {m}" for m in members]
        try:
            _cmd("ipset", "restore", input="\n".join(script) + "\n")
        except FirewallError:
            self._destroy_quietly([_temp(n) for n in rendered.sets] + made)
            raise
        return made

    @staticmethod
    def _destroy_quietly(names: list[str]) -> None:
        for name in names:
            _cmd("ipset", "destroy", name, check=False)

    @staticmethod
    def _swap(rendered: Rendered) -> None:
        for name in rendered.sets:
            _cmd("ipset", "swap", _temp(name), name)

    def apply(self, plan: Plan, replace: bool = False) -> Result:
        """Make the kernel match the plan; on any failure restore what was there. (replace
        changes nothing here: the kernel itself, not a cache, is compared with the plan.)"""
        rendered = rules_for(plan)
        if self._in_place(rendered):
            return Result(self.name, "unchanged")
        from ntpguard.backends import iptables_is_legacy

        # Said when rules are written, not by every use of the backend (a `rules remove`
        # on an nft host removes what it finds here too, and writes nothing).
        if not iptables_is_legacy():
            log.warning("the iptables backend writes iptables-legacy rules; this host's `iptables`"
                        " is nf_tables, so `iptables -L` and `nft list ruleset` will not show"
                        " them (the kernel enforces them all the same); see `ntpguard rules show`")
        start = time.perf_counter()
        saved = {fam: _save(fam) for fam in (6, 4)}
        # Sets first: libxt_set refuses to build a rule naming a set that does not exist.
        made = self._fill_sets(rendered)
        swapped = committed = False
        try:
            built = self._build(rendered)
            self._swap(rendered)
            swapped = True
            committed = True
            for fam in (6, 4):
                self._commit_table(fam, built[fam])
        except BaseException:
            if committed:
                _restore(saved)
            if swapped:
                self._swap(rendered)  # the -new twins hold the previous members
            self._destroy_quietly([_temp(n) for n in rendered.sets] + made)
            raise
        self._destroy_quietly([_temp(n) for n in rendered.sets])
        stale = {n for n in _cmd("ipset", "list", "-n").split()
                 if n.startswith("ntpguard-")} - set(rendered.sets)
        self._destroy_quietly(sorted(stale))
        return Result(self.name, "replaced", time.perf_counter() - start,
                      detail="chains and sets")

    def verify(self, plan: Plan) -> Check:
        """In place: exactly the plan's chains, jumps (first in their hooks) and set members;
        missing: none of ntpguard's chains, jumps or sets; else drifted."""
        if self._in_place(rules_for(plan)):
            return Check(IN_PLACE)
        ours = any(chain in lines or any(ln.split()[-1] == chain for ln in lines.get(hook, []))
                   for fam in (6, 4) for lines in [_our_lines(_save(fam))]
                   for hook, chain in CHAINS.items())
        sets = [n for n in _cmd("ipset", "list", "-n").split() if n.startswith("ntpguard-")]
        if not ours and not sets:
            return Check(MISSING, "no NTPGUARD chains or ntpguard ipsets in the kernel")
        return Check(DRIFTED, "the NTPGUARD chains, their jumps or the ntpguard ipsets differ "
                              "from the plan")

    def show(self, full: bool = False) -> str:
        """Our jumps, chains and set sizes (full: every set member too)."""
        out = []
        for fam in (6, 4):
            lines = _our_lines(_save(fam))
            for hook, chain in CHAINS.items():
                out += [ln for ln in lines.get(hook, []) if ln.split()[-1] == chain]
            for chain in CHAINS.values():
                out += lines.get(chain, [])
        for name in sorted(n for n in _cmd("ipset", "list", "-n").split()
                           if n.startswith("ntpguard-")):
            members = sorted(_set_members(name) or ())
            out.append(f"# ipset {name}: {len(members)} members")
            if full:
                out += [f"#   {m}" for m in members]
        return "\n".join(out) + ("\n" if out else "")

    def remove(self) -> Result:
        """Delete jumps, chains and sets; restore the saved tables if anything fails."""
        saved = {fam: _save(fam) for fam in (6, 4)}
        present = any(chain in _our_lines(saved[fam]) or f":{chain} " in saved[fam]
                      for fam in (6, 4) for chain in CHAINS.values())
        sets = [n for n in _cmd("ipset", "list", "-n").split() if n.startswith("ntpguard-")]
        if not present and not sets:
            return Result(self.name, "absent")
        try:
            for fam in (6, 4):
                self._commit_table(fam, {})
        except BaseException:
            _restore(saved)
            raise
        self._destroy_quietly(sets)
        return Result(self.name, "removed", detail="chains and sets")


def _restore(saved: dict[int, str]) -> None:
    """Put both filter tables back as saved (each in one step); best effort, as it runs while
    another failure is being reported."""
    for fam in (6, 4):
        with contextlib.suppress(FirewallError):
            _cmd(RESTORE[fam], input=saved[fam], check=False)
