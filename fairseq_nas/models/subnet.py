"""`nas_subnet`: a standalone model of exactly one subnet (no unused weights), a normal
fairseq encoder-decoder that trains, fine-tunes and generates like any other."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model

from fairseq_nas.errors import SpaceError
from fairseq_nas.models.base import ElasticEncoderDecoder, build_stacks
from fairseq_nas.models.config import NasSubnetConfig, resolve_space, set_defaults
from fairseq_nas.models.plan import plan_from_subnet
from fairseq_nas.space import Subnet
from fairseq_nas.space.schema import default_kernel_sizes

logger = logging.getLogger(__name__)

SUBNET_DEFAULTS = dict(dropout=0.3, attention_dropout=0.1)


def _from_checkpoint(path: Path) -> tuple[Subnet, str]:
    """(subnet, space YAML) stored in an exported nas_subnet checkpoint."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model_cfg = state["cfg"]["model"]
        return Subnet.from_json(model_cfg["subnet"], source=str(path)), model_cfg["space_yaml"]
    except (KeyError, TypeError):
        raise SpaceError(str(path), "cfg.model.subnet", "not an exported nas_subnet checkpoint "
                         "(fairseq-nas export writes one)") from None


def load_subnet_arg(value: str) -> Subnet:
    """A subnet given as a JSON file, inline JSON, or an exported nas_subnet checkpoint (.pt)."""
    return _load_subnet_and_space(value)[0]


def _load_subnet_and_space(value: str) -> tuple[Subnet, Optional[str]]:
    text = str(value).strip()
    if text.startswith("{"):
        return Subnet.from_json(text, source="--subnet"), None
    path = Path(text)
    if not path.is_file():
        raise SpaceError(text, "--subnet", "no such file (expected a subnet JSON file or an exported checkpoint)")
    if path.suffix == ".pt":
        return _from_checkpoint(path)
    return Subnet.from_json(path.read_text(), source=str(path)), None


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
        set_defaults(cfg, SUBNET_DEFAULTS, NasSubnetConfig)
        value = cfg.subnet or getattr(getattr(task, "cfg", None), "subnet", None)
        if not value:
            raise SpaceError("command line", "--subnet", "nas_subnet needs --subnet FILE (a subnet JSON)")
        subnet, stored_yaml = _load_subnet_and_space(value)
        if stored_yaml and not cfg.space_yaml:
            cfg.space_yaml = stored_yaml
        if cfg.space_yaml or cfg.search_space:
            space = resolve_space(cfg)
            source = str(value) if not str(value).lstrip().startswith("{") else "--subnet"
            space.validate_subnet(subnet, source=source)
            qkv = {"encoder": space.encoder.qkv_dim, "decoder": space.decoder.qkv_dim}
            kernels = {"encoder": tuple(space.encoder.kernel_size), "decoder": tuple(space.decoder.kernel_size)}
        else:
            # No space given: attention width = embed dim, Lite Transformer kernel sizes.
            logger.warning("nas_subnet without --search-space: q/k/v width = embed dim, default conv kernel sizes")
            qkv = {"encoder": None, "decoder": None}
            kernels = {name: default_kernel_sizes(subnet.stack(name).depth) for name in ("encoder", "decoder")}
        try:  # make the checkpoint self-contained
            cfg.subnet = subnet.to_json()
            if cfg.space_yaml is None and cfg.search_space:
                cfg.space_yaml = space.to_yaml()
        except Exception:
            pass
        plan = plan_from_subnet(subnet, qkv_dims=qkv, kernel_sizes=kernels)
        encoder, decoder = build_stacks(cfg, task, plan)
        return cls(cfg, encoder, decoder, subnet)

    def subnet_json(self) -> str:
        return json.dumps(self.active_subnet.to_dict())
