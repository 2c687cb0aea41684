"""Server selection, rendering, daemon detection, file writing, SNTP; generated files are
parsed by the real daemons' parsers (chronyd -p; ntpsec's and openntpd's ntpd from their .debs,
unpacked by `make deps` into .debs/ because both conflict with the installed chrony)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ntpguard import config, daemons, sntp, timeconf
from ntpguard.errors import UsageError
from ntpguard.state import State
from ntpguard.status import Verdict

ROOT = Path(__file__).resolve().parent.parent
DEBS = Path(os.environ.get("NTPGUARD_DEBS", ROOT / ".debs"))
C = timeconf.Candidate


def test_spread_over_prefixes_then_fill():
    cands = [C("2604:a880:1:20::a7:f001", 100, 9), C("2604:a880:1:20::a7:f002", 100, 8),
             C("2604:a880:1:21::1", 100, 7),  # same /48 as the two above
             C("2a01:4f8:1::1", 100, 5), C("198.51.99.1", 100, 6), C("198.51.99.200", 100, 6),
             C("203.0.114.9", 100, 1)]
    assert timeconf.select_servers(cands, 4) == [
        "2604:a880:1:20::a7:f001", "198.51.99.1", "2a01:4f8:1::1", "203.0.114.9"]
    # Not enough distinct prefixes: fill with the best remaining.
    assert timeconf.select_servers(cands[:3], 2) == ["2604:a880:1:20::a7:f001",
                                                    "2604:a880:1:20::a7:f002"]
    # /64 spread allows the /48 neighbour.
    assert timeconf.select_servers(cands[:3], 2, spread_v6=64) == [
        "2604:a880:1:20::a7:f001", "2604:a880:1:21::1"]
    assert timeconf.select_servers([], 4) == []


def test_checks_drop_failures_and_rank_by_delay():
    cands = [C("2a01:4f8:1::1", 100, 9), C("2a01:4f8:2::1", 100, 1), C("2a01:4f8:3::1", 100, 1),
             C("2a01:4f8:4::1", 100, 1)]
    R = sntp.SntpResult
    checks = {"2a01:4f8:1::1": R("2a01:4f8:1::1", False, error="no answer"),
              "2a01:4f8:2::1": R("2a01:4f8:2::1", True, 2, 0, 0.9),
              "2a01:4f8:3::1": R("2a01:4f8:3::1", True, 2, 0, 0.020),
              "2a01:4f8:4::1": R("2a01:4f8:4::1", True, 1, 0, 0.010)}
    assert timeconf.select_servers(cands, 4, checks=checks, max_delay=0.5) == [
        "2a01:4f8:4::1", "2a01:4f8:3::1", "2a01:4f8:2::1"]


def test_candidates_usable_and_recent_only():
    from ntpguard.state import Server
    from ntpguard.status import MANUAL, TRUSTED, ServerStatus, Status, Verdict

    def pool(a, last):
        return Server(a, 6, 0.0, last, 1, ("2.debian.pool.ntp.org",))

    def decided(a, status, source):
        return ServerStatus(a, Status(status), Verdict(a, Status(status), source, {}, 1.0),
                            "", True)

    servers = {s.address: s for s in [pool("2a01:4f8:1::1", 1000), pool("2a01:4f8:2::1", 1000),
                                      pool("2a01:4f8:3::1", 10), pool("2a01:4f8:4::1", 1000),
                                      pool("2a01:4f8:5::1", 10)]}
    st = {"2a01:4f8:1::1": ServerStatus.of("2a01:4f8:1::1", "clean"),
          "2a01:4f8:2::1": ServerStatus.of("2a01:4f8:2::1", "harvester"),
          "2a01:4f8:3::1": ServerStatus.of("2a01:4f8:3::1", "clean"),  # DNS forgot it
          "2a01:4f8:4::1": ServerStatus.of("2a01:4f8:4::1", "unknown"),
          # The admin's own: used however long ago DNS served it, or if it never did.
          "2a01:4f8:5::1": decided("2a01:4f8:5::1", "clean", MANUAL),
          "2001:db8:77::1": decided("2001:db8:77::1", "clean", TRUSTED),
          "2001:db8:77::2": ServerStatus.of("2001:db8:77::2", "clean", known=False)}
    got = {c.address: c.preference for c in timeconf.candidates(st, servers, 1100, 500)}
    assert got == {"2a01:4f8:1::1": 2, "2a01:4f8:4::1": 2, "2a01:4f8:5::1": 0,
                   "2001:db8:77::1": 0}


SERVERS = ["2604:a880:1:20::a7:f001", "198.51.99.7", "2a01:4f8:1::1"]


def test_render_formats():
    chrony = timeconf.render("chrony", SERVERS)
    assert chrony.splitlines()[1:] == [f"server {s} iburst" for s in SERVERS]
    ts = timeconf.render("timesyncd", SERVERS, fallback=("ntp.example.org",))
    assert ts.splitlines()[1:] == ["[Time]", "NTP=" + " ".join(SERVERS),
                                   "FallbackNTP=ntp.example.org"]
    assert "FallbackNTP" not in timeconf.render("timesyncd", SERVERS)
    assert timeconf.render("openntpd", SERVERS).splitlines()[1:] == [
        f"server {s}" for s in SERVERS]
    assert timeconf.render("ntpsec", SERVERS, "iburst prefer").splitlines()[1] == \
        "server 2604:a880:1:20::a7:f001 iburst prefer"
    with pytest.raises(UsageError, match="no clean servers"):
        timeconf.render("chrony", [])
    with pytest.raises(UsageError, match="unknown format"):
        timeconf.render("ntpd-rs", SERVERS)
    with pytest.raises(ValueError):
        timeconf.render("chrony", ["pool.ntp.org"])


def test_detect_daemon():
    def files(*present):
        return lambda p: p in present

    assert daemons.detect({"chronyd"}, files()) == "chrony"
    assert daemons.detect({"systemd-timesyn"}, files("/usr/sbin/chronyd")) == "timesyncd"
    assert daemons.detect({"ntpd"}, files("/etc/ntpsec/ntp.conf")) == "ntpsec"
    assert daemons.detect({"ntpd"}, files("/etc/openntpd/ntpd.conf")) == "openntpd"
    assert daemons.detect(set(), files("/usr/sbin/chronyd")) == "chrony"
    assert daemons.detect(set(), files("/lib/systemd/systemd-timesyncd")) == "timesyncd"
    assert daemons.detect(set(), files()) is None


def test_write_only_on_change_and_reload(tmp_path):
    (tmp_path / "sources.d").mkdir()  # chrony's package ships it: ntpguard makes none
    path = str(tmp_path / "sources.d" / "ntpguard.sources")
    marker = tmp_path / "reloaded"
    cmd = ["sh", "-c", f"echo x >> {marker}"]
    content = timeconf.render("chrony", SERVERS)
    assert timeconf.write("chrony", content, path, reload_command=cmd) is True
    assert Path(path).read_text() == content and oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert timeconf.write("chrony", content, path, reload_command=cmd) is False
    assert marker.read_text() == "x\n"  # reloaded once: only on change
    assert os.listdir(tmp_path / "sources.d") == ["ntpguard.sources"]
    with pytest.raises(timeconf.ReloadError, match=r"wrote .* but `false` failed"):
        timeconf.write("chrony", timeconf.render("chrony", SERVERS[:1]), path,
                       reload_command=["false"])
    assert Path(path).read_text() == timeconf.render("chrony", SERVERS[:1])
    with pytest.raises(UsageError, match="no drop-in"):
        timeconf.write("ntpsec", content, str(tmp_path / "x"))
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:
        with pytest.raises(UsageError, match="cannot write"):
            timeconf.write("chrony", content, str(tmp_path / "ro" / "f"), reload=False)


# -- the daemons' own parsers ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("chronyd") is None, reason="chrony not installed")
def test_chronyd_parses_generated_sources(tmp_path):
    f = tmp_path / "ntpguard.sources"
    f.write_text(timeconf.render("chrony", SERVERS))
    p = subprocess.run(["chronyd", "-p", "-f", str(f)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"server {s} iburst" for s in SERVERS]
    f.write_text("server\n")  # the check can fail
    assert subprocess.run(["chronyd", "-p", "-f", str(f)], capture_output=True).returncode != 0


NTPSEC = DEBS / "ntpsec" / "usr" / "sbin" / "ntpd"
OPENNTPD = DEBS / "openntpd" / "usr" / "sbin" / "ntpd"


def ntpsec_parse(conf: Path) -> str:
    """Run ntpsec's ntpd for 3 s on conf: no network (unshare -n) and no CAP_SYS_TIME, so it
    can't touch the clock; ntpsec has no dry-run, its parser logs syntax errors at startup."""
    p = subprocess.run(["timeout", "3", "unshare", "-n", "setpriv", "--bounding-set", "-sys_time",
                        "--inh-caps", "-sys_time", str(NTPSEC), "-n", "-d", "-c", str(conf),
                        "-f", str(conf.parent / "drift"), "-l", "stderr"],
                       capture_output=True, text=True)
    return p.stdout + p.stderr


