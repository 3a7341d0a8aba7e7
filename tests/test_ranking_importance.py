"""Permutation importance (RankNAS eq. 7), pruning of a search space, and the reports."""
from __future__ import annotations

import random

import numpy as np
import pytest

from fairseq_nas.ranking import (
    PairwiseRanker,
    Ranker,
    default_fix_value,
    group_values,
    importance_table,
    permutation_importance,
    plot_importance,
    prune_groups,
    prune_space,
)

GROUPS = {"signal": [0, 1], "weak": [2], "noise": [3, 4, 5], "noise_b": [6, 7]}


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(500, 8))
    y = 2 * np.sin(3 * X[:, 0]) + X[:, 1] + 0.3 * X[:, 2] + 0.05 * rng.normal(size=500)
    ranker = PairwiseRanker().fit(X[:300], y[:300])
    return ranker, X[300:], y[300:]


def test_finds_the_planted_group_and_marks_noise_unimportant(fitted):
    ranker, X, y = fitted
    imp = permutation_importance(ranker, X, y, GROUPS, n_repeats=3, seed=0)
    print({k: round(v, 3) for k, v in imp.items()})
    assert list(imp) == list(GROUPS)
    assert imp["signal"] > 3.0  # far above theta
    assert imp["noise"] < 1.15 and imp["noise_b"] < 1.15
    assert prune_groups(imp, 1.15) == [g for g in ("weak", "noise", "noise_b") if imp[g] < 1.15]
    assert "signal" not in prune_groups(imp, 1.25)
    assert imp == permutation_importance(ranker, X, y, GROUPS, n_repeats=3, seed=0)  # seeded


def test_permutes_group_columns_jointly_and_other_metrics(fitted):
    ranker, X, y = fitted
    per_column = permutation_importance(ranker, X, y, n_repeats=2, metric="misorder")
    assert list(per_column) == ranker.feature_names_  # one group per column by default
    assert per_column["f0"] > per_column["f5"]
    custom = permutation_importance(ranker, X, y, {"signal": [0, 1]}, metric=lambda t, s: 0.0)
    assert custom == {"signal": 1.0}  # zero error everywhere: guarded ratio is 1
    with pytest.raises(ValueError, match="out of range"):
        permutation_importance(ranker, X, y, {"bad": [8]})
    with pytest.raises(ValueError, match="metric"):
        permutation_importance(ranker, X, y, metric="auc")


class _FirstColumn(Ranker):
    """Scores = column 0: a perfect ranker when y is column 0."""

    def _fit(self, X, y, init_model):
        pass

    def _predict(self, X):
        return X[:, 0]


def test_zero_total_error_is_guarded():
    X = np.stack([np.arange(20.0), np.random.default_rng(0).permutation(20)], axis=1)
    y = X[:, 0].copy()
    r = _FirstColumn().fit(X, y)
    imp = permutation_importance(r, X, y, {"used": [0], "unused": [1]})
    assert np.isfinite(imp["used"]) and imp["used"] > 1e4  # L_total = 0: (L + eps) / eps
    assert imp["unused"] == 1.0  # nothing changes: (0 + eps) / (0 + eps)


def test_table_and_plot(tmp_path):
    imp = {"dec.layers": 3.2, "enc.norm": 1.0, "dec.ffn_dim": 1.4}
    table = importance_table(imp, theta=1.25)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["group", "I"]
    assert [ln.split()[0] for ln in lines[2:5]] == ["dec.layers", "dec.ffn_dim", "enc.norm"]
    assert lines[2].endswith("keep") and lines[4].endswith("fix")
    assert "theta = 1.25" in table
    out = tmp_path / "plots" / "importance.png"
    plot_importance(imp, out, theta=1.25)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


# --- pruning a real search space ------------------------------------------------------------------
@pytest.fixture(scope="module")
def shrinknas():
    from fairseq_nas.space import encode_many, feature_groups, load_space

    space = load_space("shrinknas_iwslt14")
    rng = random.Random(0)
    subnets = [space.sample(rng) for _ in range(300)]
    X = encode_many(subnets, space)
    groups = feature_groups(space)
    # planted: decoder depth and decoder embed_dim matter, nothing else
    y = -np.abs(X[:, groups["dec.layers"][0]] - 4) + X[:, groups["dec.embed_dim"][0]] / 80.0
    y = y + 0.05 * np.random.default_rng(0).normal(size=len(y))
    ranker = PairwiseRanker().fit(X[:200], y[:200])
    imp = permutation_importance(ranker, X[200:], y[200:], groups, n_repeats=2, seed=0)
    return space, subnets, X, y, ranker, imp


