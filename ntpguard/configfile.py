"""Which configuration file a run uses, its bytes, and where its state directory is.

Apart from ntpguard.config (which parses and validates the bytes into settings) because a
`rules apply` or `sync` with nothing new (ntpguard.inputs) only needs to recognise the file
the last apply was built from: the settings' module and what it imports (dataclasses and
inspect, the validators) are ~30 ms of such a run's ~0.09 s.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, NamedTuple, Optional

from ntpguard import files
from ntpguard.errors import UsageError

DEFAULT_PATH = "/etc/ntpguard/ntpguard.toml"
DEFAULT_STATE_DIR = "/var/lib/ntpguard"
# The commented sample is 14 KB; a file 70 times that is not a configuration (and a FIFO or
# /dev/zero given as --config is refused, not read for ever).
MAX_CONFIG_BYTES = 1 << 20


class Source(NamedTuple):
    """The configuration file a run uses and what it holds."""

    path: str  # as asked (--config, $NTPGUARD_CONFIG) or the default
    raw: Optional[bytes]  # None: no file (the default one is absent, or os.devnull): defaults

    @property
    def identity(self) -> str:
        """Names these settings as long as the code is the same: the file's absolute path
        and the SHA-256 of its text (a changed comment is a new identity: one plan built)."""
        if self.raw is None:
            return f"{os.path.abspath(self.path)}\0defaults"
        import hashlib  # here: OpenSSL's libcrypto is ~3 ms, which only the digest needs

        digest = hashlib.sha256(self.raw).hexdigest()
        return f"{os.path.abspath(self.path)}\0{digest}"


def read(path: Optional[str] = None) -> Source:
    """The configuration's bytes: --config, else $NTPGUARD_CONFIG, else the default path.

    A missing default file means all defaults; a missing file that was asked for is an error
    (UsageError), as is one that cannot be read.
    """
    explicit = path or os.environ.get("NTPGUARD_CONFIG")
    target = explicit or DEFAULT_PATH
    if target == os.devnull:  # the usual way to say "no configuration file": all defaults
        return Source(target, None)
    try:
        raw = files.read_regular(target, MAX_CONFIG_BYTES, follow=True)
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"{target}: configuration file not found") from None
        return Source(target, None)
    except OSError as exc:
        raise UsageError(f"{target}: cannot read: {exc.strerror}") from None
    return Source(target, raw)


def state_dir(asked: Optional[str], configured: Callable[[], Optional[str]]) -> str:
    """The state directory: --state-dir, else $NTPGUARD_STATE_DIR, else [general] state_dir
    (`configured` is asked only then; None: the default)."""
    return asked or os.environ.get("NTPGUARD_STATE_DIR") or configured() or DEFAULT_STATE_DIR


def configured_state_dir(source: Source) -> Optional[str]:
    """[general] state_dir as the file writes it, unchecked (None if it has none or cannot
    be parsed): where to look for what a run with these exact bytes left, before the
    settings are validated (a match there proves the bytes were valid when it was left)."""
    if source.raw is None:
        return None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Debian 11 / Python 3.9 only
        import tomli as tomllib
    try:
        general = tomllib.loads(source.raw.decode("utf-8")).get("general")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None
    value = general.get("state_dir") if isinstance(general, dict) else None
    return value if isinstance(value, str) and value else None
