"""Sampling, HAT-style mutation and uniform crossover of subnets.

Every function draws only from the `random.Random` it is given, in a fixed order, so the
same generator state gives the same subnet; the global `random` module is never used.
In ratio spaces the FFN gene is carried as its ratio: when a layer lands in a stack with
another embed_dim (mutation of embed_dim, crossover), its FFN dim is rescaled.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Optional

from fairseq_nas.space.schema import StackSpace
from fairseq_nas.space.subnet import LayerConfig, StackConfig, Subnet

if TYPE_CHECKING:
    from fairseq_nas.space.searchspace import SearchSpace


def _attn_choices(st: StackSpace, encoder_depth: Optional[int]) -> Optional[tuple[int, ...]]:
    return None if encoder_depth is None else st.allowed_enc_attn(encoder_depth)


def _sample_layer(st: StackSpace, embed: int, attn: Optional[tuple[int, ...]],
                  rng: random.Random) -> LayerConfig:
    ffn = rng.choice(st.ffn_choices(embed))
    heads = rng.choice(st.heads)
    operator = rng.choice(st.operator)
    activation = rng.choice(st.activation)
    rpr_len = rng.choice(st.rpr_len)
    norm = rng.choice(st.norm)
    enc_attn = rng.choice(attn) if attn is not None else None
    return LayerConfig(operator=operator, ffn_dim=ffn, heads=heads, activation=activation, rpr_len=rpr_len,
                       norm=norm, enc_attn_layers=enc_attn)


def sample_stack(st: StackSpace, rng: random.Random, encoder_depth: Optional[int] = None) -> StackConfig:
    """Uniform: depth, then embed_dim, then every layer's genes. `encoder_depth` only for the decoder."""
    depth = rng.choice(st.layers)
    embed = rng.choice(st.embed_dim)
    attn = _attn_choices(st, encoder_depth)
    return StackConfig(embed, tuple(_sample_layer(st, embed, attn, rng) for _ in range(depth)))


def sample(space: SearchSpace, rng: random.Random) -> Subnet:
    enc = sample_stack(space.encoder, rng)
    return Subnet(enc, sample_stack(space.decoder, rng, enc.depth))


def _extreme_stack(st: StackSpace, pick, encoder_depth: Optional[int]) -> StackConfig:
    embed = pick(st.embed_dim)
    attn = _attn_choices(st, encoder_depth)
    layer = LayerConfig(operator=st.operator[0], ffn_dim=pick(st.ffn_choices(embed)), heads=pick(st.heads),
                        activation=st.activation[0], rpr_len=pick(st.rpr_len), norm=st.norm[0],
                        enc_attn_layers=pick(attn) if attn is not None else None)
    return StackConfig(embed, (layer,) * pick(st.layers))


def largest(space: SearchSpace) -> Subnet:
    """Max depth, embed, FFN, heads, rpr_len and enc_attn_layers; the first operator/activation/norm."""
    enc = _extreme_stack(space.encoder, max, None)
    return Subnet(enc, _extreme_stack(space.decoder, max, enc.depth))


def smallest(space: SearchSpace) -> Subnet:
    """Min of every numeric dim; the first operator/activation/norm."""
    enc = _extreme_stack(space.encoder, min, None)
    return Subnet(enc, _extreme_stack(space.decoder, min, enc.depth))


def _carry_ffn(st: StackSpace, ffn: int, old_embed: int, new_embed: int) -> int:
    """The FFN dim of a layer moved from a stack with `old_embed` to one with `new_embed`."""
    if st.ffn_ratio is None or old_embed == new_embed:
        return ffn
    return st.ffn_choices(new_embed)[st.ffn_choices(old_embed).index(ffn)]


