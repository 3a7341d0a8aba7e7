"""Elastic building blocks: every shared tensor is used through its leading slice."""
from fairseq_nas.modules.attention import ElasticAttention
from fairseq_nas.modules.basic import (
    ACTIVATION_FNS,
    ElasticLayerNorm,
    ElasticLinear,
    ElasticSinusoidalPositions,
    activation_fn,
)
from fairseq_nas.modules.convolution import ElasticConvBlock, ElasticDynamicConv, ElasticLightweightConv
from fairseq_nas.modules.feedforward import ElasticFeedForward
from fairseq_nas.modules.mixers import MixerMax, build_mixer

__all__ = [
    "ACTIVATION_FNS", "ElasticAttention", "ElasticConvBlock", "ElasticDynamicConv", "ElasticFeedForward",
    "ElasticLayerNorm", "ElasticLightweightConv", "ElasticLinear", "ElasticSinusoidalPositions",
    "MixerMax", "activation_fn", "build_mixer",
]
