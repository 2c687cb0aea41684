"""Throughput and peak memory of `ntpguard detect` on generated ~1M-line logs.

Prints lines/s for parsing alone (with the C fast path, ntpguard/logs/_cut.c, and with its
pure-Python copy, what runs where the extension is not built), for parse + detect in one
process, and for parse + detect split over the CPUs (what `ntpguard detect FILE` does with a
big file), plus the peak memory
the sequential detector reaches (tracemalloc, in a separate pass so it does not slow the
timing), and the machine's load average before and after (other work skews the figures).

Logs: a gateway's kern.log in the traditional syslog and the RFC 3339 (Debian 12 rsyslog)
envelopes, where nearly every line is a netfilter line (the hardest case); a "mixed"
syslog where 4 of 5 lines are other messages, as in /var/log/syslog or a busy kern.log; and
an internet-facing gateway's log where half the lines are background radiation, each from a
source never seen before (dropped inbound packets, some forwarded, some to the gateway).

On the last one the whole `ntpguard detect FILE` process is also timed beside a plain
per-line regex script run in the same way (one re.search() per line, what a quick log
script does), with the peak resident memory of each process; ntpguard's bytecode is
compiled first, as an installed package has it.
A real journal of as many netfilter lines (systemd-journal-remote writes it) is read the way
`sync` reads the journal, beside the way it was read before (`-o json`, full parser).
The "json" log is the gateway's as `journalctl -o json` records in a file (a journal saved,
or what a shipper collects): the fast paths take them as RFC 3339 lines; beside it, the full
parser alone (how every record was read before) and `ntpguard detect FILE` as a whole
process.
Usage: python3 benchmarks/detect.py [LINES] [REPEATS] [LOG ...]  (LOG: syslog, rfc3339,
mixed, radiation, journal, json)
"""

from __future__ import annotations

import gc
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from loggen import Scenario, generate, write_journal  # noqa: E402

from ntpguard.config import Detect  # noqa: E402
from ntpguard.detect import Detector  # noqa: E402
from ntpguard.evidence import detect_sources, read_blocks  # noqa: E402
from ntpguard.logs import ReadStats  # noqa: E402
from ntpguard.logs.parse import LineParser, _native_cut  # noqa: E402
from ntpguard.logs.sources import file_blocks  # noqa: E402

OTHER = [
    "host systemd[1]: Started session-{n}.scope - Session {n} of User admin.",
    "host kernel: [{n}.123456] usb 1-1: new high-speed USB device number {n} using xhci_hcd",
    "host CRON[{n}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
    "host sshd[{n}]: Connection closed by 198.51.100.{m} port {n} [preauth]",
    "host kernel: [{n}.654321] EXT4-fs (sda1): re-mounted. Quota mode: none.",
]


def write_log(path: str, sc: Scenario, mixed: bool) -> None:
    rng = random.Random(7)
    with open(path, "w") as fh:
        for line in generate(sc, 1):
            if mixed:
                stamp = line[:16] if sc.envelope == "syslog" else line[:33]
                for _ in range(4):
                    fh.write(stamp + rng.choice(OTHER).format(n=rng.randrange(1, 99999),
                                                              m=rng.randrange(1, 255)) + "\n")
            fh.write(line + "\n")
    os.utime(path, (sc.start + sc.duration, sc.start + sc.duration))


RADIATION_PORTS = (22, 23, 80, 443, 445, 3389, 5060, 8080, 123, 53, 1900, 161, 6379, 9200)

# The plain per-line regex script: what the whole-process figures are compared with.
REGEX_SCRIPT = r"""
import re, sys
RE = re.compile(r"(\w{3} [ \d]\d \d\d:\d\d:\d\d) .*?IN=(\S*) OUT=(\S*) .*?SRC=(\S+) "
                r"DST=(\S+) .*?PROTO=(\S+)(?: SPT=(\d+) DPT=(\d+))?")
n = 0
with open(sys.argv[1], encoding="utf-8", errors="replace") as fh:
    for line in fh:
        if RE.search(line):
            n += 1
print(n)
"""


