"""`make demo`: the whole story on one machine, in a few minutes, with progress lines.

1. Build the lab world (lab.world): a pool with harvesters, a scanner, a protected host.
2. Without ntpguard: the host's chronyd syncs from the pool; as days of pool rotation would,
   the host meets more pool servers; the harvesters among them get its real (temporary)
   addresses scanned (ground truth and the host's firewall log show it).
3. ntpguard runs on the host as cron would (HOOK: NTPGUARD_STEPS, run only those commands that
   exist in this tree): servers discovered, scans and triggers, verdicts, NTP canaries, the
   ruleset, time-daemon configuration.
4. With ntpguard: the host meets more servers; every NTP packet leaves from its server's
   canary, so a harvester can only hand its scanner a canary: the scan is dropped, logged, and
   the next sync convicts exactly that harvester. Not one real address is scanned any more.
5. The proof: NTP to harvesters is refused, the scanner's packets are dropped, chronyd keeps
   syncing from clean servers.
6. Teardown, always (also on Ctrl-C, SIGTERM or error).

Run: python3 -m lab.demo [--seed N] [--observe SECONDS] [--keep-going]   (as root)
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from lab.world import (
    LOG_PREFIX_IN,
    LOG_PREFIX_OUT,
    SCAN_NET,
    World,
    WorldSpec,
    ntpguard_config,
    run_ntpguard,
    summary,
)

T0 = time.monotonic()

# HOOK: the ntpguard commands the demo runs on the protected host, in order, as its cron job
# would. Each step runs only if the command exists in this tree (ntpguard.cli.COMMANDS), so the
# demo works while commands are still being written. `{fwlog}`/`{fwjson}` are the host's
# firewall logs (ulogd2 LOGEMU text / JSON), `{state}` its state dir.
NTPGUARD_STEPS: list[tuple[str, list[str]]] = [
    ("resolve", ["resolve"]),
    ("detect", ["detect", "--record", "{fwjson}"]),
    ("servers", ["servers"]),
    ("sync", ["sync"]),
    ("rules", ["rules", "apply"]),
    ("timeconf", ["timeconf", "--format", "chrony", "--write"]),
    ("status", ["status"]),
]

# HOOK: extra ntpguard configuration for the lab host, appended after the [pool] and [rules]
# tables lab.world.ntpguard_config writes; e.g. the log sources for `sync` once they exist.
NTPGUARD_EXTRA_CONFIG = ""


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def detail(text: str, indent: str = "           ") -> None:
    for line in text.rstrip().splitlines():
        print(indent + line, flush=True)


def available_commands() -> list[str]:
    try:
        from ntpguard.cli import COMMANDS
    except Exception:  # a half-written tree still gets a lab demo
        return []
    return list(COMMANDS)


def ntpguard(world: World, args: list[str]) -> Optional[int]:
    """Run one ntpguard step on the host and show its output (HOOK, see run_ntpguard)."""
    subst = {"fwlog": str(world.firewall_log), "fwjson": str(world.firewall_json),
             "state": str(world.guard_dir / "state")}
    argv = [a.format(**subst) for a in args]
    say("$ ntpguard " + " ".join(argv))
    proc = run_ntpguard(world, *argv)
    detail(proc.stdout or "(no output)")
    if proc.returncode != 0:
        detail(proc.stderr.strip()[-2000:] or f"exit {proc.returncode}")
        say(f"  (exit status {proc.returncode})")
    return proc.returncode


def canaries(world: World) -> dict[str, str]:
    """The guard's canaries (address → its server, '' for the spare), from its state."""
    path = world.guard_dir / "state"
    if not (path / "state.db").exists():
        return {}
    try:
        from ntpguard.state import State

        with State.open(str(path), lock=False) as st:
            return {c.address: c.server for c in st.canaries()}
    except Exception:  # a tree without canaries still gets a lab demo
        return {}


