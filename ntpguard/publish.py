"""Publish this host's findings as a (signed) list: `list export`, `list keygen`, [publish].

A collector's `sync` writes its list where a web server serves it; every host subscribed with
the collector's public key blocks what it convicted at its next sync. The list and its
`.minisig` are written together (files.atomic_write_all), and only when the entries changed:
a list rewritten every 15 minutes with a new time would cost every subscriber a full
download each sync instead of a 304 (nginx's ETag is the file's mtime and size).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import stat
import time
from typing import Any, Optional, Sequence

from ntpguard import files, lists, minisign
from ntpguard.errors import UnsafePathError, UsageError
from ntpguard.records import record


@record
class Published:
    """What one publish did."""

    path: str
    entries: int
    changed: bool
    generated: float  # when the entries last changed (the list's own "generated" time)
    signed: bool

    def describe(self) -> str:
        what = "written" if self.changed else "unchanged"
        sig = ", signed" if self.signed else ""
        return f"{self.path} {what} ({self.entries} entries{sig})"


# -- keys ----------------------------------------------------------------------------------------


def read_secret_key(path: str) -> minisign.SecretKey:
    """The signing key: a regular file (no link followed), owned by root or us, readable by
    nobody else (as ssh refuses an unprotected private key), unencrypted."""
    try:
        with files.open_regular(path, minisign.MAX_KEY_BYTES) as fh:
            st = os.fstat(fh.fileno())
            data = fh.read(minisign.MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{path}: secret key not found (ntpguard list keygen makes one)") \
            from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read secret key: {exc.strerror}") from None
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafePathError(f"{path}: secret key owned by uid {st.st_uid}, not by root or "
                              f"uid {os.geteuid()}; refused")
    if st.st_mode & 0o077:
        raise UnsafePathError(f"{path}: secret key readable or writable by group or others "
                              f"(mode {stat.S_IMODE(st.st_mode):04o}); refused (chmod 600)")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a minisign secret key (not text)") from None
    return minisign.parse_secret_key(text, path)


def keygen(secret_path: str, public_path: str) -> minisign.SecretKey:
    """A new key pair: the secret key 0600, the public key 0644; neither file may exist."""
    key = minisign.generate()
    for path in (secret_path, public_path):
        if os.path.lexists(path):
            raise UsageError(f"{path}: exists; refused (a subscriber trusts the old key: "
                             "remove it yourself if you mean to replace it)")
    try:
        files.create_exclusive(secret_path, key.file_text().encode(), 0o600)
    except OSError as exc:
        raise UsageError(f"{secret_path}: cannot write: {exc.strerror}") from None
    try:
        files.create_exclusive(public_path, key.public().file_text().encode(), 0o644)
    except OSError as exc:
        os.unlink(secret_path)  # a secret key without its public half helps nobody
        raise UsageError(f"{public_path}: cannot write: {exc.strerror}") from None
    return key


# -- rendering -----------------------------------------------------------------------------------

_TEXT_GENERATED = re.compile(r"^# ntpguard list generated (\S+)", re.M)


def render(entries: Sequence[lists.Entry], fmt: str, generated: float,
           what: str = "harvesters found by this host") -> bytes:
    """The list's bytes: a pure function of the entries and the time, so an unchanged list
    renders the same bytes again."""
    if fmt == "json":
        return lists.export_json(entries, generated).encode()
    return lists.export_text(
        entries, f"ntpguard list generated {lists.iso(generated)}: {what}").encode()


def _generated_of(data: bytes, fmt: str) -> Optional[float]:
    """The `generated` time of a list this module rendered (None if it is not one)."""
    try:
        if fmt == "json":
            text = json.loads(data).get("generated")
        else:
            m = _TEXT_GENERATED.search(data[:4096].decode("utf-8"))
            text = m.group(1) if m else None
        if not isinstance(text, str):
            return None
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


# -- writing -------------------------------------------------------------------------------------


def write(path: str, entries: Sequence[lists.Entry], fmt: str, now: float,
          key: Optional[minisign.SecretKey] = None, only_if_changed: bool = False,
          what: str = "harvesters found by this host") -> Published:
    """Write the list (and with a key, PATH.minisig) atomically; with only_if_changed, leave
    a list with the same entries (and a signature by this key) as it is."""
    sig_path = path + ".minisig"
    if only_if_changed:
        old = _read_published(path)
        when = _generated_of(old, fmt) if old is not None else None
        if old is not None and when is not None and render(entries, fmt, when, what) == old \
                and (key is None or _signed_by(old, sig_path, key)):
            return Published(path, len(entries), False, when, key is not None)
    data = render(entries, fmt, now, what)
    items = [(path, data, 0o644)]
    if key is not None:
        comment = minisign.trusted_comment(now, os.path.basename(path), len(entries))
        items.append((sig_path, minisign.sign(data, key, comment), 0o644))
    try:
        files.atomic_write_all(items)
    except OSError as exc:
        raise UsageError(f"{exc.filename or path}: cannot write: {exc.strerror}") from None
    return Published(path, len(entries), True, now, key is not None)


def _read_published(path: str) -> Optional[bytes]:
    try:
        return files.read_regular(path, lists.MAX_STORED_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def _signed_by(data: bytes, sig_path: str, key: minisign.SecretKey) -> bool:
    try:
        sig = files.read_regular(sig_path, 4096)
        minisign.verify(data, sig, key.public().line())
    except (OSError, minisign.SignatureError):
        return False
    return True


def run(config: Any, state: Any, now: Optional[float] = None) -> Published:
    """The `sync` step: [publish] path, signed with [publish] key, from the state's verdicts
    and scans (entries_from_verdicts)."""
    settings = config.publish
    now = time.time() if now is None else now
    if not settings.key:
        raise UsageError("[publish] key is not set: a list other hosts enforce must be signed "
                         "(ntpguard list keygen)")
    key = read_secret_key(settings.key)
    entries = lists.entries_from_verdicts(state.verdict_history(), settings.statuses,
                                          lists.scan_times(state.scans()), settings.scanners)
    return write(settings.path, entries, settings.format, now, key, only_if_changed=True,
                 what="harvesters found by this collector")
