"""Rankers: the pairwise objective, ranking quality on a synthetic target, save/load, warm start,
and the package's import hygiene (no torch/fairseq at module level)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from fairseq_nas.ranking import (
    GBDTRegressor,
    LambdaRanker,
    MLPRegressor,
    PairwiseRanker,
    Ranker,
    kendall_tau,
    label_pairs,
    load_ranker,
    ndcg_at_k,
    pairwise_logistic_grad_hess,
    pairwise_logistic_loss,
)

REPO = Path(__file__).resolve().parents[1]
RANKING = REPO / "fairseq_nas" / "ranking"
N_FEATURES = 12


def features(n: int, rng: np.random.Generator) -> np.ndarray:
    """12 features in [0, 1); the last 3 are missing (NaN) in ~30% of the rows, like absent layers."""
    X = rng.uniform(size=(n, N_FEATURES))
    X[:, 9:][rng.uniform(size=(n, 3)) < 0.3] = np.nan
    return X


def target(X: np.ndarray) -> np.ndarray:
    """A nonlinear function of features 0, 1 and 2 only."""
    return np.sin(3 * X[:, 0]) + X[:, 1] ** 2 - 2 * np.abs(X[:, 2] - 0.5)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X, Xt = features(300, rng), features(1000, rng)
    y = target(X) + 0.05 * rng.normal(size=300)
    return X, y, Xt, target(Xt)


@pytest.fixture(scope="module")
def pairwise(data):
    X, y, _, _ = data
    return PairwiseRanker().fit(X, y)


# --- the pairwise objective ----------------------------------------------------------------
def test_label_pairs_orders_better_first_and_skips_ties():
    y = np.array([1.0, 3.0, 3.0, 0.0])
    better, worse = label_pairs(y)
    pairs = set(zip(better.tolist(), worse.tolist()))
    assert pairs == {(1, 0), (2, 0), (0, 3), (1, 3), (2, 3)}  # (1, 2) is a tie: no pair
    b, w = label_pairs(np.arange(50.0), max_pairs=100, rng=np.random.default_rng(0))
    assert b.size <= 100 and (np.arange(50.0)[b] > np.arange(50.0)[w]).all()


def test_pairwise_gradient_and_hessian_match_finite_differences():
    rng = np.random.default_rng(1)
    s = rng.normal(size=15)
    y = rng.integers(0, 5, size=15).astype(float)  # with ties
    b, w = label_pairs(y)
    grad, hess = pairwise_logistic_grad_hess(s, b, w)
    h = 1e-5
    for i in range(s.size):
        e = np.zeros_like(s)
        e[i] = h
        lp, l0, lm = (pairwise_logistic_loss(s + e, b, w), pairwise_logistic_loss(s, b, w),
                      pairwise_logistic_loss(s - e, b, w))
        assert grad[i] == pytest.approx((lp - lm) / (2 * h), rel=1e-6, abs=1e-7)
        assert hess[i] == pytest.approx((lp - 2 * l0 + lm) / h**2, rel=1e-3, abs=1e-4)
    # the loss is the paper's: both examples (i, j, 1) and (j, i, 0) with P_ij = sigmoid(s_i - s_j)
    p_ij = 1 / (1 + np.exp(-(s[b] - s[w])))
    p_ji = 1 - p_ij
    paper = (-np.log(p_ij) - np.log(1 - p_ji)).sum()  # -log P_ij for (i,j,1), -log(1 - P_ji) for (j,i,0)
    assert pairwise_logistic_loss(s, b, w) == pytest.approx(paper)


# --- rankers ---------------------------------------------------------------------------------
def test_scores_are_per_architecture_hence_transitive(data, pairwise):
    X, _, Xt, _ = data
    full = pairwise.predict(Xt)
    one_by_one = np.array([pairwise.predict(Xt[i:i + 1])[0] for i in range(50)])
    assert np.array_equal(full[:50], one_by_one)  # a score depends on its own row only
    rng = np.random.default_rng(2)
    for _ in range(500):
        a, b, c = Xt[rng.choice(len(Xt), size=3, replace=False)]
        sa, sb, sc = pairwise.predict(np.stack([a, b, c]))
        if sa > sb and sb > sc:
            assert sa > sc


def test_pairwise_ranker_ranks_unseen_architectures(data, pairwise):
    _, _, Xt, yt = data
    scores = pairwise.predict(Xt)
    tau = kendall_tau(yt, scores)
    shuffled = kendall_tau(yt, np.random.default_rng(3).permutation(scores))
    print(f"pairwise tau={tau:.3f} shuffled={shuffled:.3f} trees={pairwise.n_trees_} info={pairwise.info_}")
    assert tau > 0.75
    assert abs(shuffled) < 0.1
    assert pairwise.info_["n_valid"] == 60 and pairwise.info_["n_train"] == 240  # 20% held out
    assert 0 < pairwise.n_trees_ < 1000  # early stopping ended it


@pytest.mark.parametrize("cls", [PairwiseRanker, GBDTRegressor])
def test_refit_trains_on_every_row_for_the_scaled_rounds(data, cls):
    """The hold-out only picks the number of rounds: the saved model is the one trained on all
    rows for that many rounds x n / n_train."""
    X, y, Xt, yt = data
    held = cls(refit=False).fit(X, y)
    full = cls().fit(X, y)
    k = max(1, round(held.n_trees_ * 300 / 240))
    assert full.info_["refit_rows"] == 300 and held.info_["refit_rows"] == 0 and full.n_trees_ == k
    on_all_rows = cls(early_stopping_rounds=0, fallback_rounds=k).fit(X, y)
    np.testing.assert_allclose(full.predict(Xt), on_all_rows.predict(Xt), rtol=0, atol=1e-12)
    assert not np.allclose(full.predict(Xt), held.predict(Xt))
    assert kendall_tau(yt, full.predict(Xt)) > 0.75


@pytest.mark.parametrize("make, min_tau", [
    (lambda: LambdaRanker(), 0.5),
    (lambda: GBDTRegressor(), 0.7),
    (lambda: MLPRegressor(steps=300), 0.5),
], ids=["lambdarank", "gbdt-regressor", "mlp"])
def test_other_rankers_give_sensible_order(data, make, min_tau):
    X, y, Xt, yt = data
    r = make().fit(X, y)
    tau = kendall_tau(yt, r.predict(Xt))
    print(f"{type(r).__name__}: tau={tau:.3f} ndcg@10={ndcg_at_k(yt, r.predict(Xt)):.3f}")
    assert tau > min_tau


def test_lambda_ranker_uses_acenas_relevance(data):
    X, y, _, _ = data
    r = LambdaRanker(fallback_rounds=5)
    params = r._objective_params(y)
    assert params["objective"] == "lambdarank"
    assert params["label_gain"] == [2.0**k - 1 for k in range(21)]
    assert 1 <= params["lambdarank_truncation_level"] <= y.size


def test_an_all_nan_column_is_fitted_around_without_a_numpy_warning():
    """A feature missing in every row (NaN: e.g. a gene of layers no subnet has) is constant: the
    fit uses the other columns, and numpy's "All-NaN slice" RuntimeWarning does not reach the user."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.uniform(size=(40, 2)), np.full((40, 1), np.nan)], axis=1)
    y = X[:, 0] * 3 + X[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        pred = GBDTRegressor(n_estimators=50).fit(X, y).predict(X)
    assert kendall_tau(y, pred) > 0.5
    with pytest.raises(ValueError, match="constant"):  # all NaN everywhere: nothing to rank by
        GBDTRegressor().fit(np.full((10, 2), np.nan), np.arange(10.0))


def test_fit_rejects_bad_input():
    X = np.random.default_rng(0).uniform(size=(10, 3))
    with pytest.raises(ValueError, match="2 feature columns"):
        PairwiseRanker().fit(X, np.arange(10.0)).predict(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="constant"):
        PairwiseRanker().fit(np.ones((10, 3)), np.arange(10.0))
    with pytest.raises(ValueError, match="finite"):
        PairwiseRanker().fit(np.zeros((3, 2)), [1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="labels for"):
        GBDTRegressor().fit(np.zeros((3, 2)), [1.0, 2.0])
    with pytest.raises(RuntimeError, match="fit"):
        PairwiseRanker().predict(np.zeros((1, 2)))


def test_tiny_training_sets_still_learn():
    rng = np.random.default_rng(4)
    X = features(12, rng)
    r = PairwiseRanker().fit(X, target(X))
    assert r.info_["n_valid"] == 0  # too few rows for a hold-out: fixed number of rounds
    assert kendall_tau(target(X), r.predict(X)) > 0.5  # trees could split (min_data_in_leaf lowered)


# --- save / load -----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: PairwiseRanker(), lambda: LambdaRanker(fallback_rounds=50), lambda: GBDTRegressor(),
    lambda: MLPRegressor(steps=30, hidden=(32, 32, 32)),
], ids=["pairwise", "lambdarank", "gbdt-regressor", "mlp"])
def test_save_load_round_trip(tmp_path, data, make):
    X, y, Xt, _ = data
    r = make().fit(X, y, feature_names=[f"enc.ffn_dim.{i}" for i in range(N_FEATURES)])
    meta_path = r.save(tmp_path / "ranker")
    assert meta_path == tmp_path / "ranker" / "ranker.json"
    meta = json.loads(meta_path.read_text())
    assert meta["class"] == type(r).__name__ and meta["feature_names"][3] == "enc.ffn_dim.3"
    assert not [p for p in (tmp_path / "ranker").iterdir() if p.name.endswith(".tmp")]
    for loaded in (load_ranker(tmp_path / "ranker"), type(r).load(meta_path)):
        assert type(loaded) is type(r)
        assert np.array_equal(loaded.predict(Xt), r.predict(Xt))
        assert loaded.feature_names_ == r.feature_names_ and loaded.get_params() == r.get_params()
    # a .json path puts the model beside it
    r.save(tmp_path / "flat" / "r.json")
    assert np.array_equal(load_ranker(tmp_path / "flat" / "r.json").predict(Xt), r.predict(Xt))
    if isinstance(r, (PairwiseRanker, LambdaRanker, GBDTRegressor)):
        assert (tmp_path / "ranker" / "model.txt").read_text().startswith("tree")  # LightGBM text format


