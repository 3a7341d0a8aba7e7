"""Analytic parameter and FLOP counts of a subnet's standalone model (pure Python, no torch).

`count_params` equals exactly ``sum(p.numel() for p in model.parameters())`` of the
`nas_subnet` model that `fairseq_nas.models.export.build_subnet_model` builds for the
subnet (tests/test_costs.py checks it on random subnets of every shipped space).

`count_flops` counts 2 x the multiply-accumulates of translating one sentence the way the
latency protocol runs it (`fairseq_nas.latency.measure`): the encoder once on `src_len`
tokens (batch 1); the decoder incrementally, one step per target token, `tgt_len` steps
for `beam` hypotheses (the encoder output expanded to the beam, as fairseq's beam search
does). Counted:

- every linear projection (q/k/v/out, the GLU value/gate/out linears of convolution
  blocks, the dynamic-convolution kernel predictor, FFN, the decoder's output projection
  over the target vocabulary); weights only, bias additions are not counted;
- attention scores (Q K^T) and the weighted sum of values (P V), and with relative
  positions (rpr_len > 0) the two extra products with the key and value tables;
  decoder self-attention at step t attends to t + 1 positions; encoder-decoder attention
  to k x src_len keys, whose k/v projections are computed once, at the first step, for
  every beam hypothesis;
- convolution kernels: K multiply-accumulates per channel and token for lightweight and
  dynamic convolutions over full sequences; min(t + 1, K) at decoder step t (the
  incremental window).

Not counted: embedding lookups, positions, softmax, layer norm, activations, residual
additions, biases, the GLU sigmoid and product, beam-search top-k. These are exactly what
`torch.utils.flop_counter.FlopCounterMode` leaves out too (it counts mm/bmm/addmm/conv);
it does *not* see the convolutions that the model computes with elementwise products
(dynamic convolution everywhere, lightweight convolution in incremental decoding), which
`flops_breakdown` reports apart for that reason.
"""
from __future__ import annotations

from typing import Optional

from fairseq_nas.space import LayerConfig, SearchSpace, Subnet

LSRA = ("lsra_lightweight", "lsra_dynamic")
PLAIN_CONV = ("lightweight_conv", "dynamic_conv")

BREAKDOWN_KEYS = tuple(f"{stack}.{part}" for stack in ("encoder", "decoder")
                       for part in ("linear", "attention", "lightweight_conv", "dynamic_conv")) + (
    "output_projection",)


