"""Fetch shared lists over HTTPS (ntpguard.https) or from files, and keep the last good copy of
each.

A subscription is fetched with ETag / If-Modified-Since, so an hourly cron job costs the
publisher a 304; the whole fetch has one deadline, the body is parsed as it arrives and cut off
at its byte and entry caps, optionally pinned by SHA-256 and optionally signed with minisign
(Ed25519, ntpguard.minisign). Whatever goes wrong, the stored copy is only replaced by a list
that passed every check.
"""

from __future__ import annotations

import os
import time
from dataclasses import field
from typing import Any, Callable, Optional

from ntpguard import files, lists, minisign
from ntpguard.config import sha256_hex
from ntpguard.errors import NtpguardError, UsageError
from ntpguard.progress import Show, quiet
from ntpguard.records import record

# `list import URL|FILE`: no subscription sets these. 30 s is the subscriptions' default
# timeout; 64 MiB holds a 1M-entry text list, ten times the largest public scanner list.
IMPORT_TIMEOUT = 30.0
IMPORT_MAX_BYTES = 64 << 20
# A minisign signature file is four short lines (~300 bytes).
SIGNATURE_MAX_BYTES = 4096


class FetchError(NtpguardError):
    """A list could not be fetched or failed its pin/signature; the last good copy stays."""


class SignatureError(FetchError, minisign.SignatureError):
    """A minisign signature is missing, malformed or does not match the key."""


@record
class Response:
    """One HTTP answer to a list fetch."""

    status: int  # 200 or 304
    body: bytes  # empty when a sink took the body
    etag: str = ""
    last_modified: str = ""


def fetch_url(url: str, *, timeout: float = 30.0, max_bytes: int = 8 << 20,
              ca_file: str = "", etag: str = "", last_modified: str = "",
              sink: Optional[Callable[[bytes], None]] = None) -> Response:
    """GET url (https:// or file:///) within `timeout` seconds in all; 304 when etag or
    last_modified still match. With `sink`, the body goes to it piece by piece as it arrives
    (a list parser that can stop the transfer by raising) and Response.body is empty."""
    if url.startswith("file:///"):
        return _read_file(url[len("file://"):], max_bytes, sink)
    if not url.startswith("https://"):
        raise UsageError(f"{url}: only https:// and file:/// URLs are fetched")
    # Imported here: urllib, http.client and ssl are ~25 ms of a `list import FILE` that
    # never speaks HTTP (~30 ms with the email parser http.client brings).
    from ntpguard import https

    return https.get(url, timeout=timeout, max_bytes=max_bytes, ca_file=ca_file, etag=etag,
                     last_modified=last_modified, sink=sink)


def _read_file(path: str, max_bytes: int, sink: Optional[Callable[[bytes], None]]) -> Response:
    """A file:/// list: a regular file, not a link, at most max_bytes (files.open_regular)."""
    try:
        with files.open_regular(path, max_bytes) as fh:
            pieces = []
            for chunk in files.read_chunks(fh, path, max_bytes):
                if sink is None:
                    pieces.append(chunk)
                else:
                    sink(chunk)
    except OSError as exc:
        raise FetchError(f"{path}: cannot read: {exc.strerror}") from None
    return Response(200, b"".join(pieces))


# -- subscriptions -------------------------------------------------------------------------------


@record
class ListResult:
    """What a fetch did to one list."""

    name: str
    status: str  # updated | unchanged | failed
    entries: int = 0
    message: str = ""
    # Every problem of a refused list (the message shows the first 20): `list fetch --json`.
    problems: tuple[str, ...] = ()


@record
class RefreshReport:
    """What one `list fetch` did to every list it fetched."""

    results: tuple[ListResult, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def summary(self) -> str:
        return (f"lists: {self.count('updated')} updated, {self.count('unchanged')} unchanged, "
                f"{self.count('failed')} failed")

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "lists": [r.__dict__.copy() for r in self.results]}