@pytest.mark.root
@pytest.mark.skipif(not NTPSEC.exists(), reason="ntpsec .deb not unpacked (make deps)")
def test_ntpsec_parses_generated_snippet_and_include(tmp_path):
    snippet = tmp_path / "ntpguard.conf"
    snippet.write_text(timeconf.render("ntpsec", SERVERS))
    main = tmp_path / "ntp.conf"
    main.write_text(f"driftfile {tmp_path}/drift\nincludefile {snippet}\n")
    out = ntpsec_parse(main)
    assert "syntax error" not in out, out
    for s in SERVERS:
        assert f"->{s} mode 3" in out, out  # one association per server line
    snippet.write_text("server\nbogus line\n")
    assert "syntax error" in ntpsec_parse(main)


@pytest.mark.skipif(not OPENNTPD.exists(), reason="openntpd .deb not unpacked (make deps)")
def test_openntpd_parses_generated_lines(tmp_path):
    f = tmp_path / "ntpd.conf"
    f.write_text(timeconf.render("openntpd", SERVERS))
    p = subprocess.run([str(OPENNTPD), "-n", "-f", str(f)], capture_output=True, text=True)
    assert p.returncode == 0 and "configuration OK" in p.stderr, p.stderr
    # Why ntpguard prints lines for openntpd instead of an include line: it has no include.
    f2 = tmp_path / "inc.conf"
    f2.write_text(f'include "{f}"\n')
    assert subprocess.run([str(OPENNTPD), "-n", "-f", str(f2)],
                          capture_output=True).returncode != 0


