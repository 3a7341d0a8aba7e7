"""The latency model: cost features, the linear part + boosted correction, extrapolation, save/load."""
from __future__ import annotations

import random

import numpy as np
import pytest

from fairseq_nas.latency.features import cost_feature_names, cost_features
from fairseq_nas.ranking import LatencyModel, load_ranker
from fairseq_nas.space import encode_many, feature_names, load_space


def _subnets(space, n: int, keep, seed: int = 0):
    rng = random.Random(seed)
    out: dict = {}
    while len(out) < n:
        s = space.sample(rng)
        if keep(s):
            out.setdefault(s.key(), s)
    return list(out.values())


def synthetic_ms(subnets) -> np.ndarray:
    """A latency linear in the subnet's dimensions: depth, embedding and FFN widths, heads and the
    encoder layers each decoder layer attends to."""
    out = []
    for s in subnets:
        e, d = s.encoder, s.decoder
        out.append(4.0 + 0.01 * e.embed_dim + 0.6 * len(e.layers) + 0.002 * sum(lay.ffn_dim for lay in e.layers)
                   + 2.5 * len(d.layers) + 0.004 * sum(lay.ffn_dim for lay in d.layers) + 0.02 * d.embed_dim
                   + 0.1 * sum(lay.heads for lay in d.layers) + 0.3 * sum(lay.enc_attn_layers for lay in d.layers))
    return np.array(out)


def test_extrapolates_a_linear_latency_beyond_its_training_range_where_lightgbm_alone_cannot():
    space = load_space("shrinknas_iwslt14")
    names = feature_names(space)
    train = _subnets(space, 150, lambda s: s.decoder.depth <= 3, seed=1)  # decoders of 1-3 layers
    test = _subnets(space, 80, lambda s: s.decoder.depth >= 5, seed=2)  # 5-6 layers: never seen
    Xtr, Xte, ytr, yte = encode_many(train, space), encode_many(test, space), synthetic_ms(train), synthetic_ms(test)
    assert yte.min() > ytr.max() * 0.9  # the test latencies lie mostly beyond the training range

    model = LatencyModel(seed=0).fit(Xtr, ytr, feature_names=names)
    rel = np.abs(model.predict(Xte) - yte) / yte
    assert rel.max() <= 0.01, f"worst relative error {rel.max():.4f}"

    alone = LatencyModel(seed=0, kind="gbdt").fit(Xtr, ytr, feature_names=names)
    rel_alone = np.abs(alone.predict(Xte) - yte) / yte
    assert np.median(rel_alone) > 0.10 and np.mean(rel_alone <= 0.01) < 0.05  # LightGBM alone cannot
    assert alone.predict(Xte).max() <= ytr.max() * 1.01  # trees stay inside the range they saw


def test_boosted_correction_fits_what_is_not_linear(tmp_path):
    """Factors the linear part cannot express (one operator 25% slower in the first decoder layer, one
    width 5% slower): the boosted correction halves the linear part's error and beats LightGBM alone."""
    space = load_space("shrinknas_iwslt14")
    names = feature_names(space)
    subs = _subnets(space, 260, lambda s: True, seed=3)
    slow = [1.25 if s.decoder.layers[0].operator == "dynamic_conv" else 1.0 for s in subs]
    y = synthetic_ms(subs) * np.array(slow) * (1 + 0.05 * np.array([s.encoder.embed_dim == 240 for s in subs]))
    X = encode_many(subs, space)
    tr, te = np.arange(200), np.arange(200, 260)

    def error(kind: str) -> tuple[LatencyModel, np.ndarray]:
        m = LatencyModel(kind=kind).fit(X[tr], y[tr], feature_names=names)
        return m, np.abs(m.predict(X[te]) - y[te]) / y[te]

    model, err = error("analytic+gbdt")
    _, err_linear = error("analytic")
    _, err_alone = error("gbdt")
    assert np.mean(err <= 0.05) >= 0.85 and err.mean() < err_linear.mean() / 2 and err.mean() < err_alone.mean()

    model.save(tmp_path / "lat")
    back = load_ranker(tmp_path / "lat")
    assert isinstance(back, LatencyModel) and back.kind == "analytic+gbdt"
    np.testing.assert_allclose(back.predict(X[te]), model.predict(X[te]), rtol=1e-12)
    for kind in ("analytic", "linear_tree", "gbdt"):
        m = LatencyModel(kind=kind, min_child_samples=5).fit(X[tr], y[tr], feature_names=names)
        m.save(tmp_path / kind)
        np.testing.assert_allclose(load_ranker(tmp_path / kind).predict(X[te]), m.predict(X[te]), rtol=1e-12)


def test_legacy_model_files_still_load(tmp_path):
    """A latency model saved before the linear part (LightGBM text alone) predicts as it did."""
    space = load_space("shrinknas_iwslt14")
    subs = _subnets(space, 40, lambda s: True, seed=4)
    X, y = encode_many(subs, space), synthetic_ms(subs)
    m = LatencyModel(kind="gbdt", min_child_samples=3).fit(X, y)
    m.save(tmp_path / "lat")
    model_file = tmp_path / "lat" / "model.txt"
    model_file.write_bytes(model_file.read_bytes().split(b"\n", 1)[1])  # the old format: no header line
    back = load_ranker(tmp_path / "lat")
    assert back.kind == "gbdt"
    np.testing.assert_allclose(back.predict(X), m.predict(X), rtol=1e-12)


def test_cost_features():
    space = load_space("shrinknas_iwslt14")
    names = feature_names(space)
    s = space.largest()
    A = cost_features(encode_many([s], space), names)[0]
    got = dict(zip(cost_feature_names(names), A))
    d = s.decoder
    assert got["dec.layers"] == len(d.layers) and got["dec.E"] == d.embed_dim
    assert got["dec.ffn*E"] == sum(lay.ffn_dim for lay in d.layers) * d.embed_dim
    assert sum(v for k, v in got.items() if k.startswith("enc.n[")) == len(s.encoder.layers)
    assert got["dec.enc_attn*Eenc*E"] == sum(lay.enc_attn_layers for lay in d.layers) * s.encoder.embed_dim * \
        d.embed_dim
    assert (A >= 0).all()
    generic = cost_features(np.array([[1.0, np.nan]]), ["a", "b"])
    assert generic.tolist() == [[1.0, 0.0]]


def test_fit_without_feature_names_and_errors():
    space = load_space("shrinknas_iwslt14")
    subs = _subnets(space, 30, lambda s: True, seed=5)
    X, y = encode_many(subs, space), synthetic_ms(subs)
    m = LatencyModel(min_child_samples=3).fit(X, y)  # generic names: the raw columns are the linear features
    assert np.all(m.predict(X) > 0)
    with pytest.raises(ValueError, match="positive"):
        LatencyModel().fit(X, -y)
    with pytest.raises(ValueError, match="kind"):
        LatencyModel(kind="nope")
