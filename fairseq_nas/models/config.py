"""Model configs (fairseq dataclasses, so checkpoints hold plain values that load under
`weights_only=True`) and the resolution of the search space a model is built from."""

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml
from fairseq.dataclass import FairseqDataclass

from fairseq_nas.errors import FairseqNasError, SpaceError
from fairseq_nas.space import load_space, parse_space

logger = logging.getLogger(__name__)


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


# Model options an exported nas_subnet checkpoint stores. The structural ones change the
# parameters (a fine-tuning command may not contradict them); the others only change training or
# inference behaviour (a fine-tuning command may override them).
STRUCTURAL_OPTIONS = ("share_all_embeddings", "untie_decoder_output")
EXPORTED_OPTIONS = STRUCTURAL_OPTIONS + ("dropout", "attention_dropout", "activation_dropout", "weight_dropout",
                                         "max_source_positions", "max_target_positions")
ELASTIC_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ElasticModelConfig)}


@dataclass
class NasSubnetConfig(ElasticModelConfig):
    subnet: Optional[str] = field(
        default=None, metadata={"help": "the subnet: a JSON file (or inline JSON) from search or space sample, "
                                        "or an exported checkpoint (.pt), whose stored options are then used"})
    # None = not given, so that the options an exported checkpoint stores can fill them (fairseq fills an
    # option the command line does not give with the dataclass default); build_model sets the defaults.
    dropout: Optional[float] = field(default=None, metadata={"help": "dropout probability (default 0.3)"})
    attention_dropout: Optional[float] = field(
        default=None, metadata={"help": "dropout on attention weights (default 0.1)"})
    activation_dropout: Optional[float] = field(
        default=None, metadata={"help": "dropout after the FFN activation (default 0)"})
    weight_dropout: Optional[float] = field(
        default=None, metadata={"help": "DropConnect on convolution kernels (default 0)"})
    share_all_embeddings: Optional[bool] = field(
        default=None, metadata={"help": "share encoder, decoder and output embeddings (needs a joined dict)"})
    untie_decoder_output: Optional[bool] = field(
        default=None, metadata={"help": "do not share the decoder's input embedding with its output projection"})
    max_source_positions: Optional[int] = field(default=None, metadata={"help": "max source length (default 1024)"})
    max_target_positions: Optional[int] = field(default=None, metadata={"help": "max target length (default 1024)"})


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


def keep_in_checkpoint(cfg: Any, **values: Any) -> None:
    """Set `values` on a model config and on the config fairseq saves in the checkpoint.

    For a model registered with a dataclass, fairseq builds the model from a merged copy of
    cfg.model (`merge_with_parent`), so what build_model sets there would not be saved; the copy
    keeps the parent of the original, whose `model` node is the original.
    """
    targets = [cfg]
    parent = cfg._get_parent() if _is_omegaconf(cfg) else None
    original = parent.get("model") if parent is not None and hasattr(parent, "get") else None
    if original is not None and original is not cfg and _is_omegaconf(original) and \
            (original.get("_name") or original.get("arch")) == (cfg.get("_name") or cfg.get("arch")):
        targets.append(original)
    for target in targets:
        try:
            _set_values(target, values)
        except Exception as e:  # a read-only config: the checkpoint then lacks these values
            logger.warning("could not store %s in the model config (%s: %s)", ", ".join(values), type(e).__name__, e)


def _is_omegaconf(cfg: Any) -> bool:
    from omegaconf import OmegaConf

    return OmegaConf.is_config(cfg)


def _set_values(cfg: Any, values: dict[str, Any]) -> None:
    if _is_omegaconf(cfg):
        from omegaconf import open_dict

        with open_dict(cfg):
            for k, v in values.items():
                cfg[k] = v
    else:
        for k, v in values.items():
            setattr(cfg, k, v)


def space_difference(a: Any, b: Any) -> str:
    """The first field where two spaces differ, e.g. "encoder.embed_dim: [16, 32] vs [32]"."""
    from fairseq_nas.space.loader import space_to_dict

    da, db = space_to_dict(a), space_to_dict(b)
    for key in ("encoder", "decoder", "name", "description"):
        va, vb = da.get(key), db.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            for k in list(va) + [k for k in vb if k not in va]:
                if va.get(k) != vb.get(k):
                    return f"{key}.{k}: {va.get(k)} vs {vb.get(k)}"
        elif va != vb:
            return f"{key}: {va!r} vs {vb!r}"
    return "no field differs"


def check_stored_space(built, stored_yaml: str, checkpoint: Optional[str] = None) -> None:
    """A one-line error when the space a checkpoint's weights were trained in (its model extra
    state) is not the space the model was built from (an old checkpoint re-read from an edited
    file, a resume with another space): the weights would load, into a model of another space."""
    where = f"{checkpoint}: " if checkpoint else ""
    stored = parse_space(stored_yaml, source=f"{checkpoint or 'checkpoint'}: model extra state space_yaml")
    if (stored.encoder, stored.decoder) != (built.encoder, built.decoder):
        raise FairseqNasError(
            f"{where}the supernet's weights were trained in space {stored.name!r} (the checkpoint's model extra "
            f"state), but the model was built from another space ({built.source}; {space_difference(stored, built)}); "
            "build it from the space it was trained in (restore that file, or drop --search-space / choice overrides)")
