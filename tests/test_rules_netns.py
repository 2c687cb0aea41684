"""The rule writer against real netfilter: real packets between network namespaces, both backends.

Topology (all namespaces prefixed ntpg-r-; nothing touches the root namespace's firewall):

    lan (client, 2001:db8:2::10)  --  host (ntpguard; router in gateway mode)  --  net
                                                                      net's lo: NTP servers
    (one chronyd -x), a scanner source in 2001:db8:666::/48 and 203.0.113.0/24, a clean source.

ntpguard runs as `python -m ntpguard rules ...` inside `host`, reading a state directory and a
shared list prepared here. The admin's own rules (an nft table, an ip6tables rule, an ipset) are
in place before ntpguard, so "remove restores exactly" compares against a non-empty ruleset.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from lab.netns import Lab, Namespace
from lab.world import start_chrony_server
from ntpguard.plan import PROBE_MARK
from ntpguard.status import Verdict

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "ntpg-r-t-"

CLEAN6, HARV6, UNKNOWN6 = "2001:db8:100::1", "2001:db8:100::2", "2001:db8:100::3"
CLEAN4, HARV4 = "198.51.100.1", "198.51.100.2"
SCANNER6, OTHER6 = "2001:db8:666::5", "2001:db8:777::5"
SCANNER4, OTHER4 = "203.0.113.5", "198.51.100.9"
HOST6, HOST4, NET6, NET4 = "2001:db8:1::2", "192.0.2.2", "2001:db8:1::1", "192.0.2.1"
LAN6, LAN4 = "2001:db8:2::10", "198.18.0.10"
ROUTER_LAN6, ROUTER_LAN4 = "2001:db8:2::1", "198.18.0.1"

# TCP 22 ("SSH") and UDP 53 ("DNS") on every address of a namespace, dual-stack.
SERVICES = textwrap.dedent("""
    import socket, threading
    def tcp():
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", 22)); s.listen(64)
        while True:
            c, _ = s.accept(); c.close()
    def udp():
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 53))
        while True:
            data, peer = s.recvfrom(2048); s.sendto(data, peer)
    threading.Thread(target=tcp, daemon=True).start()
    udp()
""")

PROBE = textwrap.dedent("""
    import json, socket, sys
    kind, src, dst, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(1.5)
    if src != "-":
        s.bind((src, 0))
    try:
        if kind == "tcp":
            s.connect((dst, port)); print("ok")
        else:
            s.sendto(b"ntpguard-probe", (dst, port)); s.recvfrom(100); print("ok")
    except socket.timeout:
        print("timeout")
    except OSError as exc:
        print(f"errno{exc.errno}")
