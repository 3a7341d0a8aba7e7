"""`nas_subnet`: a standalone model of exactly one subnet (no unused weights), a normal
fairseq encoder-decoder that trains, fine-tunes and generates like any other."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model

from fairseq_nas.errors import FairseqNasError, SpaceError
from fairseq_nas.models.base import ElasticEncoderDecoder, build_stacks
from fairseq_nas.models.config import (
    ELASTIC_DEFAULTS,
    EXPORTED_OPTIONS,
    STRUCTURAL_OPTIONS,
    NasSubnetConfig,
    keep_in_checkpoint,
    resolve_space,
    set_defaults,
)
from fairseq_nas.models.plan import plan_from_subnet
from fairseq_nas.space import Subnet, load_space, parse_space
from fairseq_nas.space.schema import default_kernel_sizes

logger = logging.getLogger(__name__)

SUBNET_DEFAULTS = dict(dropout=0.3, attention_dropout=0.1)


def _from_checkpoint(path: Path) -> tuple[Subnet, str, dict]:
    """(subnet, space YAML, model options) stored in an exported (or fine-tuned) nas_subnet checkpoint."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model_cfg = state["cfg"]["model"]
        subnet = Subnet.from_json(model_cfg["subnet"], source=str(path))
        return subnet, model_cfg["space_yaml"], {k: model_cfg.get(k) for k in EXPORTED_OPTIONS}
    except (KeyError, TypeError, AttributeError):
        raise SpaceError(str(path), "cfg.model.subnet", "not an exported nas_subnet checkpoint "
                         "(fairseq-nas export writes one)") from None


def load_subnet_arg(value: str) -> Subnet:
    """A subnet given as a JSON file, inline JSON, or an exported nas_subnet checkpoint (.pt)."""
    return _load_subnet_arg(value)[0]


def _load_subnet_arg(value: str) -> tuple[Subnet, Optional[str], Optional[dict]]:
    """(subnet, stored space YAML, stored model options); the last two only from a checkpoint."""
    text = str(value).strip()
    if text.startswith("{"):
        return Subnet.from_json(text, source="--subnet"), None, None
    path = Path(text)
    if not path.is_file():
        raise SpaceError(text, "--subnet", "no such file (expected a subnet JSON file or an exported checkpoint)")
    if path.suffix == ".pt":
        return _from_checkpoint(path)
    return Subnet.from_json(path.read_text(), source=str(path)), None, None


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def apply_exported_options(cfg: Any, exported: dict, checkpoint: str) -> None:
    """Fill the options the command line did not give (None) with the export's. A structural option
    that contradicts the export is an error (the model would not be the exported one); another
    option given on the command line overrides the export's, and says so."""
    for name in EXPORTED_OPTIONS:
        theirs = exported.get(name)
        if theirs is None:
            continue
        mine = getattr(cfg, name, None)
        if mine is None:
            setattr(cfg, name, theirs)
        elif mine != theirs:
            if name in STRUCTURAL_OPTIONS:
                raise FairseqNasError(
                    f"{checkpoint}: {_option(name)} contradicts the export, which has {name}={theirs} (it changes "
                    f"the parameters: fine-tuning would not start from the exported model); drop {_option(name)}")
            logger.warning("%s %s overrides the export's %s (%s)", _option(name), mine, theirs, checkpoint)


@register_model("nas_subnet", dataclass=NasSubnetConfig)
class NasSubnetModel(ElasticEncoderDecoder):
    def __init__(self, cfg: Any, encoder, decoder, subnet: Subnet):
        super().__init__(encoder, decoder)
        self.cfg = cfg
        self.set_subnet(subnet)

    @classmethod
    def add_args(cls, parser):
        gen_parser_from_dataclass(parser, NasSubnetConfig(), delete_default=True)

    @classmethod
    def build_model(cls, cfg: Any, task):
        value = cfg.subnet or getattr(getattr(task, "cfg", None), "subnet", None)
        if not value:
            raise SpaceError("command line", "--subnet", "nas_subnet needs --subnet FILE (a subnet JSON)")
        subnet, stored_yaml, exported = _load_subnet_arg(value)
        if exported is not None:
            apply_exported_options(cfg, exported, str(value))
        if stored_yaml and not cfg.space_yaml:
            given, stored = (load_space(cfg.search_space) if cfg.search_space else None), parse_space(stored_yaml)
            if given is not None and (given.encoder, given.decoder) != (stored.encoder, stored.decoder):
                raise FairseqNasError(f"{value}: --search-space {cfg.search_space} is not the space of the export "
                                      "(it fixes q/k/v widths and kernel sizes); drop --search-space")
            cfg.space_yaml = stored_yaml
        set_defaults(cfg, {**ELASTIC_DEFAULTS, **SUBNET_DEFAULTS}, NasSubnetConfig)
        if cfg.space_yaml or cfg.search_space:
            space = resolve_space(cfg)
            source = str(value) if not str(value).lstrip().startswith("{") else "--subnet"
            space.validate_subnet(subnet, source=source)
            qkv = {"encoder": space.encoder.qkv_dim, "decoder": space.decoder.qkv_dim}
            kernels = {"encoder": tuple(space.encoder.kernel_size), "decoder": tuple(space.decoder.kernel_size)}
        else:
            # No space given: attention width = embed dim, Lite Transformer kernel sizes.
            logger.warning("nas_subnet without --search-space: q/k/v width = embed dim, default conv kernel sizes")
            space = None
            qkv = {"encoder": None, "decoder": None}
            kernels = {name: default_kernel_sizes(subnet.stack(name).depth) for name in ("encoder", "decoder")}
        # The checkpoint carries the subnet, its space and the options it was built with, not the
        # file they came from (which may be deleted, or overwritten by another export).
        keep_in_checkpoint(cfg, subnet=subnet.to_json(), space_yaml=space.to_yaml() if space is not None else None,
                           **{k: getattr(cfg, k) for k in EXPORTED_OPTIONS})
        plan = plan_from_subnet(subnet, qkv_dims=qkv, kernel_sizes=kernels)
        encoder, decoder = build_stacks(cfg, task, plan)
        return cls(cfg, encoder, decoder, subnet)

    def subnet_json(self) -> str:
        return json.dumps(self.active_subnet.to_dict())
