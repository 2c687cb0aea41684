"""The CLI contract: one-line errors with documented exit codes, help everywhere, JSON output."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env, lock_held

from ntpguard.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent


def test_version(run_cli):
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("ntpguard ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(run_cli, command):
    out = run_cli(command, "--help")
    assert out.returncode == 0, out.stderr
    assert f"ntpguard {command}" in out.stdout


@pytest.mark.parametrize("argv, chosen", [
    (["rules", "apply"], "rules"),
    (["--config", "sync", "rules", "apply"], "rules"),  # a value is no command
    (["--state-dir=/x", "-v", "status"], "status"),
    (["--conf", "list", "mark", "2001:db8::1", "clean"], "mark"),  # abbreviated option
    (["--wait", "sync"], "sync"),
    (["--version"], None),
    (["nosuch", "rules"], None),  # argparse words the error with every command
    (["--", "rules"], None),
])
def test_only_the_named_command_is_imported(argv, chosen):
    from ntpguard.cli import chosen_command

    assert chosen_command(argv) == chosen


@pytest.mark.parametrize("columns", ["50", "132", "", "0", "wide"])
def test_help_is_as_wide_as_argparse_makes_it(monkeypatch, columns):
    """The help's width is found without shutil, and is what argparse gets from it."""
    import argparse
    import shutil

    from ntpguard import cli

    monkeypatch.setenv("COLUMNS", columns)
    assert cli._help_width() == shutil.get_terminal_size().columns - 2
    ours = cli.build_parser("rules").format_help()
    monkeypatch.setattr(cli._Parser, "_get_formatter", argparse.ArgumentParser._get_formatter)
    assert ours == cli.build_parser("rules").format_help()


def test_unknown_command_still_lists_every_command(run_cli):
    out = run_cli("nosuch")
    assert out.returncode == 2 and "rules" in out.stderr and "explain" in out.stderr


