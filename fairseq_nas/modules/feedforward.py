"""Elastic position-wise feed-forward block (fc1 -> activation -> dropout -> fc2)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_nas.modules.basic import ElasticLinear, activation_fn


class ElasticFeedForward(nn.Module):
    def __init__(self, embed_max: int, ffn_max: int, activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = ElasticLinear(embed_max, ffn_max)
        self.fc2 = ElasticLinear(ffn_max, embed_max)
        self.activation_dropout = activation_dropout

    def forward(self, x: Tensor, ffn_dim: int, activation: str) -> Tensor:
        embed_dim = x.size(-1)
        h = activation_fn(activation)(self.fc1(x, ffn_dim))
        h = F.dropout(h, p=self.activation_dropout, training=self.training)
        return self.fc2(h, embed_dim)