def report_scans(world: World, seen: set[tuple[str, float]], quiet: bool = False) -> None:
    """Print scans from the ground truth once each, with what the host's log saw of them."""
    logs = world.log_lines()
    known_canaries = canaries(world)
    fresh = 0
    for s in world.scans():
        key = (s["target"], s["t_start"])
        if key in seen:
            continue
        seen.add(key)
        fresh += 1
        if quiet:
            continue
        ports = {r["dest_port"] for r in logs if r.get("oob.prefix") == LOG_PREFIX_IN
                 and r.get("src_ip") == s["scanner"] and r.get("dest_ip") == s["target"]}
        what = (f"the CANARY of {known_canaries[s['target']] or 'servers without their own'}"
                if s["target"] in known_canaries else "a REAL address of the host")
        say(f"SCAN {s['scanner']} -> {s['target']} ({what}): nmap ports {s['ports']} "
            f"in {s['t_end'] - s['t_start']:.1f} s, {s['lag']:.1f} s after it reached "
            f"harvester {s['harvester']}; host log shows {len(ports)} ports")
    if quiet and fresh:
        say(f"{fresh} more scans of the host's addresses (ground truth and log)")


def observe(world: World, seconds: float, rng: random.Random, seen: set) -> None:
    """Let the world run: chronyd polls, and the host meets a few more pool servers now and
    then (what DNS rotation does over days, compressed into seconds)."""
    pool = [s.address for s in world.servers if ":" in s.address]
    rng.shuffle(pool)
    end = time.monotonic() + seconds
    last, i = 0.0, 0
    while time.monotonic() < end:
        if time.monotonic() - last > 3 and i < len(pool):
            last = time.monotonic()
            pick, i = pool[i:i + 3], i + 3
            client = rng.choice(world.clients)
            world.poke(pick, client=client)
            say(f"{client.ns.name} meets pool servers {', '.join(pick)} (pool rotation)")
        report_scans(world, seen)
        time.sleep(0.5)
    report_scans(world, seen)


def ntpguard_clean(world: World) -> list[str]:
    """IPv6 servers ntpguard's state calls clean (`servers --json`), or [] if it can't say."""
    if "servers" not in available_commands():
        return []
    out = run_ntpguard(world, "servers", "--json")
    try:
        rows = json.loads(out.stdout)
        return [r["address"] for r in rows if r.get("status") == "clean" and ":" in r["address"]]
    except (ValueError, TypeError, KeyError):
        return []


def proof(world: World) -> None:
    """What the host looks like after ntpguard: NTP to harvesters, scanner, chronyd."""
    say("proof: NTP from the host to each harvester (refused once ntpguard knows it)")
    status = {}
    if "servers" in available_commands():
        try:
            status = {r["address"]: f"{r['status']} by {r['source']}" if r.get("source")
                      else r["status"]
                      for r in json.loads(run_ntpguard(world, "servers", "--json").stdout)}
        except (ValueError, TypeError, KeyError):
            status = {}
    for h in world.harvesters:
        out = world.host.run("ntpdate", "-q", "-t", "1", h, check=False, timeout=20)
        verdict = "answered" if out.returncode == 0 else "no answer / refused"
        known = f" (ntpguard: {status[h]})" if h in status else ""
        detail(f"{h}: {verdict}{known}")
    judged = ntpguard_clean(world)
    what = "servers ntpguard judged clean" if judged else "clean servers (ground truth)"
    say(f"proof: NTP to a few {what} (should answer)")
    for c in (judged or [a for a in world.clean if ":" in a])[:3]:
        out = world.host.run("ntpdate", "-q", "-t", "1", c, check=False, timeout=20)
        detail(f"{c}: {'answered' if out.returncode == 0 else 'no answer / refused'}")
    target = (world.temp_addresses() or ["2001:db8:4057:1::100"])[0]
    scanner = world.scanners[0]
    say(f"proof: the scanner {scanner} sweeps the host's {target} directly")
    out = world.scan_now(target, scanner)
    closed = "closed" in out or "reset" in out
    detail("host answered the scan (RSTs): not protected" if closed
           else "no answers: the scanner's packets are dropped")
    say("proof: chronyd sources on the host")
    detail(world.chronyc("sources"))


