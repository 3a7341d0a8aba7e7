"""The SequenceGenerator timing path decodes exactly what the bare loop decodes."""
from __future__ import annotations

import pytest
import torch
from test_latency import TINY_SPACE

from fairseq_nas.latency.generator import make_generator
from fairseq_nas.latency.measure import build_standalone
from fairseq_nas.latency.store import sample_subnets
from fairseq_nas.latency.timing import SubnetTimer, beam_decode
from fairseq_nas.space import load_space

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _model(space, seed: int, vocab: int = 60):
    torch.manual_seed(seed)
    model = build_standalone(sample_subnets(space, 1, seed=seed)[0], space, vocab, vocab)
    with torch.no_grad():  # larger weights: random models that do not repeat one token forever
        for p in model.parameters():
            p.mul_(6.0)
    return model


@pytest.mark.parametrize("seed", range(4))
def test_generator_decodes_the_tokens_of_the_bare_loop(tmp_path, seed):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_SPACE)
    space = load_space(p)
    model = _model(space, seed)
    src_len, tgt_len, beam = 7, 9, 3 + seed % 3
    gen = SubnetTimer(model, src_len, tgt_len, beam, "generator", threads=1, seed=seed)
    bare = SubnetTimer(model, src_len, tgt_len, beam, "bare", threads=1, seed=seed)
    best_gen, best_bare = gen.decode(), bare.decode()
    assert best_gen.tolist() == best_bare.tolist()
    assert len(best_gen) == tgt_len and best_gen[-1].item() == 2 and 2 not in best_gen[:-1].tolist()

    # every hypothesis of the beam, in order, with its score (fairseq's is length-normalised)
    with torch.no_grad():
        hypos = make_generator(model, beam, tgt_len).generate([model], gen.sample)[0]
        enc = model.encoder(bare.src, bare.src_lengths)
        tokens, scores = beam_decode(model, enc, beam, tgt_len, len(model.decoder.dictionary))
    assert [h["tokens"].tolist() for h in hypos] == tokens[:, 1:].tolist()
    assert len(set(best_gen.tolist())) > 2  # a real sequence, not one token repeated
    torch.testing.assert_close(torch.stack([h["score"] for h in hypos]), scores / tgt_len)
