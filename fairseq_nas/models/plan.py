"""What to build: per layer the operator families and the largest dims they must hold.

The supernet's plan comes from a search space (every family of the space in every layer,
the space's maxima); an exported subnet's plan comes from the subnet itself (one family
per layer, exactly its dims). The same module classes are built from either, so a subnet
exported from the supernet holds exactly the leading slices of the supernet's tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fairseq_nas.modules.mixers import MixerMax
from fairseq_nas.space import ATTENTION_OPERATORS, StackConfig, Subnet


@dataclass(frozen=True)
class LayerPlan:
    operators: tuple[str, ...]
    mixers: tuple[MixerMax, ...]  # one per operator
    ffn: int
    enc_attn_heads_max_head_dim: int = 0  # decoder only (0 in the encoder): largest enc-dec head width


@dataclass(frozen=True)
class StackPlan:
    embed: int
    qkv_dim: Optional[int]  # fixed attention width; None: the active embed dim
    layers: tuple[LayerPlan, ...]
    final_norm: bool = True  # only built where some active config uses it

    @property
    def qkv_max(self) -> int:
        return self.qkv_dim or self.embed


@dataclass(frozen=True)
class ModelPlan:
    encoder: StackPlan
    decoder: StackPlan


def _mixer_max(op: str, embed: int, qkv: int, heads: int, min_heads: int, rpr_len: int, kernel: int) -> MixerMax:
    width = embed // 2 if op.startswith("lsra") else qkv
    has_attn = op in ATTENTION_OPERATORS
    return MixerMax(
        embed=embed,
        qkv=qkv,
        heads=heads,
        head_dim=width // min_heads if has_attn else 0,
        rpr_len=rpr_len if has_attn else 0,
        kernel_size=kernel,
    )


def plan_from_space(space) -> ModelPlan:
    """The supernet's plan: all families of the space in every layer slot, at the space's maxima."""
    stacks = {}
    for name in ("encoder", "decoder"):
        st = space.stack(name)
        embed = st.max_embed_dim
        qkv = st.qkv_dim or embed
        min_heads = min(st.heads)
        layers = []
        for i in range(st.max_layers):
            mixers = tuple(
                _mixer_max(op, embed, qkv, st.max_heads, min_heads, st.max_rpr_len, st.kernel_size[i])
                for op in st.operator
            )
            enc_hd = qkv // min_heads if name == "decoder" else 0
            layers.append(LayerPlan(tuple(st.operator), mixers, st.max_ffn_dim, enc_hd))
        stacks[name] = StackPlan(embed, st.qkv_dim, tuple(layers), final_norm="pre" in st.norm)
    return ModelPlan(**stacks)


def plan_from_subnet(subnet: Subnet, qkv_dims: dict[str, Optional[int]],
                     kernel_sizes: dict[str, tuple[int, ...]]) -> ModelPlan:
    """An exported subnet's plan: one family per layer at exactly the subnet's dims."""
    stacks = {}
    for name in ("encoder", "decoder"):
        st: StackConfig = subnet.stack(name)
        embed = st.embed_dim
        qkv = qkv_dims.get(name) or embed
        layers = []
        for i, lay in enumerate(st.layers):
            m = _mixer_max(lay.operator, embed, qkv, lay.heads, lay.heads, lay.rpr_len, kernel_sizes[name][i])
            enc_hd = qkv // lay.heads if name == "decoder" else 0
            layers.append(LayerPlan((lay.operator,), (m,), lay.ffn_dim, enc_hd))
        stacks[name] = StackPlan(embed, qkv_dims.get(name), tuple(layers), final_norm=_uses_final_norm(subnet, name))
    return ModelPlan(**stacks)


def _uses_final_norm(subnet: Subnet, name: str) -> bool:
    """The decoder normalises its output after a pre-norm last layer; the encoder normalises each
    attended state that a pre-norm layer produced (the decoder attends to the last k states)."""
    if name == "decoder":
        return subnet.decoder.layers[-1].norm == "pre"
    k = max(lay.enc_attn_layers or 1 for lay in subnet.decoder.layers)
    return any(lay.norm == "pre" for lay in subnet.encoder.layers[-k:])
