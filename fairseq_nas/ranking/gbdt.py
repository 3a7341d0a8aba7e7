"""LightGBM rankers: the RankNAS pairwise GBDT, AceNAS-style LambdaRank, and a GBDT regressor.

All three share the tree settings of RankNAS (learning rate 0.1, at most 30 leaves, depth at
most 6, LightGBM's default regularisation). PairwiseRanker and GBDTRegressor stop early after 5
rounds without improvement on a held-out 20% of the training rows (seeded split); LambdaRanker
trains a fixed number of rounds by default (see its docstring for why).

Warm start (``fit(..., init_model=other)``, AceNAS's weak supervision): boosting continues from
the other LightGBM ranker's trees (``lgb.train(init_model=...)``); early stopping then picks the
best number of *new* rounds, at least one.

Departures from plain LightGBM defaults, for the small training sets NAS has (tens to hundreds
of evaluated architectures):

* ``min_child_samples=None`` (default) means ``clip(n_train // 10, 2, 20)``: LightGBM's 20 rows
  per leaf, lowered on small sets so that trees can split at all (with 24 rows and 20 per leaf
  every tree would be a stump or empty).
* ``num_threads=1`` (default): one thread. For a few hundred rows threads only add overhead
  (the pairwise objective runs in Python between iterations), and on a busy machine OpenMP
  threads waiting for each other made a 600-row fit 5-30x slower. 0 = OpenMP's default.
* ``refit=True`` (default): the hold-out only picks the number of rounds; the model is then
  trained again on every row for that many rounds, scaled by the larger set (n / n_train).
* When the hold-out part would have fewer than 5 rows (or fewer than 5 would be left to train
  on), or ``early_stopping_rounds=0``, there is no early stopping: the model trains on every row
  for ``fallback_rounds`` rounds.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

import lightgbm as lgb
import numpy as np
from scipy.special import expit

from fairseq_nas.ranking.base import Ranker
from fairseq_nas.ranking.metrics import RELEVANCE_LEVELS, kendall_tau, relevance
from fairseq_nas.space.schema import CATEGORICAL


def categorical_columns(feature_names: list[str]) -> list[int]:
    """Columns of `space.encode`'s categorical genes (operator, activation, norm: codes, not
    magnitudes), recognised by their names (`enc.operator.3`)."""
    return [i for i, name in enumerate(feature_names)
            if len(name.split(".")) == 3 and name.split(".")[1] in CATEGORICAL]

__all__ = [
    "PairwiseRanker",
    "LambdaRanker",
    "GBDTRegressor",
    "label_pairs",
    "pairwise_logistic_loss",
    "pairwise_logistic_grad_hess",
]

MIN_VALID_ROWS = 5
MAX_QUERY_ROWS = 10_000  # LightGBM refuses larger lambdarank queries


class _EarlyStopping:
    """Stop when the first validation metric has not improved for ``patience`` rounds.

    Unlike ``lgb.early_stopping`` it never stops before ``min_rounds`` new rounds (NDCG on a small
    hold-out is flat for the first rounds). Iterations are absolute, so a warm start works.
    """

    order = 30

    def __init__(self, patience: int, min_rounds: int = 0):
        self.patience = int(patience)
        self.min_rounds = int(min_rounds)
        self.best_iter = -1
        self.best_score: Optional[float] = None
        self.best_result: list = []

    def __call__(self, env: Any) -> None:
        if not env.evaluation_result_list:
            return
        res = env.evaluation_result_list[0]
        score, higher_better = float(res[2]), bool(res[3])
        best = self.best_score
        if best is None or (score > best if higher_better else score < best):
            self.best_iter, self.best_score = env.iteration, score
            self.best_result = list(env.evaluation_result_list)
        done = env.iteration - env.begin_iteration + 1
        last = env.iteration == env.end_iteration - 1
        if last or (done >= self.min_rounds and env.iteration - self.best_iter >= self.patience):
            raise lgb.callback.EarlyStopException(self.best_iter, self.best_result)


# ---------------------------------------------------------------------------------------------
# The pairwise logistic objective (RankNAS eq. 3-6)
# ---------------------------------------------------------------------------------------------
def label_pairs(
    y: np.ndarray, max_pairs: Optional[int] = None, rng: Optional[np.random.Generator] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(better, worse)``: every pair of rows with different labels, better one first.

    Ties give no pair. If there are more than ``max_pairs`` candidate pairs, ``max_pairs`` pairs
    are drawn uniformly at random (with replacement, ``rng``) instead, again dropping ties.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    n = y.size
    if max_pairs is not None and n * (n - 1) // 2 > max_pairs:
        rng = rng if rng is not None else np.random.default_rng(0)
        a = rng.integers(0, n, size=max_pairs)
        b = rng.integers(0, n - 1, size=max_pairs)
        b = b + (b >= a)  # uniform over b != a
    else:
        a, b = np.triu_indices(n, k=1)
    keep = y[a] != y[b]
    a, b = a[keep], b[keep]
    a_better = y[a] > y[b]
    better = np.where(a_better, a, b).astype(np.int64)
    worse = np.where(a_better, b, a).astype(np.int64)
    return better, worse


def pairwise_logistic_loss(scores: np.ndarray, better: np.ndarray, worse: np.ndarray) -> float:
    """Summed RankNAS loss: per pair, examples (i, j, 1) and (j, i, 0) each cost log(1 + e^-(s_i - s_j)).

    So a pair with ``better = i``, ``worse = j`` contributes ``2 * log(1 + exp(-(s_i - s_j)))``.
    """
    d = np.asarray(scores, dtype=np.float64)[better] - np.asarray(scores, dtype=np.float64)[worse]
    return float(2.0 * np.logaddexp(0.0, -d).sum())


def pairwise_logistic_grad_hess(
    scores: np.ndarray, better: np.ndarray, worse: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and diagonal Hessian of :func:`pairwise_logistic_loss` w.r.t. each row's score.

    With d = s_i - s_j and p = sigmoid(-d) (the probability of the wrong order), a pair adds
    -2p to g_i, +2p to g_j and 2p(1 - p) to h_i and h_j. Summed per row with ``np.bincount``.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    p = expit(-(s[better] - s[worse]))
    g = 2.0 * p
    h = 2.0 * p * (1.0 - p)
    grad = np.bincount(worse, weights=g, minlength=n) - np.bincount(better, weights=g, minlength=n)
    hess = np.bincount(better, weights=h, minlength=n) + np.bincount(worse, weights=h, minlength=n)
    return grad, hess


# ---------------------------------------------------------------------------------------------
# Shared LightGBM machinery
# ---------------------------------------------------------------------------------------------
class _LightGBMRanker(Ranker):
    """Common LightGBM fit/predict/save; subclasses define the objective and the eval metric."""

    model_suffix = ".txt"

    def __init__(
        self,
        learning_rate: float = 0.1,
        num_leaves: int = 30,
        max_depth: int = 6,
        n_estimators: int = 1000,
        early_stopping_rounds: int = 5,
        valid_fraction: float = 0.2,
        min_child_samples: Optional[int] = None,
        fallback_rounds: int = 100,
        min_rounds: int = 0,
        seed: int = 0,
        num_threads: int = 1,
        lgb_params: Optional[dict[str, Any]] = None,
        refit: bool = True,
    ):
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.valid_fraction = valid_fraction
        self.min_child_samples = min_child_samples
        self.fallback_rounds = fallback_rounds
        self.min_rounds = min_rounds
        self.seed = seed
        self.num_threads = num_threads
        self.lgb_params = lgb_params
        self.refit = refit
        self.booster_: Optional[lgb.Booster] = None

    # hooks ----------------------------------------------------------------------------------------
    def _objective_params(self, y_train: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def _dataset(self, X: np.ndarray, y: np.ndarray, y_ref: np.ndarray, params: dict[str, Any],
                 reference: Optional[lgb.Dataset] = None) -> lgb.Dataset:
        return lgb.Dataset(X, label=y, params=params, reference=reference, free_raw_data=False,
                           categorical_feature=self._categorical())

    def _feval(self, y_train: np.ndarray) -> Any:
        """A LightGBM ``feval`` for the hold-out, or None for a built-in metric."""
        return None

    # fit ------------------------------------------------------------------------------------------
    def _split(self, n: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        n_valid = int(round(self.valid_fraction * n)) if self.early_stopping_rounds else 0
        if n_valid < MIN_VALID_ROWS or n - n_valid < MIN_VALID_ROWS:
            return np.arange(n), None
        perm = np.random.default_rng(self.seed).permutation(n)
        return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])

    def _base_params(self, n_train: int) -> dict[str, Any]:
        mcs = self.min_child_samples
        if mcs is None:
            mcs = int(np.clip(n_train // 10, 2, 20))
        params = {
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_data_in_leaf": mcs,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "feature_pre_filter": False,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }
        cats = categorical_columns(getattr(self, "feature_names_", None) or [])
        if cats:
            # one-vs-rest splits on operator/activation/norm codes (at most 5 values each): LightGBM's
            # many-vs-many categorical splits need min_data_per_group (100) rows per category
            params.update(max_cat_to_onehot=8, min_data_per_group=mcs, cat_smooth=1.0)
        return params

    def _categorical(self) -> Any:
        """For lgb.Dataset: the categorical columns, or LightGBM's default."""
        return categorical_columns(getattr(self, "feature_names_", None) or []) or "auto"

    def _fit(self, X: np.ndarray, y: np.ndarray, init_model: Optional[Ranker]) -> None:
        init_booster = None
        if init_model is not None:
            if not isinstance(init_model, _LightGBMRanker) or init_model.booster_ is None:
                raise TypeError("init_model: a LightGBM ranker can only continue from a fitted LightGBM "
                                f"ranker (PairwiseRanker, LambdaRanker, GBDTRegressor), got "
                                f"{type(init_model).__name__}")
            init_booster = init_model.booster_
        with warnings.catch_warnings():  # an all-NaN column's spread is NaN, treated as constant below
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanmax(X, axis=0) - np.nanmin(X, axis=0) if X.size else np.zeros(0)
        if not (np.nan_to_num(spread, nan=0.0) > 0).any():
            raise ValueError("X: every feature column is constant (or all NaN); there is nothing to rank by")
        tr, va = self._split(y.size)
        y_tr = y[tr]
        params = self._base_params(tr.size)
        params.update(self._objective_params(y_tr))
        if self.lgb_params:
            params.update(self.lgb_params)
        train_set = self._dataset(X[tr], y_tr, y_tr, params)
        callbacks = []
        valid_sets = []
        if va is not None:
            valid_sets = [self._dataset(X[va], y[va], y_tr, params, reference=train_set)]
            callbacks.append(_EarlyStopping(self.early_stopping_rounds, self.min_rounds))
            rounds = self.n_estimators
        else:
            rounds = self.fallback_rounds
        init_iters = init_booster.current_iteration() if init_booster is not None else 0
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=rounds,
            valid_sets=valid_sets,
            valid_names=["valid"] if valid_sets else None,
            feval=self._feval(y_tr) if valid_sets else None,
            init_model=init_booster,
            callbacks=callbacks,
        )
        best = booster.best_iteration if va is not None and booster.best_iteration > 0 else None
        total = best if best is not None else booster.current_iteration()
        score = None
        if va is not None and booster.best_score:
            score = {k: float(v) for k, v in booster.best_score.get("valid", {}).items()}
        refit_rows = 0
        if va is not None and self.refit:
            # The hold-out only chose the number of rounds: train again on every row, with the rounds
            # scaled by the larger set (on small NAS sets the 20% matter: +0.02-0.03 Kendall tau on the
            # IWSLT sample at N = 50-200).
            new_rounds = max(1, int(round((total - init_iters) * y.size / tr.size)))
            full = self._base_params(y.size)
            full.update(self._objective_params(y))
            if self.lgb_params:
                full.update(self.lgb_params)
            booster = lgb.train(full, self._dataset(X, y, y, full), num_boost_round=new_rounds,
                                init_model=init_booster)
            total = init_iters + new_rounds
            refit_rows = int(y.size)
        # Keep only the trees up to the best iteration, so predict/save/warm-start agree.
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=total))
        self.info_.update({
            "n_train": int(tr.size),
            "n_valid": int(0 if va is None else va.size),
            "refit_rows": refit_rows,
            "n_trees": int(self.booster_.num_trees()),
            "init_trees": int(init_iters),
            "new_rounds": int(total - init_iters),
            "valid_score": score,
            "min_data_in_leaf": int(params["min_data_in_leaf"]),
        })

    def _predict(self, X: np.ndarray) -> np.ndarray:
        assert self.booster_ is not None
        return self.booster_.predict(X, raw_score=True)

    def _model_bytes(self) -> bytes:
        assert self.booster_ is not None
        return self.booster_.model_to_string().encode("utf-8")

    def _load_model(self, data: bytes) -> None:
        self.booster_ = lgb.Booster(model_str=data.decode("utf-8"))

    @property
    def n_trees_(self) -> int:
        """Number of trees in the fitted model (including those of a warm-start init model)."""
        return 0 if self.booster_ is None else int(self.booster_.num_trees())


