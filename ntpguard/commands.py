"""External commands (nft, ipset, iptables-save/restore, ip, chronyc, systemctl), each with a
deadline: they run while the state lock is held, so a hung one must end in a clear error and
release the lock, never keep every later run waiting.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Optional, Sequence

from ntpguard.errors import NtpguardError

# Seconds; `[general] command_timeout` sets it for the whole run (ntpguard.cli does, once).
_timeout = 60.0


def set_timeout(seconds: float) -> None:
    global _timeout
    _timeout = seconds


def timeout() -> float:
    return _timeout


def run(argv: Sequence[str], *, input: Optional[str] = None, check: bool = True,
        error: type[NtpguardError] = NtpguardError, seconds: Optional[float] = None,
        pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess[str]:
    """Run argv to completion (text in and out). Raises `error` with one line when it cannot
    start, outlives its deadline (it is killed), or, with check, exits non-zero (the first
    line of its stderr)."""
    limit = _timeout if seconds is None else seconds
    name = " ".join(argv[:3])
    try:
        # Its own process group: a hung command's children (a shell script's `sleep`) hold
        # its pipes open, so killing the command alone would leave us waiting on them.
        child = subprocess.Popen(list(argv), stdin=subprocess.PIPE if input is not None
                                 else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True,
                                 pass_fds=tuple(pass_fds))
    except OSError as exc:
        raise error(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = child.communicate(input, timeout=limit)
    except subprocess.TimeoutExpired:
        _kill(child)
        raise error(f"`{name}` did not finish within {limit:g} s and was stopped "
                    "([general] command_timeout)") from None
    except BaseException:  # Ctrl-C, or the lock holder being stopped: take it down too
        _kill(child)
        raise
    proc = subprocess.CompletedProcess(list(argv), child.returncode, out, err)
    if check and proc.returncode != 0:
        why = next((ln.strip() for ln in (proc.stderr or proc.stdout).splitlines()
                    if ln.strip()), f"exit {proc.returncode}")
        raise error(f"`{name}` failed: {why}")
    return proc


def _kill(child: subprocess.Popen[str]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        child.kill()
    child.communicate()