# -- SNTP -----------------------------------------------------------------------------------------


def reply(req: bytes, stratum=2, leap=0, mode=4, echo=True, refid=b"GPS\0") -> bytes:
    xmit = struct.unpack("!Q", req[40:48])[0]
    now = int((time.time() + sntp.NTP_EPOCH_OFFSET) * 2**32) & 0xFFFFFFFFFFFFFFFF
    return struct.pack("!BBbbII4sQQQQ", (leap << 6) | (4 << 3) | mode, stratum, 6, -20, 0, 0,
                       refid, now, xmit if echo else xmit ^ 1, now, now)


def test_sntp_evaluate():
    req = sntp.request(12345)
    t = time.time()
    ok = sntp.evaluate("x", reply(req), 12345, t, t + 0.01)
    assert ok.ok and ok.stratum == 2 and 0 <= ok.delay < 0.05
    assert "leap indicator 3" in sntp.evaluate("x", reply(req, leap=3), 12345, t, t).error
    assert "kiss-o'-death 'RATE'" in sntp.evaluate("x", reply(req, 0, refid=b"RATE"), 12345,
                                                    t, t).error
    assert "stratum 16" in sntp.evaluate("x", reply(req, 16), 12345, t, t).error
    assert "mode 3" in sntp.evaluate("x", reply(req, mode=3), 12345, t, t).error
    assert "short" in sntp.evaluate("x", b"\0" * 10, 12345, t, t).error


