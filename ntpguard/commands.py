"""External commands (nft, ipset, iptables-save/restore, ip, chronyc, systemctl), each with a
deadline: they run while the state lock is held, so a hung one must end in a clear error and
release the lock, never keep every later run waiting. `Stream` is the one exception: a
command that runs until stopped (`nft monitor`), read line by line.
"""

from __future__ import annotations

import os
import select
import signal
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

from ntpguard.errors import NtpguardError

# subprocess is imported where a command starts: every `ntpguard` process imports this module
# (the CLI sets the timeout), and subprocess with what it pulls in was ~2 ms of a `ntpguard
# detect` that starts none.
if TYPE_CHECKING:
    import subprocess

# Seconds; `[general] command_timeout` sets it for the whole run (ntpguard.cli does, once).
_timeout = 60.0


def set_timeout(seconds: float) -> None:
    global _timeout
    _timeout = seconds


def timeout() -> float:
    return _timeout


def which(name: str) -> Optional[str]:
    """The program `name` on $PATH, found as shutil.which finds it, without importing shutil
    (with the bz2 and lzma modules it imports, ~2-3 ms of a run that only looks)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory, name)
        if os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path):
            return path
    return None


def run(argv: Sequence[str], *, input: Optional[str] = None, check: bool = True,
        error: type[NtpguardError] = NtpguardError, seconds: Optional[float] = None,
        pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess[str]:
    """Run argv to completion (text in and out). Raises `error` with one line when it cannot
    start, outlives its deadline (it is killed), or, with check, exits non-zero (the first
    line of its stderr)."""
    import subprocess

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
    _kill_group(child)
    child.communicate()


class Stream:
    """A command that runs until stopped, its output (stdout and stderr) read line by line;
    closing it kills its process group. Use as a context manager."""

    def __init__(self, argv: Sequence[str], error: type[NtpguardError] = NtpguardError) -> None:
        import subprocess

        try:
            self.child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        except OSError as exc:
            raise error(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        self.last = ""  # the last line read, for an error message when the command ends

    def lines(self, idle: float) -> Iterator[Optional[str]]:
        """Each line, without its newline; one None once output has paused for `idle`
        seconds (then it blocks until the next line: no wake-ups while nothing happens);
        ends when the command closes its output."""
        assert self.child.stdout is not None
        fd = self.child.stdout.fileno()
        buffer, quiet = b"", True
        while True:
            ready, _, _ = select.select([fd], [], [], None if quiet else idle)
            if not ready:
                quiet = True
                yield None
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                if buffer:
                    yield buffer.decode("utf-8", "replace")
                return
            *complete, buffer = (buffer + chunk).split(b"\n")
            for raw in complete:
                self.last = raw.decode("utf-8", "replace")
                yield self.last
            quiet = False

    def close(self) -> int:
        """Stop the command (if it still runs) and return its exit status."""
        if self.child.poll() is None:
            _kill_group(self.child)
        self.child.wait()
        if self.child.stdout:
            self.child.stdout.close()
        return self.child.returncode

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_group(child: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        child.kill()
