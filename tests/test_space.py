"""Search spaces: builtin values, validation errors, sampling/mutation/crossover, counting, encoding."""
from __future__ import annotations

import ast
import copy
import itertools
import math
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from fairseq_nas.space import (
    ACTIVATIONS,
    NORMS,
    OPERATORS,
    LayerConfig,
    SearchSpace,
    SpaceError,
    StackConfig,
    Subnet,
    encode,
    encode_many,
    feature_groups,
    feature_names,
    list_builtin_spaces,
    load_space,
)

REPO = Path(__file__).resolve().parent.parent
BUILTINS = ["hat_iwslt14", "hat_wmt14", "ranknas_iwslt14", "ranknas_wmt14", "shrinknas_iwslt14"]

# A tiny space that exercises every key: a ratio stack, qkv_dim, conv and LSRA operators,
# an encoder depth choice the decoder's enc_attn_layers depend on.
TINY = {
    "name": "tiny",
    "description": "a tiny test space",
    "encoder": {"layers": [1, 2], "embed_dim": [8, 16], "ffn_dim": [16, 32], "heads": [1, 2],
                "operator": ["self_attention", "lightweight_conv"], "activation": ["relu", "swish"],
                "rpr_len": [0, 4], "norm": ["pre", "post"], "kernel_size": [3, 5], "qkv_dim": None},
    "decoder": {"layers": [1, 2], "embed_dim": [8, 16], "ffn_ratio": [1, 2], "heads": [1, 2],
                "operator": ["self_attention", "lsra_dynamic"], "enc_attn_layers": [1, 2],
                "kernel_size": [3, 5]},
}