""")


def probe(ns: Namespace, kind: str, dst: str, port: int, src: str = "-") -> str:
    return ns.run(sys.executable, "-c", PROBE, kind, src, dst, str(port), timeout=20).stdout.strip()


def ntp_ok(ns: Namespace, server: str) -> bool:
    out = ns.run("ntpdate", "-q", "-t", "1", server, check=False, timeout=15)
    return out.returncode == 0


def ntp_errno(ns: Namespace, server: str) -> str:
    """A bare NTP request; a locally generated packet hit by reject fails at once with EPERM."""
    return probe(ns, "udp", server, 123)


class RulesLab:
    def __init__(self, lab: Lab, workdir: Path, backend: str) -> None:
        self.lab, self.workdir, self.backend = lab, workdir, backend
        self.host, self.net, self.lan = lab.ns("host"), lab.ns("net"), lab.ns("lan")
        lab.link(self.host, "eth0", self.net, "eth0")
        lab.link(self.host, "eth1", self.lan, "eth0")
        self.host.addr("eth0", f"{HOST6}/64")
        self.host.addr("eth0", f"{HOST4}/24")
        self.net.addr("eth0", f"{NET6}/64")
        self.net.addr("eth0", f"{NET4}/24")
        for a in (CLEAN6, HARV6, UNKNOWN6, SCANNER6, OTHER6):
            self.net.addr("lo", f"{a}/128")
        for a in (CLEAN4, HARV4, SCANNER4, OTHER4):
            self.net.addr("lo", f"{a}/32")
        self.host.run("ip", "-6", "route", "add", "default", "via", NET6)
        self.host.run("ip", "route", "add", "default", "via", NET4)
        self.host.addr("eth1", f"{ROUTER_LAN6}/64")
        self.host.addr("eth1", f"{ROUTER_LAN4}/24")
        self.lan.addr("eth0", f"{LAN6}/64")
        self.lan.addr("eth0", f"{LAN4}/24")
        self.lan.run("ip", "-6", "route", "add", "default", "via", ROUTER_LAN6)
        self.lan.run("ip", "route", "add", "default", "via", ROUTER_LAN4)
        self.net.run("ip", "-6", "route", "add", "2001:db8:2::/64", "via", HOST6)
        self.net.run("ip", "route", "add", "198.18.0.0/24", "via", HOST4)
        self.host.sysctl("net.ipv6.conf.all.forwarding", "1")
        self.host.sysctl("net.ipv4.ip_forward", "1")
        # One chronyd -x (no bindaddress) answers on every server address of the namespace.
        (workdir / "chrony").mkdir()
        start_chrony_server(self.net, workdir / "chrony")
        for ns in (self.net, self.host, self.lan):
            ns.popen([sys.executable, "-c", SERVICES])
        deadline = time.time() + 15
        while not ntp_ok(self.host, CLEAN6):
            if time.time() > deadline:
                raise RuntimeError("lab chronyd does not answer")
            time.sleep(0.2)
        # The admin's own rules, which ntpguard must leave exactly as they are.
        self.host.run("nft", "-f", "-", input=(
            "table inet admin {\n chain input {\n  type filter hook input priority 10;\n"
            "  tcp dport 2222 accept\n }\n}\n"))
        self.host.run("ip6tables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "2222",
                      "-j", "ACCEPT")
        self.host.run("iptables-legacy", "-A", "OUTPUT", "-p", "tcp", "--dport", "2222",
                      "-j", "ACCEPT")
        self.host.run("ipset", "create", "admin-set", "hash:ip", "family", "inet6")
        self.host.run("ipset", "add", "admin-set", "2001:db8:9::9")
        self.state = workdir / "state"
        self.make_state(self.state, clean=True)

    def make_state(self, state_dir: Path, clean: bool) -> None:
        from ntpguard import lists
        from ntpguard.state import State

        now = time.time()
        with State.open(str(state_dir)) as st:
            servers6 = [(HARV6, 6)] + ([(CLEAN6, 6)] if clean else [])
            servers4 = [(HARV4, 4)] + ([(CLEAN4, 4)] if clean else [])
            st.record_answer("2.debian.pool.ntp.org", "AAAA", servers6, now)
            st.record_answer("2.debian.pool.ntp.org", "A", servers4, now)
            st.add_verdict(Verdict.of(HARV6, "harvester", "manual", {}, now))
            st.add_verdict(Verdict.of(HARV4, "harvester", "detect", {}, now))
        limits = lists.Limits(allow_nonglobal=True)
        parsed = lists.parse(b"2001:db8:666::/48 scanner\n203.0.113.0/24 scanner\n",
                             "lab-scanners", limits, "text")
        lists.store(str(state_dir), "lab", parsed, {"source": "lab", "trust": "enforce"})

    @contextlib.contextmanager
    def verdict(self, address: str, status: str, source: str, then: str) -> Iterator[None]:
        """The state says `status` for address during the block, `then` after it (later
        times, so each is the newest verdict of its source)."""
        from ntpguard.state import State

        with State.open(str(self.state)) as st:
            st.add_verdict(Verdict.of(address, status, source, {}, self._later()))
        try:
            yield
        finally:
            with State.open(str(self.state)) as st:
                st.add_verdict(Verdict.of(address, then, source, {}, self._later()))

    def _later(self) -> float:
        """A verdict time after every one this lab gave before (tests share the lab)."""
        self._clock = max(getattr(self, "_clock", 0.0), time.time()) + 10
        return self._clock

    def config(self, mode: str = "host", **extra: str) -> Path:
        path = self.workdir / f"ntpguard-{mode}.toml"
        lines = ["[lists]", "builtin = false", "allow_nonglobal = true", "[rules]",
                 f'backend = "{self.backend}"', f'mode = "{mode}"']
        lines += [f"{k} = {v}" for k, v in extra.items()]
        # These tests are about the rules themselves; tests/test_canary_netns.py adds canaries.
        lines += ["[canary]", 'mode = "off"']
        path.write_text("\n".join(lines) + "\n")
        return path

    def ntpguard(self, *args: str, mode: str = "host", state: Path | None = None,
                 check: bool = True) -> subprocess.CompletedProcess:
        env = ["env", f"PYTHONPATH={ROOT}", f"NTPGUARD_STATE_DIR={state or self.state}",
               f"NTPGUARD_CONFIG={self.config(mode)}"]
        proc = self.host.run(*env, sys.executable, "-m", "ntpguard", *args, check=False,
                             timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"ntpguard {' '.join(args)} failed: {proc.stderr}")
        return proc

    def snapshot(self) -> dict[str, str]:
        """Everything ntpguard may touch, with counters and timestamps blanked."""
        out = {"nft": self.host.run("nft", "list", "ruleset").stdout,
               "ipset": self.host.run("ipset", "save").stdout}
        for tool in ("ip6tables-legacy-save", "iptables-legacy-save"):
            text = self.host.run(tool).stdout
            text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
            out[tool] = "\n".join(_used_tables(re.sub(r"\[\d+:\d+\]", "[0:0]", text)))
        out["nft"] = re.sub(r"packets \d+ bytes \d+", "packets 0 bytes 0", out["nft"])
        return out

    def library(self, script: str) -> subprocess.CompletedProcess:
        """Run Python inside `host` with the library importable (for fault injection)."""
        code = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(script)
        return self.host.run("env", f"NTPGUARD_STATE_DIR={self.state}", sys.executable, "-c",
                             code, check=False, timeout=120)


def _used_tables(save: str) -> list[str]:
    """The tables of iptables-save output that hold a rule, a chain of their own or a policy
    other than ACCEPT: python-iptables makes the kernel load every table it looks at (nat,
    mangle, raw, security), empty, which filters nothing; which of them exist depends on what
    ran before in the namespace."""
    kept = []
    for table in re.split(r"\n(?=\*)", save.strip()):
        lines = table.splitlines()
        if any(ln.startswith("-A") or (ln.startswith(":") and " ACCEPT " not in ln)
               for ln in lines):
            kept.append(table)
    return kept


@pytest.fixture(scope="module", params=["nft", "iptables"])
def rlab(request, tmp_path_factory):
    if not shutil.which("chronyd") or not shutil.which("ntpdate"):
        pytest.skip("needs chrony and ntpsec-ntpdate")
    workdir = tmp_path_factory.mktemp(f"rules-{request.param}")
    os.chmod(workdir, 0o755)
    with Lab(PREFIX) as lab:
        yield RulesLab(lab, workdir, request.param)


@pytest.fixture
def clean_rules(rlab):
    """Every test starts and ends without ntpguard rules."""
    rlab.ntpguard("rules", "remove", "--backend", rlab.backend)
    yield rlab
    rlab.ntpguard("rules", "remove", "--backend", rlab.backend)


def test_host_mode_ntp_scanners_ssh_dns(clean_rules):
    r = clean_rules
    assert ntp_ok(r.host, HARV6) and ntp_ok(r.host, UNKNOWN6)  # open before ntpguard
    assert probe(r.net, "tcp", HOST6, 22, src=SCANNER6) == "ok"
    out = r.ntpguard("rules", "apply")
    assert "usable servers: 1 IPv6, 1 IPv4" in out.stdout
    # NTP: clean servers answer (a real chronyd), harvesters and unknown servers are rejected.
    assert ntp_ok(r.host, CLEAN6) and ntp_ok(r.host, CLEAN4)
    for server in (HARV6, UNKNOWN6, HARV4):
        assert not ntp_ok(r.host, server), server
        assert ntp_errno(r.host, server) == "errno1", server  # EPERM: rejected at once
    # Scanner prefixes: SYN dropped (both families); any other source passes.
    assert probe(r.net, "tcp", HOST6, 22, src=SCANNER6) == "timeout"
    assert probe(r.net, "tcp", HOST4, 22, src=SCANNER4) == "timeout"
    assert probe(r.net, "tcp", HOST6, 22, src=OTHER6) == "ok"
    assert probe(r.net, "tcp", HOST4, 22, src=OTHER4) == "ok"
    # SSH and DNS, both directions, never affected.
    assert probe(r.host, "tcp", NET6, 22) == "ok"
    assert probe(r.host, "tcp", NET4, 22) == "ok"
    assert probe(r.host, "udp", NET6, 53) == "ok"
    assert probe(r.host, "udp", NET4, 53) == "ok"
    assert probe(r.net, "udp", HOST6, 53, src=OTHER6) == "ok"
    # ntpguard's own probes carry PROBE_MARK and may reach a blocked server; nothing else may.
    assert marked_ntp(r.host, HARV6, PROBE_MARK) == "answered"
    assert marked_ntp(r.host, HARV6, PROBE_MARK + 1).startswith("errno")


MARKED_NTP = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, int(sys.argv[2]))
s.settimeout(3)
try:
    s.sendto(b"\x23" + b"\0" * 47, (sys.argv[1], 123))
    s.recvfrom(512)
    print("answered")
except OSError as exc:
    print(f"errno{exc.errno}" if exc.errno else "timeout")
"""


