"""Elastic encoder and incremental decoder (fairseq interfaces, T x B x C inside).

The active architecture is set with `set_config(StackConfig)`; layers beyond its depth are
skipped. Decoder layers attend to the concatenation (along time) of the last k encoder
layer outputs (HAT's arbitrary encoder-decoder attention).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from fairseq.models import FairseqEncoder, FairseqIncrementalDecoder
from torch import Tensor, nn

from fairseq_nas.models.layers import ElasticLayer
from fairseq_nas.models.plan import StackPlan
from fairseq_nas.modules import ElasticLayerNorm, ElasticSinusoidalPositions
from fairseq_nas.space import StackConfig


def _layer_kwargs(cfg: Any) -> dict:
    return dict(dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
                activation_dropout=cfg.activation_dropout, weight_dropout=cfg.weight_dropout)


def _embed(tokens: Tensor, table: nn.Embedding, dim: int, positions: Tensor) -> Tensor:
    x = F.embedding(tokens, table.weight[:, :dim], table.padding_idx)
    return math.sqrt(dim) * x + positions.to(x.dtype)  # the float32 table must not promote fp16/bf16


def _check_fits(config: StackConfig, plan: StackPlan, name: str) -> None:
    if config.embed_dim > plan.embed or config.depth > len(plan.layers):
        raise ValueError(f"{name} config (embed {config.embed_dim}, depth {config.depth}) exceeds the model's "
                         f"maxima (embed {plan.embed}, depth {len(plan.layers)})")
    for i, lay in enumerate(config.layers):
        if lay.operator not in plan.layers[i].operators:
            raise ValueError(f"{name} layer {i}: operator {lay.operator!r} not built here "
                             f"(built: {', '.join(plan.layers[i].operators)})")


class ElasticEncoder(FairseqEncoder):
    def __init__(self, cfg: Any, dictionary, embed_tokens: nn.Embedding, plan: StackPlan):
        super().__init__(dictionary)
        self.plan = plan
        self.dropout = cfg.dropout
        self.padding_idx = embed_tokens.padding_idx
        self.embed_tokens = embed_tokens
        self.embed_positions = ElasticSinusoidalPositions(self.padding_idx)
        self.max_source_positions = cfg.max_source_positions
        self.layers = nn.ModuleList(
            ElasticLayer(lp, plan.embed, plan.qkv_max, decoder=False, **_layer_kwargs(cfg)) for lp in plan.layers
        )
        self.final_norm = ElasticLayerNorm(plan.embed) if plan.final_norm else None
        self.config: Optional[StackConfig] = None

    def set_config(self, config: StackConfig) -> None:
        _check_fits(config, self.plan, "encoder")
        self.config = config

    def forward(self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, return_all_hiddens: bool = False,
                token_embeddings: Optional[Tensor] = None) -> dict[str, list]:
        cfg = self.config
        dim = cfg.embed_dim
        qkv = self.plan.qkv_dim or dim
        x = _embed(src_tokens, self.embed_tokens, dim, self.embed_positions(src_tokens, dim))
        x = F.dropout(x, p=self.dropout, training=self.training).transpose(0, 1)
        padding_mask = src_tokens.eq(self.padding_idx)
        has_pads = bool(padding_mask.any())
        mask = padding_mask if has_pads else None
        states = []
        for layer, lay_cfg in zip(self.layers, cfg.layers):
            x = layer(x, lay_cfg, qkv_dim=qkv, padding_mask=mask)
            # A pre-norm layer's output is un-normalised: the stack's final norm applies to it. (An exported
            # subnet builds that norm only if the decoder attends to such a state.)
            pre = lay_cfg.norm == "pre" and self.final_norm is not None
            states.append(self.final_norm(x) if pre else x)
        return {
            "encoder_out": [states[-1]],
            "encoder_padding_mask": [padding_mask] if has_pads else [],
            "encoder_states": states,
            "encoder_embedding": [],
            "src_tokens": [],
            "src_lengths": [src_lengths] if src_lengths is not None else [],
        }

    def reorder_encoder_out(self, encoder_out: dict[str, list], new_order: Tensor) -> dict[str, list]:
        def along(ts, dim):
            return [t.index_select(dim, new_order) for t in ts]

        return {
            "encoder_out": along(encoder_out["encoder_out"], 1),
            "encoder_padding_mask": along(encoder_out["encoder_padding_mask"], 0),
            "encoder_states": along(encoder_out["encoder_states"], 1),
            "encoder_embedding": [],
            "src_tokens": [],
            "src_lengths": along(encoder_out["src_lengths"], 0),
        }

    def max_positions(self) -> int:
        return self.max_source_positions


class ElasticDecoder(FairseqIncrementalDecoder):
    def __init__(self, cfg: Any, dictionary, embed_tokens: nn.Embedding, plan: StackPlan, enc_embed_max: int,
                 output_projection: Optional[nn.Parameter] = None):
        super().__init__(dictionary)
        self.plan = plan
        self.dropout = cfg.dropout
        self.padding_idx = embed_tokens.padding_idx
        self.embed_tokens = embed_tokens
        self.embed_positions = ElasticSinusoidalPositions(self.padding_idx)
        self.max_target_positions = cfg.max_target_positions
        self.layers = nn.ModuleList(
            ElasticLayer(lp, plan.embed, plan.qkv_max, decoder=True, enc_embed_max=enc_embed_max,
                         **_layer_kwargs(cfg))
            for lp in plan.layers
        )
        self.final_norm = ElasticLayerNorm(plan.embed) if plan.final_norm else None
        self.shared_output = output_projection is None
        if not self.shared_output:
            self.output_projection = output_projection
        self.config: Optional[StackConfig] = None

    def set_config(self, config: StackConfig) -> None:
        _check_fits(config, self.plan, "decoder")
        self.config = config

    def forward(self, prev_output_tokens: Tensor, encoder_out: Optional[dict] = None, incremental_state=None,
                features_only: bool = False, full_context_alignment: bool = False, alignment_layer=None,
                alignment_heads=None, src_lengths=None, return_all_hiddens: bool = False):
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(self, prev_output_tokens: Tensor, encoder_out: Optional[dict] = None,
                         incremental_state=None, **unused):
        cfg = self.config
        dim = cfg.embed_dim
        qkv = self.plan.qkv_dim or dim
        incremental = incremental_state is not None
        positions = self.embed_positions(prev_output_tokens, dim, incremental=incremental)
        tokens = prev_output_tokens[:, -1:] if incremental else prev_output_tokens
        x = _embed(tokens, self.embed_tokens, dim, positions)
        x = F.dropout(x, p=self.dropout, training=self.training).transpose(0, 1)

        self_attn_mask = None
        padding_mask = None
        if not incremental:
            t = x.size(0)
            self_attn_mask = torch.triu(torch.full((t, t), float("-inf"), device=x.device, dtype=x.dtype), 1)
            pm = tokens.eq(self.padding_idx)
            padding_mask = pm if bool(pm.any()) else None

        states = encoder_out["encoder_states"] if encoder_out is not None else []
        enc_masks = encoder_out["encoder_padding_mask"] if encoder_out is not None else []
        memo: dict[int, tuple[Tensor, Optional[Tensor]]] = {}

        def enc_memory(k: int):
            if k not in memo:
                if k > len(states):
                    raise ValueError(f"decoder attends to the last {k} encoder layers but the encoder has "
                                     f"{len(states)}")
                mem = torch.cat(states[-k:], dim=0) if k > 1 else states[-1]
                mask = torch.cat([enc_masks[0]] * k, dim=1) if enc_masks else None
                memo[k] = (mem, mask)
            return memo[k]

        inner = [x]
        for layer, lay_cfg in zip(self.layers, cfg.layers):
            x = layer(x, lay_cfg, qkv_dim=qkv, padding_mask=padding_mask, self_attn_mask=self_attn_mask,
                      incremental_state=incremental_state, enc_memory=enc_memory)
            inner.append(x)
        if cfg.layers[-1].norm == "pre":
            x = self.final_norm(x)
        return x.transpose(0, 1), {"attn": [None], "inner_states": inner}

    def output_layer(self, features: Tensor) -> Tensor:
        dim = features.size(-1)
        weight = self.embed_tokens.weight if self.shared_output else self.output_projection
        return F.linear(features, weight[:, :dim])

    def max_positions(self) -> int:
        return self.max_target_positions
