"""BLEU: tokenized BLEU equals sacreBLEU's no-tokenization score and fairseq-generate's BLEU4."""
from __future__ import annotations

import subprocess
import sys

import pytest
import sacrebleu

from fairseq_nas.bleu import parse_generate_output, score
from fairseq_nas.errors import FairseqNasError

GEN = """S-1\tder hund .
T-1\tthe dog barks .
H-1\t-0.2\tthe dog barks .
D-1\t-0.2\tthe dog barks .
S-0\tdie katze , die schläft .
T-0\tthe cat , which sleeps , is n't here .
H-0\t-0.5\tthe cat , which sleeps , is here .
D-0\t-0.5\tthe cat , which sleeps , is here .
"""


def test_parse_orders_by_sentence_id():
    hyps, refs = parse_generate_output(GEN)
    assert hyps == ["the cat , which sleeps , is here .", "the dog barks ."]
    assert refs[0].startswith("the cat")


def test_scores_agree_with_sacrebleu_and_detokenize():
    hyps, refs = parse_generate_output(GEN)
    rep = score(hyps, refs, "en")
    assert rep.tokenized_bleu == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score, abs=0.01)
    assert 0 < rep.tokenized_bleu < 100
    assert "tok:none" in rep.tokenized_signature and "tok:13a" in rep.sacrebleu_signature
    perfect = score(refs, refs, "en")
    assert perfect.tokenized_bleu == 100 and perfect.sacrebleu == 100


def test_cli_and_errors(tmp_path):
    f = tmp_path / "gen.txt"
    f.write_text(GEN)
    r = subprocess.run([sys.executable, "-m", "fairseq_nas.cli.main", "bleu", str(f), "--json",
                        str(tmp_path / "b.json")], capture_output=True, text=True)
    assert r.returncode == 0 and "tokenized BLEU" in r.stdout and (tmp_path / "b.json").exists()
    with pytest.raises(FairseqNasError, match="no H-"):
        parse_generate_output("nothing here")
    r = subprocess.run([sys.executable, "-m", "fairseq_nas.cli.main", "bleu", str(tmp_path / "missing")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("fairseq-nas: error:")
