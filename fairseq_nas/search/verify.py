"""The search's last step: measure the best candidates for real, in ranking order.

The top K are always measured (so the report shows how far the latency model was off). If
none of them meets the limit, the latency model was optimistic about them: the next-best
candidates are measured one by one until one meets the limit or `max_measured` is spent.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from fairseq_nas.search.scoring import Candidate


def measure_until_one_meets(
    finalists: Sequence[Candidate],
    reserve: Sequence[Candidate],
    limit_ms: Optional[float],
    max_measured: int,
    measure: Callable[[Candidate], float],
    progress: Optional[Callable[[], None]] = None,
) -> list[tuple[Candidate, float]]:
    """(candidate, measured ms) for every finalist, then for reserve candidates while none meets."""
    measured: list[tuple[Candidate, float]] = []

    def take(c: Candidate) -> float:
        ms = float(measure(c))
        measured.append((c, ms))
        if progress is not None:
            progress()
        return ms

    for c in finalists:
        take(c)
    if limit_ms is None or any(ms <= limit_ms for _, ms in measured):
        return measured
    for c in reserve[: max(0, max_measured - len(measured))]:
        if take(c) <= limit_ms:
            break
    return measured
