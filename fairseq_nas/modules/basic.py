"""Elastic linear, layer norm, activations and sinusoidal positions.

Every elastic tensor is shared by *front slicing*: a configuration uses the leading
rows/columns of the largest tensor. A module built at the active dims with those
leading slices copied in therefore computes exactly the same function, which is what
export relies on (see `fairseq_nas.models.export`).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATION_FNS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, negative_slope=0.01),
    "swish": F.silu,
}


def activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return ACTIVATION_FNS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATION_FNS)}") from None


class ElasticLinear(nn.Module):
    """A linear map whose input width follows the input and whose output width is chosen per call."""

    def __init__(self, in_max: int, out_max: int, bias: bool = True):
        super().__init__()
        self.in_max, self.out_max = in_max, out_max
        self.weight = nn.Parameter(torch.empty(out_max, in_max))
        self.bias = nn.Parameter(torch.zeros(out_max)) if bias else None
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor, out_dim: Optional[int] = None) -> Tensor:
        out_dim = self.out_max if out_dim is None else out_dim
        in_dim = x.size(-1)
        if in_dim > self.in_max or out_dim > self.out_max:
            raise ValueError(f"active dims {in_dim}->{out_dim} exceed {self.in_max}->{self.out_max}")
        w = self.weight[:out_dim, :in_dim]
        b = self.bias[:out_dim] if self.bias is not None else None
        return F.linear(x, w, b)


class ElasticLayerNorm(nn.Module):
    """LayerNorm over the active (leading) channels."""

    def __init__(self, max_dim: int, eps: float = 1e-5):
        super().__init__()
        self.max_dim, self.eps = max_dim, eps
        self.weight = nn.Parameter(torch.ones(max_dim))
        self.bias = nn.Parameter(torch.zeros(max_dim))

    def forward(self, x: Tensor) -> Tensor:
        d = x.size(-1)
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)


def sinusoidal_table(num_positions: int, dim: int, padding_idx: int) -> Tensor:
    """fairseq's sinusoidal table (sin half then cos half; the padding row is zero)."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float) * -step)
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    table[padding_idx, :] = 0
    return table


class ElasticSinusoidalPositions(nn.Module):
    """Sinusoidal positions at any width; no parameters (so nothing to share)."""

    def __init__(self, padding_idx: int, init_size: int = 1024):
        super().__init__()
        self.padding_idx = padding_idx
        self.init_size = init_size
        self._tables: dict[int, Tensor] = {}

    def _table(self, dim: int, needed: int, device: torch.device) -> Tensor:
        t = self._tables.get(dim)
        if t is None or t.size(0) < needed or t.device != device:
            t = sinusoidal_table(max(needed, self.init_size), dim, self.padding_idx).to(device)
            self._tables[dim] = t
        return t

    def forward(self, tokens: Tensor, dim: int, incremental: bool = False) -> Tensor:
        """Positions start at padding_idx + 1 and skip padding, as fairseq's make_positions."""
        mask = tokens.ne(self.padding_idx).int()
        positions = (torch.cumsum(mask, dim=1) * mask).long() + self.padding_idx
        if incremental:
            positions = positions[:, -1:]
        # The largest position is at most padding_idx + length: sizing the table from the shape,
        # not from positions.max(), keeps the host out of every decoder step on a GPU.
        table = self._table(dim, self.padding_idx + tokens.size(1) + 1, tokens.device)
        return table[positions]
