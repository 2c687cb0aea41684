"""One netlink request and the datagrams that answer it, and the message layout ntpguard's two
netlink readers share (hostinfo: rtnetlink's default routes; backends.nft_gen: nf_tables'
generation). A request is ~0.2 ms where `ip` or `nft` as a process is ~5 ms."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from typing import Callable, Iterator, Optional

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
ATTR = struct.Struct("=HH")  # nlattr: length, type
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
_SOL_NETLINK, _NETLINK_GET_STRICT_CHK = 270, 12
# Sockets kept open for the rest of the process (asked(keep=True)), by protocol, with the
# process they belong to (a forked child opens its own: it must not read its parent's answers).
_KEPT: dict[int, tuple[int, socket.socket]] = {}


def request(kind: int, flags: int, body: bytes) -> bytes:
    """One message: its header (sequence 1, port 0: the kernel's) and body."""
    return HEADER.pack(HEADER.size + len(body), kind, flags, 1, 0) + body


@contextlib.contextmanager
def asked(protocol: int, message: bytes, timeout: float, strict: bool = False,
          keep: bool = False) -> Iterator[Callable[[], bytes]]:
    """Send `message` on a netlink socket of `protocol`; gives the function that reads the
    next datagram of the answer. strict: ask for strict checking, so the kernel filters a
    dump by the request's fields (4.20 and later; before, the whole dump comes). keep: the
    socket stays open for the next call of the same protocol and the rest of the process
    (see nft_gen.genid for why). OSError from any step is the caller's."""
    owner, kept = _KEPT.pop(protocol, (0, None)) if keep else (0, None)
    if kept is not None and owner != os.getpid():
        kept = None  # the parent's: left to it
    sock = kept or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    try:
        if kept is None:
            if strict:
                with contextlib.suppress(OSError):
                    sock.setsockopt(_SOL_NETLINK, _NETLINK_GET_STRICT_CHK, 1)
            sock.bind((0, 0))
        else:
            _drain(sock)
        sock.settimeout(timeout)
        sock.send(message)
        yield lambda: sock.recv(1 << 16)
    except BaseException:
        sock.close()
        raise
    if keep:
        _KEPT[protocol] = (os.getpid(), sock)
    else:
        sock.close()


def _drain(sock: socket.socket) -> None:
    """Read what an earlier exchange left unread, so the next answer is the next datagram."""
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while sock.recv(1 << 16):
            pass


def attributes(data: bytes, at: int, end: int) -> Optional[dict[int, bytes]]:
    """The attributes from `at` to `end` (type without its flag bits → value); None if one
    is malformed."""
    out: dict[int, bytes] = {}
    while at + ATTR.size <= end:
        size, kind = ATTR.unpack_from(data, at)
        if size < ATTR.size:
            return None
        out.setdefault(kind & 0x3FFF, data[at + ATTR.size:at + size])
        at += (size + 3) & ~3
    return out


def walk(data: bytes) -> tuple[bool, Optional[list[tuple[int, int, int]]]]:
    """The messages of one datagram of a dump's answer: (the dump ended, each message's
    (type, body start, end)); None for an error answer or a message cut short."""
    out: list[tuple[int, int, int]] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _, _, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size or offset + length > len(data):
            return True, None
        if kind == NLMSG_DONE:
            return True, out
        if kind == NLMSG_ERROR:
            return True, None
        out.append((kind, offset + HEADER.size, offset + length))
        offset += (length + 3) & ~3
    return False, out


def dump(protocol: int, message: bytes, timeout: float, strict: bool = False
         ) -> Optional[list[tuple[int, bytes, int, int]]]:
    """Every message of the answer to a dump request: (type, its datagram, body start, end);
    None if the kernel answered with an error or something cut short. OSError is the
    caller's."""
    out: list[tuple[int, bytes, int, int]] = []
    with asked(protocol, message, timeout, strict) as receive:
        while True:
            data = receive()
            if not data:
                return None
            done, found = walk(data)
            if found is None:
                return None
            out += [(kind, data, body, end) for kind, body, end in found]
            if done:
                return out

