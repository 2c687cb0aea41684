"""NTP canaries with real packets: a real chronyd answers from the "internet" namespace, which
records every NTP source address it sees; the protected host runs `ntpguard rules apply`.

Shown: every NTP packet leaves from its server's own canary (or the spare, for a server
ntpguard did not know), never from the host's real address; replies come back (the kernel's
neighbour discovery from the canary passes); NTP to a harvester is refused; a scan of a canary
is dropped and counted; `rules remove` takes the canaries away with the table. Namespaces
`ntpg-k-*`; nothing touches the root namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.netns import Lab
from lab.world import start_chrony_server
from ntpguard.state import State
from ntpguard.status import Verdict

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "ntpg-k-"
HOST_NET = "2001:db8:4057:1::"
STABLE = f"{HOST_NET}100"
CLEAN, HARVESTER, UNKNOWN = "2001:db8:a::123", "2001:db8:b::123", "2001:db8:c::123"
SCANNER = "2001:db8:5ca::b001"
# The internet side keeps every NTP source it sees (a dynamic set: no sniffer needed).
SEEN = """
table inet seen {
    set sources { type ipv6_addr; flags dynamic; }
    chain input {
        type filter hook input priority 0; policy accept;
        udp dport 123 add @sources { ip6 saddr }
    }
}
"""


def sources_seen(net) -> set[str]:
    out = json.loads(net.run("nft", "-j", "list", "set", "inet", "seen", "sources").stdout)
    for item in out["nftables"]:
        if "set" in item:
            return {e if isinstance(e, str) else e.get("elem", {}).get("val", "")
                    for e in item["set"].get("elem", [])}
    return set()


@pytest.mark.root
def test_ntp_leaves_from_canaries_only(tmp_path):
    tmp_path.chmod(0o755)
    state_dir = tmp_path / "state"
    now = time.time()
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA", [(CLEAN, 6), (HARVESTER, 6)], now)
        st.add_verdict(Verdict.of(HARVESTER, "harvester", "manual", {}, now))
    cfg = tmp_path / "ntpguard.toml"
    cfg.write_text('[pool]\nallow_nonglobal = true\n[lists]\nbuiltin = false\n'
                   '[rules]\nbackend = "nft"\n')
    with Lab(PREFIX) as lab:
        host, net = lab.ns("host"), lab.ns("net")
        lab.link(net, "h0", host, "eth0")
        net.addr("h0", f"{HOST_NET}1/64")
        net.addr("h0", "2001:db8:5ca::1/64")
        net.addr("h0", f"{SCANNER}/64")
        host.addr("eth0", f"{STABLE}/64")
        host.run("ip", "-6", "route", "add", "default", "via", f"{HOST_NET}1")
        for a in (CLEAN, HARVESTER, UNKNOWN):
            net.addr("lo", f"{a}/128")
        net.sysctl("net.ipv6.conf.all.forwarding", "1")
        (tmp_path / "chrony").mkdir()
        start_chrony_server(net, tmp_path / "chrony")
        net.run("nft", "-f", "-", input=SEEN)

        env = {"PYTHONPATH": str(ROOT), "NTPGUARD_CONFIG": str(cfg),
               "NTPGUARD_STATE_DIR": str(state_dir)}

        def ntpguard(*args: str) -> subprocess.CompletedProcess:
            return host.run("env", *[f"{k}={v}" for k, v in env.items()], sys.executable,
                            "-m", "ntpguard", *args, check=False, timeout=120)

        def ntp_ok(server: str) -> bool:
            return host.run("ntpdate", "-q", "-t", "2", server, check=False,
                            timeout=30).returncode == 0

        deadline = time.monotonic() + 10
        while not ntp_ok(CLEAN) and time.monotonic() < deadline:  # chronyd up (real source)
            time.sleep(0.2)
        assert sources_seen(net) == {STABLE}
        net.run("nft", "flush", "set", "inet", "seen", "sources")

        out = ntpguard("rules", "apply", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out.stdout)
        assert result["plan"]["canaries"] == 1, result  # the clean server; the harvester none
        with State.open(str(state_dir), lock=False) as st:
            canaries = {c.server: c.address for c in st.canaries()}
        assert set(canaries) == {"", CLEAN}  # the spare, and the clean server's own
        addrs = host.run("ip", "-6", "-j", "addr", "show", "dev", "eth0").stdout
        assert all(c in addrs for c in canaries.values())

        assert ntp_ok(CLEAN)          # from its canary, and the answer came back
        assert ntp_ok(UNKNOWN)        # unknown: allowed, from the spare
        assert not ntp_ok(HARVESTER)  # refused before it leaves
        assert sources_seen(net) == {canaries[CLEAN], canaries[""]}

        # A scan of the clean server's canary: dropped (nmap sees nothing answer).
        scan = net.run("nmap", "-6", "-n", "-sS", "-Pn", "-p", "1-40", "--max-retries", "0",
                       "-e", "h0", "-S", SCANNER, canaries[CLEAN], check=False, timeout=60)
        assert "open" not in scan.stdout and "closed" not in scan.stdout, scan.stdout
        ruleset = host.run("nft", "list", "chain", "inet", "ntpguard", "input").stdout
        dropped = [ln for ln in ruleset.splitlines() if "@canaries6 ct state new" in ln]
        assert dropped and " packets 0 " not in dropped[0], ruleset
        # ...while the host's real address still answers scans (ntpguard drops nothing else).
        real = net.run("nmap", "-6", "-n", "-sS", "-Pn", "-p", "22", "--max-retries", "0",
                       "-e", "h0", "-S", SCANNER, STABLE, check=False, timeout=60)
        assert "closed" in real.stdout, real.stdout

        # One canary gone already (expired, removed by hand): the others still go, in the
        # one batch that takes them all off (it must go on past the missing one).
        with State.open(str(state_dir), lock=False) as st:
            first = st.canaries(live_at=time.time())[0].address
        host.run("ip", "-6", "addr", "del", f"{first}/128", "dev", "eth0")
        out = ntpguard("rules", "remove")
        assert out.returncode == 0, out.stderr
        assert host.run("nft", "list", "tables").stdout.strip() == ""
        addrs = host.run("ip", "-6", "-j", "addr", "show", "dev", "eth0").stdout
        assert len(canaries) >= 2 and not [c for c in canaries.values() if c in addrs]
        net.run("nft", "flush", "set", "inet", "seen", "sources")
        assert ntp_ok(CLEAN) and sources_seen(net) == {STABLE}
    assert not os.path.exists(f"/run/netns/{PREFIX}host")