def run_fleet(args: argparse.Namespace) -> int:
    """`--topology fleet`: three hosts, one collector (lab/fleet.py). One harvester is met by
    h1 alone; the collector convicts it from h1's forwarded log and every host blocks it
    after its next sync. Then a tampered list is refused and the last good one stays."""
    from lab import fleet

    spec = WorldSpec(seed=args.seed, prefix="ntpg-demo-", topology="fleet", operators=8,
                     harvesters=2, lag_min=0.5, lag_max=2.0, chrony_client=False)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ntpguard-demo-"))
    say(f"building the fleet lab (seed {args.seed}) in {workdir} ...")
    with World(spec, workdir) as world:
        pubkey = fleet.setup_ntpguard(world)
        names = ", ".join(c.ns.name for c in world.clients)
        say(f"hosts {names} forward their firewall logs with rsyslog to {world.guard.name} "
            f"({fleet.COLL_ADDR}:{fleet.SYSLOG_PORT}); the collector publishes "
            f"{fleet.list_url()} (nginx, lab CA) signed with {pubkey}")
        only_h1, shared = world.harvesters
        v6 = [s.address for s in world.servers if ":" in s.address]
        others = [a for a in v6 if a != only_h1]
        say(f"the hosts meet the pool ({max(args.passes, 2)} passes); {only_h1} is met by "
            f"{world.clients[0].ns.name} only, {shared} by all (ground truth)")
        used = fleet.meet(world, {0: v6, 1: others, 2: others}, max(args.passes, 2), 2)
        fleet.forwarded(world, used)
        for f in sorted((world.guard_dir / "remote").glob("*/kern.log")):
            detail(f"{f.relative_to(world.guard_dir)}: {len(f.read_text().splitlines())} "
                   "lines forwarded")
        say("$ ntpguard sync --no-resolve   (on the collector)")
        detail(run_ntpguard(world, "sync", "--no-resolve").stdout)
        detail((world.guard_dir / "www" / fleet.LIST_NAME).read_text()[:1500])
        for c in world.clients:
            say(f"$ ntpguard resolve; ntpguard sync   (on {c.ns.name})")
            run_ntpguard(world, "resolve", client=c)
            detail(run_ntpguard(world, "sync", "--no-resolve", client=c).stdout)
        for c in world.clients:
            out = c.ns.run("ntpdate", "-q", "-t", "1", only_h1, check=False)
            detail(f"{c.ns.name}: NTP to {only_h1}: "
                   f"{'refused' if out.returncode else 'answered (not blocked!)'}")
        www = world.guard_dir / "www" / fleet.LIST_NAME
        good = www.read_bytes()
        say("tampering: the published list loses a harvester, its signature stays")
        www.write_bytes(good.replace(only_h1.encode(), b"2001:db8:ffff::1"))
        h2 = world.clients[1]
        detail(run_ntpguard(world, "list", "fetch", client=h2).stdout)
        out = h2.ns.run("ntpdate", "-q", "-t", "1", only_h1, check=False)
        detail(f"{h2.ns.name}: NTP to {only_h1} still "
               f"{'refused' if out.returncode else 'answered'} (the last good list)")
        www.write_bytes(good)
        say(f"metrics ({world.guard_dir / 'ntpguard.prom'}):")
        detail("\n".join(line for line in (world.guard_dir / "ntpguard.prom").read_text()
                         .splitlines() if not line.startswith("#"))[:2000])
        say("tearing the lab down")
    say("done: no lab namespace or process is left")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.topology == "fleet":
        return run_fleet(args)
    # Short rotation and cooldown: several harvested addresses within the demo's half minute.
    spec = WorldSpec(seed=args.seed, prefix="ntpg-demo-", lag_min=1.0, lag_max=4.0,
                     cooldown=15.0, temp_prefered_lft=12, temp_valid_lft=60,
                     topology=args.topology)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ntpguard-demo-"))
    rng = random.Random(args.seed)
    say(f"building the lab world (seed {args.seed}) in {workdir} ...")
    with World(spec, workdir) as world:
        v6 = [s for s in world.servers if ":" in s.address]
        say(f"world built: {len(world.servers)} NTP servers ({len(v6)} IPv6, "
            f"{len(world.servers) - len(v6)} IPv4) behind 0-3.debian.pool.ntp.org, "
            f"{len(world.harvesters)} of them harvesters (ground truth, hidden from ntpguard); "
            f"scanner prefix {SCAN_NET}")
        if world.gateway:
            say(f"gateway topology: ntpguard runs on router {world.guard.name}, LAN clients "
                + ", ".join(c.ns.name for c in world.clients))
        for c in world.clients:
            say(f"{c.ns.name}: temporary address {', '.join(world.temp_addresses(c))} "
                f"(rotates every ~{spec.temp_prefered_lft} s)")
        world.wait_synced(timeout=40)
        say("time daemons synced: chronyd selected a pool server")
        detail(world.chronyc("sources"))
        seen: set = set()
        say(f"observing the world for {args.observe:.0f} s ...")
        observe(world, args.observe, rng, seen)
        if args.passes:
            v6 = sum(":" in a.address for a in world.servers)
            say(f"compressing months of pool life: every IPv6 server met {args.passes} times, "
                f"2 per fresh address ({args.passes * ((v6 + 1) // 2)} addresses) ...")
            world.live(passes=args.passes, per_round=2)
            report_scans(world, seen, quiet=True)
        s = summary(world)
        say(f"so far: {s['harvests']} addresses harvested, {s['scans']} scans; host log: "
            f"{s['log_out']} outbound NTP lines ({LOG_PREFIX_OUT.strip()}), {s['log_in']} "
            f"inbound new-connection lines ({LOG_PREFIX_IN.strip()})")

        cmds = available_commands()
        cfg = world.guard_dir / "ntpguard.toml"
        cfg.write_text(ntpguard_config(world, NTPGUARD_EXTRA_CONFIG))
        say(f"ntpguard on the host (config {cfg}); commands in this tree: {', '.join(cmds)}")
        for name, argv in NTPGUARD_STEPS:
            if name not in cmds:
                say(f"(ntpguard {name}: not in this tree yet, skipped)")
                continue
            ntpguard(world, argv)
        since = time.time()
        known_canaries = canaries(world)
        if known_canaries:
            say(f"with ntpguard: {len(known_canaries) - 1} servers have a canary of their own "
                f"(and a spare for the others); observing the world for {args.observe:.0f} s "
                "more ...")
            observe(world, args.observe, rng, seen)
            time.sleep(spec.lag_max + 2)
            report_scans(world, seen)
            ntpguard(world, ["sync"])
            ntpguard(world, ["servers"])
            after = [s for s in world.scans() if s["t_start"] >= since]
            real = [s for s in after if s["target"] not in canaries(world)]
            say(f"since ntpguard's first sync: {len(after)} scans, {len(after) - len(real)} of "
                f"canaries, {len(real)} of the host's real addresses")
        say("ground truth for comparison: harvesters " + ", ".join(sorted(world.harvesters)))
        proof(world)
        report_scans(world, seen)
        say("tearing the lab down")
    say("done: no lab namespace or process is left")
    return 0


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="lab.demo", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--observe", type=float, default=15.0,
                   help="seconds of real-time world life first (default 15)")
    p.add_argument("--passes", type=int, default=3,
                   help="compressed pool life: times each server is met from fresh addresses "
                   "before ntpguard runs (default 3; 0: only --observe)")
    p.add_argument("--topology", choices=("host", "gateway", "fleet"), default="host",
                   help="a protected host, a router with LAN clients, or three hosts and a "
                   "collector whose signed list they follow (default host)")
    p.add_argument("--workdir", help="keep the lab's files here (default: a new temp dir)")
    args = p.parse_args(argv)
    # SIGTERM tears down like Ctrl-C: the World context manager's exit runs either way.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        say("interrupted: the lab was torn down")
        return 130


if __name__ == "__main__":
    sys.exit(main())
