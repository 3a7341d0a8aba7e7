"""Analytic params and FLOPs (fairseq_nas.latency.costs) against the built models and torch's
own FLOP counter."""
from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fairseq_nas
from fairseq_nas.latency.costs import count_flops, count_params, flops_breakdown
from fairseq_nas.latency.measure import beam_decode
from fairseq_nas.models.config import SupernetConfig, resolve_space
from fairseq_nas.models.export import _SizedDictionary, build_subnet_model, subnet_config
from fairseq_nas.modules.convolution import _ElasticConvBase
from fairseq_nas.space import Subnet, list_builtin_spaces, load_space, parse_space
from model_utils import SMALL_SPACES

fairseq_nas.register()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def small_space(name: str):
    """The shipped space at test-sized dims (the overrides tests/model_utils.py uses)."""
    return resolve_space(SupernetConfig(search_space=name, **SMALL_SPACES[name]))


def build(subnet, space, src_vocab, tgt_vocab, share=False, untie=False):
    src = _SizedDictionary(src_vocab, 1)
    tgt = src if share else _SizedDictionary(tgt_vocab, 1)
    cfg = subnet_config({"share_all_embeddings": share, "untie_decoder_output": untie, "dropout": 0.0}, subnet,
                        space.to_yaml())
    return build_subnet_model(cfg, src, tgt).eval()


def torch_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_shipped_space_is_covered():
    assert set(SMALL_SPACES) == set(list_builtin_spaces())


@pytest.mark.parametrize("name", sorted(SMALL_SPACES))
def test_count_params_equals_the_built_model(name):
    space = small_space(name)
    rng = random.Random(hash(name) % 1000)
    subnets = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(10)]
    for i, subnet in enumerate(subnets):
        share, untie = i % 3 == 0, i % 2 == 1
        src_vocab, tgt_vocab = (53, 53) if share else (53, 41)
        model = build(subnet, space, src_vocab, tgt_vocab, share, untie)
        assert count_params(subnet, space, src_vocab, tgt_vocab, share, untie) == torch_params(model), (
            f"{name} subnet {i} (share={share}, untie={untie}): {subnet.to_json()}")


@pytest.mark.parametrize("name", ["shrinknas_iwslt14", "hat_iwslt14"])
def test_count_params_at_real_dims(name):
    """The shipped dims themselves (fixed qkv 512 in HAT, 160-320 with five operators in ShrinkNAS)."""
    space = load_space(name)
    rng = random.Random(3)
    for subnet in [space.smallest()] + [space.sample(rng) for _ in range(2)]:
        model = build(subnet, space, 30, 30)
        assert count_params(subnet, space, 30, 30) == torch_params(model)


def test_shared_embedding_is_counted_once_at_the_wider_width():
    space = small_space("hat_iwslt14")
    sub = space.smallest()
    sub = sub.with_stack("decoder", type(sub.decoder)(24, sub.decoder.layers))  # encoder 16, decoder 24
    shared = count_params(sub, space, 50, 50, share_all_embeddings=True)
    separate = count_params(sub, space, 50, 50)
    assert separate - shared == 50 * 16  # the encoder's own table is gone; the shared one is 24 wide
    assert shared == torch_params(build(sub, space, 50, 50, share=True))
    with pytest.raises(ValueError):
        count_params(sub, space, 50, 49, share_all_embeddings=True)


def torch_flops(model, src_len: int, tgt_len: int, beam: int, tgt_vocab: int) -> int:
    """FlopCounterMode's count of the latency protocol's computation: encoder + beam decoding."""
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(4, len(model.encoder.dictionary), (1, src_len), generator=gen)
    windows, _ElasticConvBase.fast_max_len = _ElasticConvBase.fast_max_len, 0  # the K-tap reference path
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            encoder_out = model.encoder(src, torch.tensor([src_len]))
            beam_decode(model, encoder_out, beam, tgt_len, tgt_vocab)
    finally:
        _ElasticConvBase.fast_max_len = windows
    return counter.get_total_flops()