# ----------------------------------------------------------------------------------------
# Parameters


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _attention_params(q_in: int, kv_in: int, qkv: int, heads: int, rpr_len: int) -> int:
    """q/k/v/out projections with biases; relative key and value tables of (2r + 1) x head_dim."""
    n = _linear(q_in, qkv) + 2 * _linear(kv_in, qkv) + _linear(qkv, q_in)
    if rpr_len > 0:
        n += 2 * (2 * rpr_len + 1) * (qkv // heads)
    return n


def _conv_block_params(width: int, heads: int, kernel: int, dynamic: bool) -> int:
    """GLU value and gate linears, the convolution, the output linear."""
    n = 3 * _linear(width, width)
    n += _linear(width, heads * kernel, bias=False) if dynamic else heads * kernel
    return n


def _mixer_params(lay: LayerConfig, embed: int, qkv: int, kernel: int) -> int:
    op = lay.operator
    if op == "self_attention":
        return _attention_params(embed, embed, qkv, lay.heads, lay.rpr_len)
    if op in PLAIN_CONV:
        return _conv_block_params(embed, lay.heads, kernel, op == "dynamic_conv")
    if op in LSRA:
        half = embed // 2
        return (_attention_params(half, half, half, lay.heads, lay.rpr_len)
                + _conv_block_params(half, lay.heads, kernel, op == "lsra_dynamic"))
    raise ValueError(f"unknown operator {op!r}")


def uses_final_norm(subnet: Subnet, name: str) -> bool:
    """Whether the standalone model builds the stack's final layer norm (as models/plan.py decides):
    the decoder after a pre-norm last layer; the encoder if the decoder attends to a state that a
    pre-norm encoder layer produced."""
    if name == "decoder":
        return subnet.decoder.layers[-1].norm == "pre"
    k = max(lay.enc_attn_layers or 1 for lay in subnet.decoder.layers)
    return any(lay.norm == "pre" for lay in subnet.encoder.layers[-k:])


def _qkv(space: SearchSpace, name: str, embed: int) -> int:
    return space.stack(name).qkv_dim or embed


def stack_params(subnet: Subnet, space: SearchSpace, name: str) -> int:
    """Parameters of one stack's layers and final norm (no embeddings)."""
    st = subnet.stack(name)
    e = st.embed_dim
    qkv = _qkv(space, name, e)
    kernels = space.stack(name).kernel_size
    n = 0
    for i, lay in enumerate(st.layers):
        n += _mixer_params(lay, e, qkv, kernels[i]) + 2 * e  # mixer and its norm
        if name == "decoder":
            n += _attention_params(e, subnet.encoder.embed_dim, qkv, lay.heads, 0) + 2 * e
        n += _linear(e, lay.ffn_dim) + _linear(lay.ffn_dim, e) + 2 * e  # FFN and its norm
    if uses_final_norm(subnet, name):
        n += 2 * e
    return n


def embedding_params(subnet: Subnet, src_vocab: int, tgt_vocab: int, share_all_embeddings: bool = False,
                     untie_decoder_output: bool = False) -> int:
    """Token embeddings (one shared table when share_all_embeddings) and the untied output projection."""
    enc, dec = subnet.encoder.embed_dim, subnet.decoder.embed_dim
    if share_all_embeddings:
        if src_vocab != tgt_vocab:
            raise ValueError("share_all_embeddings needs one (joined) vocabulary: "
                             f"got {src_vocab} source and {tgt_vocab} target symbols")
        n = src_vocab * max(enc, dec)
    else:
        n = src_vocab * enc + tgt_vocab * dec
    if untie_decoder_output:
        n += tgt_vocab * dec
    return n


def count_params(subnet: Subnet, space: SearchSpace, src_vocab: int, tgt_vocab: int,
                 share_all_embeddings: bool = False, untie_decoder_output: bool = False) -> int:
    """Exactly the number of parameters of the subnet's standalone (`nas_subnet`) model."""
    return (embedding_params(subnet, src_vocab, tgt_vocab, share_all_embeddings, untie_decoder_output)
            + stack_params(subnet, space, "encoder") + stack_params(subnet, space, "decoder"))


# ----------------------------------------------------------------------------------------
# FLOPs (2 x multiply-accumulates)


def _add(acc: dict[str, int], key: str, macs: int) -> None:
    acc[key] += 2 * macs


def _attention_step(acc: dict[str, int], prefix: str, tokens: int, keys: int, qkv: int, rpr: bool) -> None:
    """Scores and weighted values for `tokens` queries over `keys` keys (all heads: qkv = heads x head_dim)."""
    products = 4 if rpr else 2
    _add(acc, f"{prefix}.attention", products * tokens * keys * qkv)


def _conv_block(acc: dict[str, int], prefix: str, tokens: int, width: int, heads: int, kernel: int,
                window: int, dynamic: bool) -> None:
    _add(acc, f"{prefix}.linear", tokens * 3 * width * width)
    if dynamic:
        _add(acc, f"{prefix}.linear", tokens * width * heads * kernel)
        _add(acc, f"{prefix}.dynamic_conv", tokens * width * window)
    else:
        _add(acc, f"{prefix}.lightweight_conv", tokens * width * window)


def _mixer(acc: dict[str, int], prefix: str, lay: LayerConfig, tokens: int, keys: int, embed: int, qkv: int,
           kernel: int, window: int) -> None:
    """One token-mixing operator on `tokens` new tokens attending to `keys` positions."""
    op = lay.operator
    rpr = lay.rpr_len > 0
    if op == "self_attention":
        _add(acc, f"{prefix}.linear", tokens * 4 * embed * qkv)
        _attention_step(acc, prefix, tokens, keys, qkv, rpr)
    elif op in PLAIN_CONV:
        _conv_block(acc, prefix, tokens, embed, lay.heads, kernel, window, op == "dynamic_conv")
    elif op in LSRA:
        half = embed // 2
        _add(acc, f"{prefix}.linear", tokens * 4 * half * half)
        _attention_step(acc, prefix, tokens, keys, half, rpr)
        _conv_block(acc, prefix, tokens, half, lay.heads, kernel, window, op == "lsra_dynamic")
    else:
        raise ValueError(f"unknown operator {op!r}")


def flops_breakdown(subnet: Subnet, space: SearchSpace, src_len: int, tgt_len: Optional[int] = None,
                    tgt_vocab: int = 0, beam: int = 1) -> dict[str, int]:
    """FLOPs by part (keys: BREAKDOWN_KEYS); see the module docstring for what is counted."""
    tgt_len = src_len if tgt_len is None else tgt_len
    if src_len < 1 or tgt_len < 0 or beam < 1:
        raise ValueError(f"need src_len >= 1, tgt_len >= 0, beam >= 1 (got {src_len}, {tgt_len}, {beam})")
    acc = dict.fromkeys(BREAKDOWN_KEYS, 0)
    enc, dec = subnet.encoder, subnet.decoder
    e, d = enc.embed_dim, dec.embed_dim
    enc_qkv, dec_qkv = _qkv(space, "encoder", e), _qkv(space, "decoder", d)
    enc_k, dec_k = space.encoder.kernel_size, space.decoder.kernel_size

    t = src_len
    for i, lay in enumerate(enc.layers):
        _mixer(acc, "encoder", lay, t, t, e, enc_qkv, enc_k[i], enc_k[i])
        _add(acc, "encoder.linear", t * 2 * e * lay.ffn_dim)

    for step in range(tgt_len):
        seen = step + 1  # positions decoded so far, the new one included
        for i, lay in enumerate(dec.layers):
            _mixer(acc, "decoder", lay, beam, seen, d, dec_qkv, dec_k[i], min(seen, dec_k[i]))
            memory = (lay.enc_attn_layers or 1) * src_len
            _add(acc, "decoder.linear", beam * 2 * d * dec_qkv)  # enc-dec q and out projections
            if step == 0:  # enc-dec keys and values: projected once, then cached
                _add(acc, "decoder.linear", beam * memory * 2 * e * dec_qkv)
            _attention_step(acc, "decoder", beam, memory, dec_qkv, False)
            _add(acc, "decoder.linear", beam * 2 * d * lay.ffn_dim)
        _add(acc, "output_projection", beam * d * tgt_vocab)
    return acc


def count_flops(subnet: Subnet, space: SearchSpace, src_len: int, tgt_len: Optional[int] = None,
                tgt_vocab: int = 0, beam: int = 1) -> int:
    """FLOPs (2 x MACs) of translating one sentence: encoder on src_len tokens, then tgt_len incremental
    decoder steps for `beam` hypotheses, output projection over tgt_vocab included (0: left out)."""
    return sum(flops_breakdown(subnet, space, src_len, tgt_len, tgt_vocab, beam).values())
