"""Model configs (fairseq dataclasses, so checkpoints hold plain values that load under
`weights_only=True`) and the resolution of the search space a model is built from."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml
from fairseq.dataclass import FairseqDataclass

from fairseq_nas.errors import SpaceError
from fairseq_nas.space import load_space, parse_space


@dataclass
class ElasticModelConfig(FairseqDataclass):
    dropout: float = field(default=0.1, metadata={"help": "dropout probability"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    weight_dropout: float = field(default=0.0, metadata={"help": "DropConnect on convolution kernels"})
    share_all_embeddings: bool = field(
        default=False, metadata={"help": "share encoder, decoder and output embeddings (needs a joined dict)"})
    untie_decoder_output: bool = field(
        default=False, metadata={"help": "do not share the decoder's input embedding with its output projection"})
    max_source_positions: int = field(default=1024, metadata={"help": "max source length"})
    max_target_positions: int = field(default=1024, metadata={"help": "max target length"})
    search_space: Optional[str] = field(
        default=None, metadata={"help": "search space: a shipped name (e.g. shrinknas_iwslt14) or a YAML file"})
    space_yaml: Optional[str] = field(
        default=None, metadata={"help": "internal: the resolved space, stored so checkpoints are self-contained"})


OVERRIDE_FIELDS = {
    # option name -> (stack, space key)
    "encoder_embed_choices": ("encoder", "embed_dim"),
    "decoder_embed_choices": ("decoder", "embed_dim"),
    "encoder_ffn_choices": ("encoder", "ffn_dim"),
    "decoder_ffn_choices": ("decoder", "ffn_dim"),
    "encoder_heads_choices": ("encoder", "heads"),
    "decoder_heads_choices": ("decoder", "heads"),
    "encoder_layers_choices": ("encoder", "layers"),
    "decoder_layers_choices": ("decoder", "layers"),
    "qkv_dim": (None, "qkv_dim"),
}


@dataclass
class SupernetConfig(ElasticModelConfig):
    encoder_embed_choices: Optional[str] = field(
        default=None, metadata={"help": "override the space's encoder embed dims, e.g. 64,96"})
    decoder_embed_choices: Optional[str] = field(default=None, metadata={"help": "override decoder embed dims"})
    encoder_ffn_choices: Optional[str] = field(
        default=None, metadata={"help": "override encoder FFN dims (replaces FFN ratios), e.g. 128,256"})
    decoder_ffn_choices: Optional[str] = field(default=None, metadata={"help": "override decoder FFN dims"})
    encoder_heads_choices: Optional[str] = field(default=None, metadata={"help": "override encoder heads"})
    decoder_heads_choices: Optional[str] = field(default=None, metadata={"help": "override decoder heads"})
    encoder_layers_choices: Optional[str] = field(default=None, metadata={"help": "override encoder depths"})
    decoder_layers_choices: Optional[str] = field(default=None, metadata={"help": "override decoder depths"})
    qkv_dim: Optional[int] = field(
        default=None, metadata={"help": "fix the attention q/k/v width (0: follow the embed dim)"})


@dataclass
class NasSubnetConfig(ElasticModelConfig):
    subnet: Optional[str] = field(
        default=None, metadata={"help": "the subnet: a JSON file (or inline JSON) from search or space sample"})


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).replace(" ", "").strip("[]").split(",") if v]
    except ValueError:
        raise SpaceError("command line", f"--{option.replace('_', '-')}",
                         f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise SpaceError("command line", f"--{option.replace('_', '-')}", "expected at least one integer")
    return values


def resolve_space(cfg: Any):
    """The space a model is built from: the stored YAML if present, else the named space with
    any command-line overrides applied (re-validated). Stores the result in cfg.space_yaml."""
    stored = getattr(cfg, "space_yaml", None)
    if stored:
        return parse_space(stored, source="checkpoint space_yaml")
    name = getattr(cfg, "search_space", None)
    if not name:
        raise SpaceError("command line", "--search-space", "no search space given (a shipped name or a YAML file)")
    space = load_space(name)
    overrides = {k: getattr(cfg, k, None) for k in OVERRIDE_FIELDS}
    overrides = {k: v for k, v in overrides.items() if v not in (None, "")}
    if overrides:
        data = yaml.safe_load(space.to_yaml())
        for option, value in overrides.items():
            stack, key = OVERRIDE_FIELDS[option]
            if key == "qkv_dim":
                for st in ("encoder", "decoder"):
                    data[st]["qkv_dim"] = int(value) or None
                continue
            data[stack][key] = _int_list(value, option)
            if key == "ffn_dim":
                data[stack].pop("ffn_ratio", None)
            if key == "layers":
                ks = list(data[stack].get("kernel_size") or [])
                need = max(data[stack]["layers"])
                data[stack]["kernel_size"] = (ks + [ks[-1] if ks else 31] * need)[:need] if ks else None
                if data[stack]["kernel_size"] is None:
                    del data[stack]["kernel_size"]
        # A shallower encoder: keep only the encoder-decoder attention choices it can serve.
        enc_max = max(data["encoder"]["layers"])
        attn = [k for k in data["decoder"].get("enc_attn_layers") or [] if k <= enc_max]
        if data["decoder"].get("enc_attn_layers"):
            data["decoder"]["enc_attn_layers"] = attn or [enc_max]
        space = parse_space(yaml.safe_dump(data, sort_keys=False),
                                source=f"{space.source} with command-line overrides")
    return space


def set_defaults(cfg: Any, defaults: dict[str, Any], dataclass_type: type) -> None:
    """Fill unset fields: first from `defaults` (the arch), then from the dataclass."""
    for f in dataclasses.fields(dataclass_type):
        if getattr(cfg, f.name, None) is None:
            if f.name in defaults:
                value = defaults[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                continue
            setattr(cfg, f.name, value)
