"""HTTPS GET for shared lists (stdlib urllib): one deadline for the whole request, HTTPS-only
redirects, the body handed on as it arrives. ntpguard.fetch.fetch_url calls it for https://
URLs; a module of its own so that reading a list from a file imports no HTTP or TLS code.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPMessage
from typing import IO, Any, Callable, Optional

from ntpguard.errors import NtpguardError, UsageError
from ntpguard.fetch import FetchError, Response

USER_AGENT = "ntpguard (shared-list fetch)"
_CHUNK = 64 << 10  # read from the connection at a time


class _HTTPSOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows https→http redirects by default; a list must not be downgraded."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: HTTPMessage, newurl: str
                         ) -> Optional[urllib.request.Request]:
        if not newurl.lower().startswith("https://"):
            raise FetchError(f"{req.full_url}: refused redirect to non-HTTPS {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """One time limit for a whole fetch: connect, TLS, headers and body, redirects included.

    A socket timeout only bounds each read: a server sending one byte every 0.5 s never trips
    it. So every connection is made here (http.client's `_create_connection` hook) with the
    time left as its timeout, and a timer shuts the connections down when the time is up,
    which wakes whatever read is blocked. Shutting down a dup() of each socket, never a
    closed descriptor's number, means a descriptor reused meanwhile is never touched.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError("deadline passed")
        return left

    def connect(self, address: tuple[str, int], timeout: Any = None,
                source_address: Any = None) -> socket.socket:
        """socket.create_connection, each attempt bounded by the time left."""
        host, port = address
        error: Optional[OSError] = None
        for family, kind, proto, _, target in socket.getaddrinfo(host, port, 0,
                                                                 socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.left())
                if source_address:
                    sock.bind(source_address)
                sock.connect(target)
                with self._lock:
                    if self.expired:
                        raise TimeoutError("deadline passed")
                    self._socks.append(sock.dup())
                return sock
            except OSError as exc:
                sock.close()
                error = exc
                if isinstance(exc, TimeoutError) and self.expired:
                    break
        raise error or OSError(f"cannot resolve {host}")

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._socks:
                sock.close()
            self._socks.clear()


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    """HTTPS whose connections come from a _Deadline (proxies included: urllib connects to
    the proxy through the same hook)."""

    def __init__(self, context: ssl.SSLContext, deadline: _Deadline) -> None:
        super().__init__(context=context)
        self._deadline = deadline

    def do_open(self, http_class: Any, req: urllib.request.Request,
                **kwargs: Any) -> Any:
        deadline = self._deadline

        class Connection(http_class):
            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, **kw)
                self._create_connection = deadline.connect

        return super().do_open(Connection, req, **kwargs)


def get(url: str, *, timeout: float, max_bytes: int, ca_file: str = "", etag: str = "",
        last_modified: str = "", sink: Optional[Callable[[bytes], None]] = None) -> Response:
    """GET an https:// url: what ntpguard.fetch.fetch_url does for one."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"{ca_file}: cannot load CA file: {exc}") from None
    headers = {"User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        request = urllib.request.Request(url, headers=headers)
    except ValueError as exc:
        raise UsageError(f"{url}: not a usable URL: {exc}") from None
    with _Deadline(timeout) as deadline:
        opener = urllib.request.build_opener(_DeadlineHTTPSHandler(context, deadline),
                                             _HTTPSOnlyRedirects())
        try:
            with opener.open(request, timeout=timeout) as resp:
                body = _read_body(resp, url, max_bytes, sink)
                if deadline.expired:  # a shut-down connection reads as a clean end
                    raise TimeoutError("deadline passed")
                return Response(200, body, resp.headers.get("ETag", ""),
                                resp.headers.get("Last-Modified", ""))
        except NtpguardError:
            raise
        except Exception as exc:
            if deadline.expired or time.monotonic() >= deadline.end:
                raise FetchError(f"{url}: no complete answer within {timeout:g} s (connect, "
                                 "headers and body together)") from None
            return _failed(url, exc, etag, last_modified)


def _read_body(resp: Any, url: str, max_bytes: int,
               sink: Optional[Callable[[bytes], None]]) -> bytes:
    """The body, refused as soon as it passes max_bytes (Content-Length or counted)."""
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise FetchError(f"{url}: {length} bytes, more than max_bytes {max_bytes}")
    pieces: list[bytes] = []
    total = 0
    while True:
        chunk = resp.read(_CHUNK)
        if not chunk:
            return b"".join(pieces)
        total += len(chunk)
        if total > max_bytes:
            raise FetchError(f"{url}: more than max_bytes {max_bytes}")
        if sink is None:
            pieces.append(chunk)
        else:
            sink(chunk)


def _failed(url: str, exc: Exception, etag: str, last_modified: str) -> Response:
    """A 304 as a Response; every other failure as a FetchError naming the URL."""
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code == 304:
            return Response(304, b"", etag, last_modified)
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise FetchError(f"{url}: TLS certificate not trusted: {reason.verify_message}") \
                from None
        raise FetchError(f"{url}: {reason}") from None
    if isinstance(exc, ValueError):  # urllib and http.client on a malformed URL
        raise UsageError(f"{url}: not a usable URL: {exc}") from None
    if isinstance(exc, (OSError, http.client.HTTPException)):
        # socket.timeout is an OSError on 3.9; a garbled status line is an HTTPException.
        raise FetchError(f"{url}: {exc or type(exc).__name__}") from None
    raise exc
