"""Shared fixtures: the CLI as a subprocess, a private state dir, root-only test gating."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, netfilter)")
    for item in items:
        if "root" in item.keywords or "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    return d


def cli_env(tmp_path, state_dir, config=None, env=None) -> dict:
    """The environment `python -m ntpguard` runs in: this checkout, the test's state and config
    (an empty one unless given)."""
    full_env = dict(os.environ)
    full_env["NTPGUARD_STATE_DIR"] = str(state_dir)
    full_env["NTPGUARD_CONFIG"] = str(config) if config else str(tmp_path / "none.toml")
    full_env["PYTHONPATH"] = str(ROOT)
    if config is None:
        (tmp_path / "none.toml").write_text("")
    full_env.update(env or {})
    return full_env


@pytest.fixture
def run_cli(tmp_path, state_dir):
    """Run `python -m ntpguard ARGS` for real; returns the CompletedProcess."""

    def run(*args, config=None, input=None, env=None, timeout=120):
        return subprocess.run(
            [sys.executable, "-m", "ntpguard", *map(str, args)], input=input,
            capture_output=True, text=True, env=cli_env(tmp_path, state_dir, config, env),
            timeout=timeout,
        )

    return run


@contextlib.contextmanager
def lock_held(state_dir, seconds: float, holder: str = "holder"):
    """Another process holds the state's writer lock for `seconds` (yields once it does)."""
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from ntpguard.state import State\n"
         f"s = State.open({str(state_dir)!r}, holder={holder!r})\n"
         f"print('held', flush=True); time.sleep({seconds}); s.close()"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.wait()


@contextlib.contextmanager
def no_hang(seconds: int = 5):
    """Fail instead of hanging (SIGALRM in this process): for reads that must not block."""
    def expired(*_):
        raise AssertionError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