def unseen_by_flop_counter(subnet: Subnet, space, parts: dict[str, int], src_len: int, tgt_len: int,
                           beam: int) -> int:
    """What torch's counter cannot see (it counts mm/bmm/addmm/conv only):
    - convolutions, which `torch_flops` runs on their windowed reference path (elementwise
      products of K taps, the intrinsic cost count_flops counts; the fast full-sequence paths
      are band matmuls whose T x T products the counter would see instead);
    - relative-position products whose contraction runs over a dimension of size 1, which einsum
      computes as an elementwise product: the key-table product when the head width is 1 (e.g.
      16 heads on 16 channels), the value-table product at the first decoder step (one key).
    Everything else must agree exactly, so the tolerance is 0 after this adjustment."""
    n = sum(parts[f"{st}.{op}"] for st in ("encoder", "decoder") for op in ("dynamic_conv", "lightweight_conv"))
    for name in ("encoder", "decoder"):
        st = subnet.stack(name)
        for lay in st.layers:
            if not lay.rpr_len or lay.operator not in ("self_attention", "lsra_lightweight", "lsra_dynamic"):
                continue
            width = (space.stack(name).qkv_dim or st.embed_dim) if lay.operator == "self_attention" \
                else st.embed_dim // 2
            head_dim = width // lay.heads
            if name == "encoder":
                n += 2 * src_len * src_len * width if head_dim == 1 else 0
                continue
            for keys in range(1, tgt_len + 1):
                n += 2 * beam * keys * width if head_dim == 1 else 0
                n += 2 * beam * width if keys == 1 else 0
    return n


@pytest.mark.parametrize("name", sorted(SMALL_SPACES))
def test_count_flops_agrees_with_torch_flop_counter(name):
    space = small_space(name)
    rng = random.Random(7)
    src_len, tgt_len, beam, vocab = 6, 4, 3, 37
    for subnet in [space.largest()] + [space.sample(rng) for _ in range(3)]:
        model = build(subnet, space, vocab, vocab)
        parts = flops_breakdown(subnet, space, src_len, tgt_len, vocab, beam)
        total = count_flops(subnet, space, src_len, tgt_len, vocab, beam)
        assert total == sum(parts.values())
        got = torch_flops(model, src_len, tgt_len, beam, vocab)
        assert got == total - unseen_by_flop_counter(subnet, space, parts, src_len, tgt_len, beam), subnet.to_json()


TINY_FIXED_QKV = """
name: tiny_fixed_qkv
encoder: {layers: [2], embed_dim: [16], ffn_dim: [32], heads: [2], qkv_dim: 32}
decoder: {layers: [1], embed_dim: [16], ffn_dim: [32], heads: [2], qkv_dim: 32, enc_attn_layers: [1, 2]}
"""


def test_count_flops_of_a_plain_transformer_by_hand():
    """One encoder and one decoder self-attention layer, embed 16, FFN 32, one decoder step."""
    space = parse_space(TINY_FIXED_QKV)
    lay = dict(operator="self_attention", ffn_dim=32, heads=2, activation="relu", rpr_len=0, norm="post")
    sub = Subnet.from_dict({"encoder": {"embed_dim": 16, "layers": [lay] * 2},
                            "decoder": {"embed_dim": 16, "layers": [dict(lay, enc_attn_layers=2)]}})
    space.validate_subnet(sub)
    e, q, f, s, v = 16, 32, 32, 5, 11
    encoder = 2 * (s * 4 * e * q + 2 * s * s * q + s * 2 * e * f) * 2  # 2 layers, MACs x 2
    memory = 2 * s  # attends to the last 2 encoder layers
    decoder = 2 * (4 * e * q + 2 * 1 * q  # self-attention over 1 position
                   + 2 * e * q + 2 * memory * e * q + 2 * memory * q  # enc-dec: q/out, k/v (first step), attention
                   + 2 * e * f + e * v)  # FFN, output projection
    assert count_flops(sub, space, s, 1, v, beam=1) == encoder + decoder
    # the decoder part scales with the beam; the encoder runs once
    assert count_flops(sub, space, s, 1, v, beam=3) == encoder + 3 * decoder


def test_costs_module_does_not_import_torch():
    code = ("import sys, fairseq_nas.latency, fairseq_nas.latency.costs; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