def marked_ntp(ns: Namespace, server: str, mark: int) -> str:
    """One SNTP request with SO_MARK set, as `ntpguard probe` sends it."""
    return ns.run(sys.executable, "-c", MARKED_NTP, server, str(mark), timeout=15).stdout.strip()


def test_reapply_is_noop_and_remove_restores_exactly(clean_rules):
    r = clean_rules
    from ntpguard.backends import iptables_is_legacy

    before = r.snapshot()
    first = r.ntpguard("rules", "apply")
    applied = r.snapshot()
    assert applied != before
    # Writing legacy rules on a host whose `iptables` is nf_tables is said; removing is not.
    warning = "writes iptables-legacy rules"
    assert (warning in first.stderr) == (r.backend == "iptables" and not iptables_is_legacy())
    again = r.ntpguard("rules", "apply")
    assert "nothing changed" in again.stdout
    assert r.snapshot() == applied
    shown = r.ntpguard("rules", "show")
    assert ("NTPGUARD-OUT" if r.backend == "iptables" else "table inet ntpguard") in shown.stdout
    removed = r.ntpguard("rules", "remove", "--backend", r.backend)
    assert warning not in removed.stderr
    assert r.snapshot() == before


def test_gateway_mode_protects_lan(clean_rules):
    r = clean_rules
    r.ntpguard("rules", "apply", mode="gateway")
    assert ntp_ok(r.lan, CLEAN6) and ntp_ok(r.lan, CLEAN4)
    assert not ntp_ok(r.lan, HARV6) and not ntp_ok(r.lan, UNKNOWN6)
    assert not ntp_ok(r.lan, HARV4)
    assert probe(r.net, "tcp", LAN6, 22, src=SCANNER6) == "timeout"
    assert probe(r.net, "tcp", LAN4, 22, src=SCANNER4) == "timeout"
    assert probe(r.net, "tcp", LAN6, 22, src=OTHER6) == "ok"
    assert probe(r.lan, "tcp", NET6, 22) == "ok"
    assert probe(r.lan, "udp", NET6, 53) == "ok"
    assert probe(r.lan, "udp", NET4, 53) == "ok"
    # Host mode leaves forwarded traffic alone.
    r.ntpguard("rules", "apply", mode="host")
    assert ntp_ok(r.lan, HARV6)
    assert probe(r.net, "tcp", LAN6, 22, src=SCANNER6) == "ok"