@pytest.mark.parametrize("text,message", [
    ("[pool]\nrounds = -1\n", "pool.rounds: must be greater than 0"),
    ("[pool]\nnameservers = ['999.1.1.1']\n", "pool.nameservers: not an IP address"),
    ("[pool]]\n", "syntax:"),
    ("[pool]\ncolour = 'red'\n", "pool.colour: unknown key"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, run_cli, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    for command in ("resolve", "servers", "status"):
        out = run_cli(command, config=cfg)
        assert out.returncode == 2
        assert out.stderr.startswith(f"ntpguard: {cfg}: ") and message in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_missing_explicit_config(tmp_path, run_cli):
    out = run_cli("status", "--config", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "configuration file not found" in out.stderr


def test_bad_arguments_exit_2(run_cli):
    assert run_cli("resolve", "--rounds", "0").returncode == 2
    assert run_cli("resolve", "--rounds", "x").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_lock_busy_is_exit_3_and_wait_waits(run_cli, state_dir):
    with lock_held(state_dir, 2, "ntpguard sync"):
        # resolve writes, so it needs the lock.
        out = run_cli("resolve", "--rounds", "1")
        assert out.returncode == 3
        assert "locked by pid" in out.stderr and "(ntpguard sync)" in out.stderr
        # Readers do not need the lock.
        assert run_cli("status").returncode == 0
        start = time.monotonic()
        run_cli("resolve", "--rounds", "1", "--wait", "--interval", "0",
                env={"NTPGUARD_CONFIG": "/dev/null"})
        assert time.monotonic() - start > 0.5


def test_unwritable_state_dir_is_a_one_line_error(run_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = run_cli("resolve", "--state-dir", str(blocker / "sub"))
    assert out.returncode == 1
    assert out.stderr.startswith("ntpguard: ") and "Traceback" not in out.stderr


def test_status_and_servers_json_on_empty_state(run_cli):
    status = json.loads(run_cli("status", "--json").stdout)
    assert status["servers"] == 0 and status["last_resolve"] is None
    assert json.loads(run_cli("servers", "--json").stdout) == []


def test_global_options_before_or_after_the_command(run_cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[lists]\nbuiltin = false\n")
    other = tmp_path / "other-state"
    for args in (["--config", cfg, "--state-dir", other, "mark", "2a01:4f8::1", "clean"],
                 ["mark", "2a01:4f8::2", "clean", "--config", cfg, "--state-dir", other],
                 ["--state-dir", other, "-v", "mark", "--config", cfg, "2a01:4f8::3", "clean"]):
        out = run_cli(*args)
        assert out.returncode == 0, (args, out.stderr)
    rows = json.loads(run_cli("--state-dir", other, "--config", cfg, "servers", "--json").stdout)
    assert [r["address"] for r in rows] == ["2a01:4f8::1", "2a01:4f8::2", "2a01:4f8::3"]
    # The one given after the command wins, as with git and systemctl.
    bad = tmp_path / "bad.toml"
    bad.write_text("[pool]\nrounds = 0\n")
    out = run_cli("--config", bad, "status", "--config", cfg)
    assert out.returncode == 0, out.stderr
    out = run_cli("--config", bad, "status")
    assert out.returncode == 2 and "pool.rounds" in out.stderr


@pytest.mark.parametrize("args", [["rules", "apply", "--dry-run", "--backend", "nft"],
                                  ["rules", "remove", "--dry-run", "--backend", "nft"],
                                  ["mark", "2a01:4f8::9", "harvester"],
                                  ["servers"], ["status"], ["explain", "2a01:4f8::9"],
                                  ["list", "show"], ["timeconf", "--format", "chrony"]])
def test_every_reporting_command_speaks_json(run_cli, tmp_path, args):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[servers]\ntrusted = ["2a01:4f8::7"]\n')
    out = run_cli(*args, "--json", config=cfg)
    assert out.returncode == 0, out.stderr
    json.loads(out.stdout)


def test_the_program_exits_with_all_its_output_and_quietly_into_a_closed_pipe(
        run_cli, tmp_path, state_dir):
    """The program leaves without Python's teardown (ntpguard.cli.command): what it printed
    must still all arrive (a pipe is block-buffered: the last buffer would be lost unflushed),
    and a reader that stops early gets no BrokenPipeError noise and exit 0."""
    listed = [f"2400:{k:x}::/32" for k in range(20_000)]
    (tmp_path / "big.txt").write_text("\n".join(listed) + "\n")
    out = run_cli("list", "import", tmp_path / "big.txt", "--name", "big", "--kind", "scanner")
    assert out.returncode == 0, out.stderr
    env = cli_env(tmp_path, state_dir)
    env.pop("PYTHONUNBUFFERED", None)  # buffered, as a timer's or a script's pipe is
    dry_run = [sys.executable, "-m", "ntpguard", "rules", "apply", "--dry-run", "--force",
               "--backend", "nft"]
    out = subprocess.run([*dry_run, "--json"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    # print() writes the object, then its newline: that last byte waits in the buffer.
    assert out.stdout.endswith("}\n")
    printed = set(json.loads(out.stdout)["ruleset"].replace(",", " ").split())
    assert {str(ipaddress.ip_network(p).network_address) for p in listed} <= printed
    with subprocess.Popen(dry_run, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"# ")
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    assert err == b""
    # A reader gone before anything was written (`ntpguard servers | true`): the output waits
    # in the buffer until the exit, whose flush meets the closed pipe. Python's own exit
    # printed "Exception ignored ... BrokenPipeError" there and exited 120.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        gone = subprocess.run([sys.executable, "-m", "ntpguard", "servers"], stdout=write_end,
                              stderr=subprocess.PIPE, env=env, timeout=60)
    finally:
        os.close(write_end)
    assert (gone.returncode, gone.stderr) == (0, b"")


def test_a_profiler_still_gets_its_data(tmp_path, state_dir):
    """cProfile (and coverage) write what they gathered at Python's exit, which the program
    skips otherwise: under them it exits the ordinary way."""
    out = tmp_path / "run.prof"
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "ntpguard",
                           "status", "--json"], capture_output=True, text=True,
                          env=cli_env(tmp_path, state_dir), timeout=60)
    assert proc.returncode == 0, proc.stderr
    import pstats

    assert any(name == "main" and "ntpguard" in path
               for path, _, name in pstats.Stats(str(out)).stats)


def _on_a_terminal(args: list[str], env: dict, stream: str = "stdout", code: int = 0) -> bytes:
    """What `python -m ntpguard ARGS` prints to its stdout (or stderr) on a pseudo-terminal."""
    import pty

    leader, follower = pty.openpty()
    try:
        other = "stderr" if stream == "stdout" else "stdout"
        proc = subprocess.run([sys.executable, "-m", "ntpguard", *args], env=env, timeout=60,
                              **{stream: follower, other: subprocess.PIPE})
        os.close(follower)
        follower = -1
        assert proc.returncode == code, getattr(proc, other)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_a_list_s_control_characters_reach_a_terminal_shown_not_obeyed(tmp_path, run_cli,
                                                                       state_dir):
    """A list's comment with ESC ] 0 ; ... BEL (retitles the terminal) and ESC [ 2 J
    (clears it) was printed as it was by `list show` and `explain`; on a terminal it is now
    shown as \\x1b...; into a pipe (`list export > file`) the text stays as it is."""
    evil = "evil \x1b]0;pwned\x07 \x1b[2J \x9b1m end"
    src = tmp_path / "esc.txt"
    src.write_text(f"2606:4700::5 harvester # {evil}\n")
    assert run_cli("list", "import", src, "--name", "esc").returncode == 0
    env = cli_env(tmp_path, state_dir)
    for args in (["list", "show", "esc"], ["explain", "2606:4700::5"]):
        out = _on_a_terminal(args, env)
        assert b"\x1b" not in out and b"\x07" not in out and "\x9b".encode() not in out, args
        assert b"evil \\x1b]0;pwned\\x07 \\x1b[2J \\x9b1m end" in out, args
    piped = run_cli("list", "show", "esc")
    assert evil in piped.stdout
    # Error lines too: a path (or a list server's HTTP reason phrase) is printed as it came.
    bad = tmp_path / "x\x1b[2J.txt"
    err = _on_a_terminal(["list", "import", str(bad), "--name", "x"], env, "stderr", 2)
    assert b"\x1b" not in err and b"x\\x1b[2J.txt" in err, err



def test_output_that_cannot_be_written_is_one_line_and_a_failure(tmp_path, run_cli, state_dir):
    """`ntpguard list show > file` on a full disk (here: a file size limit of 64 bytes, so
    the final flush fails with EFBIG) was a traceback, Python's 'Exception ignored' and exit
    status 120; the output is lost, so it is a failure with one line saying so."""
    import resource

    src = tmp_path / "l.txt"
    src.write_text("".join(f"2606:4700::{i:x} harvester # entry {i}\n" for i in range(50)))
    assert run_cli("list", "import", src, "--name", "l").returncode == 0
    env = {k: v for k, v in cli_env(tmp_path, state_dir).items() if k != "PYTHONUNBUFFERED"}
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "ntpguard", "list", "show", "l"], stdout=out,
            stderr=subprocess.PIPE, text=True, env=env, timeout=60,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64)))
    assert proc.stderr == "ntpguard: cannot write the output: File too large\n"
    assert proc.returncode == 1


@pytest.mark.parametrize("module, argv, package", [
    ("dns", ["--help"], "python3-dnspython"),   # --help imports every command's module
    ("dns", ["resolve"], "python3-dnspython"),
    ("tomli", ["status"], None),                # only Python < 3.11 reads TOML with it
])
def test_a_missing_dependency_is_named_in_one_line(tmp_path, state_dir, module, argv, package):
    """A module that cannot be imported (pip without dependencies, a venv without Debian's
    site packages) is named with the package that holds it, in one line, exit 1."""
    code = (f"import sys; sys.modules[{module!r}] = None; sys.argv[0] = 'ntpguard'; "
            "from ntpguard.cli import command; command()")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env=cli_env(tmp_path, state_dir), timeout=60)
    if package is None and sys.version_info >= (3, 11):
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"ntpguard: the Python module {module!r} is missing: "
                                  f"install {package or 'python3-tomli'}"), proc.stderr