# ---------------------------------------------------------------------------------------------
# The three LightGBM rankers
# ---------------------------------------------------------------------------------------------
class PairwiseRanker(_LightGBMRanker):
    """RankNAS: a GBDT score s = r(a) trained on the pairwise logistic loss of s_i - s_j.

    A LightGBM custom objective sums, per row, the gradient and Hessian of the loss over every
    pair with different labels (ties give no pair); above ``max_pairs`` candidate pairs a fixed
    seeded random subset of pairs is used. Early stopping watches ``eval_metric`` on the held-out
    rows: ``"logloss"`` (mean pairwise logistic loss, default) or ``"kendall"`` (1 - Kendall tau).
    """

    def __init__(
        self,
        learning_rate: float = 0.1,
        num_leaves: int = 30,
        max_depth: int = 6,
        n_estimators: int = 1000,
        early_stopping_rounds: int = 5,
        valid_fraction: float = 0.2,
        min_child_samples: Optional[int] = None,
        fallback_rounds: int = 100,
        min_rounds: int = 0,
        seed: int = 0,
        num_threads: int = 1,
        lgb_params: Optional[dict[str, Any]] = None,
        refit: bool = True,
        max_pairs: int = 2_000_000,
        eval_metric: str = "logloss",
    ):
        super().__init__(learning_rate, num_leaves, max_depth, n_estimators, early_stopping_rounds,
                         valid_fraction, min_child_samples, fallback_rounds, min_rounds, seed, num_threads,
                         lgb_params, refit)
        if eval_metric not in ("logloss", "kendall"):
            raise ValueError(f"eval_metric: expected 'logloss' or 'kendall', got {eval_metric!r}")
        self.max_pairs = max_pairs
        self.eval_metric = eval_metric

    def _objective_params(self, y_train: np.ndarray) -> dict[str, Any]:
        better, worse = label_pairs(y_train, self.max_pairs, np.random.default_rng(self.seed))

        def objective(preds: np.ndarray, train_data: lgb.Dataset) -> tuple[np.ndarray, np.ndarray]:
            return pairwise_logistic_grad_hess(preds, better, worse)

        self.info_["n_pairs"] = int(better.size)
        return {"objective": objective, "metric": "None"}

    def _feval(self, y_train: np.ndarray) -> Any:
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def feval(preds: np.ndarray, data: lgb.Dataset) -> tuple[str, float, bool]:
            y = data.get_label()
            if self.eval_metric == "kendall":
                return "1-kendall_tau", 1.0 - kendall_tau(y, preds), False
            key = id(data)
            if key not in cache:
                cache[key] = label_pairs(y, self.max_pairs, np.random.default_rng(self.seed + 1))
            b, w = cache[key]
            if b.size == 0:
                return "pairwise_logloss", 0.0, False
            return "pairwise_logloss", pairwise_logistic_loss(preds, b, w) / (2.0 * b.size), False

        return feval