def write_radiation_log(path: str, sc: Scenario) -> None:
    """The gateway log with a line of background radiation after each line: a new source
    each time (IPv6 from all over, a fifth IPv4), one packet to a LAN address (forwarded)
    or to the gateway itself."""
    rng = random.Random(11)
    mac = "MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd "
    with open(path, "w") as fh:
        for line in generate(sc, 1):
            fh.write(line + "\n")
            stamp = line[:16]
            port = rng.choice(RADIATION_PORTS)
            proto = "UDP" if port in (123, 53, 1900, 161, 5060) else "TCP"
            if rng.random() < 0.2:
                src = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
                ip = f"SRC={src} DST=198.51.100.7 LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=4242 DF "
                ifaces = "IN=eth0 OUT= "
            else:
                src = f"2a0{rng.randrange(10)}:" + ":".join(
                    f"{rng.getrandbits(16):04x}" for _ in range(7))
                dst = "2001:0db8:a000:0001:" + ":".join(
                    f"{rng.getrandbits(16):04x}" for _ in range(4))
                ip = f"SRC={src} DST={dst} LEN=80 TC=0 HOPLIMIT=56 FLOWLBL=0 "
                ifaces = "IN=eth0 OUT=eth1 " if rng.random() < 0.7 else "IN=eth0 OUT= "
            l4 = f"PROTO={proto} SPT={rng.randrange(1024, 65535)} DPT={port} " + (
                "WINDOW=1024 RES=0x00 SYN URGP=0 " if proto == "TCP" else "LEN=56 ")
            fh.write(f"{stamp}host kernel: [1.000000] drop: {ifaces}{mac}{ip}{l4}\n")
    os.utime(path, (sc.start + sc.duration, sc.start + sc.duration))


# Runs a command and reports its wall time and peak RSS. A small process of its own, so the
# command's peak is not the benchmark's (a forked child counts its parent's pages until exec).
TIMER = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - t0, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def compile_bytecode() -> None:
    """ntpguard's bytecode compiled once, as an installed package has it (Debian's python3
    packaging compiles at install; the regex script imports only re and sys, compiled
    already): otherwise, with PYTHONDONTWRITEBYTECODE set, every whole-process run compiles
    every module of ntpguard it imports (~40 ms measured)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "ntpguard")],
                   check=True, stdout=subprocess.DEVNULL,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})


def cli_env(tmp: str) -> dict[str, str]:
    """The environment `ntpguard` runs in here: this tree, an empty configuration, a state
    directory in `tmp`."""
    config = os.path.join(tmp, "empty.toml")
    open(config, "w").close()
    return {**os.environ, "PYTHONPATH": str(ROOT), "NTPGUARD_CONFIG": config,
            "NTPGUARD_STATE_DIR": os.path.join(tmp, "state")}


def whole_process(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB (the largest process of the run) of a command."""
    out = subprocess.run([sys.executable, "-c", TIMER, *argv], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"{argv[:4]} failed with {out[2]}")
    return float(out[0]), float(out[1]) / 1024


def best(fn, repeats: int) -> tuple[float, object]:
    """Fastest of `repeats` runs (the least disturbed by other work on the machine)."""
    out, fastest = None, float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        fastest = min(fastest, time.perf_counter() - t0)
    return fastest, out