def test_load_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="ranker.json"):
        load_ranker(tmp_path)
    (tmp_path / "ranker.json").write_text('{"format": "fairseq-nas-ranker", "class": "Nope"}')
    with pytest.raises(ValueError, match="unknown ranker 'Nope'"):
        load_ranker(tmp_path)


def test_clone_copies_hyper_parameters():
    r = PairwiseRanker(num_leaves=7, seed=3)
    c = r.clone(seed=4)
    assert isinstance(c, PairwiseRanker) and not c.is_fitted
    assert c.num_leaves == 7 and c.seed == 4


# --- warm start (AceNAS weak supervision) -------------------------------------------------------
def test_warm_start_from_cheap_labels_beats_scratch_on_few_expensive_labels():
    scratch_taus, warm_taus = [], []
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        Xc, Xe, Xt = features(600, rng), features(30, rng), features(1000, rng)
        cheap_y = target(Xc) + 0.3 * Xc[:, 3] + 0.2 * rng.normal(size=600)  # biased, noisy proxy
        expensive_y = target(Xe) + 0.02 * rng.normal(size=30)
        cheap = PairwiseRanker(seed=seed).fit(Xc, cheap_y)
        scratch = PairwiseRanker(seed=seed).fit(Xe, expensive_y)
        warm = PairwiseRanker(seed=seed).fit(Xe, expensive_y, init_model=cheap)
        # mechanics: the warm model continues the cheap one
        assert warm.n_trees_ > cheap.n_trees_
        assert warm.info_["init_trees"] == cheap.n_trees_
        assert not np.array_equal(warm.predict(Xt), cheap.predict(Xt))
        assert not np.array_equal(warm.predict(Xt), scratch.predict(Xt))
        scratch_taus.append(kendall_tau(target(Xt), scratch.predict(Xt)))
        warm_taus.append(kendall_tau(target(Xt), warm.predict(Xt)))
    print(f"scratch taus {np.round(scratch_taus, 3)}  warm taus {np.round(warm_taus, 3)}")
    assert np.mean(warm_taus) > np.mean(scratch_taus) + 0.2


