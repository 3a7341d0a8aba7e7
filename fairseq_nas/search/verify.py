"""The search's last step: measure the best candidates for real, in ranking order.

The top K are always measured (so the report shows how far the latency model was off). If
none of them meets the limit, the latency model was optimistic about them: the next-best
candidates are measured until one meets the limit or `max_measured` is spent.

With `measure_many` (candidates -> their ms, measured together, interleaved in rounds) the top
K are measured in one call, against each other, so drift of the machine's speed hits them
alike; the next-best then go in batches of K. With `measure` (one candidate -> ms) they are
measured one by one.

`meets_of(candidate, ms)` replaces the comparison with `limit_ms` when the verdict is not the same
for all: with a reference model measured in the same rounds (`search --reference`), it is the
median of the candidate's per-round ratios to the reference in its batch.

`confirm(candidate)`: a second, independent measurement of a candidate that met its limit. Of
many candidates measured on a noisy machine, the first to meet a limit is often the one whose
noise was lucky; it wins only if `confirm` says it meets again, else the search goes on as if
it had missed.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from fairseq_nas.search.candidates import Candidate


def measure_until_one_meets(
    finalists: Sequence[Candidate],
    reserve: Sequence[Candidate],
    limit_ms: Optional[float],
    max_measured: int,
    measure: Optional[Callable[[Candidate], float]] = None,
    progress: Optional[Callable[[], None]] = None,
    *,
    measure_many: Optional[Callable[[Sequence[Candidate]], Sequence[float]]] = None,
    meets_of: Optional[Callable[[Candidate, float], bool]] = None,
    confirm: Optional[Callable[[Candidate], bool]] = None,
) -> list[tuple[Candidate, float]]:
    """(candidate, measured ms) for every finalist, then for reserve candidates while none meets
    (`meets_of(candidate, ms)`, else ms against `limit_ms`; and, with `confirm`, confirmed by it)."""
    if (measure is None) == (measure_many is None):
        raise TypeError("give one of measure (one candidate) or measure_many (a list, measured together)")
    measured: list[tuple[Candidate, float]] = []

    def take(batch: Sequence[Candidate]) -> list[float]:
        ms = [float(measure(c)) for c in batch] if measure is not None else [float(x) for x in measure_many(batch)]
        measured.extend(zip(batch, ms))
        if progress is not None:
            for _ in batch:
                progress()
        return ms

    confirmed: dict = {}  # subnet key -> what `confirm` said (asked once per candidate)

    def meets(c: Candidate, ms: float) -> bool:
        if meets_of is not None:
            ok = bool(meets_of(c, ms))
        else:
            ok = limit_ms is not None and ms <= limit_ms
        if ok and confirm is not None:
            key = c.subnet.key()
            if key not in confirmed:
                confirmed[key] = bool(confirm(c))
            ok = confirmed[key]
        return ok

    if measure_many is not None:
        take(finalists)
    else:
        for c in finalists:
            take([c])
    unlimited = limit_ms is None and meets_of is None
    if unlimited or any(meets(c, ms) for c, ms in measured):
        return measured
    rest = list(reserve[: max(0, max_measured - len(measured))])
    step = max(1, len(finalists)) if measure_many is not None else 1
    for i in range(0, len(rest), step):
        batch = rest[i:i + step]
        if any(meets(c, ms) for c, ms in zip(batch, take(batch))):
            break
    return measured
