"""Which verdict wins when sources disagree: manual marks, then local evidence, then lists.

An admin's mark is a decision; local detection and probes are evidence about this host's own
traffic; a shared list is somebody else's evidence. Within a rank the newest verdict wins.
A manual mark of `unknown` withdraws the admin's mark, so the other sources decide again.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Optional

from ntpguard.state import Verdict

RANKS = {"manual": 0, "detect": 1, "probe": 1}
LIST_RANK = 2


def rank(source: str) -> int:
    return RANKS.get(source, LIST_RANK)


def effective(by_source: dict[str, Verdict]) -> Optional[Verdict]:
    """The verdict that decides a server's status, or None when no source has spoken."""
    voices = [v for v in by_source.values()
              if not (v.source == "manual" and v.status == "unknown")]
    if not voices:
        return None
    return min(voices, key=lambda v: (rank(v.source), -v.time))


def with_lists(latest: dict[str, dict[str, Verdict]], loaded: Iterable[Any],
               known: Iterable[str]) -> dict[str, dict[str, Verdict]]:
    """`latest` plus a `list:NAME` harvester verdict for each known server an enforced list
    names or covers (lists.load_all), so `servers` and `explain` say why it is blocked."""
    merged = {a: dict(v) for a, v in latest.items()}
    prefixes: dict[tuple[int, int], dict[int, Any]] = {}  # (family, length) -> net -> list
    for lst in loaded:
        if lst.trust != "enforce":
            continue
        for entry in lst.entries:
            if entry.kind == "harvester":
                net = entry.network
                key = (net.version, net.prefixlen)
                prefixes.setdefault(key, {}).setdefault(int(net.network_address), (lst, entry))
    for address in known:
        ip = ipaddress.ip_address(address)
        bits = ip.max_prefixlen
        for (fam, length), nets in prefixes.items():
            hit = nets.get(int(ip) >> (bits - length) << (bits - length)) if fam == ip.version \
                else None
            if hit:
                lst, entry = hit
                merged.setdefault(address, {})[f"list:{lst.name}"] = Verdict(
                    address, "harvester", f"list:{lst.name}",
                    {"entry": entry.address, "line": entry.line, "comment": entry.comment},
                    float(lst.meta.get("fetched", 0) or 0))
                break
    return merged
