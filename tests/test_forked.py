"""run_forked: the one way ntpguard runs work in parallel (a split log read)."""

from __future__ import annotations

import os
import signal

import pytest

from ntpguard.errors import ConfigError, NtpguardError, UsageError
from ntpguard.forked import WorkerDied, run_forked


def _pid_and(job: int) -> tuple[int, int]:
    return os.getpid(), job * job


def test_results_come_in_job_order_from_separate_processes():
    out = run_forked(_pid_and, [3, 1, 4, 1, 5])
    assert [sq for _, sq in out] == [9, 1, 16, 1, 25]
    pids = [pid for pid, _ in out]
    assert pids[0] == os.getpid()  # the first job runs here
    assert len(set(pids)) == 5
    with pytest.raises(ChildProcessError):  # every child was reaped
        os.waitpid(-1, os.WNOHANG)


def _big(job: int) -> bytes:
    return bytes([job]) * (3 << 20)  # far more than a pipe holds (64 KiB)


def test_results_bigger_than_a_pipe_arrive_whole():
    out = run_forked(_big, [1, 2, 3])
    assert [len(b) for b in out] == [3 << 20] * 3
    assert [b[0] for b in out] == [1, 2, 3] and [b[-1] for b in out] == [1, 2, 3]


class _Odd(Exception):
    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}+{b}")


def _fail(job: str) -> str:
    if job == "usage":
        raise UsageError("kern.log: line 7: not a log")
    if job == "config":
        raise ConfigError("/etc/x.toml", "detect.window", "must be a number")
    if job == "other":
        raise KeyError("k")
    if job == "odd":
        raise _Odd("a", "b")
    if job == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return job


def test_a_child_s_exception_is_raised_here_with_its_message_and_exit_code():
    with pytest.raises(UsageError, match="line 7: not a log"):
        run_forked(_fail, ["ok", "usage"])
    # ConfigError's __init__ takes three arguments: it cannot be unpickled as itself.
    with pytest.raises(NtpguardError, match=r"detect\.window: must be a number") as err:
        run_forked(_fail, ["ok", "config"])
    assert err.value.exit_code == ConfigError.exit_code == 2
    with pytest.raises(KeyError):
        run_forked(_fail, ["ok", "other"])
    with pytest.raises(RuntimeError, match=r"_Odd: a\+b"):
        run_forked(_fail, ["ok", "odd"])
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_a_killed_child_is_a_clear_error():
    with pytest.raises(WorkerDied, match="killed by signal 9"):
        run_forked(_fail, ["ok", "kill", "ok"])
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def _slow_unless_first(job: int) -> int:
    if job == 0:
        raise UsageError("the first share failed")
    signal.pause()  # would wait for ever: only the parent's clean-up ends it
    return job


def test_when_this_process_s_job_fails_the_children_are_ended_and_reaped():
    with pytest.raises(UsageError, match="first share failed"):
        run_forked(_slow_unless_first, [0, 1, 2])
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
