"""The heterogeneous weight-sharing supernet, registered as fairseq model `supernet` with
one architecture per shipped search space."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture

from fairseq_nas.models.base import ElasticEncoderDecoder, build_stacks
from fairseq_nas.models.config import (
    SupernetConfig,
    check_stored_space,
    keep_in_checkpoint,
    resolve_space,
    set_defaults,
)
from fairseq_nas.models.plan import plan_from_space
from fairseq_nas.space import Subnet

logger = logging.getLogger(__name__)

# arch name -> defaults (the search space and regularisation of its paper)
SUPERNET_ARCHS: dict[str, dict[str, Any]] = {
    "supernet_hat_iwslt14": dict(search_space="hat_iwslt14", dropout=0.3, attention_dropout=0.1),
    "supernet_hat_wmt14": dict(search_space="hat_wmt14", dropout=0.3, attention_dropout=0.1,
                               share_all_embeddings=True),
    "supernet_ranknas_iwslt14": dict(search_space="ranknas_iwslt14", dropout=0.3, attention_dropout=0.1),
    "supernet_ranknas_wmt14": dict(search_space="ranknas_wmt14", dropout=0.3, attention_dropout=0.1,
                                   share_all_embeddings=True),
    "supernet_shrinknas_iwslt14": dict(search_space="shrinknas_iwslt14", dropout=0.3, attention_dropout=0.1,
                                       weight_dropout=0.1),
}


@register_model("supernet", dataclass=SupernetConfig)
class SupernetModel(ElasticEncoderDecoder):
    """All operator families of the space in every layer, at the space's largest dims.

    The task sets the active subnet before each forward pass (`set_subnet`). Sampler/DSS
    state travels with the model (`get_extra_state`) because fairseq restores the model's
    state on resume but not the task's.
    """

    def __init__(self, cfg: Any, encoder, decoder, space):
        super().__init__(encoder, decoder)
        self.cfg = cfg
        self.space = space
        self.sampler_state: Optional[dict] = None
        self.set_subnet(space.largest())

    @classmethod
    def add_args(cls, parser):
        # No defaults on the parser, so each architecture can set its own (fairseq's convention).
        gen_parser_from_dataclass(parser, SupernetConfig(), delete_default=True)

    @classmethod
    def build_model(cls, cfg: Any, task):
        set_defaults(cfg, SUPERNET_ARCHS.get(getattr(cfg, "arch", None) or getattr(cfg, "_name", ""), {}),
                     SupernetConfig)
        space = resolve_space(cfg)
        # the space decides whether embeddings are shared when it says; else --share-all-embeddings (or the
        # arch). The stored space always says, so every later stage counts the params this model has.
        share = bool(space.embeddings_shared(True if cfg.share_all_embeddings else None))
        space = dataclasses.replace(space, share_all_embeddings=share)
        # the checkpoint carries the space, not the path (or the overrides) it came from
        keep_in_checkpoint(cfg, space_yaml=space.to_yaml(), share_all_embeddings=share)
        plan = plan_from_space(space)
        encoder, decoder = build_stacks(cfg, task, plan)
        model = cls(cfg, encoder, decoder, space)
        logger.info("supernet space %s: %s subnets", space.name, f"{space.num_subnets():.3g}")
        return model

    def set_subnet(self, subnet: Subnet) -> None:
        self.space.validate_subnet(subnet, source="subnet")
        super().set_subnet(subnet)

    def get_extra_state(self) -> dict:
        sampler = getattr(self, "sampler", None)
        # The space travels here too (besides cfg.model.space_yaml), so that a load can check that the
        # model was built from the space its weights were trained in (set_extra_state).
        return {"sampler": sampler.state_dict() if sampler is not None else self.sampler_state,
                "space_yaml": self.space.to_yaml()}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict):
            if state.get("space_yaml"):
                check_stored_space(self.space, state["space_yaml"])
            self.sampler_state = state.get("sampler")


def _arch_fn(defaults: dict[str, Any]):
    def apply(cfg):
        set_defaults(cfg, defaults, SupernetConfig)

    return apply


for _arch, _defaults in SUPERNET_ARCHS.items():
    register_model_architecture("supernet", _arch)(_arch_fn(_defaults))
