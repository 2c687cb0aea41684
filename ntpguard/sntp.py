"""A one-query SNTP client (RFC 4330 / 5905 packet), used to rank candidate servers.

Only what ranking needs: does it answer, with a sane stratum (1-15) and leap indicator (not 3,
"clock unsynchronized"), and how long the round trip took. It never sets the clock.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional

from ntpguard.records import record

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
_PACKET = struct.Struct("!BBbbII4sQQQQ")


@record
class SntpResult:
    """One SNTP exchange with a server: timeconf's check that it answers and keeps time."""

    address: str
    ok: bool
    stratum: int = 0
    leap: int = 0
    delay: float = 0.0  # round trip minus the server's processing time, seconds
    offset: float = 0.0
    error: str = ""


def _from_ntp(v: int) -> float:
    return v / 2**32 - NTP_EPOCH_OFFSET


def request(transmit: int) -> bytes:
    """A client-mode (3), version-4 request carrying `transmit` as its transmit timestamp."""
    return _PACKET.pack(0b00_100_011, 0, 0, 0, 0, 0, b"\0" * 4, 0, 0, 0, transmit)


def evaluate(address: str, reply: bytes, transmit: int, t1: float, t4: float) -> SntpResult:
    """Judge one reply (pure): sane header, our cookie echoed, stratum 1-15, leap != 3."""
    if len(reply) < _PACKET.size:
        return SntpResult(address, False, error=f"short reply ({len(reply)} bytes)")
    (first, stratum, _poll, _prec, _rd, _rdisp, refid, _ref, origin, recv, xmit) = \
        _PACKET.unpack_from(reply)
    leap, mode = first >> 6, first & 7
    if mode != 4:
        return SntpResult(address, False, stratum, leap, error=f"mode {mode}, not a server reply")
    if origin != transmit:
        return SntpResult(address, False, stratum, leap, error="reply does not echo our request")
    if stratum == 0:
        code = refid.decode("ascii", "replace").strip("\0")
        return SntpResult(address, False, 0, leap, error=f"kiss-o'-death {code!r}")
    if stratum > 15:
        return SntpResult(address, False, stratum, leap,
                          error=f"stratum {stratum} (unsynchronized)")
    if leap == 3:
        return SntpResult(address, False, stratum, leap, error="leap indicator 3 (unsynchronized)")
    t2, t3 = _from_ntp(recv), _from_ntp(xmit)
    delay = max(0.0, (t4 - t1) - (t3 - t2))
    offset = ((t2 - t1) + (t3 - t4)) / 2
    return SntpResult(address, True, stratum, leap, delay, offset)


def query(address: str, timeout: float = 1.0, port: int = 123) -> SntpResult:
    """Send one request and wait for the matching reply; never raises for network errors."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # A random transmit timestamp (RFC 9109 idea): it is the cookie we match the reply with and
    # does not reveal our clock.
    transmit = int.from_bytes(os.urandom(8), "big")
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect((address, port))
            t1 = time.time()
            sock.send(request(transmit))
            deadline = time.monotonic() + timeout
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                reply = sock.recv(1024)
                t4 = time.time()
                result = evaluate(address, reply, transmit, t1, t4)
                if result.ok or result.error != "reply does not echo our request":
                    return result
    except socket.timeout:
        return SntpResult(address, False, error=f"no answer within {timeout:g} s")
    except OSError as exc:
        return SntpResult(address, False, error=exc.strerror or str(exc))


def query_many(addresses: Iterable[str], timeout: float = 1.0, port: int = 123,
               workers: Optional[int] = None) -> dict[str, SntpResult]:
    """Query several servers in parallel: the check costs one timeout, not one per server."""
    addrs = list(dict.fromkeys(addresses))
    if not addrs:
        return {}
    with ThreadPoolExecutor(max_workers=workers or min(16, len(addrs))) as pool:
        results = pool.map(lambda a: query(a, timeout, port), addrs)
        return {r.address: r for r in results}