def main() -> None:
    target = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    chosen = sys.argv[3:] or ["syslog", "rfc3339", "mixed", "radiation", "journal", "json"]
    compile_bytecode()
    with tempfile.TemporaryDirectory() as tmp:
        for name in (n for n in chosen if n != "journal"):
            envelope = {"rfc3339": "rfc3339", "json": "journal"}.get(name, "syslog")
            # A gateway for 40 hosts polling every 64 s with background noise: ~1M lines in
            # 2.2 days (mixed: a fifth of that, and 4 other lines for each; radiation: half,
            # and a line of radiation for each).
            share = {"mixed": 5, "radiation": 2}.get(name, 1)
            sc = Scenario(hosts=40, servers=150, harvesters=6, poll=64.0, noise_per_hour=2000,
                          duration=target / share / 345_000 * 86400, lan_prefixes=1,
                          address_lifetime=6 * 3600, gateway=True, envelope=envelope)
            path = os.path.join(tmp, "kern.log")
            t0 = time.perf_counter()
            if name == "radiation":
                write_radiation_log(path, sc)
            else:
                write_log(path, sc, name == "mixed")
            gen = time.perf_counter() - t0
            size = os.path.getsize(path)

            def parse_only(path: str = path) -> ReadStats:
                stats = ReadStats()
                gc.disable()
                for _ in read_blocks([path], stats=stats):
                    pass
                gc.enable()
                return stats

            def parse_python(path: str = path) -> int:
                parser = LineParser(reference_time=os.stat(path).st_mtime, native=False)
                gc.disable()
                for _ in parser.packet_blocks(file_blocks(path)):
                    pass
                gc.enable()
                return parser.stats.lines

            def full(workers: int, path: str = path) -> tuple[ReadStats, int]:
                stats = ReadStats()
                scans, _ = detect_sources([path], Detect(), stats=stats, workers=workers)
                return stats, len(scans)

            parse, stats = best(parse_only, repeats)
            parse_py, _ = best(parse_python, repeats)
            one, (_, n1) = best(lambda: full(1), repeats)
            many, (_, n2) = best(lambda: full(os.cpu_count() or 1), repeats)
            assert n1 == n2, (n1, n2)
            tracemalloc.start()
            det = Detector(Detect())
            for _ in det.feed_blocks(read_blocks([path])):
                pass
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            lines = stats.lines  # type: ignore[attr-defined]
            print(f"{name}: {lines} lines ({size / 1e6:.0f} MB, generated in {gen:.1f} s), "
                  f"{stats.events} packets, {n1} scans")  # type: ignore[attr-defined]
            native = "C fast path" if _native_cut is not None else "C fast path NOT BUILT"
            print(f"  parse only ({native}):  {lines / parse:>11,.0f} lines/s ({parse:.2f} s)")
            print(f"  parse only (pure Python):  {lines / parse_py:>11,.0f} lines/s "
                  f"({parse_py:.2f} s)")
            print(f"  parse + detect, 1 process:{lines / one:>11,.0f} lines/s ({one:.2f} s)")
            print(f"  parse + detect, {os.cpu_count()} procs:  {lines / many:>11,.0f} lines/s "
                  f"({many:.2f} s)")
            print(f"  peak traced memory while detecting: {peak / 1e6:.1f} MB "
                  f"(file {size / 1e6:.0f} MB)")
            if name == "radiation":
                compare(path, lines, repeats, tmp)
            if name == "json":
                records(path, lines, repeats, tmp)
        if "journal" in chosen:
            journal(target, repeats, tmp)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def compare(path: str, lines: int, repeats: int, tmp: str) -> None:
    """`ntpguard detect FILE` and the plain regex script as whole processes, alternating."""
    env = cli_env(tmp)
    script = os.path.join(tmp, "regex.py")
    with open(script, "w") as fh:
        fh.write(REGEX_SCRIPT)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(whole_process([sys.executable, "-m", "ntpguard", "detect", "--json", path],
                                  env))
        theirs.append(whole_process([sys.executable, script, path], env))
    for label, runs in (("ntpguard detect FILE (whole process)", ours),
                        ("plain regex script (whole process)", theirs)):
        times = sorted(t for t, _ in runs)
        print(f"  {label}: {lines / times[len(times) // 2]:>11,.0f} lines/s median "
              f"({times[0]:.2f}-{times[-1]:.2f} s), peak RSS {max(m for _, m in runs):.0f} MB")
    ratio = sorted(b / a for (a, _), (b, _) in zip(ours, theirs))
    print(f"  ntpguard detect / plain regex script, per pair of runs: "
          f"{', '.join(f'{r:.1f}x' for r in ratio)}")