def write_space(tmp_path: Path, data, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny(tmp_path) -> SearchSpace:
    return load_space(write_space(tmp_path, TINY, "tiny.yaml"))


# --- builtin spaces ------------------------------------------------------------------------

def test_builtin_list():
    assert list_builtin_spaces() == BUILTINS


@pytest.mark.parametrize("name,expect", [
    ("hat_iwslt14", {"enc.layers": (6,), "dec.layers": (1, 2, 3, 4, 5, 6), "embed_dim": (512, 640),
                     "ffn_dim": (512, 1024, 2048), "heads": (2, 4), "qkv_dim": 512, "rpr_len": (0,),
                     "norm": ("post",), "operator": ("self_attention",), "enc_attn_layers": (1, 2, 3)}),
    ("hat_wmt14", {"ffn_dim": (1024, 2048, 3072), "heads": (4, 8), "qkv_dim": 512, "embed_dim": (512, 640)}),
    ("ranknas_iwslt14", {"embed_dim": (512, 640, 768), "ffn_dim": (768, 1024, 1536, 2048), "heads": (2, 4, 8),
                         "rpr_len": (8, 12, 16), "norm": ("pre", "post"), "qkv_dim": None,
                         "enc_attn_layers": (1, 2, 3), "dec.layers": (1, 2, 3, 4, 5, 6)}),
    ("ranknas_wmt14", {"embed_dim": (640, 768, 1024), "ffn_dim": (2048, 3072, 4096, 5120),
                       "heads": (4, 8, 16), "rpr_len": (8, 12, 16), "norm": ("pre", "post")}),
    ("shrinknas_iwslt14", {"embed_dim": (160, 240, 320), "ffn_ratio": (1, 1.5, 2), "ffn_dim": None,
                           "heads": (2, 4), "enc.layers": (6,), "dec.layers": (1, 2, 3, 4, 5, 6),
                           "activation": ("relu", "leaky_relu", "swish"),
                           "kernel_size": (3, 7, 15, 31, 31, 31),
                           "operator": ("self_attention", "lightweight_conv", "dynamic_conv",
                                        "lsra_lightweight", "lsra_dynamic")}),
])
def test_builtin_paper_values(name, expect):
    space = load_space(name)
    assert space.name == name and space.description
    for key, value in expect.items():
        stacks = {"enc": ["encoder"], "dec": ["decoder"]}.get(key.split(".")[0], ["encoder", "decoder"])
        field = key.split(".")[-1]
        for s in stacks:
            if field == "enc_attn_layers" and s == "encoder":
                continue
            assert getattr(space.stack(s), field) == value, (name, s, field)
    assert space.encoder.enc_attn_layers is None


def test_shrinknas_ffn_from_ratio():
    st = load_space("shrinknas_iwslt14").decoder
    assert st.ffn_choices(160) == (160, 240, 320)
    assert st.ffn_choices(240) == (240, 360, 480)
    assert st.max_ffn_dim == 640 and st.max_embed_dim == 320 and st.max_heads == 4 and st.max_qkv_dim == 320
    assert load_space("hat_iwslt14").encoder.max_qkv_dim == 512


def test_load_by_arch_name_and_path(tmp_path):
    by_name = load_space("shrinknas_iwslt14")
    assert load_space("supernet_shrinknas_iwslt14") == by_name
    copy_path = write_space(tmp_path, Path(by_name.source).read_text(), "copy.yaml")
    by_path = load_space(str(copy_path))
    assert by_path == by_name and by_path.source == str(copy_path)
    with pytest.raises(SpaceError, match="builtin spaces: hat_iwslt14"):
        load_space("no_such_space")
    with pytest.raises(SpaceError, match="missing.yaml"):
        load_space(tmp_path / "missing.yaml")


# --- sample / mutate / crossover -------------------------------------------------------------

def _draws(space: SearchSpace, seed: int, n: int) -> list[Subnet]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = space.sample(rng), space.sample(rng)
        out += [a, space.mutate(a, rng, 0.3), space.crossover(a, b, rng)]
    return out


@pytest.mark.parametrize("name", BUILTINS + ["tiny"])
def test_sample_mutate_crossover_valid_and_deterministic(name, tiny):
    space = tiny if name == "tiny" else load_space(name)
    state = random.getstate()
    draws = _draws(space, seed=7, n=100)
    assert random.getstate() == state, "the global random state was touched"
    for sub in draws:
        space.validate_subnet(sub)
        assert Subnet.from_json(sub.to_json()) == sub
    assert [s.to_json() for s in _draws(space, seed=7, n=100)] == [s.to_json() for s in draws]
    assert _draws(space, seed=8, n=5) != draws[:15]


def test_sampling_reaches_every_choice(tiny):
    rng = random.Random(0)
    subs = [tiny.sample(rng) for _ in range(300)]
    dec_layers = [lay for s in subs for lay in s.decoder.layers]
    assert {s.encoder.depth for s in subs} == {1, 2}
    assert {lay.operator for lay in dec_layers} == {"self_attention", "lsra_dynamic"}
    assert {lay.enc_attn_layers for lay in dec_layers} == {1, 2}
    assert {(s.decoder.embed_dim, lay.ffn_dim) for s in subs for lay in s.decoder.layers} == \
        {(8, 8), (8, 16), (16, 16), (16, 32)}


@pytest.mark.parametrize("name", BUILTINS)
def test_mutate_prob_zero_and_one(name):
    space = load_space(name)
    rng = random.Random(3)
    for _ in range(20):
        sub = space.sample(rng)
        assert space.mutate(sub, rng, 0.0) == sub
        assert space.mutate(sub, rng, 1.0) != sub
    with pytest.raises(ValueError):
        space.mutate(sub, rng, 1.5)


def test_mutate_ratio_space_rescales_ffn():
    space = load_space("shrinknas_iwslt14")
    sub = space.smallest()  # embed 160, ffn 160 (ratio 1)
    rng = random.Random(0)
    seen_embeds = set()
    for _ in range(200):
        child = space.mutate(sub, rng, 0.5)
        seen_embeds.add(child.encoder.embed_dim)
        space.validate_subnet(child)
    assert seen_embeds == {160, 240, 320}


def test_crossover_keeps_ratios_and_enc_attn_fits(tiny):
    rng = random.Random(1)
    for _ in range(200):
        a, b = tiny.sample(rng), tiny.sample(rng)
        child = tiny.crossover(a, b, rng)
        tiny.validate_subnet(child)
        assert child.decoder.embed_dim in (a.decoder.embed_dim, b.decoder.embed_dim)
        assert child.decoder.depth in (a.decoder.depth, b.decoder.depth)
        for i, lay in enumerate(child.decoder.layers):
            parents = [p.decoder for p in (a, b) if i < p.decoder.depth]
            ratios = {p.layers[i].ffn_dim / p.embed_dim for p in parents}
            assert lay.ffn_dim / child.decoder.embed_dim in ratios
            assert lay.enc_attn_layers <= child.encoder.depth


def test_crossover_of_identical_parents_is_identity():
    space = load_space("shrinknas_iwslt14")
    rng = random.Random(5)
    sub = space.sample(rng)
    assert space.crossover(sub, sub, rng) == sub


def test_mutate_rejects_subnet_outside_space():
    sub = load_space("ranknas_wmt14").largest()
    with pytest.raises(SpaceError, match="subnet to mutate: encoder.embed_dim"):
        load_space("hat_iwslt14").mutate(sub, random.Random(0), 0.3)


# --- largest / smallest / counting -------------------------------------------------------------

def test_largest_smallest():
    space = load_space("ranknas_iwslt14")
    big, small = space.largest(), space.smallest()
    space.validate_subnet(big)
    space.validate_subnet(small)
    assert big.decoder.depth == 6 and big.encoder.embed_dim == 768
    genes = {(lay.ffn_dim, lay.heads, lay.rpr_len, lay.norm, lay.enc_attn_layers)
             for lay in big.decoder.layers}
    assert genes == {(2048, 8, 16, "pre", 3)}
    assert small.decoder.depth == 1 and small.decoder.embed_dim == 512
    assert {(lay.ffn_dim, lay.heads, lay.rpr_len, lay.enc_attn_layers) for lay in small.decoder.layers} == \
        {(768, 2, 8, 1)}
    shrink = load_space("shrinknas_iwslt14")
    assert {lay.ffn_dim for lay in shrink.largest().encoder.layers} == {640}
    assert {lay.operator for lay in shrink.smallest().encoder.layers} == {"self_attention"}


def test_smallest_enc_attn_fits_shallowest_encoder(tiny):
    small = tiny.smallest()
    assert small.encoder.depth == 1 and small.decoder.layers[0].enc_attn_layers == 1
    assert tiny.largest().decoder.layers[0].enc_attn_layers == 2


def _brute_force_count(space: SearchSpace) -> int:
    """Enumerate a superset (every value of every dim, all FFN dims for every embed) and keep
    what validate_subnet accepts."""
    def stacks(st, attn):
        ffns = sorted({f for e in st.embed_dim for f in st.ffn_choices(e)} | {1})
        genes = list(itertools.product(ffns, st.heads, st.operator, st.activation, st.rpr_len, st.norm, attn))
        layers = [LayerConfig(operator=o, ffn_dim=f, heads=h, activation=a, rpr_len=r, norm=n,
                              enc_attn_layers=k) for f, h, o, a, r, n, k in genes]
        for d in st.layers:
            for e in st.embed_dim:
                for combo in itertools.product(layers, repeat=d):
                    yield StackConfig(e, combo)

    count = 0
    decs = list(stacks(space.decoder, (space.decoder.enc_attn_layers or ()) + (3,)))
    for enc in stacks(space.encoder, (None,)):
        for dec in decs:
            count += space.contains(Subnet(enc, dec))
    return count


def test_num_subnets_matches_brute_force(tmp_path):
    data = {"name": "count",
            "encoder": {"layers": [1, 2], "embed_dim": [4, 8], "ffn_ratio": [1, 2], "heads": [1, 2],
                        "activation": ["relu", "swish"]},
            "decoder": {"layers": [1, 2], "embed_dim": [4], "ffn_dim": [4, 8], "heads": [1],
                        "enc_attn_layers": [1, 2]}}
    space = load_space(write_space(tmp_path, data))
    assert space.num_subnets() == _brute_force_count(space) == 2656


def test_num_subnets_builtins():
    hat = load_space("hat_iwslt14").num_subnets()
    dec = sum((3 * 2 * 3) ** d for d in range(1, 7))
    assert hat == 2 * (3 * 2) ** 6 * 2 * dec
    shrink = load_space("shrinknas_iwslt14").num_subnets()
    assert isinstance(shrink, int) and 1e26 < shrink < 1e31


# --- save / fix / describe -----------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILTINS + ["tiny"])
def test_yaml_round_trip(name, tiny, tmp_path):
    space = tiny if name == "tiny" else load_space(name)
    assert SearchSpace.from_yaml(space.to_yaml()) == space
    out = tmp_path / "sub" / f"{name}.yaml"
    space.save(out)
    again = load_space(out)
    assert again == space and again.source == str(out)
    assert sorted(p.name for p in out.parent.iterdir()) == [f"{name}.yaml"], "temporary file left behind"


def test_equality_notices_a_changed_choice(tiny):
    assert replace(tiny, decoder=replace(tiny.decoder, heads=(1,))) != tiny


def test_fix_narrows_choices():
    space = load_space("ranknas_iwslt14")
    fixed = space.fix({"dec.ffn_dim": 1024, "enc.embed_dim": 640, "dec.norm": "post", "dec.layers": 3})
    assert fixed.decoder.ffn_dim == (1024,) and fixed.encoder.embed_dim == (640,)
    assert fixed.decoder.norm == ("post",) and fixed.decoder.layers == (3,)
    assert fixed.encoder.ffn_dim == space.encoder.ffn_dim and fixed.decoder.heads == space.decoder.heads
    assert 0 < fixed.num_subnets() < space.num_subnets()
    rng = random.Random(0)
    for _ in range(50):
        sub = fixed.sample(rng)
        space.validate_subnet(sub)
        assert sub.decoder.depth == 3 and {lay.ffn_dim for lay in sub.decoder.layers} == {1024}
    assert "dec.ffn_dim=1024" in fixed.description


def test_fix_accepts_feature_codes_and_numpy_values():
    space = load_space("shrinknas_iwslt14")
    sub = space.sample(random.Random(2))
    x = encode(sub, space)
    cols = feature_groups(space)
    fixed = space.fix({"enc.operator": x[cols["enc.operator"][0]],
                       "dec.embed_dim": x[cols["dec.embed_dim"][0]]})
    assert fixed.encoder.operator == (sub.encoder.layers[0].operator,)
    assert fixed.decoder.embed_dim == (sub.decoder.embed_dim,)


def test_fix_every_group_with_largest_values():
    space = load_space("shrinknas_iwslt14")
    x = encode(space.largest(), space)
    values = {g: x[cols[0]] for g, cols in feature_groups(space).items()}
    fixed = space.fix(values)
    assert fixed.num_subnets() == 1
    assert fixed.largest() == fixed.smallest() == space.largest()


def test_fix_ratio_space():
    space = load_space("shrinknas_iwslt14")
    assert space.fix({"dec.ffn_dim": 1.5}).decoder.ffn_ratio == (1.5,)
    assert space.fix({"dec.ffn_dim": 640}).decoder.ffn_ratio == (2,)  # only 2 x 320 gives 640
    assert space.fix({"dec.ffn_dim": 320, "dec.embed_dim": 160}).decoder.ffn_ratio == (2,)
    with pytest.raises(SpaceError, match="dec.ffn_dim: ffn_dim 320 is ratio 1 or 2"):
        space.fix({"dec.ffn_dim": 320})
    with pytest.raises(SpaceError, match="neither an ffn_ratio"):
        space.fix({"dec.ffn_dim": 333})


def test_fix_errors(tiny):
    with pytest.raises(SpaceError, match=r"tiny.yaml: dec.bogus: unknown feature group; valid: enc.embed_"):
        tiny.fix({"dec.bogus": 1})
    with pytest.raises(SpaceError, match=r"enc.heads: 4 is not among the choices 1, 2"):
        tiny.fix({"enc.heads": 4})
    with pytest.raises(SpaceError, match=r"enc.operator: 'dynamic_conv' is not among the choices"):
        tiny.fix({"enc.operator": "dynamic_conv"})
    with pytest.raises(SpaceError, match=r"enc.enc_attn_layers: unknown feature group"):
        tiny.fix({"enc.enc_attn_layers": 1})


def test_fix_encoder_depth_drops_deeper_enc_attn(tiny):
    fixed = tiny.fix({"enc.layers": 1})
    assert fixed.encoder.layers == (1,) and fixed.decoder.enc_attn_layers == (1,)


def test_describe_lists_dims_and_count():
    space = load_space("shrinknas_iwslt14")
    text = space.describe()
    for word in ("encoder", "decoder", "ffn_ratio", "per layer", "per stack", "lsra_dynamic",
                 "enc_attn_layers", "kernel_size", str(space.num_subnets())):
        assert word in text
    assert "kernel_size" not in load_space("hat_iwslt14").describe()


# --- encoding ------------------------------------------------------------------------------------

def test_encode_layout_and_nan():
    space = load_space("shrinknas_iwslt14")
    names, groups = feature_names(space), feature_groups(space)
    assert names[:3] == ["enc.embed_dim", "enc.layers", "enc.ffn_dim.0"]
    assert "dec.enc_attn_layers.5" in names and "enc.enc_attn_layers.0" not in names
    assert len(names) == 2 + 6 * 6 + 2 + 7 * 6
    assert sorted(i for cols in groups.values() for i in cols) == list(range(len(names)))
    for g, cols in groups.items():
        assert all(names[i].startswith(g) for i in cols)
    assert groups["dec.ffn_dim"] == [names.index(f"dec.ffn_dim.{i}") for i in range(6)]

    sub = space.sample(random.Random(4))
    big = space.largest().decoder
    sub = sub.with_stack("decoder", StackConfig(big.embed_dim, big.layers[:2]))
    x = encode(sub, space)
    assert x.dtype == np.float64 and x.shape == (len(names),)
    col = dict(zip(names, x))
    assert col["dec.layers"] == 2 and col["dec.embed_dim"] == sub.decoder.embed_dim
    assert col["dec.ffn_dim.1"] == sub.decoder.layers[1].ffn_dim
    assert math.isnan(col["dec.ffn_dim.2"]) and math.isnan(col["dec.enc_attn_layers.5"])
    assert not np.isnan(x[groups["enc.heads"]]).any()
    ops = ("self_attention", "lightweight_conv", "dynamic_conv", "lsra_lightweight", "lsra_dynamic")
    assert col["enc.operator.3"] == ops.index(sub.encoder.layers[3].operator)


def test_encode_many_matches_encode():
    space = load_space("ranknas_iwslt14")
    rng = random.Random(9)
    subs = [space.sample(rng) for _ in range(50)]
    X = encode_many(subs, space)
    assert X.shape == (50, len(feature_names(space)))
    np.testing.assert_array_equal(X[17], encode(subs[17], space))
    assert encode_many([], space).shape == (0, len(feature_names(space)))
    big = load_space("ranknas_wmt14").largest()
    np.testing.assert_array_equal(encode(big, space)[:2], [1024, 6])  # encoding checks shape, not choices


def test_encode_rejects_too_deep_subnet(tiny):
    deep = load_space("hat_iwslt14").largest()
    with pytest.raises(SpaceError, match="encoder.layers: depth 6 exceeds"):
        encode(deep, tiny)


# --- bad space files -----------------------------------------------------------------------------

def _set(path: str, value):
    def edit(d):
        keys = path.split(".")
        node = d
        for k in keys[:-1]:
            node = node[k]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
        return d
    return edit


_DELETE = object()

BAD_SPACES = [
    # (id, edit of TINY or raw text, expected field, expected words in the problem)
    ("top-list", "- a\n- b\n", "<top level>", "expected a mapping"),
    ("top-empty", "", "<top level>", "empty file"),
    ("yaml-syntax", "name: x\nencoder: [1, 2\ndecoder: {}\n", "line 3", "malformed YAML"),
    ("yaml-duplicate", "name: x\nname: y\n", "line 2", "duplicate key 'name'"),
    ("top-unknown", _set("search", 1), "search",
     "valid keys: name, description, share_all_embeddings, encoder, decoder"),
    ("missing-stack", _set("decoder", _DELETE), "decoder", "missing stack"),
    ("stack-not-map", _set("encoder", [1]), "encoder", "expected a mapping"),
    ("unknown-key", _set("encoder.ffn", [1]), "encoder.ffn", "valid keys: layers, embed_dim"),
    ("missing-heads", _set("encoder.heads", _DELETE), "encoder.heads", "missing"),
    ("unknown-operator", _set("encoder.operator", ["conv"]), "encoder.operator",
     "unknown operator 'conv'; valid: self_attention, lightweight_conv, dynamic_conv"),
    ("unknown-activation", _set("decoder.activation", ["gelu"]), "decoder.activation",
     "valid: relu, leaky_relu, swish"),
    ("unknown-norm", _set("encoder.norm", ["mid"]), "encoder.norm", "valid: pre, post"),
    ("empty-choices", _set("encoder.heads", []), "encoder.heads", "empty choice list"),
    ("non-integer-dim", _set("encoder.embed_dim", [8.5]), "encoder.embed_dim",
     "8.5 is not a positive integer"),
    ("non-positive-dim", _set("encoder.ffn_dim", [0, 16]), "encoder.ffn_dim", "0 is not a positive integer"),
    ("bool-dim", _set("decoder.layers", [True]), "decoder.layers", "not a positive integer"),
    ("negative-rpr", _set("encoder.rpr_len", [-1]), "encoder.rpr_len", "not a non-negative integer"),
    ("duplicate-choice", _set("decoder.heads", [1, 1]), "decoder.heads", "listed twice"),
    ("ffn-both", _set("encoder.ffn_ratio", [1]), "encoder.ffn_dim", "both given; give exactly one"),
    ("ffn-neither", _set("decoder.ffn_ratio", _DELETE), "decoder.ffn_dim", "neither given"),
    ("bad-ratio", _set("decoder.ffn_ratio", [0]), "decoder.ffn_ratio", "not a positive number"),
    ("ratio-not-integer", _set("decoder.ffn_ratio", [1, 1.3]), "decoder.ffn_ratio",
     "1.3 x embed_dim 8 = 10.4 is not an integer"),
    ("heads-embed", _set("encoder.heads", [1, 3]), "encoder.heads", "3 does not divide 8 (embed_dim"),
    ("heads-qkv", _set("encoder.qkv_dim", 5), "encoder.heads", "2 does not divide 5 (qkv_dim"),
    ("qkv-not-int", _set("encoder.qkv_dim", "wide"), "encoder.qkv_dim", "not a positive integer"),
    ("lsra-odd", lambda d: _set("decoder.heads", [1])(_set("decoder.embed_dim", [9, 16])(d)),
     "decoder.embed_dim", "9 is odd"),
    ("lsra-heads", lambda d: _set("decoder.heads", [1, 4])(_set("decoder.embed_dim", [12, 16])(d)),
     "decoder.heads", "4 does not divide 6 (embed_dim/2, the LSRA branch width)"),
    ("conv-heads", lambda d: _set("encoder.heads", [4])(_set("encoder.qkv_dim", 8)(
        _set("encoder.embed_dim", [6, 8])(d))), "encoder.heads",
     "4 does not divide 6 (embed_dim, the convolution"),
    ("kernel-short", _set("encoder.kernel_size", [3]), "encoder.kernel_size",
     "1 kernel sizes for up to 2 layers"),
    ("kernel-even", _set("decoder.kernel_size", [3, 4]), "decoder.kernel_size[1]", "4 is not a positive odd"),
    ("enc-attn-deep", _set("decoder.enc_attn_layers", [1, 3]), "decoder.enc_attn_layers",
     "3 exceeds the deepest encoder (2 layers)"),
    ("enc-attn-shallow", _set("decoder.enc_attn_layers", [2]), "decoder.enc_attn_layers",
     "no choice fits the shallowest encoder (1 layers)"),
    ("enc-attn-in-encoder", _set("encoder.enc_attn_layers", [1]), "encoder.enc_attn_layers",
     "only the decoder attends"),
    ("name-not-string", _set("name", 3), "name", "expected a non-empty string"),
]


@pytest.mark.parametrize("edit,field,problem", [c[1:] for c in BAD_SPACES], ids=[c[0] for c in BAD_SPACES])
def test_bad_space_file(tmp_path, edit, field, problem):
    data = edit if isinstance(edit, str) else edit(copy.deepcopy(TINY))
    path = write_space(tmp_path, data, "bad_space.yaml")
    with pytest.raises(SpaceError) as info:
        load_space(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: {field}: "), msg
    assert problem in msg, msg
    assert "\n" not in msg


def test_valid_heads_with_qkv_dim(tmp_path):
    """With a fixed attention width, heads need not divide embed_dim (HAT: embed 640, qkv 512)."""
    data = copy.deepcopy(TINY)
    data["encoder"].update(embed_dim=[6, 8], heads=[4], qkv_dim=8, operator=["self_attention"])
    assert load_space(write_space(tmp_path, data)).encoder.max_qkv_dim == 8


def test_defaults(tmp_path):
    data = {"encoder": {"layers": [7], "embed_dim": [8], "ffn_dim": [8], "heads": [2]},
            "decoder": {"layers": [3], "embed_dim": [8], "ffn_dim": [8], "heads": [2]}}
    space = load_space(write_space(tmp_path, data, "minimal.yaml"))
    assert space.name == "minimal"
    enc, dec = space.encoder, space.decoder
    assert (enc.rpr_len, enc.norm, enc.activation, enc.operator, enc.qkv_dim) == \
        ((0,), ("post",), ("relu",), ("self_attention",), None)
    assert enc.kernel_size == (3, 7, 15, 31, 31, 31, 31) and dec.kernel_size == (3, 7, 15)
    assert dec.enc_attn_layers == (1,) and enc.enc_attn_layers is None


# --- bad subnets ---------------------------------------------------------------------------------

def _layer(stack: str, i: int, **changes):
    def edit(sub: Subnet) -> Subnet:
        st = sub.stack(stack)
        layers = list(st.layers)
        layers[i] = replace(layers[i], **changes)
        return sub.with_stack(stack, replace(st, layers=tuple(layers)))
    return edit


def _stack(stack: str, **changes):
    return lambda sub: sub.with_stack(stack, replace(sub.stack(stack), **changes))


BAD_SUBNETS = [
    ("depth", lambda s: _stack("encoder", layers=s.encoder.layers * 2)(s), "encoder.layers",
     "depth 4 is not in space tiny; valid: 1, 2"),
    ("embed", _stack("decoder", embed_dim=12), "decoder.embed_dim",
     "embed_dim 12 is not in space tiny; valid: 8, 16"),
    ("operator", _layer("encoder", 1, operator="dynamic_conv"), "encoder.layers[1].operator",
     "operator 'dynamic_conv' is not in space tiny; valid: self_attention, lightweight_conv"),
    ("heads", _layer("decoder", 0, heads=4), "decoder.layers[0].heads", "valid: 1, 2"),
    ("activation", _layer("encoder", 0, activation="leaky_relu"), "encoder.layers[0].activation",
     "valid: relu, swish"),
    ("rpr", _layer("encoder", 0, rpr_len=8), "encoder.layers[0].rpr_len", "rpr_len 8 is not in space tiny"),
    ("rpr-decoder", _layer("decoder", 1, rpr_len=4), "decoder.layers[1].rpr_len", "valid: 0"),
    ("norm", _layer("decoder", 1, norm="pre"), "decoder.layers[1].norm", "valid: post"),
    ("ffn-outside", _layer("encoder", 0, ffn_dim=24), "encoder.layers[0].ffn_dim", "valid: 16, 32"),
    ("ffn-for-embed", lambda s: _layer("decoder", 0, ffn_dim=32)(_stack("decoder", embed_dim=8)(s)),
     "decoder.layers[0].ffn_dim", "ffn_dim 32 is not allowed with embed_dim 8 in space tiny; valid: 8, 16"),
    ("enc-attn-depth", lambda s: _stack("encoder", layers=s.encoder.layers[:1])(s),
     "decoder.layers[0].enc_attn_layers",
     "2 exceeds the encoder depth 1; valid: 1"),
    ("enc-attn-choice", _layer("decoder", 1, enc_attn_layers=3), "decoder.layers[1].enc_attn_layers",
     "enc_attn_layers 3 is not in space tiny; valid: 1, 2"),
    ("enc-attn-missing", _layer("decoder", 0, enc_attn_layers=None), "decoder.layers[0].enc_attn_layers",
     "valid: 1, 2"),
    ("enc-attn-encoder", _layer("encoder", 1, enc_attn_layers=1), "encoder.layers[1].enc_attn_layers",
     "only decoder layers"),
]


@pytest.mark.parametrize("edit,field,problem", [c[1:] for c in BAD_SUBNETS], ids=[c[0] for c in BAD_SUBNETS])
def test_bad_subnet(tiny, edit, field, problem):
    good = tiny.largest()
    tiny.validate_subnet(good, "good.json")
    bad = edit(good)
    with pytest.raises(SpaceError) as info:
        tiny.validate_subnet(bad, "bad_subnet.json")
    msg = str(info.value)
    assert msg.startswith(f"bad_subnet.json: {field}: "), msg
    assert problem in msg, msg
    assert not tiny.contains(bad)


# --- no torch / fairseq in the space package -----------------------------------------------------

def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module or "")
    return roots


def test_space_package_imports_no_torch_or_fairseq():
    files = sorted((REPO / "fairseq_nas" / "space").glob("*.py"))
    assert len(files) >= 8
    allowed = set(sys.stdlib_module_names) | {"numpy", "yaml"}
    for f in files:
        for mod in _imported_roots(f):
            if mod.startswith("fairseq_nas."):
                # errors and atomic are stdlib-only modules shared by every layer
                assert mod.startswith(("fairseq_nas.space", "fairseq_nas.errors", "fairseq_nas.atomic")), (f.name, mod)
            else:
                assert mod.split(".")[0] in allowed, (f.name, mod)
    for shared in ("errors.py", "atomic.py"):  # what the space may import from outside it: stdlib only
        assert all(m.split(".")[0] in sys.stdlib_module_names or m == "__future__"
                   for m in _imported_roots(REPO / "fairseq_nas" / shared)), shared


def test_space_and_cli_import_without_torch_at_runtime():
    """Import the space package and the space CLI with the parent package's __init__ (which
    registers fairseq modules) bypassed, then look at sys.modules."""
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('fairseq_nas'); pkg.__path__ = [{str(REPO / 'fairseq_nas')!r}]\n"
        "sys.modules['fairseq_nas'] = pkg\n"
        "import fairseq_nas.space, fairseq_nas.cli.main, fairseq_nas.cli.space_cmd\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fairseq'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _encode_by_name(sub, names):
    """A slow reference encoding, read off the subnet one feature name at a time."""
    codes = {"operator": OPERATORS, "activation": ACTIVATIONS, "norm": NORMS}
    row = []
    for name in names:
        prefix, gene, *slot = name.split(".")
        stack = sub.encoder if prefix == "enc" else sub.decoder
        if gene == "embed_dim":
            row.append(stack.embed_dim)
        elif gene == "layers":
            row.append(stack.depth)
        elif int(slot[0]) >= stack.depth:
            row.append(math.nan)
        else:
            value = getattr(stack.layers[int(slot[0])], gene)
            row.append(codes[gene].index(value) if gene in codes else value)
    return np.array(row, dtype=np.float64)


@pytest.mark.parametrize("name", ["shrinknas_iwslt14", "hat_iwslt14", "ranknas_wmt14"])
def test_encode_many_matches_a_feature_by_feature_reference(name):
    space = load_space(name)
    rng = random.Random(3)
    subs = [space.sample(rng) for _ in range(300)] + [space.largest(), space.smallest()]
    names = feature_names(space)
    X = encode_many(subs, space)
    np.testing.assert_array_equal(X, np.stack([_encode_by_name(s, names) for s in subs]))


def test_encode_rejects_an_unknown_operator():
    space = load_space("shrinknas_iwslt14")
    sub = space.largest()
    bad = sub.with_stack("encoder", StackConfig(sub.encoder.embed_dim, (replace(sub.encoder.layers[0],
                                                                                operator="rnn"),)))
    with pytest.raises(SpaceError, match="layers.operator: unknown value 'rnn'"):
        encode(bad, space)


def test_a_space_may_say_whether_embeddings_are_shared(tmp_path):
    """share_all_embeddings: the space decides when it says; a contradicting flag is a one-line error."""
    from fairseq_nas.space import parse_space
    from fairseq_nas.space.loader import builtin_space_path

    text = builtin_space_path("shrinknas_iwslt14").read_text()
    unsaid = parse_space(text, "a.yaml")
    assert unsaid.embeddings_shared(None) is None and unsaid.embeddings_shared(True) is True
    assert "share_all_embeddings" not in unsaid.to_yaml()  # an unsaid space's file stays as it was
    said = parse_space("share_all_embeddings: true\n" + text, "b.yaml")
    assert said.embeddings_shared(None) is True and said.embeddings_shared(True) is True
    assert parse_space(said.to_yaml(), "c.yaml") == said != unsaid
    with pytest.raises(SpaceError, match=r"^b\.yaml: share_all_embeddings: the space says true, the command line "
                                         r"has --no-share-all-embeddings: drop"):
        said.embeddings_shared(False)
    with pytest.raises(SpaceError, match=r"^d\.yaml: share_all_embeddings: expected true or false, got 'yes please'"):
        parse_space("share_all_embeddings: yes please\n" + text, "d.yaml")
