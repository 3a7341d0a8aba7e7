"""Elastic encoder and decoder layers: token mixing, (decoder) encoder-decoder attention,
feed-forward; each sublayer pre- or post-norm as the active layer config says."""
from __future__ import annotations

from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_nas.models.plan import LayerPlan
from fairseq_nas.modules import ElasticAttention, ElasticFeedForward, ElasticLayerNorm, build_mixer
from fairseq_nas.space import LayerConfig


class ElasticLayer(nn.Module):
    def __init__(self, plan: LayerPlan, embed_max: int, qkv_max: int, *, decoder: bool,
                 enc_embed_max: int = 0, dropout: float = 0.1, attention_dropout: float = 0.0,
                 activation_dropout: float = 0.0, weight_dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.mixers = nn.ModuleDict({
            op: build_mixer(op, m, causal=decoder, attention_dropout=attention_dropout,
                            weight_dropout=weight_dropout)
            for op, m in zip(plan.operators, plan.mixers)
        })
        self.mixer_norms = nn.ModuleDict({op: ElasticLayerNorm(embed_max) for op in plan.operators})
        if decoder:
            self.enc_attn = ElasticAttention(embed_max, enc_embed_max, qkv_max, plan.enc_attn_heads_max_head_dim,
                                             0, attention_dropout)
            self.enc_attn_norm = ElasticLayerNorm(embed_max)
        else:
            self.enc_attn = None
        self.ffn = ElasticFeedForward(embed_max, plan.ffn, activation_dropout)
        self.ffn_norm = ElasticLayerNorm(embed_max)

    def _sublayer(self, x: Tensor, norm: nn.Module, pre: bool, fn: Callable[[Tensor], Tensor]) -> Tensor:
        residual = x
        if pre:
            x = norm(x)
        x = F.dropout(fn(x), p=self.dropout, training=self.training)
        x = residual + x
        return x if pre else norm(x)

    def forward(self, x: Tensor, cfg: LayerConfig, *, qkv_dim: int, padding_mask: Optional[Tensor] = None,
                self_attn_mask: Optional[Tensor] = None, incremental_state=None,
                enc_memory: Optional[Callable[[int], tuple[Tensor, Optional[Tensor]]]] = None) -> Tensor:
        pre = cfg.norm == "pre"
        mixer = self.mixers[cfg.operator]
        x = self._sublayer(x, self.mixer_norms[cfg.operator], pre, lambda h: mixer(
            h, heads=cfg.heads, qkv_dim=qkv_dim, rpr_len=cfg.rpr_len, padding_mask=padding_mask,
            attn_mask=self_attn_mask, incremental_state=incremental_state))
        if self.enc_attn is not None:
            x = self._sublayer(x, self.enc_attn_norm, pre, lambda h: self._attend_encoder(
                h, cfg, qkv_dim, enc_memory, incremental_state))
        return self._sublayer(x, self.ffn_norm, pre, lambda h: self.ffn(h, cfg.ffn_dim, cfg.activation))

    def _attend_encoder(self, h: Tensor, cfg: LayerConfig, qkv_dim: int, enc_memory, incremental_state) -> Tensor:
        cached = incremental_state is not None and "prev_key" in self.enc_attn._get_input_buffer(incremental_state)
        if cached:
            memory, mask = h, None  # keys/values come from the cache
        else:
            memory, mask = enc_memory(cfg.enc_attn_layers)
        return self.enc_attn(h, memory, heads=cfg.heads, qkv_dim=qkv_dim, key_padding_mask=mask,
                             incremental_state=incremental_state, static_kv=True)
