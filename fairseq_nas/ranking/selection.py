"""Iterative data selection (BRP-NAS 4.2, AceNAS 3.2): spend an evaluation budget where the ranker
says the good architectures are, while still exploring.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from fairseq_nas.ranking.base import Ranker, check_X

__all__ = ["select_iteratively", "round_sizes"]


def round_sizes(budget: int, rounds: int) -> list[int]:
    """Split ``budget`` into ``rounds`` near-equal parts, the remainder going to the first rounds."""
    if budget < 0 or rounds < 1:
        raise ValueError(f"need budget >= 0 and rounds >= 1, got budget={budget}, rounds={rounds}")
    base, rem = divmod(int(budget), int(rounds))
    return [base + (1 if i < rem else 0) for i in range(int(rounds))]


def select_iteratively(
    X_pool: Any,
    evaluate: Callable[[np.ndarray], Any],
    budget: int,
    rounds: int = 5,
    alpha: float = 0.5,
    ranker: Optional[Ranker] = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose and evaluate ``budget`` distinct rows of ``X_pool`` over ``rounds`` rounds.

    Round 1 draws its share at random. Every later round i (i = 1, 2, ...) fits a fresh copy of
    ``ranker`` (default :class:`PairwiseRanker`) on all labels so far, scores the whole pool and
    takes ``round(alpha * n_i)`` of the predicted-best unevaluated rows plus ``n_i - that`` rows
    drawn at random from the unevaluated rows among the predicted top ``M / 2^i`` of the pool
    (M = pool size). If that window holds too few unevaluated rows it grows, in predicted order,
    until it holds enough. ``n_i`` is ``budget / rounds`` with the remainder spread over the first
    rounds; a round with ``n_i = 0`` is skipped. If a round's labels are all equal so far, the
    ranker cannot learn an order and the round is random.

    ``evaluate(indices)`` is called once per (non-empty) round with an int64 array of pool
    indices and must return one label per index (larger = better). Returns ``(indices, labels)``
    in evaluation order. Deterministic for a given ``seed`` (the ranker copy gets ``seed`` too when
    it has such a parameter).
    """
    X = check_X(X_pool, what="X_pool")
    M = X.shape[0]
    budget = int(budget)
    if budget > M:
        raise ValueError(f"budget {budget} exceeds the pool size {M}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if ranker is None:
        from fairseq_nas.ranking.gbdt import PairwiseRanker

        ranker = PairwiseRanker(seed=seed)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    labels: list[float] = []
    evaluated = np.zeros(M, dtype=bool)

    for i, n_i in enumerate(round_sizes(budget, rounds)):
        if n_i == 0:
            continue
        y_so_far = np.asarray(labels, dtype=np.float64)
        if i == 0 or y_so_far.size < 2 or np.all(y_so_far == y_so_far[0]):
            pick = rng.choice(np.flatnonzero(~evaluated), size=n_i, replace=False)
        else:
            pick = _model_round(X, evaluated, np.asarray(chosen), y_so_far, n_i, i, alpha, ranker, seed, rng)
        pick = np.asarray(pick, dtype=np.int64)
        got = np.asarray(evaluate(pick.copy()), dtype=np.float64).ravel()
        if got.size != pick.size:
            raise ValueError(f"evaluate returned {got.size} labels for {pick.size} indices")
        if not np.isfinite(got).all():
            raise ValueError("evaluate returned a non-finite label")
        evaluated[pick] = True
        chosen.extend(pick.tolist())
        labels.extend(got.tolist())
    return np.asarray(chosen, dtype=np.int64), np.asarray(labels, dtype=np.float64)


def _model_round(
    X: np.ndarray,
    evaluated: np.ndarray,
    chosen: np.ndarray,
    y: np.ndarray,
    n_i: int,
    i: int,
    alpha: float,
    ranker: Ranker,
    seed: int,
    rng: np.random.Generator,
) -> np.ndarray:
    params: dict[str, Any] = {"seed": seed} if "seed" in ranker.get_params() else {}
    model = ranker.clone(**params).fit(X[chosen], y)
    scores = model.predict(X)
    order = np.argsort(-scores, kind="stable")  # predicted best first
    free = order[~evaluated[order]]  # unevaluated, predicted best first
    n_top = min(int(round(alpha * n_i)), n_i)
    top = free[:n_top]
    rest = free[n_top:]
    n_rand = n_i - n_top
    if n_rand == 0:
        return top
    window = max(int(X.shape[0] // 2**i), 1)
    # rest is in predicted order; those within the top-`window` of the whole pool:
    rank_in_pool = np.empty(X.shape[0], dtype=np.int64)
    rank_in_pool[order] = np.arange(X.shape[0])
    candidates = rest[rank_in_pool[rest] < window]
    if candidates.size < n_rand:  # grow the window in predicted order
        candidates = rest[: max(n_rand, candidates.size)]
    rand = rng.choice(candidates, size=n_rand, replace=False)
    return np.concatenate([top, rand])
