"""Iterative data selection (BRP-NAS / AceNAS)."""
from __future__ import annotations

import numpy as np
import pytest

from fairseq_nas.ranking import GBDTRegressor, round_sizes, select_iteratively


def pool(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n, 12))
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2 - 2 * np.abs(X[:, 2] - 0.5) + 0.05 * rng.normal(size=n)
    return X, y


class Recorder:
    def __init__(self, y: np.ndarray):
        self.y = y
        self.calls: list[np.ndarray] = []

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        self.calls.append(np.array(idx))
        return self.y[idx]


def test_round_sizes_spread_the_remainder():
    assert round_sizes(23, 5) == [5, 5, 5, 4, 4]
    assert round_sizes(3, 5) == [1, 1, 1, 0, 0]
    assert sum(round_sizes(101, 7)) == 101


@pytest.mark.parametrize("budget, rounds", [(50, 5), (23, 5), (3, 5), (40, 1)])
def test_spends_exactly_the_budget_on_distinct_rows_once_per_round(budget, rounds):
    X, y = pool(500, 0)
    ev = Recorder(y)
    idx, labels = select_iteratively(X, ev, budget, rounds=rounds, seed=1)
    assert idx.dtype == np.int64 and idx.size == budget == len(set(idx.tolist()))
    assert np.array_equal(labels, y[idx])
    assert len(ev.calls) == sum(1 for n in round_sizes(budget, rounds) if n)
    assert [c.size for c in ev.calls] == [n for n in round_sizes(budget, rounds) if n]
    assert np.array_equal(np.concatenate(ev.calls), idx)


def test_deterministic_for_a_seed():
    X, y = pool(500, 0)
    a = select_iteratively(X, Recorder(y), 40, seed=7)
    b = select_iteratively(X, Recorder(y), 40, seed=7)
    c = select_iteratively(X, Recorder(y), 40, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_later_rounds_favour_predicted_good_rows():
    X, y = pool(1000, 3)
    ev = Recorder(y)
    select_iteratively(X, ev, 100, rounds=5, alpha=1.0, seed=0)  # pure exploitation after round 1
    first, last = y[ev.calls[0]].mean(), y[ev.calls[-1]].mean()
    assert last > first + 0.5


def test_finds_better_architectures_than_random_with_the_same_budget():
    iterative, random = [], []
    for seed in range(6):
        X, y = pool(2000, 100 + seed)
        _, labels = select_iteratively(X, Recorder(y), 60, rounds=5, seed=seed)
        iterative.append(y.max() - labels.max())
        random.append(y.max() - y[np.random.default_rng(seed).choice(2000, 60, replace=False)].max())
    print(f"mean regret: iterative {np.mean(iterative):.3f}, random {np.mean(random):.3f}")
    assert np.mean(iterative) < 0.5 * np.mean(random)


def test_custom_ranker_and_errors():
    X, y = pool(200, 1)
    idx, _ = select_iteratively(X, Recorder(y), 30, ranker=GBDTRegressor(), seed=0)
    assert idx.size == 30
    with pytest.raises(ValueError, match="exceeds the pool"):
        select_iteratively(X, Recorder(y), 201)
    with pytest.raises(ValueError, match="labels for"):
        select_iteratively(X, lambda idx: y[idx][:-1], 10)
    with pytest.raises(ValueError, match="alpha"):
        select_iteratively(X, Recorder(y), 10, alpha=1.5)
