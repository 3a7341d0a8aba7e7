"""The latency model: a non-negative linear model in the subnet's cost features, times a
boosted LightGBM correction.

Latency of these models is close to linear in their dimensions (per-layer costs by operator,
FFN sizes, decoder depth, the output projection: `fairseq_nas.latency.features`). A GBDT alone
is piecewise constant, so it cannot predict beyond the range of its training rows, exactly at
the edges of a space where a latency limit bites; a linear model extrapolates, but misses
what is not linear (operator kernels, cache effects). So, by default (`kind="analytic+gbdt"`):

1. `base(X)`: non-negative least squares (every cost adds time) on the cost features, with
   rows weighted by 1 / latency (a relative error is what matters for a limit); the features
   are chosen by forward selection on a 5-fold cross-validated error (`select_features`), so
   a few dozen rows fit a few features and hundreds fit more;
2. a LightGBM regressor (the GBDTRegressor settings: early stopping, refit) on
   log(latency / base(X)), from the raw features and the cost features;
3. predict(X) = base(X) x exp(correction(X)): beyond the training range the correction stays
   bounded (the value at the edge) and the linear part carries the trend. Below 25 rows (no
   hold-out of 5 for early stopping) there is no correction.

Other `kind`s, for comparison (benchmarks/latency_model.py): "gbdt" (LightGBM alone on log ms,
the previous model), "analytic" (the linear part alone), "linear_tree" (LightGBM with linear
models in its leaves, on ms, from the raw and cost features).
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import numpy as np
from scipy.optimize import nnls

from fairseq_nas.latency.features import cost_feature_names, cost_features
from fairseq_nas.ranking.base import Ranker
from fairseq_nas.ranking.gbdt import MIN_VALID_ROWS, GBDTRegressor
from fairseq_nas.ranking.metrics import kendall_tau

KINDS = ("analytic+gbdt", "gbdt", "analytic", "linear_tree")
_HEADER = "fairseq-nas-latency-model"


def fit_nonnegative_linear(A: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """(coef >= 0, intercept >= 0) minimising sum(((A coef + intercept - y) / y)^2)."""
    w = 1.0 / y
    design = np.concatenate([A, np.ones((A.shape[0], 1))], axis=1)
    scale = np.sqrt((design ** 2 * w[:, None] ** 2).sum(axis=0))
    scale[scale == 0] = 1.0
    sol, _ = nnls(design * w[:, None] / scale, y * w, maxiter=50 * design.shape[1])
    sol = sol / scale
    return sol[:-1], float(sol[-1])


def _cv_error(A: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> float:
    """Mean relative error of fit_nonnegative_linear over the folds (each held out in turn)."""
    err = np.empty(y.size)
    for f in folds:
        train = np.ones(y.size, dtype=bool)
        train[f] = False
        coef, b = fit_nonnegative_linear(A[train], y[train])
        err[f] = np.abs(A[f] @ coef + b - y[f]) / y[f]
    return float(err.mean())


def select_features(A: np.ndarray, y: np.ndarray, folds: int = 5, min_gain: float = 0.001,
                    seed: int = 0) -> list[int]:
    """Columns of A chosen greedily (forward selection), each the one that most lowers the k-fold
    mean relative error of the non-negative fit, while it lowers it by at least `min_gain`.

    With few rows (tens) the full set of cost features is underdetermined: many fits match the
    training rows exactly and extrapolate differently (a depth cost explained as width costs).
    Selection keeps the few features the rows can tell apart; with hundreds it keeps more."""
    order = np.random.default_rng(seed).permutation(y.size)
    parts = [p for p in np.array_split(order, min(folds, y.size)) if p.size]
    chosen: list[int] = []
    best = _cv_error(A[:, chosen], y, parts)
    candidates = [j for j in range(A.shape[1]) if np.ptp(A[:, j]) > 0]
    while True:
        trials = [(_cv_error(A[:, chosen + [j]], y, parts), j) for j in candidates if j not in chosen]
        if not trials:
            break
        err, j = min(trials)
        if err > best - min_gain:
            break
        chosen.append(j)
        best = err
    return chosen


class LatencyModel(GBDTRegressor):
    """`fit(X, ms)`, `predict(X) -> ms`. With `feature_names` from `encode` it uses the cost
    features; with other names, the columns themselves are the linear features."""

    def __init__(self, learning_rate: float = 0.1, num_leaves: int = 30, max_depth: int = 6,
                 n_estimators: int = 1000, early_stopping_rounds: int = 5, valid_fraction: float = 0.2,
                 min_child_samples: Optional[int] = None, fallback_rounds: int = 100, min_rounds: int = 0,
                 seed: int = 0, num_threads: int = 1, lgb_params: Optional[dict[str, Any]] = None,
                 refit: bool = True, kind: str = "analytic+gbdt"):
        super().__init__(learning_rate, num_leaves, max_depth, n_estimators, early_stopping_rounds, valid_fraction,
                         min_child_samples, fallback_rounds, min_rounds, seed, num_threads, lgb_params, refit)
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        self.coef_: Optional[np.ndarray] = None
        self.intercept_ = 0.0

    def fit(self, X: Any, y: Any, *, feature_names: Optional[Sequence[str]] = None,
            init_model: Optional[Ranker] = None) -> LatencyModel:
        names = feature_names
        if names is None and init_model is not None and init_model.is_fitted:
            names = init_model.feature_names_
        self._fitting = None if names is None else [str(n) for n in names]
        try:
            return super().fit(X, y, feature_names=feature_names, init_model=init_model)
        finally:
            del self._fitting

    # -- the parts ----------------------------------------------------------------------------------
    def _names(self, n: int) -> list[str]:
        """The column names the cost features are derived from (while fitting: the ones given)."""
        names = self._fitting if hasattr(self, "_fitting") else getattr(self, "feature_names_", None)
        return list(names) if names else [f"f{i}" for i in range(n)]

    def _costs(self, X: np.ndarray) -> np.ndarray:
        return cost_features(X, self._names(X.shape[1]))

    def _objective_params(self, y_train: np.ndarray) -> dict[str, Any]:
        params = super()._objective_params(y_train)
        return {**params, "linear_tree": True} if self.kind == "linear_tree" else params

    def _tree_input(self, X: np.ndarray, A: np.ndarray) -> np.ndarray:
        return np.concatenate([X, A], axis=1)

    def base(self, X: Any) -> np.ndarray:
        """The linear part's ms (1 where the kind has none)."""
        X = np.asarray(X, dtype=np.float64)
        if self.coef_ is None:
            return np.ones(X.shape[0])
        return np.maximum(self._costs(X) @ self.coef_ + self.intercept_, 1e-9)

    def _fit(self, X: np.ndarray, y: np.ndarray, init_model: Optional[Ranker]) -> None:
        if np.any(y <= 0):
            raise ValueError("LatencyModel.fit: latencies must be positive")
        if self.kind == "gbdt":
            self.coef_ = None
            super()._fit(X, np.log(y), init_model)
            return
        A = self._costs(X)
        if self.kind == "linear_tree":
            self.coef_ = None
            super()._fit(self._tree_input(X, A), y, init_model)
            return
        chosen = select_features(A, y, seed=self.seed)
        coef, self.intercept_ = fit_nonnegative_linear(A[:, chosen], y)
        self.coef_ = np.zeros(A.shape[1])
        self.coef_[chosen] = coef
        base = np.maximum(A @ self.coef_ + self.intercept_, 1e-9)
        rel = np.abs(base - y) / y
        all_names = cost_feature_names(self._names(X.shape[1]))
        self.info_.update({"linear_features": {all_names[j]: float(self.coef_[j]) for j in chosen},
                           "linear_intercept": self.intercept_,
                           "linear_train_mean_abs_rel_error": float(rel.mean())})
        n_valid = int(round(self.valid_fraction * y.size)) if self.early_stopping_rounds else 0
        if self.kind == "analytic" or min(n_valid, y.size - n_valid) < MIN_VALID_ROWS:
            # a correction that cannot be checked on held-out rows would only fit their noise
            self.booster_ = None
            self.info_["correction"] = "none" if self.kind == "analytic" else "none (too few rows to hold out)"
            return
        super()._fit(self._tree_input(X, A), np.log(y / base), init_model)
        self.info_["correction"] = "gbdt"

    def _predict(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "gbdt":
            return np.exp(super()._predict(X))
        A = self._costs(X)
        if self.kind == "linear_tree":
            return super()._predict(self._tree_input(X, A))
        base = np.maximum(A @ self.coef_ + self.intercept_, 1e-9)
        if self.kind == "analytic" or self.booster_ is None:
            return base
        return base * np.exp(super()._predict(self._tree_input(X, A)))

    # -- persistence: one header line (the linear part) before LightGBM's text --------------------------
    def _model_bytes(self) -> bytes:
        header = {"format": _HEADER, "kind": self.kind, "intercept": self.intercept_,
                  "coef": None if self.coef_ is None else self.coef_.tolist()}
        trees = super()._model_bytes() if self.booster_ is not None else b""
        return json.dumps(header).encode("utf-8") + b"\n" + trees

    def _load_model(self, data: bytes) -> None:
        first, _, rest = data.partition(b"\n")
        if not first.startswith(b"{"):  # a model saved before the linear part existed: LightGBM alone
            self.kind, self.coef_ = "gbdt", None
            super()._load_model(data)
            return
        header = json.loads(first.decode("utf-8"))
        if header.get("format") != _HEADER:
            raise ValueError(f"format: expected {_HEADER!r} in the model file's first line")
        self.kind = header["kind"]
        self.coef_ = None if header["coef"] is None else np.asarray(header["coef"], dtype=np.float64)
        self.intercept_ = float(header["intercept"])
        self.booster_ = None
        if rest.strip():
            super()._load_model(rest)


def latency_accuracy(measured: Any, predicted: Any) -> dict[str, float]:
    """Share of subnets within +-5% / +-10% of the measured latency, and Kendall tau."""
    m = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    rel = np.abs(p - m) / m
    return {"within_5pct": float(np.mean(rel <= 0.05)), "within_10pct": float(np.mean(rel <= 0.10)),
            "kendall_tau": float(kendall_tau(m, p)), "mean_abs_rel_error": float(rel.mean()), "n": int(m.size)}
