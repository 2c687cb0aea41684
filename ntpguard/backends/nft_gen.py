"""The kernel's nftables generation: one netlink request, ~0.2 ms, no listing.

Every committed nftables transaction that changes anything, of any table in this network
namespace, raises the generation by one (an empty one, such as `add table` of a table that is
there, does not; measured with nft 1.0.6, kernel 6.x). So when the generation read just before
one of ntpguard's own transactions is one less than the one read just after it, nothing else
was committed in between; and while the generation is still that number, nobody changed
anything since: the kernel holds exactly what that transaction left, which no listing (0.6 s
with 100k elements) could say faster. libnftables reads it the same way (NFT_MSG_GETGEN) before
each of its own batches.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Optional

_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_GETGEN, _NFT_MSG_NEWGEN = 16, 15
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NFTA_GEN_ID = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, resource id
_ATTR = struct.Struct("=HH")  # nlattr: length, type


def scope() -> Optional[str]:
    """Where a generation number means something: this boot and this network namespace (a
    number remembered from another boot, or read in another namespace with the same state
    directory, may well come round again). None if either cannot be read: then no remembered
    generation is trusted."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
        net = os.stat("/proc/self/ns/net").st_ino
    except (OSError, UnicodeError):
        return None
    return f"{boot}:{net}" if boot else None


def genid() -> Optional[int]:
    """The current generation, or None if it cannot be read (no nf_tables, not permitted,
    an answer this code does not understand): the caller then trusts nothing it implies."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
    except OSError:
        return None
    try:
        sock.settimeout(1.0)
        sock.bind((0, 0))
        request = _HEADER.pack(_HEADER.size + _NFGEN.size,
                               _NFNL_SUBSYS_NFTABLES << 8 | _NFT_MSG_GETGEN, _NLM_F_REQUEST,
                               1, 0) + _NFGEN.pack(socket.AF_UNSPEC, 0, 0)
        sock.send(request)
        data = sock.recv(4096)
    except OSError:
        return None
    finally:
        sock.close()
    return parse(data)


def parse(data: bytes) -> Optional[int]:
    """The generation in a NEWGEN answer; None for anything else (an error answer)."""
    if len(data) < _HEADER.size + _NFGEN.size:
        return None
    length, kind, _, _, _ = _HEADER.unpack_from(data)
    if kind == _NLMSG_ERROR or kind != (_NFNL_SUBSYS_NFTABLES << 8 | _NFT_MSG_NEWGEN):
        return None
    offset, end = _HEADER.size + _NFGEN.size, min(length, len(data))
    while offset + _ATTR.size <= end:
        size, attr = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size:
            return None
        if attr & 0x3FFF == _NFTA_GEN_ID and size >= _ATTR.size + 4:
            return int(struct.unpack_from(">I", data, offset + _ATTR.size)[0])
        offset += (size + 3) & ~3
    return None