def fake_server(behaviour):
    """A UDP server on ::1 answering per behaviour(request) -> list of reply packets."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    sock.settimeout(5)

    def serve():
        try:
            while True:
                data, peer = sock.recvfrom(1024)
                for r in behaviour(data):
                    sock.sendto(r, peer)
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1]


def test_sntp_query_over_udp():
    # A spoofed reply not echoing our timestamp is ignored; the real one after it counts.
    sock, port = fake_server(lambda req: [reply(req, echo=False), reply(req, stratum=3)])
    try:
        r = sntp.query("::1", timeout=2, port=port)
        assert r.ok and r.stratum == 3, r
        many = sntp.query_many(["::1", "::1"], timeout=2, port=port)
        assert list(many) == ["::1"] and many["::1"].ok
    finally:
        sock.close()
    sock, port = fake_server(lambda req: [])
    try:
        r = sntp.query("::1", timeout=0.3, port=port)
        assert not r.ok and "no answer within 0.3 s" in r.error
    finally:
        sock.close()


# -- CLI ------------------------------------------------------------------------------------------


def seed(state_dir, now):
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA",
                         [("2604:a880:1:20::a7:f001", 6), ("2604:a880:1:20::a7:f002", 6),
                          ("2a01:4f8:1::1", 6), ("2001:67c:1::5", 6)], now)
        st.add_verdict(Verdict.of("2604:a880:1:20::a7:f001", "clean", "detect", {}, now))
        st.add_verdict(Verdict.of("2604:a880:1:20::a7:f002", "clean", "detect", {}, now))
        st.add_verdict(Verdict.of("2a01:4f8:1::1", "clean", "detect", {}, now))
        st.add_verdict(Verdict.of("2001:67c:1::5", "harvester", "detect", {}, now))


def test_cli_timeconf(run_cli, state_dir, tmp_path):
    p = run_cli("timeconf", "--format", "chrony")
    assert p.returncode == 2 and "no clean servers" in p.stderr
    seed(state_dir, time.time())
    p = run_cli("timeconf", "--format", "chrony", "--count", "2")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[1:] == ["server 2604:a880:1:20::a7:f001 iburst",
                                         "server 2a01:4f8:1::1 iburst"]
    p = run_cli("timeconf", "--format", "ntpsec")
    assert "includefile /etc/ntpsec/ntpguard.conf" in p.stdout and "2001:67c:1::5" not in p.stdout
    p = run_cli("timeconf", "--format", "ntpsec", "--write")
    assert p.returncode == 2 and "no drop-in" in p.stderr
    target = tmp_path / "out" / "ntpguard.conf"
    target.parent.mkdir()
    conf = tmp_path / "c.toml"
    conf.write_text(f'[timeconf]\ntimesyncd_dropin = "{target}"\nreload = false\n'
                    'fallback = ["ntp.example.org"]\n')
    p = run_cli("timeconf", "--format", "timesyncd", "--write", config=conf)
    assert p.returncode == 0 and "updated (3 servers)" in p.stdout, p.stderr
    assert "FallbackNTP=ntp.example.org" in target.read_text()
    p = run_cli("timeconf", "--format", "timesyncd", "--write", config=conf)
    assert "unchanged" in p.stdout
    p = run_cli("timeconf", "--format", "chrony", "--count", "0")
    assert p.returncode == 2 and "--count must be greater than 0" in p.stderr


def test_configure_daemon_for_sync(state_dir, tmp_path):
    seed(state_dir, time.time())
    path = tmp_path / "ntpguard.sources"
    cfg = config.parse(f'[timeconf]\ndaemon = "chrony"\nchrony_sources = "{path}"\n'
                       'reload = false\n', "c.toml")
    with State.open(str(state_dir)) as st:
        dry = timeconf.configure_daemon(cfg, st, time.time(), dry_run=True)
        assert dry.changed and not path.exists()
        out = timeconf.configure_daemon(cfg, st, time.time())
        assert out.changed and out.daemon == "chrony" and len(out.servers) == 3
        assert not timeconf.configure_daemon(cfg, st, time.time()).changed
    none = config.parse('[timeconf]\ndaemon = "none"\n', "c.toml")
    with State.open(str(state_dir)) as st:
        assert timeconf.configure_daemon(none, st, time.time()).daemon is None


def test_vouched_then_cleared_servers_come_before_merely_unjudged_ones():
    C = timeconf.Candidate
    cands = [C("2a01:4f8:1::1", 100, 50), C("2a01:4f8:2::1", 100, 1, preference=1),
             C("2a01:4f8:3::1", 100, 9), C("2a01:4f8:4::1", 0, 0, preference=0)]
    assert timeconf.select_servers(cands, 3) == ["2a01:4f8:4::1", "2a01:4f8:2::1",
                                                 "2a01:4f8:1::1"]


def test_current_sources_are_kept_while_usable(tmp_path):
    C = timeconf.Candidate
    cands = [C("2a01:4f8:1::1", 100, 50), C("2a01:4f8:2::1", 100, 40), C("2a01:4f8:3::1", 100, 9)]
    assert timeconf.select_servers(cands, 2) == ["2a01:4f8:1::1", "2a01:4f8:2::1"]
    assert timeconf.select_servers(cands, 2, current=["2a01:4f8:3::1", "2a01:4f8:9::9"]) == [
        "2a01:4f8:3::1", "2a01:4f8:1::1"]
    f = tmp_path / "ntpguard.sources"
    f.write_text(timeconf.render("chrony", ["2a01:4f8:3::1", "192.0.2.1"]))
    assert timeconf.current_servers(str(f)) == ["2a01:4f8:3::1", "192.0.2.1"]
    f.write_text(timeconf.render("timesyncd", ["2a01:4f8:3::1", "192.0.2.1"]))
    assert timeconf.current_servers(str(f)) == ["2a01:4f8:3::1", "192.0.2.1"]
    assert timeconf.current_servers(str(tmp_path / "none")) == []


def test_servers_in_an_enforced_harvester_list_are_never_chosen(state_dir):
    import time as _time

    from ntpguard import config
    from ntpguard.state import State

    listed = "2604:a880:1:20::a7:f001"  # in the shipped rules/harvesters.txt
    now = _time.time()
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA",
                         [(listed, 6), ("2a01:4f8:1::1", 6), ("2a01:4f8:2::1", 6)], now)
        chosen, _ = timeconf.choose(config.Config(), st, now)
    assert listed not in chosen and set(chosen) == {"2a01:4f8:1::1", "2a01:4f8:2::1"}


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "fifo", "huge"])
def test_a_drop_in_that_is_not_ntpguards_file_is_refused_in_one_line(run_cli, tmp_path, kind):
    """The drop-in path is read before it is rewritten: a link there (to /dev/zero, say), a
    FIFO nobody writes or a huge file must not hang, exhaust memory or be written through."""
    path = tmp_path / "ntpguard.sources"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge":
        path.write_bytes(b"#" * (timeconf.MAX_DROPIN_BYTES + 1))
    else:
        path.symlink_to("/dev/zero")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[servers]\ntrusted = ["2a01:4f8::7"]\n')
    out = run_cli("timeconf", "--format", "chrony", "--write", "--no-reload", "--path", path,
                  config=cfg, timeout=20)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and str(path) in out.stderr and "refused" in out.stderr
    assert os.path.islink(path) if kind.startswith("symlink") else not os.path.islink(path)


def test_a_file_ntpguard_did_not_write_is_never_overwritten(tmp_path):
    """`timeconf --write --path` at the admin's own file replaced it whole; the command's
    help says ntpguard never edits an admin's file."""
    from ntpguard.errors import UsageError

    content = daemons.get("chrony").render(["2606:4700::1"], "iburst", ())
    admin = tmp_path / "admin.sources"
    admin.write_text("server time.example.org iburst\n")
    with pytest.raises(UsageError, match="not written by ntpguard"):
        timeconf.write("chrony", content, str(admin), reload=False)
    assert admin.read_text() == "server time.example.org iburst\n"
    ours = tmp_path / "ntpguard.sources"
    assert timeconf.write("chrony", content, str(ours), reload=False)  # new
    assert timeconf.write("chrony", content.replace("4700", "4701"), str(ours), reload=False)
    empty = tmp_path / "empty.sources"
    empty.write_text("")
    assert timeconf.write("chrony", content, str(empty), reload=False)


