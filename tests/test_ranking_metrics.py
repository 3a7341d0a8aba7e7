"""Ranking metrics on hand-checkable inputs."""
from __future__ import annotations

import numpy as np
import pytest

from fairseq_nas.ranking import (
    kendall_tau,
    ndcg_at_k,
    pairwise_misorder_rate,
    precision_at_k,
    regret,
    relevance,
    spearman_rho,
)

Y = np.array([0.1, 0.5, 0.3, 0.9, 0.7])


def test_correlations():
    assert kendall_tau(Y, Y * 10) == pytest.approx(1.0)
    assert kendall_tau(Y, -Y) == pytest.approx(-1.0)
    assert spearman_rho(Y, Y**3) == pytest.approx(1.0)
    # one swapped adjacent pair of 5: tau = (9 - 1) / 10
    assert kendall_tau([1, 2, 3, 4, 5], [1, 2, 3, 5, 4]) == pytest.approx(0.8)
    assert kendall_tau(Y, np.ones(5)) == 0.0  # undefined -> 0
    assert kendall_tau([1.0], [2.0]) == 0.0
    with pytest.raises(ValueError, match="5 values"):
        kendall_tau(Y, [1, 2])


def test_misorder_rate():
    assert pairwise_misorder_rate([1, 2, 3, 4, 5], [1, 2, 3, 5, 4]) == pytest.approx(0.1)
    assert pairwise_misorder_rate([1, 2, 3], [0, 0, 0]) == pytest.approx(0.5)  # score ties count 1/2
    assert pairwise_misorder_rate([1, 1, 1], [3, 2, 1]) == 0.0  # label ties are no pairs


def test_relevance_is_the_acenas_mapping():
    y = np.arange(11.0)  # 20% quantile = 2, max = 10
    rel = relevance(y)
    assert rel.tolist() == [0, 0, 0, 3, 5, 8, 10, 13, 15, 18, 20]
    assert relevance([100.0, -5.0], reference=y).tolist() == [20, 0]  # clipped to the reference range
    assert relevance([3.0, 3.0]).tolist() == [20, 20]  # empty range


def test_ndcg():
    assert ndcg_at_k(Y, Y, k=3) == pytest.approx(1.0)
    assert ndcg_at_k(Y, -Y, k=3) < 0.2
    # hand computation with rank gains: rel = rank scaled to 0..20
    y = np.array([0.0, 1.0, 2.0])
    rel = np.array([0.0, 10.0, 20.0])
    g = 2**rel - 1
    pred = np.array([0.0, 2.0, 1.0])  # order: row 1, row 2, row 0
    expected = (g[1] / np.log2(2) + g[2] / np.log2(3)) / (g[2] / np.log2(2) + g[1] / np.log2(3))
    assert ndcg_at_k(y, pred, k=2, gains="rank") == pytest.approx(expected)
    with pytest.raises(ValueError, match="gains"):
        ndcg_at_k(y, pred, gains="linear")


def test_precision_and_regret():
    pred = np.array([0.1, 0.9, 0.3, 0.8, 0.2])  # top-2 predicted: rows 1, 3; true top-2: rows 3, 4
    assert precision_at_k(Y, pred, k=2) == pytest.approx(0.5)
    assert precision_at_k(Y, Y, k=3) == 1.0
    assert regret(Y, pred) == pytest.approx(0.9 - 0.5)
    assert regret(Y, Y) == 0.0
