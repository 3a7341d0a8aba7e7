"""`nas_subnet`: a standalone model of exactly one subnet (no unused weights), a normal
fairseq encoder-decoder that trains, fine-tunes and generates like any other."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model

from fairseq_nas.errors import SpaceError
from fairseq_nas.models.base import ElasticEncoderDecoder, build_stacks
from fairseq_nas.models.config import NasSubnetConfig, resolve_space, set_defaults
from fairseq_nas.models.plan import plan_from_subnet
from fairseq_nas.space import Subnet

SUBNET_DEFAULTS = dict(dropout=0.3, attention_dropout=0.1, search_space="shrinknas_iwslt14")


def load_subnet_arg(value: str) -> Subnet:
    """A subnet given as a JSON file path or as inline JSON."""
    text = str(value).strip()
    if text.startswith("{"):
        return Subnet.from_json(text, source="--subnet")
    path = Path(text)
    if not path.is_file():
        raise SpaceError(text, "--subnet", "no such file (expected a subnet JSON file)")
    return Subnet.from_json(path.read_text(), source=str(path))


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
        subnet = load_subnet_arg(value)
        space = resolve_space(cfg)
        space.validate_subnet(subnet, source=str(value) if not str(value).lstrip().startswith("{") else "--subnet")
        try:  # make the checkpoint self-contained
            cfg.subnet = subnet.to_json()
            cfg.space_yaml = space.to_yaml()
        except Exception:
            pass
        plan = plan_from_subnet(
            subnet,
            qkv_dims={"encoder": space.encoder.qkv_dim, "decoder": space.decoder.qkv_dim},
            kernel_sizes={"encoder": tuple(space.encoder.kernel_size), "decoder": tuple(space.decoder.kernel_size)},
        )
        encoder, decoder = build_stacks(cfg, task, plan)
        return cls(cfg, encoder, decoder, subnet)

    def subnet_json(self) -> str:
        return json.dumps(self.active_subnet.to_dict())