def test_warm_start_across_lightgbm_rankers_and_mlp(data):
    X, y, Xt, _ = data
    reg = GBDTRegressor().fit(X, y)
    lam = LambdaRanker(fallback_rounds=10).fit(X[:100], y[:100], init_model=reg)
    assert lam.n_trees_ == reg.n_trees_ + 10
    with pytest.raises(TypeError, match="LightGBM"):
        PairwiseRanker().fit(X, y, init_model=MLPRegressor(steps=1, hidden=(4,)).fit(X, y))
    mlp = MLPRegressor(steps=20, hidden=(16, 16)).fit(X, y)
    more = MLPRegressor(steps=20, hidden=(16, 16)).fit(X[:50], y[:50], init_model=mlp)
    assert not np.array_equal(more.predict(Xt), mlp.predict(Xt))
    assert more.info_["warm_start"] is True


# --- import hygiene ---------------------------------------------------------------------------
def _module_level_imports(source: str) -> set[str]:
    """Top-level package names imported at module level (not inside functions/classes)."""
    tree = ast.parse(source)
    names: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, (ast.If, ast.Try)):
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                visit(getattr(node, "finalbody", []))

    visit(tree.body)
    return names


def test_ranking_package_has_no_module_level_torch_or_fairseq_imports():
    files = sorted(RANKING.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "base.py", "gbdt.py", "mlp.py", "metrics.py"}
    for f in files:
        bad = _module_level_imports(f.read_text()) & {"torch", "fairseq", "matplotlib"}
        assert not bad, f"{f.name} imports {bad} at module level"
    # the checker sees violations, also inside try/if at module level, but not inside functions
    assert _module_level_imports("import torch.nn as nn\n") == {"torch"}
    guarded = "try:\n    from fairseq import x\nexcept ImportError:\n    pass\n"
    assert _module_level_imports(guarded) == {"fairseq"}
    assert _module_level_imports("def f():\n    import torch\n") == set()


