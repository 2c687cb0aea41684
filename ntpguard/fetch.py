"""Fetch shared lists over HTTPS (stdlib urllib) and keep the last good copy of each.

A subscription is fetched with ETag / If-Modified-Since, so an hourly cron job costs the
publisher a 304; the body is capped in size, optionally pinned by SHA-256 and optionally signed
with minisign (Ed25519, verified with python3-cryptography, which Debian 12 ships as 38.x).
Whatever goes wrong, the stored copy is only replaced by a list that passed every check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPMessage
from typing import IO, Any, Optional

from ntpguard import lists
from ntpguard.errors import NtpguardError, UsageError
from ntpguard.progress import Show, quiet

USER_AGENT = "ntpguard (shared-list fetch)"


class FetchError(NtpguardError):
    """A list could not be fetched or failed its pin/signature; the last good copy stays."""


class SignatureError(FetchError):
    """A minisign signature is missing, malformed or does not match the key."""


@dataclass(frozen=True)
class Response:
    status: int  # 200 or 304
    body: bytes
    etag: str = ""
    last_modified: str = ""


class _HTTPSOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows https→http redirects by default; a list must not be downgraded."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: HTTPMessage, newurl: str
                         ) -> Optional[urllib.request.Request]:
        if not newurl.lower().startswith("https://"):
            raise FetchError(f"{req.full_url}: refused redirect to non-HTTPS {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_url(url: str, *, timeout: float = 30.0, max_bytes: int = 8 << 20,
              ca_file: str = "", etag: str = "", last_modified: str = "") -> Response:
    """GET url (https:// or file:///); 304 when etag/last_modified still match."""
    if url.startswith("file:///"):
        return _read_file(url[len("file://"):], max_bytes)
    if not url.startswith("https://"):
        raise UsageError(f"{url}: only https:// and file:/// URLs are fetched")
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"{ca_file}: cannot load CA file: {exc}") from None
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), _HTTPSOnlyRedirects()
    )
    headers = {"User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    request = urllib.request.Request(url, headers=headers)
    try:
        with opener.open(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"{url}: {length} bytes, more than max_bytes {max_bytes}")
            body = resp.read(max_bytes + 1)
            if len(body) > max_bytes:
                raise FetchError(f"{url}: more than max_bytes {max_bytes}")
            return Response(200, body, resp.headers.get("ETag", ""),
                            resp.headers.get("Last-Modified", ""))
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Response(304, b"", etag, last_modified)
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise FetchError(f"{url}: TLS certificate not trusted: {reason.verify_message}") \
                from None
        raise FetchError(f"{url}: {reason}") from None
    except (TimeoutError, OSError) as exc:  # socket.timeout is OSError on 3.9
        raise FetchError(f"{url}: {exc or 'timed out'}") from None


def _read_file(path: str, max_bytes: int) -> Response:
    try:
        with open(path, "rb") as fh:
            body = fh.read(max_bytes + 1)
    except OSError as exc:
        raise FetchError(f"{path}: cannot read: {exc.strerror}") from None
    if len(body) > max_bytes:
        raise FetchError(f"{path}: more than max_bytes {max_bytes}")
    return Response(200, body)


# -- minisign ------------------------------------------------------------------------------------


def _b64(text: str, what: str, length: int) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not base64") from None
    if len(raw) != length:
        raise SignatureError(f"{what} has {len(raw)} bytes, expected {length}")
    return raw


def parse_pubkey(text: str) -> tuple[bytes, bytes]:
    """A minisign public key (the .pub file or its base64 line) → (key id, Ed25519 key)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()
             and not ln.startswith("untrusted comment:")]
    if len(lines) != 1:
        raise SignatureError("public key: expected one base64 line (RW...)")
    raw = _b64(lines[0], "public key", 42)
    if raw[:2] != b"Ed":
        raise SignatureError("public key: not an Ed25519 minisign key")
    return raw[2:10], raw[10:]


def verify_minisign(data: bytes, signature: bytes, pubkey: str) -> str:
    """Check a minisign signature (legacy `Ed` or prehashed `ED`); return the trusted comment.

    Format (minisign's SIGNATURE_FORMAT): `untrusted comment: ...`, base64(alg[2] keyid[8]
    sig[64]), `trusted comment: ...`, base64(global sig[64] over sig + trusted comment).
    """
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        raise SignatureError("a pubkey is configured but python3-cryptography is not "
                             "installed (apt-get install python3-cryptography)") from None
    key_id, key = parse_pubkey(pubkey)
    try:
        lines = signature.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise SignatureError("signature file is not UTF-8 text") from None
    if len(lines) < 4 or not lines[0].startswith("untrusted comment:") \
            or not lines[2].startswith("trusted comment: "):
        raise SignatureError("signature file is not in minisign format")
    sig = _b64(lines[1], "signature", 74)
    global_sig = _b64(lines[3], "global signature", 64)
    alg, sig_key_id, sig_bytes = sig[:2], sig[2:10], sig[10:]
    if sig_key_id != key_id:
        raise SignatureError(f"signed with key {sig_key_id[::-1].hex().upper()}, "
                             f"expected {key_id[::-1].hex().upper()}")
    if alg == b"ED":
        message = hashlib.blake2b(data, digest_size=64).digest()
    elif alg == b"Ed":
        message = data
    else:
        raise SignatureError(f"unknown signature algorithm {alg!r}")
    trusted = lines[2][len("trusted comment: "):]
    public = Ed25519PublicKey.from_public_bytes(key)
    try:
        public.verify(sig_bytes, message)
    except InvalidSignature:
        raise SignatureError("signature does not match the list") from None
    try:
        public.verify(global_sig, sig_bytes + trusted.encode("utf-8"))
    except InvalidSignature:
        raise SignatureError("trusted comment was altered (global signature invalid)") from None
    return trusted


# -- subscriptions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListResult:
    name: str
    status: str  # updated | unchanged | failed
    entries: int = 0
    message: str = ""


@dataclass(frozen=True)
class RefreshReport:
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
    304, trusted comment). Raises on any failure, so nothing unchecked gets past it."""
    resp = fetch_url(url, timeout=timeout, max_bytes=max_bytes, ca_file=ca_file, etag=etag,
                     last_modified=last_modified)
    if resp.status == 304:
        return resp, None, ""
    digest = hashlib.sha256(resp.body).hexdigest()
    if sha256 and digest != sha256.lower():
        raise FetchError(f"{url}: SHA-256 {digest} does not match the pinned {sha256}")
    trusted = ""
    if pubkey:
        sig = fetch_url(url + ".minisig", timeout=timeout, max_bytes=4096, ca_file=ca_file)
        try:
            trusted = verify_minisign(resp.body, sig.body, pubkey)
        except SignatureError as exc:
            raise SignatureError(f"{url}: {exc}") from None
    parsed = lists.parse(resp.body, url, limits, fmt)
    return resp, parsed, trusted


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
            results.append(ListResult(sub.name, status, len(parsed.entries)))
        except NtpguardError as exc:
            kept = " (last good copy kept)" if have_copy else ""
            results.append(ListResult(sub.name, "failed", int(meta.get("entries", 0)),
                                      f"{exc}{kept}"))
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
    limits = lists.limits_for(config, kind=kind)
    if "://" in source:
        _, parsed, trusted = get_checked(source, limits=limits, timeout=30.0, max_bytes=64 << 20,
                                         ca_file=ca_file, sha256=sha256, pubkey=pubkey, fmt=fmt)
        assert parsed is not None  # no conditional request was made
    else:
        try:
            with open(source, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise UsageError(f"{source}: cannot read: {exc.strerror}") from None
        if sha256 and hashlib.sha256(raw).hexdigest() != sha256.lower():
            raise FetchError(f"{source}: SHA-256 does not match the pinned {sha256}")
        trusted = ""
        if pubkey:
            try:
                with open(source + ".minisig", "rb") as fh:
                    sig = fh.read(4096)
            except OSError as exc:
                raise SignatureError(f"{source}.minisig: cannot read: {exc.strerror}") from None
            trusted = verify_minisign(raw, sig, pubkey)
        parsed = lists.parse(raw, source, limits, fmt)
        source = os.path.abspath(source)
    lists.store(state_dir, name, parsed, {
        "source": source, "fetched": now, "checked": now, "signed": bool(pubkey),
        "trusted_comment": trusted, "kind": kind, "trust": trust, "imported": True,
    })
    return name, parsed
