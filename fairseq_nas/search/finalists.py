"""Which candidates are measured at the end of a search, and which of them wins.

The finalists are the top K feasible candidates seen (in `rank_key` order), with the search's
best always among them: it is the one the search reports, so it is measured even when the
tie-break of the final ranking would leave it out. The rest of the ranking, up to
`max_measured`, is the reserve measured only when no finalist meets the limit. The winner is
the best-ranked measured candidate that meets the limit (with no limit, or nothing measured,
the first finalist).

Against a reference model timed in the same rounds (`search --reference`), a candidate's figure
is `paired_ratio`: the median over rounds of its round's time over the reference's in that
round, so the machine's drift from one round to the next cancels out of the comparison.
"""
from __future__ import annotations

import statistics
from typing import Optional, Sequence

from fairseq_nas.search.candidates import Candidate, CandidateScorer, Constraints
from fairseq_nas.search.evolution import top_k


def select_finalists(scorer: CandidateScorer, cons: Constraints, best: Candidate, k: int, max_measured: int,
                     tie_break: str = "capacity") -> tuple[list[Candidate], list[Candidate]]:
    """(finalists, reserve): the k to measure, the search's `best` among them, and the next-best
    (finalists and reserve together at most `max_measured`)."""
    ranked = top_k(scorer, cons, max_measured, tie_break)
    finalists = ranked[:k]
    if best.subnet.key() not in {c.subnet.key() for c in finalists}:
        finalists = [best] + finalists[: k - 1]
    chosen = {c.subnet.key() for c in finalists}
    return finalists, [c for c in ranked if c.subnet.key() not in chosen]


def meets_limit(measured_ms: Optional[float], limit_ms: Optional[float]) -> Optional[bool]:
    """Whether a measured latency meets the limit; None when either is unknown."""
    if measured_ms is None or limit_ms is None:
        return None
    return measured_ms <= limit_ms


def winner_index(verdicts: Sequence[Optional[bool]]) -> Optional[int]:
    """Index of the first candidate (in ranking order) not known to miss the limit (True, or None:
    not measured / not confirmed); None if all miss."""
    return next((i for i, v in enumerate(verdicts) if v is not False), None)


def paired_ratio(rounds_ms: Sequence[float], reference_rounds_ms: Sequence[float]) -> float:
    """Median over rounds of a model's round time divided by the reference's in the same round.
    Both lists come from one interleaved measurement, one entry per round, in round order."""
    if not rounds_ms or len(rounds_ms) != len(reference_rounds_ms):
        raise ValueError(f"paired_ratio: expected the same number of rounds, got {len(rounds_ms)} and "
                         f"{len(reference_rounds_ms)}")
    if min(reference_rounds_ms) <= 0:
        raise ValueError("paired_ratio: the reference's round times must be positive")
    return statistics.median(m / r for m, r in zip(rounds_ms, reference_rounds_ms))


def round_ratio(rounds_ms: Optional[Sequence[float]], reference_rounds_ms: Optional[Sequence[float]]
                ) -> Optional[float]:
    """`paired_ratio` where both have the same rounds (measured together), else None."""
    if not rounds_ms or not reference_rounds_ms or len(rounds_ms) != len(reference_rounds_ms):
        return None
    return paired_ratio(rounds_ms, reference_rounds_ms)