def get_checked(url: str, *, limits: lists.Limits, timeout: float, max_bytes: int,
                ca_file: str = "", sha256: str = "", pubkey: str = "", etag: str = "",
                last_modified: str = "", fmt: str = "auto",
                ) -> tuple[Response, Optional[lists.ParsedList], str]:
    """Fetch, pin-check, signature-check and validate one list; (response, parsed or None on
    304, trusted comment). Raises on any failure, so nothing unchecked gets past it.

    The body is parsed while it arrives, so a list with more than max_entries entries stops
    the transfer there; `timeout` bounds the list and its signature together. A list and its
    signature are two requests, and a publisher replaces both between two of them now and
    then (`sync` publishes every 15 minutes): a signature that does not match is fetched
    again, list and all, once, within the same deadline.
    """
    end = time.monotonic() + timeout
    for attempt in (1, 2):
        reader = lists.Reader(url, limits, fmt)
        left = timeout if attempt == 1 else _left(url, end, timeout)
        resp = fetch_url(url, timeout=left, max_bytes=max_bytes,
                         ca_file=ca_file, etag=etag, last_modified=last_modified,
                         sink=reader.feed)
        if resp.status == 304:
            return resp, None, ""
        reader.end()
        try:
            trusted = _check_pins(
                url, reader.raw, reader.sha256, sha256, pubkey,
                lambda: fetch_url(url + ".minisig", timeout=_left(url, end, timeout),
                                  max_bytes=SIGNATURE_MAX_BYTES, ca_file=ca_file).body)
        except SignatureError as exc:
            if attempt == 2 or "does not match" not in str(exc):
                raise
            continue
        return resp, reader.result(), trusted
    raise AssertionError("unreachable")  # pragma: no cover


def _left(url: str, end: float, timeout: float) -> float:
    left = end - time.monotonic()
    if left <= 0:
        raise FetchError(f"{url}: no complete answer within {timeout:g} s (the list and its "
                         "signature together)")
    return left


def _check_pins(source: str, raw: bytes, digest: str, sha256: str, pubkey: str,
                signature: Callable[[], bytes]) -> str:
    """The SHA-256 pin and the minisign signature, if configured; the trusted comment."""
    if sha256 and digest != sha256.lower():
        raise FetchError(f"{source}: SHA-256 {digest} does not match the pinned {sha256}")
    if not pubkey:
        return ""
    try:
        # The key before the signature is fetched or read: a malformed key is the problem to
        # report, not a missing signature that it could not have checked anyway.
        minisign.parse_pubkey(pubkey)
    except minisign.SignatureError as exc:
        raise SignatureError(f"{source}: {exc}") from None
    sig = signature()
    try:
        return minisign.verify(raw, sig, pubkey)
    except minisign.SignatureError as exc:
        raise SignatureError(f"{source}: {exc}") from None


def refresh_subscriptions(config: Any, state_dir: str, now: Optional[float] = None,
                          only: Optional[str] = None, show: Show = quiet) -> RefreshReport:
    """Refresh every configured subscription (the `sync` step); never raises for one list.

    A list that fails (unreachable, too big, wrong pin or signature, invalid) is reported and
    its last good copy stays in force. `show` hears which list is fetched: an unreachable
    server takes its whole `timeout` (30 s by default).
    """
    now = time.time() if now is None else now
    results: list[ListResult] = []
    subs = [sub for sub in config.lists.subscriptions if not only or sub.name == only]
    for number, sub in enumerate(subs, 1):
        show(f"lists {number}/{len(subs)}: {sum(r.status == 'updated' for r in results)} "
             f"updated; fetching {sub.name} from {sub.url}")
        meta = lists.read_meta(state_dir, sub.name)
        have_copy = sub.name in lists.stored_names(state_dir)
        # Conditional requests only when the copy still there matches the same URL.
        conditional = have_copy and meta.get("source") == sub.url
        try:
            resp, parsed, trusted = get_checked(
                sub.url, limits=lists.limits_for(config, sub.max_entries, sub.kind),
                timeout=sub.timeout, max_bytes=sub.max_bytes, ca_file=sub.ca_file,
                sha256=sub.sha256, pubkey=sub.pubkey,
                etag=str(meta.get("etag", "")) if conditional else "",
                last_modified=str(meta.get("last_modified", "")) if conditional else "",
            )
            if parsed is None:
                lists.store_meta(state_dir, sub.name, dict(meta, checked=now))
                results.append(ListResult(sub.name, "unchanged", int(meta.get("entries", 0))))
                continue
            if conditional and parsed.sha256 == meta.get("sha256"):
                status = "unchanged"
            else:
                status = "updated"
            lists.store(state_dir, sub.name, parsed, {
                "source": sub.url, "etag": resp.etag, "last_modified": resp.last_modified,
                "fetched": now, "checked": now, "signed": bool(sub.pubkey),
                "trusted_comment": trusted, "kind": sub.kind, "trust": sub.trust,
            })
            results.append(ListResult(sub.name, status, parsed.count))
        except NtpguardError as exc:
            kept = " (last good copy kept)" if have_copy else ""
            results.append(ListResult(sub.name, "failed", int(meta.get("entries", 0)),
                                      f"{exc}{kept}", tuple(getattr(exc, "problems", ()))))
    if only and not results:
        raise UsageError(f"no subscription named {only!r} in the configuration")
    return RefreshReport(tuple(results))