def test_prune_space_fixes_unimportant_groups_and_stays_valid(shrinknas):
    space, subnets, _, _, _, imp = shrinknas
    theta = 1.15
    print(importance_table(imp, theta))
    assert imp["dec.layers"] > theta and imp["dec.embed_dim"] > theta
    pruned, fixed = prune_space(space, imp, theta)
    assert set(fixed) == set(prune_groups(imp, theta))
    assert "dec.layers" not in fixed and "dec.embed_dim" not in fixed
    assert {"enc.operator", "dec.activation"} <= set(fixed)
    # the documented default rule
    assert fixed["enc.operator"] == space.encoder.operator[0]
    assert fixed.get("enc.embed_dim", 320) == 320 and fixed.get("dec.ffn_dim", 2) == 2
    assert pruned.num_subnets() < space.num_subnets()
    assert pruned.decoder.layers == space.decoder.layers  # the important group still searched
    assert pruned.encoder.operator == (space.encoder.operator[0],)
    rng = random.Random(1)
    for _ in range(20):  # every pruned subnet is in the original space
        s = pruned.sample(rng)
        space.validate_subnet(s)
        pruned.validate_subnet(s)
        assert all(layer.operator == fixed["enc.operator"] for layer in s.encoder.layers)


def test_prune_space_to_the_best_ranked_architecture(shrinknas, tmp_path):
    space, subnets, X, _, ranker, imp = shrinknas
    best = subnets[int(np.argmax(ranker.predict(X)))]
    values = group_values(best, space)
    pruned, fixed = prune_space(space, imp, 1.15, values=best)
    assert fixed and all(fixed[g] == values[g] for g in fixed)
    if "enc.embed_dim" in fixed:
        assert pruned.encoder.embed_dim == (best.encoder.embed_dim,)
    s = pruned.sample(random.Random(2))
    space.validate_subnet(s)
    assert all(layer.operator == values["enc.operator"] for layer in s.encoder.layers)
    pruned.save(tmp_path / "pruned.yaml")
    from fairseq_nas.space import load_space

    assert load_space(str(tmp_path / "pruned.yaml")) == pruned
    # nothing below theta: the space is unchanged
    same, none = prune_space(space, dict.fromkeys(imp, 5.0), 1.15)
    assert same == space and none == {}


def test_default_fix_value_rule():
    from fairseq_nas.space import load_space

    space = load_space("shrinknas_iwslt14")
    assert default_fix_value(space, "dec.layers") == 6
    assert default_fix_value(space, "enc.embed_dim") == 320
    assert default_fix_value(space, "dec.ffn_dim") == 2  # ratio space: the largest ratio
    assert default_fix_value(space, "dec.activation") == space.decoder.activation[0]
    hat = load_space("hat_iwslt14")
    assert default_fix_value(hat, "enc.ffn_dim") == max(hat.encoder.ffn_dim)
    with pytest.raises(ValueError, match="feature group"):
        default_fix_value(space, "ffn_dim")


class _DepthOnly:
    """A 'ranker' whose score is the decoder depth, read (as a GBDT can) from which per-layer slots
    are present: it never looks at the depth column or at the operator values."""

    n_features_in_ = 4  # dec.layers, dec.operator.0..2

    def predict(self, X):
        return (~np.isnan(np.asarray(X)[:, 1:])).sum(axis=1).astype(float)


def test_depth_read_from_absent_layers_is_credited_to_the_depth_group():
    rng = np.random.default_rng(0)
    depth = rng.integers(1, 4, size=60)
    ops = rng.integers(0, 5, size=(60, 3)).astype(float)
    ops[np.arange(3)[None, :] >= depth[:, None]] = np.nan
    X = np.column_stack([depth.astype(float), ops])
    y = depth.astype(float)
    groups = {"dec.layers": [0], "dec.operator": [1, 2, 3]}
    old = permutation_importance(_DepthOnly(), X, y, groups=groups, seed=1)
    assert old["dec.layers"] == pytest.approx(1.0) and old["dec.operator"] > 2  # the flaw: depth looks unimportant
    new = permutation_importance(_DepthOnly(), X, y, groups=groups, seed=1, depth={"dec.layers": [1, 2, 3]})
    assert new["dec.layers"] > 2 and new["dec.operator"] == pytest.approx(1.0)
