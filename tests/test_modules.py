"""Elastic modules: a sliced configuration equals a plain module built from the sliced
weights, and incremental decoding equals full-sequence decoding."""
from __future__ import annotations

import pytest
import torch
from fairseq.modules import DynamicConv1dTBC, LightweightConv1dTBC, MultiheadAttention
from torch import nn

from fairseq_nas.modules import (
    ElasticAttention,
    ElasticConvBlock,
    ElasticDynamicConv,
    ElasticFeedForward,
    ElasticLayerNorm,
    ElasticLightweightConv,
    ElasticLinear,
    MixerMax,
    build_mixer,
)
from fairseq_nas.modules.basic import sinusoidal_table

ATOL = 1e-5
T, B = 7, 3


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomize(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.normal_(p, std=0.3)
    return module.eval()


def test_linear_and_layernorm_equal_sliced_plain_modules():
    lin = _randomize(ElasticLinear(16, 24))
    x = torch.randn(T, B, 10)
    plain = nn.Linear(10, 13)
    plain.weight.data = lin.weight[:13, :10].detach().clone()
    plain.bias.data = lin.bias[:13].detach().clone()
    torch.testing.assert_close(lin(x, 13), plain(x), atol=ATOL, rtol=0)

    ln = _randomize(ElasticLayerNorm(16))
    plain_ln = nn.LayerNorm(10)
    plain_ln.weight.data = ln.weight[:10].detach().clone()
    plain_ln.bias.data = ln.bias[:10].detach().clone()
    torch.testing.assert_close(ln(x), plain_ln(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("activation,fn", [("relu", torch.relu), ("swish", nn.functional.silu),
                                           ("leaky_relu", lambda h: nn.functional.leaky_relu(h, 0.01))])
def test_feedforward_equals_plain(activation, fn):
    ffn = _randomize(ElasticFeedForward(16, 40))
    x = torch.randn(T, B, 12)
    w1, b1 = ffn.fc1.weight[:30, :12], ffn.fc1.bias[:30]
    w2, b2 = ffn.fc2.weight[:12, :30], ffn.fc2.bias[:12]
    expected = nn.functional.linear(fn(nn.functional.linear(x, w1, b1)), w2, b2)
    torch.testing.assert_close(ffn(x, 30, activation), expected, atol=ATOL, rtol=0)


def test_sinusoidal_table_matches_fairseq():
    from fairseq.modules import SinusoidalPositionalEmbedding

    ours = sinusoidal_table(50, 24, padding_idx=1)
    theirs = SinusoidalPositionalEmbedding.get_embedding(50, 24, padding_idx=1)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def _copy_attention(el: ElasticAttention, mha: MultiheadAttention, qkv: int, q_in: int, kv_in: int):
    for name in ("q_proj", "k_proj", "v_proj"):
        src = getattr(el, name)
        in_dim = q_in if name == "q_proj" else kv_in
        getattr(mha, name).weight.data = src.weight[:qkv, :in_dim].detach().clone()
        getattr(mha, name).bias.data = src.bias[:qkv].detach().clone()
    mha.out_proj.weight.data = el.out_proj.weight[:q_in, :qkv].detach().clone()
    mha.out_proj.bias.data = el.out_proj.bias[:q_in].detach().clone()


@pytest.mark.parametrize("heads,qkv", [(2, 12), (4, 16), (3, 12)])
def test_attention_equals_fairseq_multihead_attention(heads, qkv):
    el = _randomize(ElasticAttention(16, 20, 24, 12, 0))
    q_in, kv_in = 12, 14
    mha = MultiheadAttention(qkv, heads, kdim=kv_in, vdim=kv_in, encoder_decoder_attention=True).eval()
    # fairseq's MHA projects queries from embed_dim = qkv; compare via a query already of width qkv.
    q_in = qkv
    _copy_attention(el, mha, qkv, q_in, kv_in)
    query = torch.randn(T, B, q_in)
    key = torch.randn(9, B, kv_in)
    pad = torch.zeros(B, 9, dtype=torch.bool)
    pad[1, :3] = True
    out = el(query, key, heads=heads, qkv_dim=qkv, key_padding_mask=pad)
    ref, _ = mha(query, key, key, key_padding_mask=pad, need_weights=False)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def _reference_rpr_attention(el, x, heads, qkv, rpr, mask):
    """Shaw et al. relative attention written out directly, with plain tensors."""
    t, b, c = x.shape
    hd = qkv // heads
    q = nn.functional.linear(x, el.q_proj.weight[:qkv, :c], el.q_proj.bias[:qkv]) * hd**-0.5
    k = nn.functional.linear(x, el.k_proj.weight[:qkv, :c], el.k_proj.bias[:qkv])
    v = nn.functional.linear(x, el.v_proj.weight[:qkv, :c], el.v_proj.bias[:qkv])
    q, k, v = (z.view(t, b, heads, hd) for z in (q, k, v))
    out = torch.zeros(t, b, heads, hd)
    for i in range(t):
        logits = torch.zeros(b, heads, t)
        rel_k, rel_v = [], []
        for j in range(t):
            d = max(-rpr, min(rpr, j - i))
            row = 2 * abs(d) - (1 if d > 0 else 0)
            rel_k.append(el.rel_keys[row, :hd])
            rel_v.append(el.rel_values[row, :hd])
            logits[:, :, j] = (q[i] * (k[j] + rel_k[-1])).sum(-1)
            if mask is not None and j > i:
                logits[:, :, j] = float("-inf")
        p = logits.softmax(-1)
        for j in range(t):
            out[i] += p[:, :, j].unsqueeze(-1) * (v[j] + rel_v[j])
    out = out.view(t, b, qkv)
    return nn.functional.linear(out, el.out_proj.weight[:c, :qkv], el.out_proj.bias[:c])


@pytest.mark.parametrize("rpr", [1, 3])
def test_relative_attention_equals_reference(rpr):
    el = _randomize(ElasticAttention(16, 16, 16, 8, max_rpr_len=4))
    x = torch.randn(6, 2, 12)
    out = el(x, x, heads=2, qkv_dim=12, rpr_len=rpr)
    ref = _reference_rpr_attention(el, x, 2, 12, rpr, None)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def _to_fairseq_order(c: int, heads: int) -> torch.Tensor:
    """Our channel i * heads + j belongs to head j; fairseq's head j owns a block of C / heads
    channels. Index k of the result: our channel at fairseq's position k."""
    return torch.arange(c).view(c // heads, heads).t().reshape(-1)


KERNELS = [3, 7, 15, 31]
CONV_LENGTHS = [1, 5, 40]  # one token, shorter than most kernels, longer than all of them


def _conv_pair(kind: str, k: int, causal: bool, c: int = 12, heads: int = 4, weight_dropout: float = 0.0):
    """(ours, fairseq's module with the same weights, ours' weight grad, fairseq's weight grad in
    the same layout): fairseq's channels are ours permuted by `_to_fairseq_order`."""
    pad = k - 1 if causal else k // 2
    order = _to_fairseq_order(c, heads)
    if kind == "lightweight":
        conv = _randomize(ElasticLightweightConv(max_heads=8, kernel_size=k, causal=causal,
                                                 weight_dropout=weight_dropout))
        ref = LightweightConv1dTBC(c, kernel_size=k, padding_l=pad, num_heads=heads, weight_softmax=True).eval()
        ref.weight.data = conv.weight[:heads].detach().clone().unsqueeze(1)
        return conv, ref, lambda: conv.weight.grad[:heads], lambda: ref.weight.grad.squeeze(1)
    conv = _randomize(ElasticDynamicConv(embed_max=16, max_heads=8, kernel_size=k, causal=causal,
                                         weight_dropout=weight_dropout))
    ref = DynamicConv1dTBC(c, kernel_size=k, padding_l=pad, num_heads=heads, weight_softmax=True).eval()
    # fairseq's kernel predictor reads the input in its channel order
    ref.weight_linear.weight.data = conv.weight_linear.weight[: heads * k, :c][:, order].detach().clone()
    return (conv, ref, lambda: conv.weight_linear.weight.grad[: heads * k, :c][:, order],
            lambda: ref.weight_linear.weight.grad)


# Weight gradients sum T x B x C / H products: float32 rounding is relative to their size.
GRAD_W_RTOL = 1e-5


def _fwd_bwd(call, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    out = call(x)
    out.backward(grad)
    return out.detach(), x.grad


def test_lightweight_conv_equals_fairseq():
    conv, ref, _, _ = _conv_pair("lightweight", 5, causal=False)
    c, heads = 12, 4
    x = torch.randn(T, B, c)
    order = _to_fairseq_order(c, heads)
    expected = torch.empty_like(x)
    expected[..., order] = ref(x[..., order])
    torch.testing.assert_close(conv(x, heads), expected, atol=ATOL, rtol=0)


def _fairseq_cases():
    """fairseq's unfold path, causal with K > T, renormalises the softmax over the T taps it can
    reach (its band path and its incremental decoding do not): compared with its band path only."""
    for kind in ("lightweight", "dynamic"):
        for causal in (False, True):
            for k in KERNELS:
                for t in CONV_LENGTHS + [200]:
                    for unfold in (False, True):
                        if not (unfold and causal and k > t):
                            name = f"{kind}-{'decoder' if causal else 'encoder'}-K{k}-T{t}"
                            yield pytest.param(kind, causal, k, t, unfold,
                                               id=f"{name}-fairseq_{'unfold' if unfold else 'band'}")


@pytest.mark.parametrize("kind,causal,k,t,fairseq_unfold", list(_fairseq_cases()))
def test_conv_equals_fairseq_forward_and_backward(kind, causal, k, t, fairseq_unfold):
    """Full sequences (our fast paths; the dynamic conv's windows at T = 200 where cheaper) against
    fairseq's module (its band-matrix path and its unfold path): output, input gradient and the
    kernel (lightweight) or kernel predictor (dynamic) gradient, in fairseq's channel order."""
    c, heads = 12, 4
    conv, ref, ours_gw, ref_gw = _conv_pair(kind, k, causal)
    order = _to_fairseq_order(c, heads)
    x, grad = torch.randn(t, B, c), torch.randn(t, B, c)
    out, gx = _fwd_bwd(lambda x: conv(x, heads), x, grad)
    ref_out, ref_gx = _fwd_bwd(lambda x: ref(x, unfold=fairseq_unfold), x[..., order], grad[..., order])
    torch.testing.assert_close(out[..., order], ref_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx[..., order], ref_gx, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_gw(), ref_gw(), atol=ATOL, rtol=GRAD_W_RTOL)


@pytest.mark.parametrize("kind", ["lightweight", "dynamic"])
@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "decoder"])
@pytest.mark.parametrize("k", KERNELS)
@pytest.mark.parametrize("t", CONV_LENGTHS)
def test_conv_fast_path_equals_window_path(kind, causal, k, t):
    """The full-sequence fast path (band matrix for the dynamic conv, depthwise conv2d with its own
    backward for the lightweight one) against windows of K inputs times the kernels, with weight
    dropout on: both paths see the same dropped kernels."""
    c, heads = 12, 4
    conv, _, ours_gw, _ = _conv_pair(kind, k, causal, weight_dropout=0.3)
    conv.train()
    x, grad = torch.randn(t, B, c), torch.randn(t, B, c)
    results = []
    for fast_max_len in (None, 0):
        conv.fast_max_len = fast_max_len
        conv.zero_grad(set_to_none=True)
        torch.manual_seed(7)  # the same dropout mask on both paths
        results.append((*_fwd_bwd(lambda x: conv(x, heads), x, grad), ours_gw().clone()))
    assert conv._use_fast(t, None) is False  # fast_max_len = 0 was the windowed path
    conv.fast_max_len = None
    assert conv._use_fast(t, None)
    for fast, window, rtol in zip(*results, (0, 0, GRAD_W_RTOL)):
        torch.testing.assert_close(fast, window, atol=ATOL, rtol=rtol)
    # weight dropout did act on the kernels
    conv.eval()
    with torch.no_grad():
        assert (conv(x, heads) - results[0][0]).abs().max() > 1e-3


def test_lightweight_conv_cases_cover_both_full_sequence_paths():
    """The cases above reach the lightweight conv's band path and its conv2d path, both causal and not."""
    for causal in (False, True):
        picks = {ElasticLightweightConv(4, k, causal)._band_is_cheaper(t) for k in KERNELS for t in CONV_LENGTHS}
        assert picks == {False, True}, causal


@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "decoder"])
@pytest.mark.parametrize("k", [3, 31])
def test_lightweight_conv2d_with_autograds_backward_equals_fairseq(monkeypatch, causal, k):
    """Off CPU (or without oneDNN) the conv2d path keeps autograd's own backward: same results."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    c, heads, t = 12, 4, 80
    conv, ref, ours_gw, ref_gw = _conv_pair("lightweight", k, causal)
    assert not conv._band_is_cheaper(t)
    order = _to_fairseq_order(c, heads)
    x, grad = torch.randn(t, B, c), torch.randn(t, B, c)
    out, gx = _fwd_bwd(lambda x: conv(x, heads), x, grad)
    ref_out, ref_gx = _fwd_bwd(lambda x: ref(x), x[..., order], grad[..., order])
    torch.testing.assert_close(out[..., order], ref_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx[..., order], ref_gx, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_gw(), ref_gw(), atol=ATOL, rtol=GRAD_W_RTOL)


@pytest.mark.parametrize("kind", ["lightweight", "dynamic"])
@pytest.mark.parametrize("k", KERNELS)
def test_incremental_conv_equals_fairseq_and_full_sequence(kind, k):
    """Decoding one step at a time (the windowed path) equals fairseq's incremental decoding and our
    full-sequence fast path, forward and backward (gradients through the steps)."""
    c, heads, t = 12, 4, 9
    conv, ref, ours_gw, ref_gw = _conv_pair(kind, k, causal=True)
    order = _to_fairseq_order(c, heads)
    x, grad = torch.randn(t, B, c), torch.randn(t, B, c)
    out, gx = _fwd_bwd(lambda x: _run_incremental(lambda step, st: conv(step, heads, incremental_state=st), x),
                       x, grad)
    ref_out, ref_gx = _fwd_bwd(lambda x: _run_incremental(lambda step, st: ref(step, incremental_state=st), x),
                               x[..., order], grad[..., order])
    torch.testing.assert_close(out[..., order], ref_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx[..., order], ref_gx, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_gw(), ref_gw(), atol=ATOL, rtol=GRAD_W_RTOL)
    inc_gw = ours_gw().clone()
    conv.zero_grad(set_to_none=True)
    full, full_gx = _fwd_bwd(lambda x: conv(x, heads), x, grad)
    torch.testing.assert_close(out, full, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx, full_gx, atol=ATOL, rtol=0)
    torch.testing.assert_close(inc_gw, ours_gw(), atol=ATOL, rtol=GRAD_W_RTOL)


@pytest.mark.parametrize("dynamic", [False, True], ids=["lightweight", "dynamic"])
@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "decoder"])
@pytest.mark.parametrize("left_pad", [False, True], ids=["right_pad", "left_pad"])
def test_conv_block_on_a_padded_batch_equals_each_sentence_alone(dynamic, causal, left_pad):
    """Padding is masked to zero before the convolution, so on the fast paths a sentence's outputs
    do not depend on the padding around it (left padding, as fairseq pads sources, or right)."""
    block = _randomize(ElasticConvBlock(16, 4, 7, causal=causal, dynamic=dynamic))
    lengths, t = [9, 4, 1], 9
    x = torch.randn(t, len(lengths), 16)
    pad = torch.zeros(len(lengths), t, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if left_pad:
            pad[i, : t - n] = True
        else:
            pad[i, n:] = True
    out = block(x, 4, padding_mask=pad)
    for i in range(len(lengths)):
        real = ~pad[i]
        alone = block(x[real, i:i + 1], 4)
        torch.testing.assert_close(out[real, i:i + 1], alone, atol=ATOL, rtol=0)


def test_dynamic_conv_equals_fairseq():
    conv, ref, _, _ = _conv_pair("dynamic", 5, causal=True)
    c, heads = 12, 4
    order = _to_fairseq_order(c, heads)
    x = torch.randn(T, B, c)
    expected = torch.empty_like(x)
    expected[..., order] = ref(x[..., order], unfold=True)
    torch.testing.assert_close(conv(x, heads), expected, atol=ATOL, rtol=0)


def _run_incremental(module_call, x: torch.Tensor, reorder=None):
    """Feed x one step at a time through module_call(step, incremental_state)."""
    state: dict = {}
    outs = []
    for t in range(x.size(0)):
        outs.append(module_call(x[t:t + 1], state))
    return torch.cat(outs, dim=0)


MIXER_OPS = ["self_attention", "lightweight_conv", "dynamic_conv", "lsra_lightweight", "lsra_dynamic"]


@pytest.mark.parametrize("op", MIXER_OPS)
@pytest.mark.parametrize("rpr", [0, 2])
def test_incremental_equals_full_sequence_for_every_decoder_operator(op, rpr):
    m = MixerMax(embed=24, qkv=24, heads=4, head_dim=12, rpr_len=3, kernel_size=5)
    mixer = _randomize(build_mixer(op, m, causal=True))
    x = torch.randn(9, B, 16)
    qkv, heads = 16, 2
    mask = torch.triu(torch.full((9, 9), float("-inf")), 1)
    full = mixer(x, heads=heads, qkv_dim=qkv, rpr_len=rpr, padding_mask=None, attn_mask=mask,
                 incremental_state=None)
    inc = _run_incremental(lambda step, st: mixer(step, heads=heads, qkv_dim=qkv, rpr_len=rpr, padding_mask=None,
                                                  attn_mask=None, incremental_state=st), x)
    torch.testing.assert_close(inc, full, atol=ATOL, rtol=0)


def test_incremental_state_reorders_with_beam():
    block = _randomize(ElasticConvBlock(16, 4, 5, causal=True, dynamic=True))
    x = torch.randn(6, 4, 16)
    order = torch.tensor([3, 1, 0, 2])
    state: dict = {}
    for t in range(3):
        block(x[t:t + 1], 2, incremental_state=state)
    block.conv.reorder_incremental_state(state, order)
    out_reordered = torch.cat([block(x[t:t + 1, order], 2, incremental_state=state) for t in range(3, 6)])
    full = block(x[:, order], 2)
    torch.testing.assert_close(out_reordered, full[3:], atol=ATOL, rtol=0)


def test_slicing_is_front_slicing_for_every_parameter():
    """A mixer built at smaller maxima has each parameter's shape <= the big one's, and with the
    leading slices copied in, computes the same function (the export contract's basis)."""
    big_m = MixerMax(embed=24, qkv=24, heads=4, head_dim=12, rpr_len=3, kernel_size=5)
    small_m = MixerMax(embed=16, qkv=16, heads=2, head_dim=8, rpr_len=2, kernel_size=5)
    for op in MIXER_OPS:
        big = _randomize(build_mixer(op, big_m, causal=False))
        small = build_mixer(op, small_m, causal=False).eval()
        big_params = dict(big.named_parameters())
        for name, p in small.named_parameters():
            src = big_params[name]
            p.data = src[tuple(slice(0, s) for s in p.shape)].detach().clone()
        x = torch.randn(T, B, 16)
        kw = dict(heads=2, qkv_dim=16, rpr_len=2, padding_mask=None, attn_mask=None, incremental_state=None)
        torch.testing.assert_close(small(x, **kw), big(x, **kw), atol=ATOL, rtol=0, msg=op)
