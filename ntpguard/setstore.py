"""Big packed prefix sets kept on disk once, named by their content, beside the file that
refers to them.

The last applied plan (applied-plan.json) and the nft element cache (rules-nft.json) each hold
every prefix the rules hold: with a 100k-entry list, ~1.7 MB packed, ~2.3 MB as base64 JSON.
Written inline, each apply after one verdict changed re-encoded, re-wrote and fsynced both
(~40 ms of a ~0.4 s run) and the next apply read and decoded them again (~12 ms), though only a
set of a few hundred addresses had changed. Here a set of more than INLINE_BYTES is a file
`<holder>.sets/<digest>` (its bytes, packed: ntpguard.prefixes.Networks, and the digest its
Networks.digest, family included), written once when first needed and never rewritten; the
holder's JSON names it {"family": 6, "sha256": ...}. A set the holder no longer names is swept
after the holder was written (the holders are written under the rules lock, so nothing else
writes there meanwhile). A reader checks the bytes against their name: a damaged or missing
file is a ValueError, which each holder already treats as "this record cannot be trusted".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from typing import Any, Iterable

from ntpguard import files
from ntpguard.errors import UnsafePathError
from ntpguard.prefixes import WIDTH, Networks

# Smaller sets stay inline: a file each for the clean servers and the harvester prefixes (a
# few hundred addresses, rewritten whenever a verdict changes) would cost more than it saves.
INLINE_BYTES = 4096
# The most one set can be: a list may hold at most 10M entries (lists.Limits), 16 bytes each.
_MAX_BYTES = 160 << 20


def directory_for(holder: str) -> str:
    """Where the sets of the JSON file `holder` live."""
    base, _ = os.path.splitext(holder)
    return base + ".sets"


class Writer:
    """Encodes the sets of one holder about to be written: `encode` names each set, `commit`
    writes the files not already there (all synced, one directory sync), then the caller
    writes the holder and sweeps what it no longer names (`sweep(directory, writer.names)`)."""

    def __init__(self, directory: str, durable: bool = True) -> None:
        self.directory = directory
        self.durable = durable  # files.atomic_write's: False for a cache's sets
        self.names: set[str] = set()
        self._pending: list[tuple[str, bytes, int]] = []

    def encode(self, nets: Networks) -> dict[str, Any]:
        """The JSON value naming `nets`."""
        if len(nets.packed) <= INLINE_BYTES:
            return {"family": nets.family,
                    "packed": base64.b64encode(nets.packed).decode("ascii")}
        digest = nets.digest()
        if digest not in self.names:
            self.names.add(digest)
            path = os.path.join(self.directory, digest)
            if not _holds(path, nets.packed):
                self._pending.append((path, nets.packed, 0o640))
        return {"family": nets.family, "sha256": digest}

    def commit(self) -> None:
        """Write the new set files; OSError (or UnsafePathError) if they cannot be written:
        the holder must not be written then."""
        if self._pending:
            files.ensure_dir(self.directory, 0o755)
            files.atomic_write_all(self._pending, self.durable)
            self._pending = []


def decode(directory: str, value: Any) -> Networks:
    """The Networks a JSON value from `encode` names; ValueError if it is malformed, or its
    file is missing or does not hold what its name says."""
    if not isinstance(value, dict):
        raise ValueError("networks: not an object")
    try:
        family = int(value["family"])
        if family not in WIDTH:
            raise ValueError(f"networks: unknown family {family}")
        if "packed" in value:
            return Networks(family, base64.b64decode(value["packed"], validate=True))
        digest = str(value["sha256"])
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"networks: {exc}") from None
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError("networks: not a SHA-256 name")
    path = os.path.join(directory, digest)
    try:
        packed = files.read_regular(path, _MAX_BYTES)
    except (OSError, UnsafePathError) as exc:
        raise ValueError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    nets = Networks(family, packed)
    if nets.digest() != digest:
        raise ValueError(f"{path}: damaged (its content is not what its name says)")
    return nets


def same(value: Any, nets: Networks) -> bool:
    """Whether the JSON value names exactly `nets`, without reading a set file."""
    if not isinstance(value, dict):
        return False
    if "sha256" in value:
        return value.get("family") == nets.family and value["sha256"] == nets.digest()
    return False


def sweep(directory: str, keep: Iterable[str]) -> None:
    """Remove the files in `directory` that are not in `keep` (left by an earlier plan or an
    interrupted write). Best effort: a file left behind costs only disk."""
    wanted = set(keep)
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for name in entries:
        if name not in wanted:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _holds(path: str, packed: bytes) -> bool:
    """The file is there with exactly these bytes (a damaged one is written again; reading
    1.7 MB back costs ~1 ms, far less than writing and syncing it)."""
    try:
        return files.read_regular(path, len(packed) + 1) == packed
    except (OSError, UnsafePathError):
        return False
