"""Ranking quality metrics. Convention everywhere: larger ``y`` is better, larger score is better.

All functions take the true labels first and the predicted scores second, like scikit-learn.
Pure numpy/scipy: no torch, no fairseq.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from scipy import stats

__all__ = [
    "kendall_tau",
    "spearman_rho",
    "ndcg_at_k",
    "precision_at_k",
    "regret",
    "pairwise_misorder_rate",
    "relevance",
    "RELEVANCE_LEVELS",
]

#: AceNAS maps labels linearly to integer relevance 0..U with U = 20.
RELEVANCE_LEVELS = 20


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    yt = np.asarray(y_true, dtype=float).ravel()
    yp = np.asarray(y_pred, dtype=float).ravel()
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} values but y_pred has {yp.size}")
    return yt, yp


def kendall_tau(y_true, y_pred) -> float:
    """Kendall's tau-b (scipy). 0.0 where undefined (fewer than 2 rows or a constant input)."""
    yt, yp = _pair(y_true, y_pred)
    if yt.size < 2:
        return 0.0
    tau = stats.kendalltau(yt, yp).statistic
    return 0.0 if tau is None or math.isnan(tau) else float(tau)


def spearman_rho(y_true, y_pred) -> float:
    """Spearman's rank correlation (scipy). 0.0 where undefined."""
    yt, yp = _pair(y_true, y_pred)
    if yt.size < 2:
        return 0.0
    rho = stats.spearmanr(yt, yp).statistic
    return 0.0 if rho is None or math.isnan(rho) else float(rho)


def pairwise_misorder_rate(y_true, y_pred) -> float:
    """Share of pairs with different true labels that the scores order wrongly (score ties count 1/2).

    O(n^2) memory; meant for evaluation sets of up to a few thousand rows.
    """
    yt, yp = _pair(y_true, y_pred)
    i, j = np.triu_indices(yt.size, k=1)
    dy = np.sign(yt[i] - yt[j])
    keep = dy != 0
    if not keep.any():
        return 0.0
    ds = np.sign(yp[i] - yp[j])[keep]
    dy = dy[keep]
    wrong = (ds == -dy).sum() + 0.5 * (ds == 0).sum()
    return float(wrong / dy.size)


def relevance(y, reference=None, levels: int = RELEVANCE_LEVELS, quantile: float = 0.2) -> np.ndarray:
    """AceNAS relevance: clip ``y`` to [q-quantile, max] of ``reference`` and map linearly to ints 0..levels.

    ``reference`` (default: ``y`` itself) is the training set whose 20% quantile and maximum define
    the range; values outside it clip to 0 or ``levels``. Rounded half up to an integer. If the range
    is empty (all reference labels equal above the quantile), every value at or above it gets ``levels``.
    """
    y = np.asarray(y, dtype=float).ravel()
    ref = y if reference is None else np.asarray(reference, dtype=float).ravel()
    if ref.size == 0:
        raise ValueError("relevance: empty reference labels")
    lo, hi = float(np.quantile(ref, quantile)), float(np.max(ref))
    if hi <= lo:
        return np.where(y >= lo, levels, 0).astype(np.int32)
    r = (np.clip(y, lo, hi) - lo) / (hi - lo) * levels
    return np.floor(r + 0.5).astype(np.int32)  # round half up


def ndcg_at_k(y_true, y_pred, k: Optional[int] = 10, gains: str = "acenas") -> float:
    """NDCG@k of the ranking given by ``y_pred``; gain 2^rel - 1, discount log2(position + 1).

    ``gains="acenas"`` (default): rel = :func:`relevance` of ``y_true`` on itself (the AceNAS mapping:
    the bottom 20% all get 0, the best gets 20). ``gains="rank"``: rel = the row's rank in ``y_true``
    scaled to 0..20 (0 the worst, 20 the best; ties share the average rank), for label sets where
    the absolute spacing means nothing. ``k=None`` uses every row. Ties in ``y_pred`` are broken by
    row order (stable). Returns 1.0 when no row has positive gain.
    """
    yt, yp = _pair(y_true, y_pred)
    n = yt.size
    if n == 0:
        return 1.0
    k = n if k is None else min(int(k), n)
    if gains == "acenas":
        rel = relevance(yt).astype(float)
    elif gains == "rank":
        ranks = stats.rankdata(yt)  # 1..n, average on ties
        rel = (ranks - 1) / max(n - 1, 1) * RELEVANCE_LEVELS
    else:
        raise ValueError(f"ndcg_at_k: gains must be 'acenas' or 'rank', got {gains!r}")
    g = np.exp2(rel) - 1.0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    order = np.argsort(-yp, kind="stable")[:k]
    ideal = np.sort(g)[::-1][:k]
    idcg = float((ideal * disc).sum())
    if idcg <= 0:
        return 1.0
    return float((g[order] * disc).sum() / idcg)


def precision_at_k(y_true, y_pred, k: int = 10) -> float:
    """|true top-k ∩ predicted top-k| / k (ties broken by row order)."""
    yt, yp = _pair(y_true, y_pred)
    k = min(int(k), yt.size)
    if k <= 0:
        raise ValueError("precision_at_k: k must be positive and the input non-empty")
    top_true = set(np.argsort(-yt, kind="stable")[:k].tolist())
    top_pred = set(np.argsort(-yp, kind="stable")[:k].tolist())
    return len(top_true & top_pred) / k


def regret(y_true, y_pred) -> float:
    """True best label minus the true label of the predicted best row (0 = the ranker found the best)."""
    yt, yp = _pair(y_true, y_pred)
    if yt.size == 0:
        raise ValueError("regret: empty input")
    return float(yt.max() - yt[int(np.argmax(yp))])