class LambdaRanker(_LightGBMRanker):
    """AceNAS: LightGBM ``lambdarank`` (NDCG) with labels mapped to integer relevance 0..20.

    Relevance: clip y to [20% quantile, max] of the training labels and map linearly to 0..20
    (:func:`~fairseq_nas.ranking.metrics.relevance`; held-out rows use the training range). All
    training rows form one query group (split at random into equal groups of at most 10,000 rows,
    LightGBM's limit, beyond that). ``label_gain`` is 2^r - 1 for r = 0..20. The truncation
    level (how many top positions generate pairs) defaults to the whole group, so every pair
    counts, weighted by its NDCG change (capped at 1000 positions for speed on big sets).

    Number of rounds: by default *no* early stopping; ``fallback_rounds`` (300) rounds on every row.
    Measured on synthetic targets (50-300 rows): NDCG on a 20% hold-out is flat or noisy for the
    first tens of rounds (the first trees already place the few top rows), so stopping on it kept
    5-30 trees and halved Kendall tau and NDCG@10 on unseen rows compared with 300 fixed rounds.
    ``early_stopping_rounds > 0`` turns it on (metric NDCG@``eval_at``; ``min_rounds`` helps).
    """

    def __init__(
        self,
        learning_rate: float = 0.1,
        num_leaves: int = 30,
        max_depth: int = 6,
        n_estimators: int = 1000,
        early_stopping_rounds: int = 0,
        valid_fraction: float = 0.2,
        min_child_samples: Optional[int] = None,
        fallback_rounds: int = 300,
        min_rounds: int = 0,
        seed: int = 0,
        num_threads: int = 1,
        lgb_params: Optional[dict[str, Any]] = None,
        refit: bool = True,
        levels: int = RELEVANCE_LEVELS,
        quantile: float = 0.2,
        truncation_level: Optional[int] = None,
        eval_at: int = 10,
    ):
        super().__init__(learning_rate, num_leaves, max_depth, n_estimators, early_stopping_rounds,
                         valid_fraction, min_child_samples, fallback_rounds, min_rounds, seed, num_threads,
                         lgb_params, refit)
        self.levels = levels
        self.quantile = quantile
        self.truncation_level = truncation_level
        self.eval_at = eval_at

    def _objective_params(self, y_train: np.ndarray) -> dict[str, Any]:
        trunc = self.truncation_level
        if trunc is None:
            trunc = min(y_train.size, MAX_QUERY_ROWS, 1000)
        return {
            "objective": "lambdarank",
            "label_gain": [float(2**r - 1) for r in range(self.levels + 1)],
            "lambdarank_truncation_level": int(max(1, trunc)),
            "metric": "ndcg",
            "eval_at": [int(self.eval_at)],
        }

    def _dataset(self, X: np.ndarray, y: np.ndarray, y_ref: np.ndarray, params: dict[str, Any],
                 reference: Optional[lgb.Dataset] = None) -> lgb.Dataset:
        rel = relevance(y, reference=y_ref, levels=self.levels, quantile=self.quantile)
        groups = [y.size]
        if y.size > MAX_QUERY_ROWS:  # LightGBM's limit per query: split into random equal groups
            perm = np.random.default_rng(self.seed).permutation(y.size)
            X, rel = X[perm], rel[perm]
            groups = [len(c) for c in np.array_split(perm, -(-y.size // MAX_QUERY_ROWS))]
        return lgb.Dataset(X, label=rel, group=groups, params=params, reference=reference,
                           free_raw_data=False, categorical_feature=self._categorical())


class GBDTRegressor(_LightGBMRanker):
    """Baseline: LightGBM L2 regression on y (same tree settings, early stopping on held-out L2)."""

    def _objective_params(self, y_train: np.ndarray) -> dict[str, Any]:
        return {"objective": "regression", "metric": "l2"}
