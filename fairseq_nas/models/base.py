"""Shared construction of the supernet and the standalone subnet model."""
from __future__ import annotations

from typing import Any, Optional

from fairseq.models import FairseqEncoderDecoderModel
from torch import nn

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.models.plan import ModelPlan
from fairseq_nas.models.stacks import ElasticDecoder, ElasticEncoder


def _embedding(dictionary, dim: int) -> nn.Embedding:
    emb = nn.Embedding(len(dictionary), dim, padding_idx=dictionary.pad())
    nn.init.normal_(emb.weight, mean=0, std=dim**-0.5)
    nn.init.constant_(emb.weight[dictionary.pad()], 0)
    return emb


def build_stacks(cfg: Any, task, plan: ModelPlan) -> tuple[ElasticEncoder, ElasticDecoder]:
    src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
    output_projection: Optional[nn.Parameter] = None
    if cfg.share_all_embeddings:
        if src_dict != tgt_dict:
            raise FairseqNasError("--share-all-embeddings needs a joined dictionary "
                                  "(fairseq-preprocess --joined-dictionary)")
        shared = _embedding(src_dict, max(plan.encoder.embed, plan.decoder.embed))
        enc_emb = dec_emb = shared
    else:
        enc_emb = _embedding(src_dict, plan.encoder.embed)
        dec_emb = _embedding(tgt_dict, plan.decoder.embed)
    if cfg.untie_decoder_output:
        output_projection = nn.Parameter(nn.init.normal_(
            dec_emb.weight.new_empty(len(tgt_dict), plan.decoder.embed), std=plan.decoder.embed**-0.5))
    encoder = ElasticEncoder(cfg, src_dict, enc_emb, plan.encoder)
    decoder = ElasticDecoder(cfg, tgt_dict, dec_emb, plan.decoder, plan.encoder.embed, output_projection)
    return encoder, decoder


class ElasticEncoderDecoder(FairseqEncoderDecoderModel):
    """An encoder-decoder whose active architecture is a Subnet."""

    def set_subnet(self, subnet) -> None:
        self.encoder.set_config(subnet.encoder)
        self.decoder.set_config(subnet.decoder)
        self.active_subnet = subnet

    def max_positions(self):
        return (self.encoder.max_positions(), self.decoder.max_positions())