def records(path: str, lines: int, repeats: int, tmp: str) -> None:
    """The full parser alone on the records (how the fast paths read them before), and
    `ntpguard detect FILE` as a whole process."""
    def full_parser() -> int:
        parser = LineParser()
        gc.disable()
        with open(path, "rb") as fh:
            n = sum(1 for _ in parser.parse_lines(raw.decode("utf-8", "replace") for raw in fh))
        gc.enable()
        return n

    t_full, _ = best(full_parser, repeats)
    env = cli_env(tmp)
    runs = [whole_process([sys.executable, "-m", "ntpguard", "detect", "--json", path], env)
            for _ in range(repeats)]
    times = sorted(t for t, _ in runs)
    print(f"  the full parser alone (each record json.loads'd, before): "
          f"{lines / t_full:>11,.0f} lines/s ({t_full:.2f} s)")
    print(f"  ntpguard detect FILE (whole process): {lines / times[len(times) // 2]:>11,.0f} "
          f"lines/s median ({times[0]:.2f}-{times[-1]:.2f} s), peak RSS "
          f"{max(m for _, m in runs):.0f} MB")


def journal(target: int, repeats: int, tmp: str) -> None:
    """A real journal of `target` netfilter lines (written by systemd-journal-remote), read
    as `sync` reads the journal (journalctl -o short-iso-precise on the fast path), beside the
    old way (journalctl -o json through the full parser) in the same run."""
    sc = Scenario(hosts=40, servers=150, harvesters=6, poll=64.0, noise_per_hour=2000,
                  duration=target / 345_000 * 86400, lan_prefixes=1,
                  address_lifetime=6 * 3600, gateway=True, envelope="journal")
    # systemd-journal-remote rotates its file as it grows: read them all (journalctl --file
    # takes a glob).
    os.mkdir(os.path.join(tmp, "journal"))
    path = os.path.join(tmp, "journal", "*.journal")
    t0 = time.perf_counter()
    entries = write_journal(os.path.join(tmp, "journal", "kern.journal"), generate(sc, 1))
    gen = time.perf_counter() - t0

    def fast() -> int:
        stats = ReadStats()
        for _ in read_blocks([f"journal:{path}"], stats=stats):
            pass
        return stats.events

    def old_way() -> int:
        parser = LineParser("json")
        proc = subprocess.Popen(["journalctl", "--file", path, "-k", "-o", "json", "-q",
                                 "--no-pager"], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        n = sum(1 for _ in parser.parse_lines(raw.decode("utf-8", "replace")
                                              for raw in proc.stdout))
        proc.wait()
        return n

    t_fast, n_fast = best(fast, repeats)
    t_old, n_old = best(old_way, repeats)
    env = cli_env(tmp)
    whole = sorted(whole_process([sys.executable, "-m", "ntpguard", "detect", "--json",
                                  "--journal-file", path], env)[0] for _ in range(repeats))
    print(f"journal: {entries} entries (written in {gen:.1f} s), {n_fast} packets")
    print(f"  journalctl -o short-iso-precise, fast path: {entries / t_fast:>11,.0f} lines/s "
          f"({t_fast:.2f} s)")
    print(f"  journalctl -o json, full parser (before):   {entries / t_old:>11,.0f} lines/s "
          f"({t_old:.2f} s, {n_old} packets)")
    print(f"  ntpguard detect --journal-file (whole process): "
          f"{entries / whole[len(whole) // 2]:,.0f} lines/s median "
          f"({whole[0]:.2f}-{whole[-1]:.2f} s)")


if __name__ == "__main__":
    main()
