"""Elastic multi-head attention with optional relative position representations.

Elastic in: query/key input width (from the inputs), q/k/v width, heads (head width =
q/k/v width / heads) and the relative-position clipping distance. Relative position
tables (Shaw et al. 2018; keys and values) store distance d at row 2|d| - (d > 0), i.e.
rows 0, +1, -1, +2, -2, ...: a distance limit r uses exactly the first 2r + 1 rows, so the
tables are front-sliced like every other shared tensor.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

from fairseq_nas.modules.basic import ElasticLinear

IncrementalState = dict[str, dict[str, Optional[Tensor]]]


def relative_rows(q_len: int, k_len: int, max_dist: int, device: torch.device) -> Tensor:
    """Table row of each (query, key) pair; queries are the last q_len of k_len positions."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device).unsqueeze(1)
    k_pos = torch.arange(k_len, device=device).unsqueeze(0)
    dist = (k_pos - q_pos).clamp(-max_dist, max_dist)
    return 2 * dist.abs() - (dist > 0).long()


@with_incremental_state
class ElasticAttention(nn.Module):
    """Self- or encoder-decoder attention, T x B x C layout as in fairseq."""

    def __init__(
        self,
        q_in_max: int,
        kv_in_max: int,
        qkv_max: int,
        max_head_dim: int,
        max_rpr_len: int = 0,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        self.q_proj = ElasticLinear(q_in_max, qkv_max)
        self.k_proj = ElasticLinear(kv_in_max, qkv_max)
        self.v_proj = ElasticLinear(kv_in_max, qkv_max)
        self.out_proj = ElasticLinear(qkv_max, q_in_max)
        self.max_head_dim = max_head_dim
        self.max_rpr_len = max_rpr_len
        self.attention_dropout = attention_dropout
        if max_rpr_len > 0:
            rows = 2 * max_rpr_len + 1
            self.rel_keys = nn.Parameter(torch.empty(rows, max_head_dim))
            self.rel_values = nn.Parameter(torch.empty(rows, max_head_dim))
            nn.init.xavier_uniform_(self.rel_keys)
            nn.init.xavier_uniform_(self.rel_values)
        else:
            self.rel_keys = self.rel_values = None

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        *,
        heads: int,
        qkv_dim: int,
        rpr_len: int = 0,
        key_padding_mask: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        incremental_state: Optional[IncrementalState] = None,
        static_kv: bool = False,
    ) -> Tensor:
        tq, bsz, q_dim = query.shape
        if qkv_dim % heads:
            raise ValueError(f"q/k/v width {qkv_dim} is not divisible by {heads} heads")
        head_dim = qkv_dim // heads
        if rpr_len > self.max_rpr_len or (rpr_len and head_dim > self.max_head_dim):
            raise ValueError(f"rpr_len {rpr_len} / head dim {head_dim} exceed this module's maxima")
        q = self.q_proj(query, qkv_dim) * head_dim**-0.5

        saved = self._get_input_buffer(incremental_state) if incremental_state is not None else None
        if saved is not None and static_kv and "prev_key" in saved:
            k, v = saved["prev_key"], saved["prev_value"]
            key_padding_mask = saved.get("prev_key_padding_mask")
        else:
            k = self.k_proj(key, qkv_dim)
            v = self.v_proj(key, qkv_dim)
            if saved is not None and "prev_key" in saved:
                k = torch.cat([saved["prev_key"], k], dim=0)
                v = torch.cat([saved["prev_value"], v], dim=0)
            if incremental_state is not None:
                buffer = {"prev_key": k, "prev_value": v}
                if static_kv and key_padding_mask is not None:
                    buffer["prev_key_padding_mask"] = key_padding_mask
                self._set_input_buffer(incremental_state, buffer)
        tk = k.size(0)

        q = q.contiguous().view(tq, bsz * heads, head_dim).transpose(0, 1)
        k = k.contiguous().view(tk, bsz * heads, head_dim).transpose(0, 1)
        v = v.contiguous().view(tk, bsz * heads, head_dim).transpose(0, 1)
        scores = torch.bmm(q, k.transpose(1, 2))
        rel_v = None
        if rpr_len > 0:
            rows = relative_rows(tq, tk, rpr_len, query.device)
            rel_k = self.rel_keys[:, :head_dim][rows]  # tq x tk x head_dim
            rel_v = self.rel_values[:, :head_dim][rows]
            scores = scores + torch.einsum("bqd,qkd->bqk", q, rel_k)
        if attn_mask is not None:
            scores = scores + attn_mask.unsqueeze(0)
        if key_padding_mask is not None:
            scores = scores.view(bsz, heads, tq, tk).masked_fill(
                key_padding_mask.view(bsz, 1, 1, tk).bool(), float("-inf")
            ).view(bsz * heads, tq, tk)
        probs = F.softmax(scores.float(), dim=-1).type_as(scores)
        probs = F.dropout(probs, p=self.attention_dropout, training=self.training)
        out = torch.bmm(probs, v)
        if rel_v is not None:
            out = out + torch.einsum("bqk,qkd->bqd", probs, rel_v)
        out = out.transpose(0, 1).contiguous().view(tq, bsz, qkv_dim)
        return self.out_proj(out, q_dim)

    def _get_input_buffer(self, incremental_state: IncrementalState) -> dict[str, Tensor]:
        result = self.get_incremental_state(incremental_state, "attn_state")
        return result if result is not None else {}

    def _set_input_buffer(self, incremental_state: IncrementalState, buffer: dict[str, Tensor]):
        return self.set_incremental_state(incremental_state, "attn_state", buffer)

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor):
        buffer = self._get_input_buffer(incremental_state)
        if buffer:
            for name, t in buffer.items():
                # keys/values are T x B x C; the padding mask is B x T
                buffer[name] = t.index_select(0 if name == "prev_key_padding_mask" else 1, new_order)
            incremental_state = self._set_input_buffer(incremental_state, buffer)
        return incremental_state
