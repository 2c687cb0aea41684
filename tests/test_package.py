"""The Debian package for real: build it, lint it, install it, run it, remove and purge it.

The install test changes this machine (dpkg database, /usr/bin/ntpguard, /etc/ntpguard) for a
few seconds and always purges the package again, also on failure. Every maintainer script that
may touch netfilter (prerm runs `ntpguard rules remove`) runs inside a throw-away network
namespace (`unshare -n`), never against the root namespace's firewall.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
BUILD = PACKAGING / "build-deb.sh"
# Serialises two runs of this file on one machine (two engineers' `make test`): one dpkg database.
LOCK = "/run/lock/ntpguard-test-package.lock"
BUILD_TOOLS = ("git", "dpkg-buildpackage", "dpkg-parsechangelog", "dh", "dh_python3")
# Debian's tools only: a pyenv or venv python3 earlier in PATH must not run the package.
SYSTEM_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
              "HOME": os.environ.get("HOME", "/root"), "DEBIAN_FRONTEND": "noninteractive"}
EXPECTED_FILES = (
    "./usr/bin/ntpguard",
    "./etc/ntpguard/ntpguard.toml",
    "./etc/cron.d/ntpguard",
    "./lib/systemd/system/ntpguard.service",
    "./lib/systemd/system/ntpguard.timer",
    "./lib/systemd/system/ntpguard-boot.service",
    "./lib/systemd/system/ntpguard-watch.service",
    "./usr/share/man/man8/ntpguard.8.gz",
    "./usr/share/ntpguard/rules/harvesters.txt",
    "./usr/share/ntpguard/rules/scanners.txt",
    "./usr/lib/python3/dist-packages/ntpguard/__init__.py",
    "./usr/lib/python3/dist-packages/ntpguard/cli/__init__.py",
    "./usr/lib/python3/dist-packages/ntpguard/logs/_cut.abi3.so",
)
# The installed parser must load the C fast path (one abi3 build for Debian 12's 3.11 and 13's
# 3.13): without it detect still works, at a quarter of the speed.
NATIVE_CHECK = "import ntpguard.logs.parse as p; assert p._native_cut is not None"
UNITS = ("ntpguard.service", "ntpguard.timer", "ntpguard-boot.service",
         "ntpguard-watch.service")
GENERATED = ("/etc/chrony/sources.d/ntpguard.sources",
             "/etc/systemd/timesyncd.conf.d/ntpguard.conf")


def run(cmd, *, check: bool = False, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", SYSTEM_ENV)
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                       **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))}: exit {p.returncode}\n"
                             f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def upstream_version() -> str:
    p = run(["dpkg-parsechangelog", "-l", PACKAGING / "debian" / "changelog", "-S", "Version"],
            check=True)
    return p.stdout.strip().rsplit("-", 1)[0]


def dpkg_status(package: str = "ntpguard") -> str:
    """'' when dpkg knows nothing of the package, else its Status field."""
    p = run(["dpkg-query", "-W", "-f=${Status}", package])
    return p.stdout.strip() if p.returncode == 0 else ""


def installed(package: str = "ntpguard") -> bool:
    return dpkg_status(package) not in ("", "unknown ok not-installed")


def need_build_tools() -> None:
    missing = [t for t in BUILD_TOOLS if not shutil.which(t, path=SYSTEM_ENV["PATH"])]
    if missing:
        pytest.skip(f"Debian build tools missing: {', '.join(missing)} "
                    "(make deps installs the Makefile's DEB_BUILD_PACKAGES)")


# -- no root needed: the packaging files themselves ------------------------------------------------


def test_man_page_covers_every_command_exit_code_and_variable():
    from ntpguard.cli import COMMANDS

    page = (PACKAGING / "ntpguard.8").read_text()
    for name in [*COMMANDS, "sync"]:
        assert re.search(rf"^\.B {name}\b", page, re.M), f"ntpguard.8 lacks command {name!r}"
    exit_codes = re.search(r"^\.SH EXIT STATUS\n(.*?)^\.SH", page, re.M | re.S)
    assert exit_codes and re.findall(r"^\.B (\d)$", exit_codes.group(1), re.M) == list("012345")
    for word in ("NTPGUARD_CONFIG", "NTPGUARD_STATE_DIR", "/etc/ntpguard/ntpguard.toml",
                 "/var/lib/ntpguard"):
        assert word in page
    if shutil.which("man"):
        p = run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z",
                 PACKAGING / "ntpguard.8"])
        assert p.returncode == 0 and p.stderr == "", p.stderr


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values]}}."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in (PACKAGING / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{name}: {line!r} outside a section"
        current.setdefault(key, []).append(value)
    return sections


def test_units_oneshot_hardened_and_timer_installable():
    service = _unit("ntpguard.service")
    assert "Install" not in service, "the service is started by the timer only"
    s = service["Service"]
    assert s["Type"] == ["oneshot"] and s["ExecStart"] == ["/usr/bin/ntpguard sync"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert "CAP_NET_ADMIN" in s["CapabilityBoundingSet"][0].split()
    writable = s["ReadWritePaths"][0].split()
    for path in ("/var/lib/ntpguard", "/etc/chrony/sources.d", "/etc/systemd/timesyncd.conf.d"):
        assert path in writable or "-" + path in writable
    assert service["Unit"]["Documentation"] == ["man:ntpguard(8)"]
    timer = _unit("ntpguard.timer")
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    assert timer["Timer"]["RandomizedDelaySec"]


def test_boot_unit_runs_before_every_time_daemon_and_the_watcher_restarts():
    boot = _unit("ntpguard-boot.service")
    unit = boot["Unit"]
    assert unit["DefaultDependencies"] == ["no"] and "shutdown.target" in unit["Conflicts"]
    before = " ".join(unit["Before"]).split()
    for daemon in ("chrony.service", "systemd-timesyncd.service", "ntpsec.service",
                   "openntpd.service", "time-sync.target", "network-pre.target"):
        assert daemon in before, daemon
    assert "nftables.service" in " ".join(unit["After"]).split()
    assert unit["PartOf"] == ["nftables.service"]
    assert boot["Service"]["ExecStart"] == ["/usr/bin/ntpguard rules restore"]
    assert boot["Service"]["RemainAfterExit"] == ["yes"]
    assert boot["Install"]["WantedBy"] == ["sysinit.target"]
    watcher = _unit("ntpguard-watch.service")["Service"]
    assert watcher["ExecStart"] == ["/usr/bin/ntpguard watch"]
    assert watcher["Restart"] == ["always"] and watcher["Type"] == ["notify"]
    for name in ("ntpguard-boot.service", "ntpguard-watch.service"):
        s = _unit(name)["Service"]
        assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
        assert s["CapabilityBoundingSet"][0].split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]


def cron_commands(text: str) -> dict[str, str]:
    """The commands of a cron.d file's job lines by schedule (`@reboot`, `*/15 * * * *`),
    `\\%` unescaped as cron does."""
    jobs = [ln for ln in text.splitlines()
            if ln.strip() and not ln.startswith("#") and not re.match(r"^\w+=", ln)]
    out = {}
    for job in jobs:
        fields = job.split(None, 2 if job.startswith("@") else 6)
        schedule, user, command = " ".join(fields[:-2]), fields[-2], fields[-1]
        assert user == "root" and schedule not in out, job
        # cron turns an unescaped % into a newline: there must be none.
        assert not re.search(r"(?<!\\)%", command), command
        out[schedule] = command.replace("\\%", "%")
    return out


def test_cron_jobs_are_guarded_and_valid_shell():
    commands = cron_commands((PACKAGING / "ntpguard.cron").read_text())
    assert set(commands) == {"@reboot", "*/15 * * * *"}
    for command in commands.values():
        assert command.startswith("test -x /usr/bin/ntpguard && [ ! -d /run/systemd/system ] && ")
        assert run(["sh", "-n", "-c", command]).returncode == 0
    assert commands["*/15 * * * *"].endswith("/usr/bin/ntpguard sync >/dev/null")
    assert "/usr/bin/ntpguard rules restore" in commands["@reboot"]
    assert commands["@reboot"].endswith("exec /usr/bin/ntpguard watch >/dev/null; }")


def test_build_refuses_a_changelog_that_disagrees_with_the_code(tmp_path):
    need_build_tools()
    (tmp_path / "packaging" / "debian").mkdir(parents=True)
    (tmp_path / "ntpguard").mkdir()
    shutil.copy(BUILD, tmp_path / "packaging" / "build-deb.sh")
    changelog = (PACKAGING / "debian" / "changelog").read_text()
    (tmp_path / "packaging" / "debian" / "changelog").write_text(
        re.sub(r"^ntpguard \([^)]*\)", "ntpguard (9.9.9-1)", changelog, count=1))
    (tmp_path / "ntpguard" / "__init__.py").write_text('__version__ = "0.1.0"\n')
    p = run([tmp_path / "packaging" / "build-deb.sh", tmp_path / "out"])
    assert p.returncode == 1
    assert "changelog says 9.9.9-1 but ntpguard/__init__.py says 0.1.0" in p.stderr
    assert not list((tmp_path / "out").glob("*.deb"))


# -- root: build, lint, install, remove, purge ----------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The .deb and source package built from this working tree (unit tests skipped: make test
    runs them anyway, and a package build runs them again only when asked)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    need_build_tools()
    out = tmp_path_factory.mktemp("deb")
    env = dict(SYSTEM_ENV, DEB_BUILD_OPTIONS="nocheck")
    started = time.monotonic()
    p = run([BUILD, "--source", out], env=env, timeout=600)
    assert p.returncode == 0, f"build-deb.sh failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    print(f"package built in {time.monotonic() - started:.1f} s")
    return out


def the_deb(out: Path) -> Path:
    arch = run(["dpkg", "--print-architecture"], check=True).stdout.strip()
    debs = list(out.glob(f"ntpguard_*_{arch}.deb"))
    assert len(debs) == 1, debs
    return debs[0]


@pytest.mark.root
def test_package_contents_and_fields(built):
    deb = the_deb(built)
    listing = run(["dpkg-deb", "-c", deb], check=True).stdout
    paths = {line.split()[5] for line in listing.splitlines()}
    for path in EXPECTED_FILES:
        assert path in paths, f"{path} missing from {deb.name}"
    assert not [p for p in paths if "/tests/" in p or "/lab/" in p or p.endswith((".pyc", ".c"))]
    fields = {}
    for name in ("Architecture", "Depends", "Recommends", "Suggests"):
        fields[name] = run(["dpkg-deb", "-f", deb, name], check=True).stdout.strip()
    assert fields["Architecture"] == run(["dpkg", "--print-architecture"]).stdout.strip()
    depends = {d.split()[0] for alt in fields["Depends"].split(",") for d in alt.split("|")}
    assert {"python3-dnspython", "nftables", "python3-nftables", "libc6"} <= depends
    assert "python3-netaddr" not in depends  # measured slower and unused (README)
    # abi3: no upper bound on python3, or Debian 13's 3.13 could not install it.
    assert "<<" not in fields["Depends"], fields["Depends"]
    assert "chrony | systemd-timesyncd" in fields["Recommends"]
    assert "python3-iptables" in fields["Suggests"]
    ctl = run(["dpkg-deb", "-I", deb, "conffiles"], check=True).stdout.split()
    assert ctl == ["/etc/cron.d/ntpguard", "/etc/ntpguard/ntpguard.toml"]
    scripts = {name: run(["dpkg-deb", "-I", deb, name]).stdout
               for name in ("postinst", "prerm", "postrm")}
    for name, text in scripts.items():
        # Only debhelper's own snippets may talk to systemd (guarded by /run/systemd/system).
        own = re.sub(r"# Automatically added by .*?# End automatically added section", "",
                     text, flags=re.S)
        assert "systemctl" not in own and "deb-systemd" not in own, name
    assert "ntpguard.timer" in scripts["postinst"]


@pytest.mark.root
def test_lintian_finds_no_errors(built):
    if not shutil.which("lintian", path=SYSTEM_ENV["PATH"]):
        pytest.skip("lintian missing (make deps installs it)")
    changes = list(built.glob("*.changes"))
    assert len(changes) == 1
    p = run(["lintian", "--pedantic", "--display-info", changes[0]], timeout=300)
    tags = [ln for ln in p.stdout.splitlines() if re.match(r"^[EWIPX]: ", ln)]
    errors = [t for t in tags if t.startswith("E: ")]
    assert not errors and p.returncode == 0, "\n".join(tags) + p.stderr
    for tag in tags:  # reported, not fatal
        warnings.warn(f"lintian: {tag}", stacklevel=1)


@pytest.fixture
def dpkg_lock():
    with open(LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def in_scratch_netns(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a shell script in a new, empty network namespace (dies with the script)."""
    return run(["unshare", "--net", "sh", "-c", "ip link set lo up\n" + script],
               timeout=timeout)


