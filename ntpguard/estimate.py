"""How many servers a zone holds that we have never seen: incidence-based Chao2.

Each DNS answer is one sampling unit that "detects" up to 4 servers. Servers seen in exactly
one answer (Q1) versus exactly two (Q2) tell how much of the zone is still unseen: many
singletons mean many never-drawn servers. Chao2 is a lower-bound estimator, robust with few
samples and unequal detection rates (GeoDNS weights servers by their netspeed).
"""

from __future__ import annotations

from typing import Iterable

from ntpguard.records import record


@record
class ZoneEstimate:
    """One zone's size: servers seen, and the estimate of all it holds."""

    observed: int
    estimated: float
    samples: int

    @property
    def unseen(self) -> float:
        return max(0.0, self.estimated - self.observed)


def chao2(samples: int, times_seen: Iterable[int]) -> ZoneEstimate:
    """Estimate total servers from `samples` answers and per-server incidence counts."""
    counts = [n for n in times_seen if n > 0]
    observed = len(counts)
    q1 = sum(1 for n in counts if n == 1)
    q2 = sum(1 for n in counts if n == 2)
    if samples <= 1 or observed == 0:
        # One answer says nothing about what it did not show.
        return ZoneEstimate(observed, float(observed), samples)
    k = (samples - 1) / samples
    # Bias-corrected form when there are no doubletons (Chao 1987; Chao et al. 2005).
    extra = k * q1 * q1 / (2 * q2) if q2 > 0 else k * q1 * (q1 - 1) / 2
    return ZoneEstimate(observed, observed + extra, samples)