def test_importing_ranking_loads_neither_torch_nor_fairseq():
    """Run in a fresh interpreter with the parent package stubbed, so only fairseq_nas.ranking's own
    (transitive) imports count: fairseq_nas/__init__.py registers the fairseq plugin on purpose."""
    code = (
        "import sys, types\n"
        f"m = types.ModuleType('fairseq_nas'); m.__path__ = [{str(REPO / 'fairseq_nas')!r}]\n"
        "sys.modules['fairseq_nas'] = m\n"
        "import fairseq_nas.ranking as r\n"
        "r.PairwiseRanker; r.kendall_tau\n"
        "bad = sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'fairseq', 'matplotlib'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"


def test_space_encoders_are_reexported_lazily():
    import fairseq_nas.ranking as r

    assert callable(r.encode_many) and callable(r.feature_groups)
    with pytest.raises(AttributeError):
        r.no_such_name  # noqa: B018


def test_ranker_base_is_abstract():
    with pytest.raises(NotImplementedError):
        Ranker().fit(np.zeros((3, 1)), [1, 2, 3])


def test_operator_codes_are_categorical_features_for_lightgbm():
    """An operator code names a category, not a magnitude: the trees split on it one-vs-rest."""
    from fairseq_nas.ranking import GBDTRegressor
    from fairseq_nas.ranking.gbdt import categorical_columns

    names = ["enc.embed_dim", "enc.operator.0", "enc.ffn_dim.0", "dec.activation.1"]
    assert categorical_columns(names) == [1, 3]
    rng = np.random.default_rng(0)
    op = rng.integers(0, 5, 200).astype(float)
    X = np.stack([rng.choice([64.0, 128.0], 200), op, rng.choice([128.0, 256.0], 200), rng.integers(0, 3, 200)], 1)
    y = np.isin(op, [1, 3]).astype(float) + 0.01 * rng.standard_normal(200)  # not monotone in the code
    model = GBDTRegressor(seed=0).fit(X, y, feature_names=names)
    infos = model.booster_.dump_model()["feature_infos"]  # LightGBM names the columns Column_i
    assert infos["Column_1"]["values"] and infos["Column_3"]["values"]  # held as categories
    assert not infos["Column_0"]["values"]  # numeric
    pred = model.predict(X)
    assert np.corrcoef(pred, y)[0, 1] > 0.95
