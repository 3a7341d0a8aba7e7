"""Timing fairseq's own `SequenceGenerator`: what `fairseq-generate`, `fairseq-interactive` and
the hub interface run for beam search (the default decoder loop of the latency protocol).

Every run must decode the same number of steps whatever the (random) weights predict, so the
generator gets `min_len = max_len = tgt_len - 1` (`max_len_a = 0`, `max_len_b = tgt_len - 1`):
end-of-sentence is forbidden for the first tgt_len - 1 steps and forced at the last one, as
fairseq forces it at its maximum length. That is tgt_len decoder calls and tgt_len tokens
(the last one </s>), exactly what the bare loop (`measure.beam_decode`) decodes.
"""
from __future__ import annotations

from typing import Any

import torch

PAD, EOS, UNK, BOS = 1, 2, 3, 0  # fairseq Dictionary's special symbols


class GeneratorDictionary:
    """What SequenceGenerator reads of a target dictionary: its size and special symbols."""

    def __init__(self, size: int):
        self.size = int(size)

    def __len__(self) -> int:
        return self.size

    def pad(self) -> int:
        return PAD

    def eos(self) -> int:
        return EOS

    def unk(self) -> int:
        return UNK

    def bos(self) -> int:
        return BOS


def make_generator(model, beam: int, tgt_len: int):
    """A SequenceGenerator over `model` that decodes exactly `tgt_len` steps (see the module
    docstring); fairseq-generate's other defaults (length-normalised scores, no unk penalty)."""
    from fairseq.sequence_generator import SequenceGenerator

    steps = int(tgt_len) - 1
    return SequenceGenerator([model], GeneratorDictionary(len(model.decoder.dictionary)), beam_size=beam,
                             max_len_a=0, max_len_b=steps, min_len=steps)


def generator_sample(src: torch.Tensor, src_lengths: torch.Tensor) -> dict[str, Any]:
    """The batch dict SequenceGenerator.generate takes."""
    return {"net_input": {"src_tokens": src, "src_lengths": src_lengths}}


def generate(generator, model, sample: dict[str, Any]) -> list:
    """One beam search: the sentence's finalized hypotheses, best first (fairseq's format)."""
    return generator.generate([model], sample)[0]