def test_no_clean_server_keeps_previous_rules(clean_rules):
    r = clean_rules
    r.ntpguard("rules", "apply")
    applied = r.snapshot()
    empty = r.workdir / "state-noclean"
    if not empty.exists():
        r.make_state(empty, clean=False)
    proc = r.ntpguard("rules", "apply", state=empty, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("ntpguard: no usable NTP server")
    assert "Traceback" not in proc.stderr
    assert r.snapshot() == applied
    forced = r.ntpguard("rules", "apply", "--force", state=empty)
    assert "forced" in forced.stdout
    assert not ntp_ok(r.host, CLEAN6)  # forced: now nothing is clean


def test_failed_apply_changes_nothing(clean_rules):
    r = clean_rules
    r.ntpguard("rules", "apply")
    applied = r.snapshot()
    # A changed plan (other sets, other chains) whose apply fails midway: after the sets were
    # swapped and the IPv6 table committed (iptables), or in the transaction's last line (nft).
    script = f"""
        from ntpguard import plan as P
        from ntpguard import status as S
        from ntpguard.config import Rules
        from ntpguard.errors import FirewallError
        new = P.build([S.ServerStatus.of({CLEAN6!r}, "clean"),
                       S.ServerStatus.of({UNKNOWN6!r}, "clean")],
                      [P.PrefixEntry("2001:db8:555::/48", "t")], [],
                      Rules(mode="gateway", log=False), P.HostFacts())
        if {r.backend!r} == "nft":
            from ntpguard.backends import nft
            real = nft.Rendered.full_text
            nft.Rendered.full_text = lambda self, token: (
                real(self, token) + "add element inet ntpguard scan6_48 {{ 2001:db8:: }}\\n"
                + "add element inet ntpguard nosuchset {{ 2001:db8::1 }}\\n")
            b = nft.NftBackend({str(r.state)!r})
            b.cache_path = None  # force the full-replace path
        else:
            from ntpguard.backends import iptables
            real = iptables.IptablesBackend._commit_table
            def failing(self, fam, chains):
                if fam == 4:
                    raise FirewallError("injected failure")
                return real(self, fam, chains)
            iptables.IptablesBackend._commit_table = failing
            b = iptables.IptablesBackend()
        try:
            b.apply(new)
        except FirewallError as exc:
            print("refused:", exc)
    """
    proc = r.library(script)
    assert "refused:" in proc.stdout, proc.stderr
    assert r.snapshot() == applied
    assert ntp_ok(r.host, CLEAN6) and not ntp_ok(r.host, UNKNOWN6)


def test_nft_cache_drift_falls_back_to_full_replace(clean_rules):
    r = clean_rules
    if r.backend != "nft":
        pytest.skip("nft element cache only")
    r.ntpguard("rules", "apply")
    # Someone deletes an element by hand; the next diff deletes it again, which aborts the
    # transaction (nothing changes) and ntpguard replaces the whole table instead.
    r.host.run("nft", "delete", "element", "inet", "ntpguard", "clean6", f"{{ {CLEAN6} }}")
    with r.verdict(CLEAN6, "harvester", "manual", then="unknown"):
        out = r.ntpguard("rules", "apply")
        assert "replaced" in out.stdout, out.stdout
        assert not ntp_ok(r.host, CLEAN6) and ntp_ok(r.host, CLEAN4)
        assert "nothing changed" in r.ntpguard("rules", "apply").stdout


def test_nft_big_sets_live_in_files_and_a_lost_one_means_a_full_replace(clean_rules):
    from ntpguard import lists

    r = clean_rules
    if r.backend != "nft":
        pytest.skip("nft element cache only")

    def store(first: int) -> None:
        text = "".join(f"2001:db8:777::{i:x} scanner\n" for i in range(first, first + 600))
        parsed = lists.parse(text.encode(), "big", lists.Limits(allow_nonglobal=True), "text")
        lists.store(str(r.state), "big", parsed, {"source": "big", "trust": "enforce"})

    store(1)
    try:
        r.ntpguard("rules", "apply")
        sets = r.state / "rules-nft.sets"
        assert len(list(sets.iterdir())) == 1 and (r.state / "applied-plan.sets").is_dir()
        for f in sets.iterdir():
            f.unlink()
        # A change elsewhere does not need the big set's old content: updated in place (and
        # the set's file is written again from the plan).
        with r.verdict(CLEAN6, "harvester", "manual", then="unknown"):
            assert "updated in place (+0 -1)" in r.ntpguard("rules", "apply").stdout
        assert len(list(sets.iterdir())) == 1
        r.ntpguard("rules", "apply")
        for f in sets.iterdir():
            f.unlink()
        store(2)  # the big set changed, and what the kernel held of it is not known
        assert "replaced" in r.ntpguard("rules", "apply").stdout
        rules = r.host.run("nft", "list", "set", "inet", "ntpguard", "scan6_128").stdout
        assert "2001:db8:777::259" in rules and "2001:db8:777::1 " not in rules
        assert "nothing changed" in r.ntpguard("rules", "apply").stdout
    finally:
        lists.remove_stored(str(r.state), "big")


def test_nft_small_change_updates_in_place(clean_rules):
    r = clean_rules
    if r.backend != "nft":
        pytest.skip("nft element updates only")
    r.ntpguard("rules", "apply")
    with r.verdict(CLEAN4, "suspect", "detect", then="clean"):
        out = r.ntpguard("rules", "apply")
        assert "updated in place (+0 -1)" in out.stdout, out.stdout
        assert not ntp_ok(r.host, CLEAN4) and ntp_ok(r.host, CLEAN6)
        token = json.loads(r.host.run("nft", "-j", "list", "set", "inet", "ntpguard",
                                      "generation").stdout)
        assert any("set" in item for item in token["nftables"])


def test_iptables_debian13_dport_error_is_clear_and_changes_nothing(clean_rules):
    """python3-iptables on Debian 13 cannot parse `udp dport` (upstream issue #353)."""
    r = clean_rules
    if r.backend != "iptables":
        pytest.skip("python-iptables only")
    r.ntpguard("rules", "apply")
    applied = r.snapshot()
    proc = r.library(f"""
        import iptc
        from iptc.errors import XTablesError
        from iptc.ip4tc import Match
        real = Match.__setattr__
        def broken(self, name, value):
            if name == "dport":
                raise XTablesError("udp: no such parameter dport")
            return real(self, name, value)
        Match.__setattr__ = broken
        from ntpguard import plan as P
        from ntpguard import status as S
        from ntpguard.config import Rules
        from ntpguard.errors import FirewallError
        from ntpguard.backends.iptables import IptablesBackend
        new = P.build([S.ServerStatus.of({UNKNOWN6!r}, "clean")], [], [], Rules(mode="gateway"),
                      P.HostFacts())
        try:
            IptablesBackend().apply(new)
        except FirewallError as exc:
            print("refused:", exc)
    """)
    assert "refused: python-iptables cannot build an ntpguard rule" in proc.stdout, proc.stderr
    assert "issue #353" in proc.stdout
    assert r.snapshot() == applied


def test_nft_without_python_nftables_uses_nft_command(clean_rules):
    r = clean_rules
    if r.backend != "nft":
        pytest.skip("nft only")
    before = r.snapshot()
    proc = r.library(f"""
        sys.modules["nftables"] = None  # as in a venv without Debian's python3-nftables
        from ntpguard import plan as P
        from ntpguard import status as S
        from ntpguard.config import Rules
        from ntpguard.backends.nft import NftBackend
        p = P.build([S.ServerStatus.of({CLEAN6!r}, "clean")],
                    [P.PrefixEntry("2001:db8:666::/48", "t")], [], Rules(), P.HostFacts())
        b = NftBackend({str(r.workdir)!r})
        assert b.nft.via == "nft -f FILE"
        print(b.apply(p).action, b.apply(p).action)
        print("shown" if "chain ntp" in b.show() else "not shown")
    """)
    assert proc.stdout.split() == ["created", "unchanged", "shown"], proc.stderr
    assert ntp_ok(r.host, CLEAN6) and not ntp_ok(r.host, HARV6)
    r.ntpguard("rules", "remove", "--backend", "nft")
    assert r.snapshot() == before


def _expanded(address: str) -> str:
    """How LOG lines print IPv6 (fully expanded, leading zeros)."""
    import ipaddress

    return ipaddress.ip_address(address).exploded


def test_log_lines_give_the_detector_its_evidence(clean_rules):
    """Outbound NTP and new inbound connections are logged with the documented prefixes."""
    r = clean_rules
    r.ntpguard("rules", "apply")
    sport = 20000 + (os.getpid() * 7 + (1 if r.backend == "nft" else 2)) % 20000
    send = textwrap.dedent("""
        import socket, sys
        fam = socket.AF_INET6
        kind, src, dst, dport, sport = sys.argv[1:6]
        s = socket.socket(fam, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        s.settimeout(1)
        s.bind((src, int(sport)))
        try:
            if kind == "udp":
                s.sendto(b"\\x23" + b"\\0" * 47, (dst, int(dport)))
            else:
                s.connect((dst, int(dport)))
        except OSError:
            pass
    """)
    r.host.run(sys.executable, "-c", send, "udp", HOST6, HARV6, "123", str(sport))
    r.net.run(sys.executable, "-c", send, "tcp", SCANNER6, HOST6, "22", str(sport))
    want_out = f"DST={_expanded(HARV6)} "
    want_in = f"SRC={_expanded(SCANNER6)} "
    deadline = time.time() + 5
    while True:
        kmsg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
        out = [ln for ln in kmsg if "ntpguard-ntp-out: " in ln and want_out in ln
               and f"SPT={sport} DPT=123 " in ln]
        inb = [ln for ln in kmsg if "ntpguard-in: " in ln and want_in in ln
               and f"SPT={sport} DPT=22 " in ln]
        if (out and inb) or time.time() > deadline:
            break
        time.sleep(0.2)
    assert out, "no ntpguard-ntp-out: line for the rejected NTP packet"
    assert inb, "no ntpguard-in: line for the scanner's SYN"


def rules_applies(r: RulesLab) -> int:
    """How many `rules apply` runs built a plan (a run that found nothing new records none)."""
    from ntpguard.state import State

    with State.open(str(r.state), lock=False) as st:
        return len(st.runs("rules apply", limit=1000))


def test_nothing_new_stops_at_the_digest_and_every_change_is_seen(clean_rules):
    """`rules apply` with nothing new answers from the last apply's record (ntpguard.inputs)
    without building a plan; a change of the state, a list, the host's addresses, the kernel
    (someone else's nft command) or the clock (a canary due) each makes it build again."""
    r = clean_rules
    if r.backend != "nft":
        pytest.skip("the kernel generation is nft's")
    r.ntpguard("rules", "apply")
    built = rules_applies(r)
    out = r.ntpguard("rules", "apply")
    assert "nothing changed" in out.stdout and "usable servers: 1 IPv6, 1 IPv4" in out.stdout
    assert rules_applies(r) == built
    # The state: a verdict.
    with r.verdict(CLEAN4, "suspect", "detect", then="clean"):
        assert "updated in place" in r.ntpguard("rules", "apply").stdout
        assert not ntp_ok(r.host, CLEAN4)
    assert "updated in place" in r.ntpguard("rules", "apply").stdout
    assert ntp_ok(r.host, CLEAN4)
    built = rules_applies(r)
    # The kernel: someone deletes an element; the state is as it was.
    r.host.run("nft", "delete", "element", "inet", "ntpguard", "clean6", f"{{ {CLEAN6} }}")
    assert not ntp_ok(r.host, CLEAN6)
    r.ntpguard("rules", "apply")
    assert ntp_ok(r.host, CLEAN6) and rules_applies(r) == built + 1
    # A list: a scanner prefix added by `list import`.
    assert probe(r.net, "tcp", HOST6, 22, src=OTHER6) == "ok"
    extra = r.workdir / "more.txt"
    extra.write_text("2001:db8:777::/48 scanner\n")
    r.ntpguard("list", "import", str(extra), "--name", "more", "--kind", "scanner")
    r.ntpguard("rules", "apply")
    assert probe(r.net, "tcp", HOST6, 22, src=OTHER6) == "timeout"
    r.ntpguard("list", "remove", "more")
    r.ntpguard("rules", "apply")
    assert probe(r.net, "tcp", HOST6, 22, src=OTHER6) == "ok"
    # The host's addresses.
    built = rules_applies(r)
    r.ntpguard("rules", "apply")
    assert rules_applies(r) == built
    r.host.run("ip", "addr", "add", "2001:db8:1::77/64", "dev", "eth0", "nodad")
    try:
        r.ntpguard("rules", "apply")
        assert rules_applies(r) == built + 1
    finally:
        r.host.run("ip", "addr", "del", "2001:db8:1::77/64", "dev", "eth0")
    # The clock: the record's deadline (the next canary rotation) passed.
    r.ntpguard("rules", "apply")
    built = rules_applies(r)
    record = r.state / "applied-inputs.json"
    data = json.loads(record.read_text())
    data["until"] = time.time() - 1
    record.write_text(json.dumps(data))
    r.ntpguard("rules", "apply")
    assert rules_applies(r) == built + 1
    # The configuration, which a run with nothing new recognises by its file's bytes without
    # loading it: a changed byte (a comment too) builds the plan again; a file made invalid
    # is its one-line error, never the last apply's answer.
    edited = r.workdir / "edited.toml"
    edited.write_text(r.config().read_text() + "# an admin's note\n")
    built = rules_applies(r)
    r.ntpguard("rules", "apply", "--config", str(edited))
    assert rules_applies(r) == built + 1
    assert "nothing changed" in r.ntpguard("rules", "apply", "--config", str(edited)).stdout
    edited.write_text(edited.read_text() + "[detect]\nwindow = -1\n")
    bad = r.ntpguard("rules", "apply", "--config", str(edited), check=False)
    assert bad.returncode == 2 and "window" in bad.stderr and not bad.stdout, bad
    # The state directory named in the file (no --state-dir, no $NTPGUARD_STATE_DIR).
    own = r.workdir / "own.toml"
    own.write_text(r.config().read_text() + f'[general]\nstate_dir = "{r.state}"\n')

    def apply_own() -> subprocess.CompletedProcess:
        return r.host.run("env", "-u", "NTPGUARD_STATE_DIR", "-u", "NTPGUARD_CONFIG",
                          f"PYTHONPATH={ROOT}", sys.executable, "-m", "ntpguard", "--config",
                          str(own), "rules", "apply", timeout=120)

    built = rules_applies(r)
    apply_own()
    assert "nothing changed" in apply_own().stdout and rules_applies(r) == built + 1
    # What makes it cheap: the settings' code (dataclasses, validators) is not even imported.
    loaded = r.host.run(
        "env", "-u", "NTPGUARD_STATE_DIR", "-u", "NTPGUARD_CONFIG", f"PYTHONPATH={ROOT}",
        sys.executable, "-c", "import sys\nfrom ntpguard.cli import main\n"
        f"code = main(['--config', {str(own)!r}, 'rules', 'apply'])\n"
        "print('exit', code, 'settings loaded:', 'ntpguard.config' in sys.modules)")
    assert "nothing changed" in loaded.stdout and "exit 0 settings loaded: False" in \
        loaded.stdout, loaded.stdout
