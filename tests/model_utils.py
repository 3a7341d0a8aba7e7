"""Build supernets directly (no fairseq-train) for model-level tests."""
from __future__ import annotations

from types import SimpleNamespace

from fairseq.data import Dictionary

from fairseq_nas.models.config import SupernetConfig
from fairseq_nas.models.supernet import SupernetModel

# (space, overrides) that keep every shipped space's structure at test-sized dims
SMALL_SPACES = {
    "hat_iwslt14": dict(encoder_embed_choices="16,24", decoder_embed_choices="16,24", encoder_ffn_choices="32,48",
                        decoder_ffn_choices="32,48", qkv_dim=32),
    "hat_wmt14": dict(encoder_embed_choices="16,24", decoder_embed_choices="16,24", encoder_ffn_choices="32,48",
                      decoder_ffn_choices="32,48", qkv_dim=32),
    "ranknas_iwslt14": dict(encoder_embed_choices="16,32", decoder_embed_choices="16,32",
                            encoder_ffn_choices="32,48", decoder_ffn_choices="32,48"),
    "ranknas_wmt14": dict(encoder_embed_choices="16,32", decoder_embed_choices="16,32",
                          encoder_ffn_choices="32,48", decoder_ffn_choices="32,48"),
    "shrinknas_iwslt14": dict(encoder_embed_choices="16,32", decoder_embed_choices="16,32"),
}


def toy_dictionary(n: int = 40) -> Dictionary:
    d = Dictionary()
    for i in range(n):
        d.add_symbol(f"w{i}")
    return d


def build_supernet(space: str, dictionary: Dictionary | None = None, **overrides) -> SupernetModel:
    d = dictionary or toy_dictionary()
    cfg = SupernetConfig(search_space=space, **{"dropout": 0.0, **SMALL_SPACES.get(space, {}), **overrides})
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d)
    return SupernetModel.build_model(cfg, task).eval()
