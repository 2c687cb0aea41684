"""Which verdict wins when sources disagree: manual marks, then local evidence, then lists.

An admin's mark is a decision; local detection and probes are evidence about this host's own
traffic; a shared list is somebody else's evidence. Within a rank the newest verdict wins.
"""

from __future__ import annotations

from typing import Optional

from ntpguard.state import Verdict

RANKS = {"manual": 0, "detect": 1, "probe": 1}
LIST_RANK = 2


def rank(source: str) -> int:
    return RANKS.get(source, LIST_RANK)


def effective(by_source: dict[str, Verdict]) -> Optional[Verdict]:
    """The verdict that decides a server's status, or None when no source has spoken."""
    if not by_source:
        return None
    return min(by_source.values(), key=lambda v: (rank(v.source), -v.time))