def import_source(config: Any, state_dir: str, source: str, name: str = "", kind: str = "",
                  trust: str = "enforce", ca_file: str = "", sha256: str = "", pubkey: str = "",
                  now: Optional[float] = None, fmt: str = "auto") -> tuple[str, lists.ParsedList]:
    """`list import FILE|URL`: validate and keep it as list NAME (default: the file's stem)."""
    now = time.time() if now is None else now
    if not name:
        base = os.path.basename(source.rstrip("/")).split("?")[0]
        name = base.rsplit(".", 1)[0].lower() if "." in base else base.lower()
    lists.check_name(name)
    if name.startswith("builtin"):
        raise UsageError(f"list name {name!r}: names starting with 'builtin' are the shipped lists")
    if any(s.name == name for s in config.lists.subscriptions):
        raise UsageError(f"list name {name!r} is a subscription; `list fetch` refreshes it")
    if trust not in lists.TRUSTS:
        raise UsageError(f"unknown trust {trust!r} (enforce or report)")
    try:  # a mistyped pin, too, is the error, not a "does not match" after the read
        sha256 = sha256_hex(sha256)
    except ValueError as exc:
        raise UsageError(f"--sha256: {exc}") from None
    if pubkey:
        # The key the admin typed is checked before the list and its signature are read: a
        # mistyped key, not a missing FILE.minisig or an unreadable FILE, is what to report.
        try:
            minisign.parse_pubkey(pubkey)
        except minisign.SignatureError as exc:
            raise UsageError(f"--pubkey: {exc}") from None
    limits = lists.limits_for(config, kind=kind)
    if "://" in source:
        _, parsed, trusted = get_checked(source, limits=limits, timeout=IMPORT_TIMEOUT,
                                         max_bytes=IMPORT_MAX_BYTES, ca_file=ca_file,
                                         sha256=sha256, pubkey=pubkey, fmt=fmt)
        assert parsed is not None  # no conditional request was made
    else:
        reader = lists.Reader(source, limits, fmt)
        try:
            with files.open_regular(source, IMPORT_MAX_BYTES) as fh:
                for chunk in files.read_chunks(fh, source, IMPORT_MAX_BYTES):
                    reader.feed(chunk)
        except OSError as exc:
            raise UsageError(f"{source}: cannot read: {exc.strerror}") from None
        reader.end()
        trusted = _check_pins(source, reader.raw, reader.sha256, sha256, pubkey,
                              lambda: _read_signature(source + ".minisig"))
        parsed = reader.result()
        source = os.path.abspath(source)
    lists.store(state_dir, name, parsed, {
        "source": source, "fetched": now, "checked": now, "signed": bool(pubkey),
        "trusted_comment": trusted, "kind": kind, "trust": trust, "imported": True,
    })
    return name, parsed


def _read_signature(path: str) -> bytes:
    try:
        return files.read_regular(path, SIGNATURE_MAX_BYTES)
    except OSError as exc:
        raise SignatureError(f"{path}: cannot read: {exc.strerror}") from None
