"""Elastic lightweight and dynamic convolutions (Wu et al. 2019) and their GLU block.

Heads are elastic: a configuration with h heads uses the first h kernel rows (lightweight)
or the first h * K outputs of the kernel predictor (dynamic). Channel c belongs to head
c mod h at every width (fairseq assigns blocks of C / h channels, which moves a channel to
another head whenever the width changes), so the conv of a narrower subnet with the same
heads is exactly the front slice of a wider one's. The kernel size is fixed per layer. Causal convolutions
(decoder) pad K - 1 on the left and decode incrementally from a buffer of the last K - 1
inputs; non-causal ones pad K // 2 on each side.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

from fairseq_nas.modules.basic import ElasticLinear

IncrementalState = dict[str, dict[str, Optional[Tensor]]]


@with_incremental_state
class _ElasticConvBase(nn.Module):
    def __init__(self, kernel_size: int, causal: bool, weight_dropout: float):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.causal = causal
        self.padding_l = kernel_size - 1 if causal else kernel_size // 2
        self.weight_dropout = weight_dropout

    def _window(self, x: Tensor, incremental_state: Optional[IncrementalState]) -> Tensor:
        """T x B x C -> T x B x C x K' windows (K' = K except at the start of decoding)."""
        k = self.kernel_size
        if incremental_state is None:
            padded = F.pad(x, (0, 0, 0, 0, self.padding_l, k - 1 - self.padding_l))
            return padded.unfold(0, k, 1)  # T x B x C x K
        if not self.causal:
            raise ValueError("incremental decoding needs a causal convolution")
        prev = self.get_incremental_state(incremental_state, "conv_state")
        cur = x.unsqueeze(3)  # 1 x B x C x 1
        window = cur if prev is None else torch.cat([prev["window"], cur], dim=3)
        if k > 1:
            self.set_incremental_state(incremental_state, "conv_state", {"window": window[:, :, :, -(k - 1):]})
        return window

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor):
        prev = self.get_incremental_state(incremental_state, "conv_state")
        if prev is not None:
            prev = {"window": prev["window"].index_select(1, new_order)}
            incremental_state = self.set_incremental_state(incremental_state, "conv_state", prev)
        return incremental_state


class ElasticLightweightConv(_ElasticConvBase):
    """Depthwise convolution with softmax-normalised kernels shared within each head."""

    def __init__(self, max_heads: int, kernel_size: int, causal: bool, weight_dropout: float = 0.0):
        super().__init__(kernel_size, causal, weight_dropout)
        self.weight = nn.Parameter(torch.empty(max_heads, kernel_size))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor, heads: int, incremental_state: Optional[IncrementalState] = None) -> Tensor:
        t, b, c = x.shape
        if c % heads or heads > self.weight.size(0):
            raise ValueError(f"{c} channels cannot be split over {heads} heads")
        w = F.softmax(self.weight[:heads], dim=-1)
        w = F.dropout(w, p=self.weight_dropout, training=self.training)
        w_channels = w.repeat(c // heads, 1)  # C x K: channel c has head c mod heads
        if incremental_state is None:
            # Depthwise conv1d: fast band computation for full sequences.
            xb = x.permute(1, 2, 0)
            xb = F.pad(xb, (self.padding_l, self.kernel_size - 1 - self.padding_l))
            return F.conv1d(xb, w_channels.unsqueeze(1), groups=c).permute(2, 0, 1)
        window = self._window(x, incremental_state)  # 1 x B x C x K'
        kk = window.size(3)
        return (window * w_channels[:, -kk:]).sum(-1)


class ElasticDynamicConv(_ElasticConvBase):
    """Convolution whose softmax-normalised kernel is predicted from the current input."""

    def __init__(self, embed_max: int, max_heads: int, kernel_size: int, causal: bool,
                 weight_dropout: float = 0.0):
        super().__init__(kernel_size, causal, weight_dropout)
        # Output rows are head-major (head h owns rows h*K .. h*K+K-1): h heads = first h*K rows.
        self.weight_linear = ElasticLinear(embed_max, max_heads * kernel_size, bias=False)

    def forward(self, x: Tensor, heads: int, incremental_state: Optional[IncrementalState] = None) -> Tensor:
        t, b, c = x.shape
        k = self.kernel_size
        if c % heads:
            raise ValueError(f"{c} channels cannot be split over {heads} heads")
        w = self.weight_linear(x, heads * k).view(t, b, heads, k)
        w = F.softmax(w, dim=-1)
        w = F.dropout(w, p=self.weight_dropout, training=self.training)
        window = self._window(x, incremental_state)  # T x B x C x K'
        kk = window.size(3)
        w = w[..., -kk:]
        # channel c = i * heads + j has head j = c mod heads
        out = window.reshape(t, b, c // heads, heads, kk) * w.unsqueeze(2)
        return out.sum(-1).view(t, b, c)


class ElasticConvBlock(nn.Module):
    """Lite Transformer's convolution branch: GLU input projection, convolution, output projection."""

    def __init__(self, embed_max: int, max_heads: int, kernel_size: int, causal: bool, dynamic: bool,
                 weight_dropout: float = 0.0):
        super().__init__()
        self.value = ElasticLinear(embed_max, embed_max)
        self.gate = ElasticLinear(embed_max, embed_max)
        if dynamic:
            self.conv = ElasticDynamicConv(embed_max, max_heads, kernel_size, causal, weight_dropout)
        else:
            self.conv = ElasticLightweightConv(max_heads, kernel_size, causal, weight_dropout)
        self.out = ElasticLinear(embed_max, embed_max)

    def forward(self, x: Tensor, heads: int, padding_mask: Optional[Tensor] = None,
                incremental_state: Optional[IncrementalState] = None) -> Tensor:
        c = x.size(-1)
        h = self.value(x, c) * torch.sigmoid(self.gate(x, c))
        if padding_mask is not None:
            h = h.masked_fill(padding_mask.transpose(0, 1).unsqueeze(2), 0.0)
        h = self.conv(h, heads, incremental_state)
        return self.out(h, c)