def purge() -> subprocess.CompletedProcess:
    return in_scratch_netns("dpkg --purge ntpguard")


@pytest.mark.root
def test_install_run_remove_purge(built, tmp_path, dpkg_lock):
    if installed():
        pytest.skip(f"ntpguard is installed on this machine ({dpkg_status()}); "
                    "this test would remove it")
    if os.path.exists("/var/lib/ntpguard"):
        pytest.skip("/var/lib/ntpguard exists on this machine; purging would delete it")
    deb = the_deb(built)
    made = []  # generated files this test plants for postrm to purge
    had_timesyncd_dir = os.path.isdir("/etc/systemd/timesyncd.conf.d")
    try:
        p = run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                 "-o", "DPkg::Lock::Timeout=120", f"./{deb.name}"], cwd=built, timeout=300)
        # A package that fails to configure can still leave apt-get exit 0 next time: ask dpkg.
        assert p.returncode == 0 and dpkg_status() == "install ok installed", \
            p.stdout[-3000:] + p.stderr[-3000:]

        version = run(["/usr/bin/ntpguard", "--version"], check=True, cwd="/").stdout.strip()
        run(["/usr/bin/python3", "-c", NATIVE_CHECK], check=True, cwd="/")
        assert version == f"ntpguard {upstream_version()}"
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "ntpguard"]).stdout
        assert "/etc/ntpguard/ntpguard.toml" in conffiles and "/etc/cron.d/ntpguard" in conffiles
        # With no --config and no $NTPGUARD_CONFIG: the shipped conffile must load.
        state = tmp_path / "state"
        p = run(["/usr/bin/ntpguard", "status", "--state-dir", state], cwd="/")
        assert p.returncode == 0 and version in p.stdout, p.stderr
        # The shipped lists are found where the package puts them, not in a source tree.
        p = run(["/usr/bin/ntpguard", "list", "show", "--state-dir", state], cwd="/")
        assert p.returncode == 0, p.stderr
        assert "builtin-harvesters" in p.stdout and "builtin-scanners" in p.stdout
        assert "/usr/share/ntpguard/rules" in p.stdout or "45" in p.stdout
        assert run(["man", "-w", "ntpguard"]).stdout.strip() == \
            "/usr/share/man/man8/ntpguard.8.gz"
        assert os.path.islink("/etc/systemd/system/timers.target.wants/ntpguard.timer")

        if shutil.which("systemd-analyze"):
            units = [f"/lib/systemd/system/{u}" for u in UNITS]
            p = run(["systemd-analyze", "verify", *units])
            complaints = [ln for ln in p.stderr.splitlines() if "ntpguard" in ln]
            assert p.returncode == 0 and not complaints, p.stderr
        else:
            warnings.warn("systemd-analyze missing: units not verified", stacklevel=1)

        # Where systemd runs, the cron jobs must stand down at once (the units are in charge).
        # Scratch mount and network namespaces: even a broken guard changes nothing real.
        jobs = cron_commands(Path("/etc/cron.d/ntpguard").read_text())
        for command in jobs.values():
            started = time.monotonic()
            p = run(["unshare", "--mount", "--net", "sh", "-c",
                     'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && '
                     'exec sh -c "$0"', command], timeout=20)
            assert p.returncode != 0 and time.monotonic() - started < 10
            assert not os.path.exists("/var/lib/ntpguard")
        # Without systemd, @reboot puts the shipped lists' rules in place (nothing applied
        # yet) and the watcher it starts puts them back after a `flush ruleset`.
        p = run(["unshare", "--mount", "--net", "sh", "-c",
                 'mount -t tmpfs tmpfs /run && ip link set lo up && '
                 '(timeout 20 sh -c "$0" & job=$!; sleep 3; nft list tables; nft flush ruleset; '
                 'sleep 2; nft list tables; nft list set inet ntpguard scan6_64; kill $job)',
                 jobs["@reboot"]],
                timeout=30)
        assert p.stdout.splitlines().count("table inet ntpguard") == 2, p.stdout + p.stderr
        assert "2604:a880:800:10::" in p.stdout, p.stdout
        assert os.path.isfile("/var/lib/ntpguard/applied-plan.json")
        assert not os.path.exists("/var/lib/ntpguard/state.db")

        # Drop-ins as `ntpguard timeconf --write` leaves them; purge must delete them.
        assert os.path.isdir("/etc/systemd/timesyncd.conf.d"), "shipped for the sandboxed unit"
        for path in GENERATED:
            if os.path.isdir(os.path.dirname(path)) and not os.path.exists(path):
                Path(path).write_text("# written by test_package.py for postrm to purge\n")
                made.append(path)

        # Remove, in a scratch network namespace holding ntpguard's rules: prerm takes them down.
        # The rules are applied with no more than the unit's CapabilityBoundingSet and
        # NoNewPrivileges, so the unit's hardening is known to leave ntpguard able to work.
        caps = _unit("ntpguard.service")["Service"]["CapabilityBoundingSet"][0].split()
        bounding = ",".join(["-all"] + ["+" + c.lower()[len("cap_"):] for c in caps])
        p = in_scratch_netns(
            f"setpriv --no-new-privs --bounding-set {bounding} --inh-caps=-all "
            "ntpguard rules apply --force >/dev/null || exit 90\n"
            "nft list tables | grep -qx 'table inet ntpguard' || exit 91\n"
            "dpkg -r ntpguard || exit 92\n"
            "nft list tables | grep -q ntpguard && exit 93\n"
            "exit 0\n")
        assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        assert "nft: table inet ntpguard removed" in p.stdout + p.stderr
        assert dpkg_status() == "deinstall ok config-files"
        assert not os.path.exists("/usr/bin/ntpguard")
        assert os.path.isfile("/etc/ntpguard/ntpguard.toml"), "remove keeps conffiles"
        assert os.path.isdir("/var/lib/ntpguard"), "remove keeps the state"
        assert not [p for p in Path("/usr/lib/python3/dist-packages").glob("ntpguard*")]

        p = purge()
        assert p.returncode == 0, p.stderr
        assert dpkg_status() == ""
        for path in ("/var/lib/ntpguard", "/etc/ntpguard", "/etc/cron.d/ntpguard",
                     "/etc/systemd/system/timers.target.wants/ntpguard.timer", *made):
            assert not os.path.lexists(path), f"{path} survived the purge"
        if not had_timesyncd_dir:
            assert not os.path.exists("/etc/systemd/timesyncd.conf.d")
    finally:
        if installed():
            purge()
        for path in made:
            if os.path.exists(path):
                os.unlink(path)


