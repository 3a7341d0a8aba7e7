"""A latency model: LightGBM regression on measured latency, in log space.

Latency spans several-fold between small and large subnets and its noise is roughly
proportional to it, so the model fits log(ms) and predicts ms = exp(score): a relative
error is what matters for a latency limit.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fairseq_nas.ranking.base import Ranker
from fairseq_nas.ranking.gbdt import GBDTRegressor
from fairseq_nas.ranking.metrics import kendall_tau


class LatencyModel(GBDTRegressor):
    """`fit(X, ms)`, `predict(X) -> ms`; works on any numeric feature matrix."""

    def _fit(self, X: np.ndarray, y: np.ndarray, init_model: Optional[Ranker]) -> None:
        if np.any(y <= 0):
            raise ValueError("LatencyModel.fit: latencies must be positive")
        super()._fit(X, np.log(y), init_model)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.exp(super()._predict(X))


def latency_accuracy(measured: Any, predicted: Any) -> dict[str, float]:
    """Share of subnets within +-5% / +-10% of the measured latency, and Kendall tau."""
    m = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    rel = np.abs(p - m) / m
    return {"within_5pct": float(np.mean(rel <= 0.05)), "within_10pct": float(np.mean(rel <= 0.10)),
            "kendall_tau": float(kendall_tau(m, p)), "mean_abs_rel_error": float(rel.mean()), "n": int(m.size)}
