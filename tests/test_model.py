"""The supernet as a whole: incremental decoding equals full-sequence decoding for random
subnets of every shipped space, and subnets outside the space are rejected."""
from __future__ import annotations

import random

import pytest
import torch

from fairseq_nas.errors import SpaceError
from fairseq_nas.space import LayerConfig, StackConfig
from model_utils import SMALL_SPACES, build_supernet


def _batch(dictionary, bsz=3, src_len=9, tgt_len=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    nspecial = dictionary.nspecial
    src = torch.randint(nspecial, len(dictionary), (bsz, src_len), generator=g)
    src[1, :3] = dictionary.pad()  # left padding, as fairseq batches sources
    tgt = torch.randint(nspecial, len(dictionary), (bsz, tgt_len), generator=g)
    tgt[:, 0] = dictionary.eos()
    lengths = src.ne(dictionary.pad()).sum(1)
    return src, lengths, tgt


@pytest.mark.parametrize("space", sorted(SMALL_SPACES))
def test_incremental_decoding_equals_full_sequence(space):
    torch.manual_seed(0)
    model = build_supernet(space)
    src, lengths, tgt = _batch(model.decoder.dictionary)
    rng = random.Random(1)
    for _ in range(4):
        model.set_subnet(model.space.sample(rng))
        with torch.no_grad():
            enc = model.encoder(src, lengths)
            full, _ = model.decoder(tgt, enc)
            state: dict = {}
            steps = [model.decoder(tgt[:, : t + 1], enc, incremental_state=state)[0] for t in range(tgt.size(1))]
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_beam_reordering_of_the_whole_decoder_state():
    torch.manual_seed(0)
    model = build_supernet("shrinknas_iwslt14")
    src, lengths, tgt = _batch(model.decoder.dictionary, bsz=4)
    order = torch.tensor([2, 2, 0, 3])
    model.set_subnet(model.space.sample(random.Random(3)))
    with torch.no_grad():
        enc = model.encoder(src, lengths)
        state: dict = {}
        for t in range(3):
            model.decoder(tgt[:, : t + 1], enc, incremental_state=state)
        model.decoder.reorder_incremental_state_scripting(state, order)
        enc_r = model.encoder.reorder_encoder_out(enc, order)
        tgt_r = tgt[order]
        steps = [model.decoder(tgt_r[:, : t + 1], enc_r, incremental_state=state)[0] for t in range(3, tgt.size(1))]
        full, _ = model.decoder(tgt_r, model.encoder(src[order], lengths[order]))
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 3:], atol=1e-5, rtol=0)


def test_operators_share_nothing_across_families():
    model = build_supernet("shrinknas_iwslt14")
    layer = model.encoder.layers[0]
    ptrs = {op: {p.data_ptr() for p in m.parameters()} for op, m in layer.mixers.items()}
    ops = list(ptrs)
    for i, a in enumerate(ops):
        for b in ops[i + 1:]:
            assert not ptrs[a] & ptrs[b], (a, b)


def test_subnet_outside_the_space_is_rejected():
    model = build_supernet("shrinknas_iwslt14")
    good = model.space.largest()
    bad_ffn = good.with_stack("encoder", StackConfig(good.encoder.embed_dim, tuple(
        LayerConfig(**{**lay.to_dict(), "ffn_dim": 7}) for lay in good.encoder.layers)))
    with pytest.raises(SpaceError, match="encoder.layers"):
        model.set_subnet(bad_ffn)
    too_deep = good.with_stack("decoder", StackConfig(good.decoder.embed_dim, good.decoder.layers * 2))
    with pytest.raises(SpaceError, match="decoder"):
        model.set_subnet(too_deep)


def test_small_subnet_uses_fewer_parameters_in_the_forward_pass():
    """The active subnet really changes the computation: gradients reach only its slices."""
    model = build_supernet("shrinknas_iwslt14").train()
    src, lengths, tgt = _batch(model.decoder.dictionary)
    model.set_subnet(model.space.smallest())
    out, _ = model(src, lengths, tgt)
    out.sum().backward()
    fc1 = model.encoder.layers[0].ffn.fc1.weight
    smallest = model.space.smallest().encoder
    used_rows, used_cols = smallest.layers[0].ffn_dim, smallest.embed_dim
    assert fc1.grad[:used_rows, :used_cols].abs().sum() > 0
    assert fc1.grad[used_rows:].abs().sum() == 0 and fc1.grad[:, used_cols:].abs().sum() == 0
    unused_op = [op for op in model.encoder.layers[0].mixers if op != smallest.layers[0].operator][0]
    assert all(p.grad is None for p in model.encoder.layers[0].mixers[unused_op].parameters())