def _mutate_stack(st: StackSpace, sc: StackConfig, rng: random.Random, prob: float,
                  encoder_depth: Optional[int]) -> StackConfig:
    depth = rng.choice(st.layers) if rng.random() < prob else sc.depth
    embed = rng.choice(st.embed_dim) if rng.random() < prob else sc.embed_dim
    attn = _attn_choices(st, encoder_depth)
    layers = []
    for i in range(depth):
        if i >= sc.depth:  # grown: a fresh layer
            layers.append(_sample_layer(st, embed, attn, rng))
            continue
        old = sc.layers[i]

        def gene(choices: tuple, current):
            return rng.choice(choices) if rng.random() < prob else current

        ffn_now = _carry_ffn(st, old.ffn_dim, sc.embed_dim, embed)
        ffn = gene(st.ffn_choices(embed), ffn_now)
        heads = gene(st.heads, old.heads)
        operator = gene(st.operator, old.operator)
        activation = gene(st.activation, old.activation)
        rpr_len = gene(st.rpr_len, old.rpr_len)
        norm = gene(st.norm, old.norm)
        enc_attn = None
        if attn is not None:
            enc_attn = gene(attn, old.enc_attn_layers)
            if enc_attn not in attn:  # the encoder became shallower than this layer's choice
                enc_attn = rng.choice(attn)
        layers.append(LayerConfig(operator=operator, ffn_dim=ffn, heads=heads, activation=activation,
                                  rpr_len=rpr_len, norm=norm, enc_attn_layers=enc_attn))
    return StackConfig(embed, tuple(layers))


def mutate(space: SearchSpace, subnet: Subnet, rng: random.Random, prob: float) -> Subnet:
    """HAT-style: every gene (depth, embed_dim, each layer's genes) is resampled with probability
    `prob`; layers added by a deeper depth are sampled whole."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mutation probability must be in [0, 1], got {prob}")
    space.validate_subnet(subnet, "subnet to mutate")
    enc = _mutate_stack(space.encoder, subnet.encoder, rng, prob, None)
    return Subnet(enc, _mutate_stack(space.decoder, subnet.decoder, rng, prob, enc.depth))


def _cross_stack(st: StackSpace, a: StackConfig, b: StackConfig, rng: random.Random,
                 encoder_depth: Optional[int]) -> StackConfig:
    def pick(x, y):
        return x if rng.random() < 0.5 else y

    depth = pick(a.depth, b.depth)
    embed = pick(a.embed_dim, b.embed_dim)
    attn = _attn_choices(st, encoder_depth)
    layers = []
    for i in range(depth):
        pa = (a.layers[i], a.embed_dim) if i < a.depth else None
        pb = (b.layers[i], b.embed_dim) if i < b.depth else None
        pa, pb = pa or pb, pb or pa  # a layer only one parent has is inherited from it
        lay, lay_embed = pick(pa, pb)
        ffn = _carry_ffn(st, lay.ffn_dim, lay_embed, embed)
        heads = pick(pa[0].heads, pb[0].heads)
        operator = pick(pa[0].operator, pb[0].operator)
        activation = pick(pa[0].activation, pb[0].activation)
        rpr_len = pick(pa[0].rpr_len, pb[0].rpr_len)
        norm = pick(pa[0].norm, pb[0].norm)
        enc_attn = None
        if attn is not None:
            first = pick(pa[0].enc_attn_layers, pb[0].enc_attn_layers)
            fits = [k for k in (first, pa[0].enc_attn_layers, pb[0].enc_attn_layers) if k in attn]
            enc_attn = fits[0] if fits else max(attn)
        layers.append(LayerConfig(operator=operator, ffn_dim=ffn, heads=heads, activation=activation,
                                  rpr_len=rpr_len, norm=norm, enc_attn_layers=enc_attn))
    return StackConfig(embed, tuple(layers))


def crossover(space: SearchSpace, a: Subnet, b: Subnet, rng: random.Random) -> Subnet:
    """Uniform per-gene crossover: each gene from either parent with probability 1/2; values that
    no longer fit (an FFN dim in a ratio space, enc_attn_layers over the encoder depth) are adapted."""
    space.validate_subnet(a, "crossover parent a")
    space.validate_subnet(b, "crossover parent b")
    enc = _cross_stack(space.encoder, a.encoder, b.encoder, rng, None)
    return Subnet(enc, _cross_stack(space.decoder, a.decoder, b.decoder, rng, enc.depth))
