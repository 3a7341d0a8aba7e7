"""Token-mixing operators behind one interface: self-attention, lightweight or dynamic
convolution, and LSRA (Lite Transformer's long-short range attention: the channels split
in half, attention on the even channels, a convolution branch on the odd ones, so a channel
goes to the same branch at every width).

Each operator family is its own module with its own weights: families share nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from fairseq_nas.modules.attention import ElasticAttention, IncrementalState
from fairseq_nas.modules.convolution import ElasticConvBlock


@dataclass(frozen=True)
class MixerMax:
    """Upper bounds for one token-mixing module (the supernet's, or exactly a subnet's)."""

    embed: int
    qkv: int  # attention width of the self_attention operator
    heads: int
    head_dim: int  # largest attention head width
    rpr_len: int
    kernel_size: int


class SelfAttentionMixer(nn.Module):
    def __init__(self, m: MixerMax, causal: bool, attention_dropout: float, weight_dropout: float):
        super().__init__()
        self.causal = causal
        self.attn = ElasticAttention(m.embed, m.embed, m.qkv, m.head_dim, m.rpr_len, attention_dropout)

    def forward(self, x: Tensor, *, heads: int, qkv_dim: int, rpr_len: int,
                padding_mask: Optional[Tensor], attn_mask: Optional[Tensor],
                incremental_state: Optional[IncrementalState]) -> Tensor:
        return self.attn(x, x, heads=heads, qkv_dim=qkv_dim, rpr_len=rpr_len, key_padding_mask=padding_mask,
                         attn_mask=attn_mask, incremental_state=incremental_state)


class ConvMixer(nn.Module):
    def __init__(self, m: MixerMax, causal: bool, dynamic: bool, weight_dropout: float):
        super().__init__()
        self.block = ElasticConvBlock(m.embed, m.heads, m.kernel_size, causal, dynamic, weight_dropout)

    def forward(self, x: Tensor, *, heads: int, qkv_dim: int, rpr_len: int,
                padding_mask: Optional[Tensor], attn_mask: Optional[Tensor],
                incremental_state: Optional[IncrementalState]) -> Tensor:
        return self.block(x, heads, padding_mask, incremental_state)


def lsra_split(x: Tensor) -> tuple[Tensor, Tensor]:
    """Even channels to attention, odd ones to the convolution. Interleaving (rather than
    first half / second half) keeps every channel on its branch when the width changes, and
    the branch inputs of a narrower width are the front slices of a wider width's."""
    return x[..., 0::2], x[..., 1::2]


def lsra_merge(attn_out: Tensor, conv_out: Tensor) -> Tensor:
    """The inverse of `lsra_split`: branch outputs back to their channels."""
    return torch.stack([attn_out, conv_out], dim=-1).flatten(-2)


class LSRAMixer(nn.Module):
    """Half the channels to attention (width = half the embed dim), half to a convolution."""

    def __init__(self, m: MixerMax, causal: bool, dynamic: bool, attention_dropout: float,
                 weight_dropout: float):
        super().__init__()
        half = m.embed // 2
        self.attn = ElasticAttention(half, half, half, m.head_dim, m.rpr_len, attention_dropout)
        self.conv = ElasticConvBlock(half, m.heads, m.kernel_size, causal, dynamic, weight_dropout)

    def forward(self, x: Tensor, *, heads: int, qkv_dim: int, rpr_len: int,
                padding_mask: Optional[Tensor], attn_mask: Optional[Tensor],
                incremental_state: Optional[IncrementalState]) -> Tensor:
        half = x.size(-1) // 2
        xa, xc = lsra_split(x)
        a = self.attn(xa, xa, heads=heads, qkv_dim=half, rpr_len=rpr_len, key_padding_mask=padding_mask,
                      attn_mask=attn_mask, incremental_state=incremental_state)
        c = self.conv(xc, heads, padding_mask, incremental_state)
        return lsra_merge(a, c)


def build_mixer(operator: str, m: MixerMax, causal: bool, attention_dropout: float = 0.0,
                weight_dropout: float = 0.0) -> nn.Module:
    if operator == "self_attention":
        return SelfAttentionMixer(m, causal, attention_dropout, weight_dropout)
    if operator in ("lightweight_conv", "dynamic_conv"):
        return ConvMixer(m, causal, operator == "dynamic_conv", weight_dropout)
    if operator in ("lsra_lightweight", "lsra_dynamic"):
        return LSRAMixer(m, causal, operator == "lsra_dynamic", attention_dropout, weight_dropout)
    raise ValueError(f"unknown operator {operator!r}")
