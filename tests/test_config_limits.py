"""Config values that used to pass validation and then crash or hang a command, through the
real CLI: each is now one line naming the file and the key, exit status 2, before any work."""

from __future__ import annotations

import dataclasses
import os

import pytest

from ntpguard import config

# Each command is one the value used to break: `resolve` sleeps pool.interval between rounds
# and waits pool.timeout for DNS; `list fetch` reads max_bytes + 1 with a socket timeout of
# timeout; every command turns state_dir into paths.
FAST_DNS = "nameservers = ['127.0.0.1']\nport = 9\n"
SUB = '[[lists.subscriptions]]\nname = "s"\nurl = "https://127.0.0.1:9/l.txt"\n'
CASES = [
    ("interval-1e308", f"[pool]\n{FAST_DNS}interval = 1e308\n", ["resolve", "--rounds", "2"],
     "pool.interval", "must be at least 0 and at most 3600"),
    ("timeout-nan", f"[pool]\n{FAST_DNS}timeout = nan\n", ["resolve", "--rounds", "1"],
     "pool.timeout", "must be a finite number (nan is not)"),
    ("timeout-inf", f"[pool]\n{FAST_DNS}timeout = inf\n", ["resolve", "--rounds", "1"],
     "pool.timeout", "must be a finite number (inf is not)"),
    ("sub-timeout-1e300", f"{SUB}timeout = 1e300\n", ["list", "fetch"],
     "lists.subscriptions[0].timeout", "must be greater than 0 and at most 600"),
    ("sub-max-bytes-10**23", f"{SUB}max_bytes = {10**23}\n", ["list", "fetch"],
     "lists.subscriptions[0].max_bytes", "must be greater than 0 and at most 67108864"),
    ("sub-max-bytes-1e23", f"{SUB}max_bytes = 1e23\n", ["list", "fetch"],
     "lists.subscriptions[0].max_bytes", "must be an integer"),
    ("sub-pubkey-not-a-key", f'{SUB}pubkey = "RWQnotakey"\n', ["list", "fetch"],
     "lists.subscriptions[0].pubkey", "public key is not base64"),
    ("interval-400-digits", f"[pool]\ninterval = {10**400}\n", ["resolve"],
     "pool.interval", "must be a number of a sensible size"),
    ("state-dir-nul", '[general]\nstate_dir = "/var/lib/ntp\\u0000guard"\n', ["status"],
     "general.state_dir", "must not contain a NUL byte"),
    ("names-nul", '[pool]\nnames = ["2.debian.pool.ntp.org\\u0000x"]\n', ["resolve"],
     "pool.names", "must not contain a NUL byte"),
    ("state-dir-relative", '[general]\nstate_dir = "state"\n', ["status"],
     "general.state_dir", "must be an absolute path"),
    ("array-3000-deep", "[pool]\nnames = " + "[" * 3000 + "]" * 3000 + "\n", ["status"],
     "syntax", "arrays or inline tables nested too deeply"),
    ("log-burst", "[rules]\nlog_burst = 10001\n", ["rules", "apply", "--dry-run"],
     "rules.log_burst", "must be greater than 0 and at most 10000"),
    ("max-entries", "[lists]\nmax_entries = 1000001\n", ["list", "show"],
     "lists.max_entries", "must be greater than 0 and at most 1000000"),
]


@pytest.mark.parametrize("text, args, key, problem", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_value_is_one_line_naming_file_and_key(tmp_path, run_cli, state_dir, text, args,
                                                   key, problem):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    out = run_cli(*args, config=cfg, timeout=20)
    assert out.stderr == f"ntpguard: {cfg}: {key}: {problem}\n"
    assert out.returncode == 2
    assert out.stdout == "" and list(state_dir.iterdir()) == []


def test_every_shipped_default_is_within_its_range():
    """The sample's values are the defaults (test_sample_config); they must also pass the
    range checks, or the shipped file would be refused."""
    for cls in config.SECTIONS.values():
        for f in dataclasses.fields(cls):
            check = f.metadata.get("check")
            if check and f.default is not dataclasses.MISSING:
                check(f.default)
    sub = config.Subscription(name="s", url="https://x/")
    for f in dataclasses.fields(sub):
        check = f.metadata.get("check")
        if check:
            check(getattr(sub, f.name))


def test_dev_null_config_means_defaults_and_a_fifo_is_refused(tmp_path, run_cli):
    assert run_cli("status", env={"NTPGUARD_CONFIG": "/dev/null"}).returncode == 0
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    out = run_cli("status", "--config", fifo, timeout=10)
    assert out.returncode == 2
    assert out.stderr == f"ntpguard: {fifo}: is a FIFO, not a regular file; refused\n"


# The same values given on the command line, for the keys a command takes as an option: each
# is checked by the key's own rule. `resolve --interval nan` slept for ever between rounds,
# `--interval 1e400` ended in an unexpected OverflowError, `detect --lookback nan` in a
# ZeroDivisionError, and `timeconf --count 100000` passed.
OPTION_CASES = [
    (["resolve", "--rounds", "2", "--interval", "nan"], "--interval must be a finite number"),
    (["resolve", "--rounds", "2", "--interval", "1e400"], "--interval must be a finite number"),
    (["resolve", "--interval", "3601"], "--interval must be at least 0 and at most 3600"),
    (["resolve", "--rounds", "0"], "--rounds must be greater than 0 and at most 100"),
    (["detect", "--lookback", "nan", "/dev/null"], "--lookback must be a finite number"),
    (["detect", "--window", "1e400", "/dev/null"], "--window must be a finite number"),
    (["detect", "--window", "-5", "/dev/null"], "--window must be greater than 0 and at most"),
    (["detect", "--min-ports", "0", "/dev/null"], "--min-ports must be greater than 0 and at"),
    (["timeconf", "--count", "100000"], "--count must be greater than 0 and at most 64"),
]


@pytest.mark.parametrize("args, problem", OPTION_CASES,
                         ids=["-".join(c[0][:2] + c[0][-1:]) for c in OPTION_CASES])
def test_a_bad_option_value_is_refused_by_its_key_s_rule(tmp_path, run_cli, state_dir, args,
                                                         problem):
    cfg = tmp_path / "dns.toml"
    cfg.write_text(f"[pool]\n{FAST_DNS}")
    out = run_cli(*args, config=cfg, timeout=20)
    assert out.stderr.startswith(f"ntpguard: {problem}") and out.stderr.count("\n") == 1
    assert out.returncode == 2
    assert out.stdout == "" and list(state_dir.iterdir()) == []


def test_good_option_values_reach_the_settings():
    detect = config.with_options(config.Detect(), window=30.0, lookback=None, min_ports=20)
    assert (detect.window, detect.lookback, detect.min_ports) == (30.0, 600.0, 20)
    assert config.with_options(config.Detect()) == config.Detect()
