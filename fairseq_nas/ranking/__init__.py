"""Ranking toolkit: rankers on architecture feature matrices, metrics, importance, pruning.

Rankers (scikit-learn style, larger y better, higher score better; NaN = missing feature):
:class:`PairwiseRanker` (RankNAS pairwise GBDT), :class:`LambdaRanker` (AceNAS LambdaRank/NDCG),
baselines :class:`GBDTRegressor` and :class:`MLPRegressor` (HAT's predictor). Each saves to
LightGBM's text format (or ``.npz``) plus a JSON (:func:`load_ranker`).

Imports numpy, scipy and lightgbm only: never fairseq; torch only inside ``MLPRegressor.fit``
and matplotlib only inside :func:`plot_importance`. ``encode``, ``encode_many``,
``feature_names`` and ``feature_groups`` are re-exported lazily from ``fairseq_nas.space.encode``.
"""
from __future__ import annotations

from typing import Any

from fairseq_nas.ranking.base import Ranker, load_ranker
from fairseq_nas.ranking.gbdt import (
    GBDTRegressor,
    LambdaRanker,
    PairwiseRanker,
    label_pairs,
    pairwise_logistic_grad_hess,
    pairwise_logistic_loss,
)
from fairseq_nas.ranking.importance import (
    default_fix_value,
    group_values,
    importance_table,
    permutation_importance,
    plot_importance,
    prune_groups,
    prune_space,
)
from fairseq_nas.ranking.latency_model import LatencyModel, latency_accuracy
from fairseq_nas.ranking.metrics import (
    kendall_tau,
    ndcg_at_k,
    pairwise_misorder_rate,
    precision_at_k,
    regret,
    relevance,
    spearman_rho,
)
from fairseq_nas.ranking.mlp import MLPRegressor
from fairseq_nas.ranking.selection import round_sizes, select_iteratively

_LAZY_FROM_SPACE = ("encode", "encode_many", "feature_names", "feature_groups")

__all__ = [
    "Ranker",
    "PairwiseRanker",
    "LambdaRanker",
    "GBDTRegressor",
    "MLPRegressor",
    "LatencyModel",
    "latency_accuracy",
    "load_ranker",
    "label_pairs",
    "pairwise_logistic_loss",
    "pairwise_logistic_grad_hess",
    "kendall_tau",
    "spearman_rho",
    "ndcg_at_k",
    "precision_at_k",
    "regret",
    "pairwise_misorder_rate",
    "relevance",
    "permutation_importance",
    "prune_groups",
    "prune_space",
    "default_fix_value",
    "group_values",
    "importance_table",
    "plot_importance",
    "select_iteratively",
    "round_sizes",
    *_LAZY_FROM_SPACE,
]


def __getattr__(name: str) -> Any:
    """Lazy re-export of the space encoders (the space package is not imported until asked for)."""
    if name in _LAZY_FROM_SPACE:
        import importlib

        # import_module: ``fairseq_nas.space.encode`` as an attribute is the function, not the module
        value = getattr(importlib.import_module("fairseq_nas.space.encode"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