TRIXIE_CHECK = """set -e
r=$1
test "$(chroot "$r" /usr/bin/ntpguard --version)" = "ntpguard $2"
chroot "$r" /usr/bin/python3 -c "$3"
mkdir -p "$r/tmp/ntpguard-state"
chroot "$r" /usr/bin/ntpguard status --state-dir /tmp/ntpguard-state
chroot "$r" /usr/bin/ntpguard list show --state-dir /tmp/ntpguard-state \\
    | grep -q '^builtin-harvesters .*/usr/share/ntpguard/rules/harvesters.txt$'
chroot "$r" dpkg-query -W python3 python3-dnspython python3-nftables
# Debian 13's nft (1.1) lists the table back as in place: its spelling is no drift.
unshare --net chroot "$r" sh -c 'ntpguard rules restore --state-dir /tmp/ntpguard-state &&
    ntpguard rules show --state-dir /tmp/ntpguard-state >/dev/null'
# prerm and postrm in a scratch network namespace: nothing reaches the host's firewall.
unshare --net chroot "$r" dpkg --purge ntpguard
test ! -e "$r/var/lib/ntpguard" && test ! -e "$r/usr/bin/ntpguard" && test ! -e "$r/etc/ntpguard"
echo TRIXIE-OK
"""


@pytest.mark.root
def test_installs_runs_and_purges_on_debian_13(built, tmp_path):
    """The package built here on Debian 12 in a fresh Debian 13 (trixie) chroot: its
    dependencies resolve there (Python 3.13, dnspython 2.7) and it runs."""
    if not shutil.which("mmdebstrap", path=SYSTEM_ENV["PATH"]):
        pytest.skip("mmdebstrap missing (make deps installs it)")
    mirror = os.environ.get("NTPGUARD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    deb = the_deb(built)
    check = tmp_path / "check.sh"
    check.write_text(TRIXIE_CHECK)
    started = time.monotonic()
    p = run(["mmdebstrap", "--variant=apt", "--mode=root", "--include=python3,iproute2",
             f"--customize-hook=copy-in {deb} /tmp",
             "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install "
             f"-y -q --no-install-recommends /tmp/{deb.name}",
             f"--customize-hook=sh {check} \"$1\" {upstream_version()} '{NATIVE_CHECK}'",
             "trixie", "/dev/null", mirror], timeout=600)
    if p.returncode != 0 and ("Failed to fetch" in p.stderr or "Could not resolve" in p.stderr):
        pytest.skip(f"Debian mirror {mirror} unreachable")
    assert p.returncode == 0 and "TRIXIE-OK" in p.stdout + p.stderr, \
        (p.stdout + p.stderr)[-5000:]
    versions = re.findall(r"^(python3[\w-]*)\t(\S+)$", p.stdout + p.stderr, re.M)
    print(f"Debian 13 chroot: {dict(versions)}; {time.monotonic() - started:.0f} s")


# -- the package under a real systemd, booted several times ---------------------------------------
#
# Debian 12 booted by systemd-nspawn in a network namespace of its own (ntpg-b-c-host, made anew
# for every boot, as a reboot starts with an empty firewall), wired to an "internet" namespace
# (ntpg-b-c-net) that holds the pool servers' addresses and counts, in its own nft table, every
# NTP packet that reaches each of them. Nothing is connected to the root namespace.

SERVERS = [f"2a01:4f8:{i:x}:2::123" for i in range(1, 5)]
HARVESTER, CLEAN = SERVERS[0], SERVERS[1:]
HOST_NET = "2a01:4f8:ffff:1::"
HOST_ADDR = f"{HOST_NET}2"
# The pool's DNS inside the container, as the system resolver (chrony's `pool` line asks it):
# every answer holds all four servers, the harvester among them. Ready (sd_notify) before
# chrony starts, so chrony's first query is answered, as at a real boot.
POOL_SCRIPT = f"""import os, socket, sys, time
sys.path.insert(0, "/root")
from dnsfake import FakeDNS
with FakeDNS(answer={SERVERS!r}, port=53):
    path = os.environ["NOTIFY_SOCKET"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", "\\0" + path[1:] if path.startswith("@") else path)
    time.sleep(86400)
"""
POOL_UNIT = """[Unit]
Description=a fake pool.ntp.org nameserver for the test
Before=chrony.service
[Service]
Type=notify
ExecStart=/usr/bin/python3 /root/pooldns.py
[Install]
WantedBy=multi-user.target
"""
TEST_CONFIG = """[pool]
record_types = ["AAAA"]
rounds = 2
interval = 1.0
nameservers = ["127.0.0.1"]
"""
# chronyd runs with -x (it never sets the clock: nspawn shares the host's), which also lifts its
# need of CAP_SYS_TIME. ntpguard's own unit is only given another configuration file.
CHRONY_DROPIN = """[Unit]
ConditionCapability=
[Service]
ExecStart=
ExecStart=!/usr/sbin/chronyd -x $DAEMON_OPTS
"""
# Debian's timesyncd unit refuses to start in a container without this (it may not set the
# clock there, and it does not need to: what it sends is what the test counts). Its servers:
# the harvester first, so it meets it at once unless the rules are in place.
TIMESYNCD_DROPIN = """[Unit]
ConditionVirtualization=
ConditionCapability=
[Service]
AmbientCapabilities=
"""
TIMESYNCD_SERVERS = f"[Time]\nNTP={HARVESTER} {CLEAN[0]}\n"
NTPGUARD_DROPIN = """[Service]
Environment=NTPGUARD_CONFIG=/etc/ntpguard/test.toml
"""
# The "internet" counts NTP per destination (and the host's real source address, which
# ntpguard's canaries should keep out of sight).
COUNTERS = f"""table inet count {{
    chain pre {{
        type filter hook prerouting priority -300; policy accept;
        udp dport 123 ip6 daddr {HARVESTER} counter comment "harvester"
        udp dport 123 ip6 daddr {{ {", ".join(CLEAN)} }} counter comment "clean"
        udp dport 123 ip6 saddr {HOST_ADDR} counter comment "real"
    }}
}}
"""
MACHINE = "ntpguard-boot-test"


class Booted:
    """One Debian 12 root, booted and powered off as often as a test wants."""

    def __init__(self, root: Path, lab) -> None:
        self.root, self.lab = root, lab
        self.net = lab.ns("net")
        for a in SERVERS:
            self.net.addr("lo", f"{a}/128")
        self.nspawn: subprocess.Popen | None = None
        self.init = 0
        self.started = 0.0

    def boot(self) -> None:
        """A fresh network namespace (empty firewall, as after a reboot), then nspawn -b."""
        from lab.netns import sh

        sh("ip", "netns", "delete", "ntpg-b-c-host", check=False)
        host = self.lab.ns("host")
        self.lab.link(self.net, "h0", host, "eth0")
        self.net.addr("h0", f"{HOST_NET}1/64")
        host.addr("eth0", f"{HOST_ADDR}/64")
        host.run("ip", "-6", "route", "add", "default", "via", f"{HOST_NET}1")
        # Counters from zero (`nft reset counters` resets named counters only, not these).
        self.net.run("nft", "-f", "-", input="table inet count\ndelete table inet count\n"
                     + COUNTERS)
        self.started = time.monotonic()
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
             "-M", MACHINE, "--console=passive", "--resolv-conf=off",
             "--capability=CAP_NET_ADMIN", f"--network-namespace-path=/run/netns/{host.name}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=SYSTEM_ENV)
        self.init, state = 0, ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and state not in ("running", "degraded"):
            time.sleep(0.2)
            if not self.init:
                kids = run(["pgrep", "-P", str(self.nspawn.pid)]).stdout.split()
                self.init = int(kids[0]) if kids else 0
            if self.init:
                state = self.inside("systemctl", "is-system-running").stdout.strip()
        assert state in ("running", "degraded"), f"container did not boot: {state!r}"

    def inside(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run(["nsenter", "-t", str(self.init), "-a", *cmd], timeout=timeout)

    def poweroff(self) -> None:
        if self.init:
            self.inside("systemctl", "poweroff", "--no-block", timeout=30)
        if self.nspawn is not None:
            try:
                self.nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(timeout=30)
        self.init, self.nspawn = 0, None

    def counted(self) -> dict[str, int]:
        """NTP packets the "internet" received since the boot, by counter comment."""
        table = self.net.run("nft", "list", "table", "inet", "count").stdout
        return {m.group(2): int(m.group(1)) for m in re.finditer(
            r"counter packets (\d+) bytes \d+ comment \"(\w+)\"", table)}

    def in_place(self) -> bool:
        return self.inside("nft", "list", "set", "inet", "ntpguard", "generation",
                           timeout=10).returncode == 0

    def back_after(self, *cmd: str) -> float:
        """Seconds from running cmd inside until ntpguard's table is there again."""
        started = time.monotonic()
        p = self.inside(*cmd)
        assert p.returncode == 0, p.stderr
        while not self.in_place():
            assert time.monotonic() - started < 10, f"table not back after {cmd}"
            time.sleep(0.05)
        return time.monotonic() - started

    def active_since(self, unit: str, prop: str) -> int:
        out = self.inside("systemctl", "show", unit, "-p", prop, "--value").stdout.strip()
        return int(out or 0)


def check_boot(c: Booted, daemon: str, settle: float = 10.0) -> str:
    """After a boot: the rules were in place before the time daemon started, no NTP reached
    the harvester while the daemon tried it, NTP did reach the clean servers, and the table
    comes back after an nftables restart and a `flush ruleset`. Returns a report line."""
    time.sleep(max(0.0, c.started + settle - time.monotonic()))
    counted = c.counted()
    assert counted["harvester"] == 0 and counted["clean"] > 0, counted
    # Canaries came back with the rules: not one NTP packet left from the host's own address.
    assert counted["real"] == 0, counted
    journal = c.inside("journalctl", "-b", "--no-pager", "-o", "cat").stdout
    assert "ordering cycle" not in journal.lower(), journal[-3000:]
    boot_done = c.active_since("ntpguard-boot.service", "ActiveEnterTimestampMonotonic")
    daemon_start = c.active_since(daemon, "ExecMainStartTimestampMonotonic")
    assert boot_done and daemon_start and boot_done <= daemon_start, (boot_done, daemon_start)
    assert c.inside("systemctl", "is-active", "ntpguard-watch.service").stdout.strip() == \
        "active", c.inside("journalctl", "-u", "ntpguard-watch", "--no-pager").stdout
    show = c.inside("ntpguard", "rules", "show")
    assert show.returncode == 0, show.stderr
    status = c.inside("ntpguard", "status")
    assert status.returncode == 0 and "rules:   in place (nft, applied " in status.stdout \
        and "last resolve: never" not in status.stdout, status.stdout + status.stderr
    restart = c.back_after("systemctl", "restart", "nftables.service")
    flush = c.back_after("nft", "flush", "ruleset")
    assert restart < 5 and flush < 5, (restart, flush)
    assert c.inside("ntpguard", "rules", "show").returncode == 0
    after = c.counted()
    return (f"{daemon}: rules in place {(daemon_start - boot_done) / 1e6:.2f} s before it "
            f"started; NTP packets in {settle:.0f} s after boot: {counted}; table back "
            f"{restart:.2f} s after `systemctl restart nftables`, {flush:.2f} s after `nft "
            f"flush ruleset` (harvester packets by then: {after['harvester']})")


@pytest.mark.root
def test_booted_debian_12_keeps_ntp_from_a_known_harvester(built, tmp_path):
    """The package in a Debian 12 booted by systemd-nspawn, three times.

    Boot 1: the timer is active; ntpguard.service, with all its hardening, runs a whole
    `sync` (a fake pool DNS in the container, chronyd -x): nft rules applied, chrony's drop-in
    written and reloaded; then a server is marked a harvester and a second sync applies that.
    Boot 2 (chrony, Debian's `pool` line, which the pool DNS answers with the harvester): not
    one NTP packet reaches the harvester, the clean servers get theirs, ntpguard-boot.service
    finished before chrony started, and the table is back within 5 s after `systemctl restart
    nftables` and after `nft flush ruleset` (nftables.service is enabled, as on a host with a
    firewall). Boot 3: the same with systemd-timesyncd as the only time daemon, told to use the
    harvester first."""
    for tool in ("mmdebstrap", "systemd-nspawn", "nsenter"):
        if not shutil.which(tool, path=SYSTEM_ENV["PATH"]):
            pytest.skip(f"{tool} missing (make deps installs it)")
    from lab.netns import Lab

    mirror = os.environ.get("NTPGUARD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    deb = the_deb(built)
    root = tmp_path / "bookworm"
    files = {"/root/dnsfake.py": (Path(__file__).parent / "dnsfake.py").read_text(),
             "/root/pooldns.py": POOL_SCRIPT,
             "/etc/resolv.conf": "nameserver 127.0.0.1\n",
             "/etc/systemd/system/fakepool.service": POOL_UNIT,
             "/etc/ntpguard/test.toml": TEST_CONFIG,
             "/etc/systemd/system/chrony.service.d/test.conf": CHRONY_DROPIN,
             "/etc/systemd/system/ntpguard.service.d/test.conf": NTPGUARD_DROPIN,
             "/etc/systemd/system/ntpguard-boot.service.d/test.conf": NTPGUARD_DROPIN,
             "/etc/systemd/system/ntpguard-watch.service.d/test.conf": NTPGUARD_DROPIN}
    staged = tmp_path / "files"
    for path, text in files.items():
        (staged / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (staged / path.lstrip("/")).write_text(text)
    started = time.monotonic()
    p = run(["mmdebstrap", "--variant=apt", "--mode=root",
             "--include=systemd,systemd-sysv,dbus,chrony,python3-dnspython,iproute2,nftables",
             f"--customize-hook=copy-in {deb} /tmp",
             "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install "
             f"-y -q --no-install-recommends /tmp/{deb.name}",
             # For boot 3: timesyncd conflicts with chrony, so it waits as a .deb.
             "--customize-hook=chroot \"$1\" sh -c 'cd /root && apt-get download -q "
             "systemd-timesyncd'",
             f"--customize-hook=cp -r {staged}/. \"$1\"/",
             "--customize-hook=chroot \"$1\" systemctl enable fakepool.service nftables.service",
             "bookworm", root, mirror], timeout=600)
    if p.returncode != 0 and ("Failed to fetch" in p.stderr or "Could not resolve" in p.stderr):
        pytest.skip(f"Debian mirror {mirror} unreachable")
    assert p.returncode == 0, p.stderr[-3000:]
    made = time.monotonic() - started
    report = []
    with Lab("ntpg-b-c-") as lab:
        c = Booted(root, lab)
        try:
            # Boot 1: the hardened sync, then a harvester known to the state.
            c.boot()
            assert c.inside("systemctl", "is-active", "ntpguard.timer").stdout.strip() == \
                "active"
            assert c.inside("systemctl", "is-active", "chrony", "fakepool").stdout.split() == \
                ["active", "active"]
            # With nothing applied yet, the boot unit put the shipped lists' rules in place.
            assert c.in_place()
            p = c.inside("systemctl", "start", "ntpguard.service")
            journal = c.inside("journalctl", "-u", "ntpguard.service", "-o", "cat",
                               "--no-pager").stdout
            assert p.returncode == 0, journal + p.stderr
            summary = [ln for ln in journal.splitlines() if ln.startswith("sync: ")]
            assert len(summary) == 1, journal  # stdout is the journal: no syslog copy besides
            assert re.match(r"sync: servers 4 known/", summary[0]), summary
            assert re.search(r"rules (replaced|updated)", summary[0]) \
                and "time daemon changed" in summary[0] and "failed" not in summary[0], summary
            props = c.inside("systemctl", "show", "ntpguard.service", "-p", "ProtectSystem",
                             "-p", "CapabilityBoundingSet", "-p", "Result").stdout
            assert "ProtectSystem=strict" in props and "Result=success" in props, props
            assert "cap_sys_admin" not in props.lower()
            sources = (root / "etc/chrony/sources.d/ntpguard.sources").read_text()
            written = re.findall(r"^server (\S+) iburst$", sources, re.M)
            assert len(written) == 4, sources
            # chronyd took them: the reload went through the hardening (/run/chrony, its socket).
            listed = c.inside("chronyc", "-n", "sources").stdout
            assert all(a in listed for a in written), listed
            report.append(f"boot 1: {summary[0]}")
            p = c.inside("ntpguard", "mark", HARVESTER, "harvester")
            assert p.returncode == 0, p.stderr
            assert c.inside("systemctl", "start", "ntpguard.service").returncode == 0
            clean6 = c.inside("nft", "list", "set", "inet", "ntpguard", "clean6").stdout
            assert HARVESTER not in clean6 and all(a in clean6 for a in CLEAN), clean6
            c.poweroff()

            # Boot 2: chrony, whose pool answers name the harvester.
            c.boot()
            report.append("boot 2: " + check_boot(c, "chrony.service"))
            c.poweroff()

            # Boot 3: systemd-timesyncd, the only time daemon, the harvester first in its list.
            chroot = ["chroot", str(root)]
            p = run([*chroot, "dpkg", "--purge", "chrony"], timeout=120)
            assert p.returncode == 0, p.stderr
            timesyncd = next((root / "root").glob("systemd-timesyncd_*.deb"))
            p = run([*chroot, "dpkg", "-i", f"/root/{timesyncd.name}"], timeout=120)
            assert p.returncode == 0, p.stdout + p.stderr
            for path, text in {
                    "etc/systemd/system/systemd-timesyncd.service.d/test.conf": TIMESYNCD_DROPIN,
                    "etc/systemd/timesyncd.conf.d/test.conf": TIMESYNCD_SERVERS}.items():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(text)
            (root / "etc/systemd/timesyncd.conf.d/ntpguard.conf").unlink(missing_ok=True)
            c.boot()
            report.append("boot 3: " + check_boot(c, "systemd-timesyncd.service"))
        finally:
            c.poweroff()
    for line in report:
        print(line)
    print(f"nspawn root made in {made:.0f} s; {time.monotonic() - started:.0f} s in all")
    shutil.rmtree(root, ignore_errors=True)
