"""Which verdict wins when sources disagree: manual marks, then local evidence, then lists.

An admin's mark is a decision; local detection and probes are evidence about this host's own
traffic; a shared list is somebody else's evidence. Within a rank the newest verdict wins.
A manual mark of `unknown` withdraws the admin's mark, so the other sources decide again.
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
    voices = [v for v in by_source.values()
              if not (v.source == "manual" and v.status == "unknown")]
    if not voices:
        return None
    return min(voices, key=lambda v: (rank(v.source), -v.time))
