"""A file that is not a supernet checkpoint is a one-line error in export and collect that
says what the file is, never torch's advice to turn the weights_only check off."""
from __future__ import annotations

import collections
import os

import pytest
import torch

from fairseq_nas.cli.main import main
from fairseq_nas.space import load_space
from helpers import fairseq_train


class NotAFairseqType:
    pass


@pytest.fixture(scope="module")
def transformer_checkpoint(demo_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("transformer")
    fairseq_train(demo_data, save, ["--task", "translation", "--arch", "transformer", "--encoder-layers", "1",
                                    "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
                                    "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
                                    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
                                    "--max-update", "1", "--no-epoch-checkpoints", "--disable-validation"])
    return save / "checkpoint_last.pt"


def _bad_files(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(os.urandom(4000))
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "cfg": {}, "x": collections.OrderedDict(a=NotAFairseqType())}, unsafe)
    return {text: "not a fairseq checkpoint", noise: "not a fairseq checkpoint",
            unsafe: "NotAFairseqType object, which is not among the fairseq types"}


@pytest.mark.parametrize("command", ["export", "collect"])
def test_a_file_that_is_no_supernet_checkpoint_is_one_line(command, tmp_path, capsys, demo_data,
                                                           transformer_checkpoint):
    subnet = tmp_path / "s.json"
    subnet.write_text(load_space("shrinknas_iwslt14").smallest().to_json())
    cases = _bad_files(tmp_path)
    cases[transformer_checkpoint] = "not a fairseq-nas supernet checkpoint (arch 'transformer')"
    for path, expected in cases.items():
        if command == "export":
            argv = ["export", "--supernet", str(path), "--subnet", str(subnet), "--out", str(tmp_path / "o.pt")]
        else:
            argv = ["collect", str(demo_data), "--supernet", str(path), "-n", "1", "--out", str(tmp_path / "a.jsonl")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert expected in err and str(path) in err, err
        assert "weights_only` set to `False" not in err and "Re-running" not in err