def test_a_missing_directory_is_an_error_not_made(run_cli, tmp_path):
    """`timeconf --write --path` made every missing directory: /etc/chrony/sources.d where
    chrony is not installed, or a tree from a typo, that no daemon reads."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[servers]\ntrusted = ["2a01:4f8::7"]\n')
    target = tmp_path / "chrony" / "sources.d" / "ntpguard.sources"
    out = run_cli("timeconf", "--format", "chrony", "--write", "--no-reload", "--path", target,
                  config=cfg)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr == (f"ntpguard: {target}: cannot write: {target.parent} does not "
                          "exist\n")
    assert not (tmp_path / "chrony").exists()


def test_timesyncds_drop_in_directory_is_made_as_its_package_ships_none(tmp_path,
                                                                          monkeypatch):
    """systemd-timesyncd reads /etc/systemd/timesyncd.conf.d but does not ship it: that one
    directory (here under tmp_path) is made, with no parents, and only for timesyncd."""
    conf_d = tmp_path / "systemd" / "timesyncd.conf.d"
    monkeypatch.setattr(daemons.Timesyncd, "unshipped_dir", str(conf_d))
    content = timeconf.render("timesyncd", SERVERS)
    # Its parent missing: systemd is not installed, and the error names what is missing.
    with pytest.raises(UsageError, match=re.escape(
            f"cannot write: {tmp_path / 'systemd'} does not exist (is timesyncd installed?)")):
        timeconf.write("timesyncd", content, str(conf_d / "ntpguard.conf"), reload=False)
    assert not (tmp_path / "systemd").exists()
    (tmp_path / "systemd").mkdir()
    with pytest.raises(UsageError, match="does not exist"):
        timeconf.write("chrony", timeconf.render("chrony", SERVERS), str(conf_d / "x.sources"),
                       reload=False)
    assert timeconf.write("timesyncd", content, str(conf_d / "ntpguard.conf"), reload=False)
    assert (conf_d / "ntpguard.conf").read_text() == content
