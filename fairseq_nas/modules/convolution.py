"""Elastic lightweight and dynamic convolutions (Wu et al. 2019) and their GLU block.

Heads are elastic: a configuration with h heads uses the first h kernel rows (lightweight)
or the first h * K outputs of the kernel predictor (dynamic). Channel c belongs to head
c mod h at every width (fairseq assigns blocks of C / h channels, which moves a channel to
another head whenever the width changes), so the conv of a narrower subnet with the same
heads is exactly the front slice of a wider one's. The kernel size is fixed per layer. Causal convolutions
(decoder) pad K - 1 on the left and decode incrementally from a buffer of the last K - 1
inputs; non-causal ones pad K // 2 on each side.

Full sequences on the CPU run on the native kernels (`native.conv_ops`, conv_kernels.cpp): the
convolution over the T x B x C memory as it is, vectorised over channels, O(T K), forward and
backward. Without them (no compiler, FAIRSEQ_NAS_NATIVE_CONV=0, another device) the pure-PyTorch
paths below compute the same function. The dynamic conv (up to a few hundred tokens) lays each
sentence's predicted kernels out as T x T band matrices, one per head, and multiplies them with the head's channels
in one batched matmul; the lightweight conv does the same with one band per head where T is
short for its kernel, and otherwise runs as a depthwise conv2d over the T x B x C memory as it
is. Decoding steps (and the dynamic conv's long sequences) use windows of the last K inputs.
benchmarks/conv_speed.py compares both with fairseq's modules.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from fairseq_nas.modules import native
from fairseq_nas.modules.basic import ElasticLinear

IncrementalState = dict[str, dict[str, Optional[Tensor]]]


def _kernel_softmax(w: Tensor) -> Tensor:
    """Softmax over the last dim (the kernel taps). PyTorch's CPU kernel is scalar (about 5x
    slower) for a last dim shorter than its vector width; below 16 taps the composed form is
    faster there. The max is detached: softmax does not depend on it, so gradients are unchanged."""
    if w.device.type != "cpu" or w.size(-1) >= 16:
        return F.softmax(w, dim=-1)
    e = torch.exp(w - w.detach().amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _band(w: Tensor, t: int, padding_l: int) -> Tensor:
    """... x T x K kernels (one per output position) -> ... x T x T band matrices: row r holds
    kernel r at input positions r - padding_l .. r - padding_l + K - 1 (those inside 0 .. T-1)."""
    k, p = w.size(-1), padding_l
    # Only taps lo .. hi can reach an input position (tap i of row r reads input r + i - p).
    lo, hi = max(0, p - t + 1), min(k - 1, p + t - 1)
    if lo > 0 or hi < k - 1:
        w, k, p = w[..., lo:hi + 1], hi - lo + 1, p - lo
    lead = w.shape[:-2]
    # Skew: each row is the kernel then T zeros; read T rows of T + K - 1 from the flattened
    # rows, and row r's kernel lands at columns r .. r + K - 1 of the padded input.
    band = F.pad(w, (0, t)).reshape(*lead, t * (k + t))
    band = band[..., : t * (t + k - 1)].view(*lead, t, t + k - 1)
    return band[..., p:p + t]


@with_incremental_state
class _ElasticConvBase(nn.Module):
    # Full sequences up to this length take the fast path (`_fast_len`: the band matrix of the
    # dynamic conv, the depthwise conv2d of the lightweight one); longer ones and decoding steps
    # take the windowed path. None: the class's default; 0 forces windows (tests).
    fast_max_len: Optional[int] = None

    def __init__(self, kernel_size: int, causal: bool, weight_dropout: float):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.causal = causal
        self.padding_l = kernel_size - 1 if causal else kernel_size // 2
        self.weight_dropout = weight_dropout

    def _fast_len(self) -> float:
        raise NotImplementedError

    def _use_fast(self, t: int, incremental_state: Optional[IncrementalState]) -> bool:
        limit = self._fast_len() if self.fast_max_len is None else self.fast_max_len
        return incremental_state is None and t <= limit

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

    def _native_full_sequence(self, x: Tensor, incremental_state: Optional[IncrementalState]):
        """The native kernels for a full sequence on the CPU (O(T K) at every length), else None:
        decoding steps, other devices, fast_max_len = 0 (tests) or kernels switched off or unbuilt."""
        if incremental_state is not None or self.fast_max_len == 0:
            return None
        return _native_ops(x)

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor):
        prev = self.get_incremental_state(incremental_state, "conv_state")
        if prev is not None:
            prev = {"window": prev["window"].index_select(1, new_order)}
            incremental_state = self.set_incremental_state(incremental_state, "conv_state", prev)
        return incremental_state


def _time_conv(x: Tensor, w_channels: Tensor, padding_l: int) -> Tensor:
    """Depthwise convolution along time: out[t, :, c] = sum_i w_channels[c, i] x[t + i - padding_l, :, c]
    (zero outside 0 .. T-1). x: T x B x C, w_channels: C x K.

    A T x B x C tensor is a 1 x C x T x B image in channels-last memory, so this is a depthwise
    conv2d with a K x 1 kernel that reads and writes the T x B x C layout without a transpose
    (oneDNN's channels-last depthwise kernel on CPU is vectorised over C)."""
    t = x.size(0)
    c, k = w_channels.shape
    # Symmetric padding (conv2d's), then the T rows that start padding_l before each step; for a
    # causal conv that computes K - 1 extra rows, a small share where this path is taken (T long
    # for its K: `ElasticLightweightConv._band_is_cheaper`) and no slower than padding x first.
    pad = max(padding_l, k - 1 - padding_l)
    out = F.conv2d(x.unsqueeze(0).permute(0, 3, 1, 2), w_channels.reshape(c, 1, k, 1), padding=(pad, 0), groups=c)
    first = pad - padding_l
    return out.permute(0, 2, 3, 1)[0, first:first + t]


def _head_kernel_grad(x: Tensor, g: Tensor, heads: int, k: int, padding_l: int, block: int = 64) -> Tensor:
    """Gradient of the H x K lightweight kernels: per head, the sum over steps t, sentences and the
    head's channels of g[t] * x[t + i - padding_l] for tap i. These are the diagonals of the
    head's Gram matrix of g and x along time, computed in blocks of `block` steps of g against
    the inputs they reach (O(T (block + K)) per channel)."""
    t, b, c = x.shape
    r = c // heads
    # channel c = i * heads + j has head j
    xs = x.reshape(t, b, r, heads).permute(3, 0, 1, 2).reshape(heads, t, b * r)
    gs = g.reshape(t, b, r, heads).permute(3, 0, 1, 2).reshape(heads, t, b * r)
    grad = x.new_zeros(heads, k)
    for start in range(0, t, block):
        n = min(block, t - start)
        first, last = start - padding_l, start + n + k - 1 - padding_l  # inputs the block reaches
        lo, hi = max(0, first), min(t, last)
        gram = torch.bmm(gs[:, start:start + n], xs[:, lo:hi].transpose(1, 2))  # H x n x (hi - lo)
        gram = F.pad(gram, (lo - first, last - hi))  # column v: input first + v; tap i of row u: v = u + i
        width = n + k - 1
        grad += gram.as_strided((heads, n, k), (n * width, width + 1, 1)).sum(1)
    return grad


class _LightweightConvTBC(torch.autograd.Function):
    """`_time_conv` with the head kernels repeated over channels, and a backward that stays on
    the fast kernels: the input gradient is the same depthwise conv with the kernel reversed,
    the kernel gradient `_head_kernel_grad` (oneDNN's depthwise backward is far slower here)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, padding_l: int) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.padding_l = padding_l
        return _time_conv(x, w.repeat(x.size(2) // w.size(0), 1), padding_l)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        heads, k = w.shape
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _time_conv(g, w.flip(-1).repeat(x.size(2) // heads, 1), k - 1 - ctx.padding_l)
        if ctx.needs_input_grad[1]:
            grad_w = _head_kernel_grad(x, g, heads, k, ctx.padding_l)
        return grad_x, grad_w, None


def _native_ops(x: Tensor):
    """The native CPU kernels (`native.conv_ops`) when they apply to x, else None."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    return native.conv_ops()


class _NativeLightweightConv(torch.autograd.Function):
    """The lightweight conv on the native kernels: the input gradient is the same conv of the output
    gradient with the kernels reversed (and the padding mirrored); the kernel gradient its own kernel."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, padding_l: int, ops) -> Tensor:
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.padding_l, ctx.ops = padding_l, ops
        return ops.lightweight_forward(x, w, padding_l)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        heads, k = w.shape
        g = g.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = ctx.ops.lightweight_forward(g, w.flip(-1).contiguous(), k - 1 - ctx.padding_l)
        if ctx.needs_input_grad[1]:
            grad_w = ctx.ops.lightweight_weight_grad(x, g, heads, k, ctx.padding_l)
        return grad_x, grad_w, None, None


class _NativeDynamicConv(torch.autograd.Function):
    """The dynamic conv (x: T x B x C, kernels w: T x B x H x K) on the native kernels."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, padding_l: int, ops) -> Tensor:
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.padding_l, ctx.ops = padding_l, ops
        return ops.dynamic_forward(x, w, padding_l)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x, grad_w = ctx.ops.dynamic_backward(x, w, g.contiguous(), ctx.padding_l, need_x, need_w)
        return (grad_x if need_x else None), (grad_w if need_w else None), None, None


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
        w = F.dropout(w, p=self.weight_dropout, training=self.training)  # H x K
        ops = self._native_full_sequence(x, incremental_state)
        if ops is not None:
            return _NativeLightweightConv.apply(x, w, self.padding_l, ops)
        if self._use_fast(t, incremental_state):
            if self._band_is_cheaper(t):
                return self._banded(x, w)
            if x.device.type == "cpu" and torch.backends.mkldnn.is_available():
                return _LightweightConvTBC.apply(x, w, self.padding_l)
            return _time_conv(x, w.repeat(c // heads, 1), self.padding_l)  # autograd's own backward
        w_channels = w.repeat(c // heads, 1)  # C x K: channel c has head c mod heads
        window = self._window(x, incremental_state)  # T x B x C x K'
        kk = window.size(3)
        return (window * w_channels[:, -kk:]).sum(-1)

    def _fast_len(self) -> float:
        return math.inf  # the depthwise conv2d is O(T K) at every length

    def _band_is_cheaper(self, t: int) -> bool:
        """The band matmul does T x T multiply-adds per channel and step, at BLAS speed but with two
        transposes; the depthwise conv2d does K per row it computes (T + K - 1 rows when causal).
        Measured on CPU at T = 30: about even for K = 31 (non-causal) and K = 15 (causal)."""
        return t * t <= (t + abs(2 * self.padding_l - self.kernel_size + 1)) * self.kernel_size

    def _banded(self, x: Tensor, w: Tensor) -> Tensor:
        """One T x T band per head (the kernel is the same at every position), times all the
        head's channels of every sentence: H matmuls of T x T by T x (B C / H)."""
        t, b, c = x.shape
        heads = w.size(0)
        band = _band(w.unsqueeze(1).expand(heads, t, w.size(1)), t, self.padding_l)  # H x T x T
        # channel c = i * heads + j has head j
        xs = x.reshape(t, b, c // heads, heads).permute(3, 0, 1, 2).reshape(heads, t, b * (c // heads))
        out = torch.bmm(band, xs)  # H x T x (B R)
        return out.view(heads, t, b, c // heads).permute(1, 2, 3, 0).reshape(t, b, c)


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
        w = _kernel_softmax(w)
        w = F.dropout(w, p=self.weight_dropout, training=self.training)
        ops = self._native_full_sequence(x, incremental_state)
        if ops is not None:
            return _NativeDynamicConv.apply(x, w, self.padding_l, ops)
        if self._use_fast(t, incremental_state):
            return self._banded(x, w)
        return self._unfolded(x, w, incremental_state)

    def _fast_len(self) -> float:
        # the windows' cost grows with K: forward + backward on 1 CPU thread, band vs windows,
        # even at about 220 tokens for K = 3, 350 for 7, 700 for 15, over 1000 for 31
        return 64 + 32 * self.kernel_size

    def _unfolded(self, x: Tensor, w: Tensor, incremental_state: Optional[IncrementalState]) -> Tensor:
        """Each window of K inputs times its kernel: one decoding step, or a long sequence."""
        t, b, c = x.shape
        heads = w.size(2)
        window = self._window(x, incremental_state)  # T x B x C x K'
        kk = window.size(3)
        w = w[..., -kk:]
        # channel c = i * heads + j has head j = c mod heads
        out = window.reshape(t, b, c // heads, heads, kk) * w.unsqueeze(2)
        return out.sum(-1).view(t, b, c)

    def _banded(self, x: Tensor, w: Tensor) -> Tensor:
        """A full sequence as one batched matmul: per (sentence, head) the T x T band of that
        sentence's predicted kernels, times the head's channels. x: T x B x C; w: T x B x H x K."""
        t, b, c = x.shape
        heads = w.size(2)
        band = _band(w.permute(1, 2, 0, 3), t, self.padding_l).reshape(b * heads, t, t)
        # channel c = i * heads + j has head j
        xs = x.reshape(t, b, c // heads, heads).permute(1, 3, 0, 2).reshape(b * heads, t, c // heads)
        out = torch.bmm(band, xs)  # B H x T x R
        return out.view(b, heads, t, c // heads).permute(2, 0, 3, 1).reshape(t, b, c)


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
