"""The oldest Python ntpguard supports (3.9, Debian 11 and Raspberry Pi OS "bullseye"): the whole
unit suite there, with the C fast path built by that Python from its own headers.

A Debian 11 chroot made with mmdebstrap (its python3 is 3.9.2); the libraries come as wheels
downloaded here for Python 3.9 (bullseye's own dnspython 2.0 is older than ntpguard needs) and
installed there offline. The chroot gets its own /proc, /dev/shm and /dev/pts in a private mount
namespace (multiprocessing and the terminal tests need them), so nothing is left mounted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from test_logs import CORPUS  # noqa: E402  (where the parser tests find the real log lines)

SYSTEM_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}
WHEELS = ("dnspython", "tomli", "pytest", "hypothesis", "pytest-xdist", "execnet",
          # pytest's and hypothesis's backports below 3.11 (pip download does not pick them
          # for another Python's markers)
          "exceptiongroup", "typing_extensions")

SCRIPT = """set -e
python3 --version
python3 -m venv /v
/v/bin/pip install -q --no-index --find-links /wheels dnspython tomli pytest hypothesis pytest-xdist
cd /src/main
/v/bin/python setup.py -q build_ext --inplace
# Both CPUs: nothing else runs while this test does.
/v/bin/python -m pytest -q -n 2 -p no:cacheprovider \
    -m "not root and not lab and not scenarios" tests
"""


def run(cmd, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, env=kw.pop("env", SYSTEM_ENV), **kw)


@pytest.mark.root
def test_unit_suite_on_python_3_9(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, mounts)")
    if not shutil.which("mmdebstrap", path=SYSTEM_ENV["PATH"]):
        pytest.skip("mmdebstrap missing (make deps installs it)")
    mirror = os.environ.get("NTPGUARD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    started = time.monotonic()
    wheels = tmp_path / "wheels"
    p = run([sys.executable, "-m", "pip", "download", "-q", "--python-version", "3.9",
             "--only-binary=:all:", "-d", wheels, *WHEELS], env=dict(os.environ))
    if p.returncode != 0:
        pytest.skip(f"cannot download wheels for Python 3.9 from PyPI: {p.stderr[-500:]}")
    root = tmp_path / "bullseye"
    try:
        _make_and_run(root, wheels, mirror, started)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # ~400 MB


def _make_and_run(root: Path, wheels: Path, mirror: str, started: float) -> None:
    p = run(["mmdebstrap", "--variant=apt", "--mode=root",
             "--include=python3,python3-dev,python3-venv,gcc,libc6-dev,iproute2",
             "bullseye", root, mirror])
    if p.returncode != 0 and ("Failed to fetch" in p.stderr or "Could not resolve" in p.stderr):
        pytest.skip(f"Debian mirror {mirror} unreachable")
    assert p.returncode == 0, p.stderr[-3000:]
    made = time.monotonic() - started
    # The checkout as git has it (plus uncommitted changes), and the corpus beside it, where
    # the tests look for it.
    src = root / "src" / "main"
    files = run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                 "--exclude-standard"]).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    if CORPUS.is_dir():
        shutil.copytree(CORPUS, root / "src" / "shared" / "corpus")
    shutil.copytree(wheels, root / "wheels")
    (root / "run.sh").write_text(SCRIPT)
    p = run(["unshare", "--mount", "--fork", "sh", "-c",
             'mount -t proc proc "$0/proc" && mkdir -p "$0/dev/shm" && '
             'mount -t tmpfs shm "$0/dev/shm" && mkdir -p "$0/dev/pts" && '
             # The terminal tests need ptys: a devpts of the chroot's own, its ptmx in /dev.
             'mount -t devpts -o newinstance,ptmxmode=0666 devpts "$0/dev/pts" && '
             '{ [ -e "$0/dev/ptmx" ] || touch "$0/dev/ptmx"; } && '
             'mount --bind "$0/dev/pts/ptmx" "$0/dev/ptmx" && exec chroot "$0" sh /run.sh', root],
            timeout=1200)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert "Python 3.9." in out
    summary = [ln for ln in out.splitlines() if " passed" in ln]
    print(f"Python 3.9 chroot made in {made:.0f} s; {summary[-1] if summary else out[-300:]}; "
          f"{time.monotonic() - started:.0f} s in all")
