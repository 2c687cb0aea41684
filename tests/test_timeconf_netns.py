"""A real chronyd syncs from the sources `ntpguard timeconf --check --write` wrote.

Namespaces `ntpg-t-srv` (one `chronyd -x` serving three addresses in different /48s) and
`ntpg-t-cli` (the protected host running its own `chronyd -x` with a private sourcedir and
command socket). `-x` never touches the shared clock; nothing is connected to the root namespace.
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
from ntpguard.state import State
from ntpguard.status import Verdict

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "ntpg-t-"
CLEAN = ["2001:db8:1::123", "2001:db8:2::123"]
HARVESTER = "2001:db8:3::123"
SILENT = "2001:db8:4::123"  # clean in the state, but nothing answers there


def chronyc(ns, sock: str, *args: str) -> str:
    return ns.run("chronyc", "-h", sock, "-n", *args, check=False).stdout


@pytest.mark.root
def test_chronyd_syncs_from_written_sources(tmp_path, state_dir):
    tmp_path.chmod(0o755)
    now = time.time()
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA",
                         [(a, 6) for a in [*CLEAN, HARVESTER, SILENT]], now)
        for a in [*CLEAN, SILENT]:
            st.add_verdict(Verdict.of(a, "clean", "detect", {}, now))
        st.add_verdict(Verdict.of(HARVESTER, "harvester", "detect", {}, now))

    with Lab(PREFIX) as lab:
        srv, cli = lab.ns("srv"), lab.ns("cli")
        lab.link(srv, "eth0", cli, "eth0")
        srv.addr("eth0", "2001:db8:ff::1/64")
        cli.addr("eth0", "2001:db8:ff::2/64")
        for a in [*CLEAN, HARVESTER]:
            srv.addr("lo", f"{a}/128")
        cli.run("ip", "-6", "route", "add", "2001:db8::/32", "via", "2001:db8:ff::1")

        sconf = tmp_path / "server.conf"
        sconf.write_text(f"allow all\nlocal stratum 3\ncmdport 0\nbindcmdaddress /\n"
                         f"pidfile {tmp_path}/server.pid\n")
        server = srv.popen(["chronyd", "-x", "-d", "-u", "root", "-f", str(sconf)],
                           stderr=subprocess.PIPE, text=True)

        sources = tmp_path / "sources.d"
        sources.mkdir()
        sockdir = tmp_path / "cmd"
        sockdir.mkdir(mode=0o700)
        sock = str(sockdir / "chronyd.sock")
        cconf = tmp_path / "client.conf"
        cconf.write_text(f"sourcedir {sources}\ncmdport 0\nbindcmdaddress {sock}\n"
                         f"pidfile {tmp_path}/client.pid\n")
        client = cli.popen(["chronyd", "-x", "-d", "-u", "root", "-f", str(cconf)],
                           stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 10
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.1)
        assert os.path.exists(sock), client.stderr.read() if client.poll() is not None else ""
        assert server.poll() is None, server.stderr.read()
        assert chronyc(cli, sock, "sources").count("^") == 0

        env = dict(os.environ, PYTHONPATH=str(ROOT), NTPGUARD_STATE_DIR=str(state_dir),
                   NTPGUARD_CONFIG="/dev/null")
        target = sources / "ntpguard.sources"
        p = subprocess.run(
            ["ip", "netns", "exec", cli.name, sys.executable, "-m", "ntpguard", "timeconf",
             "--format", "chrony", "--check", "--write", "--path", str(target),
             "--reload-command", f"chronyc -h {sock} reload sources", "--json"],
            capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        # The harvester is never a candidate; the silent one fails its SNTP check.
        assert sorted(out["servers"]) == CLEAN and out["changed"] is True
        assert HARVESTER not in out["checks"]
        assert out["checks"][SILENT]["ok"] is False
        assert all(out["checks"][a]["ok"] and out["checks"][a]["stratum"] == 3 for a in CLEAN)
        assert target.read_text() == out["content"]

        # chronyd picked the file up through `chronyc reload sources` and syncs to it.
        deadline = time.time() + 40
        listing = ""
        while time.time() < deadline:
            listing = chronyc(cli, sock, "sources")
            if "^*" in listing:
                break
            time.sleep(1)
        assert "^*" in listing, listing
        for a in CLEAN:
            assert a in listing
        assert HARVESTER not in listing
        tracking = chronyc(cli, sock, "tracking")
        assert "Stratum         : 4" in tracking, tracking  # server: local stratum 3
