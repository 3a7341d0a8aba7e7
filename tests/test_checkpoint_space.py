"""A supernet checkpoint carries its space: trained with a relative --search-space FILE, it loads
for collect, export and fairseq-generate from another folder after FILE is deleted, never re-reads
an edited FILE, and a model built from another space than its weights' is a one-line error."""
from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from fairseq_nas.cli.main import main
from fairseq_nas.space import parse_space
from helpers import TINY_SPACE_YAML, USER_DIR, read_jsonl, run_cli

EDITED_YAML = TINY_SPACE_YAML.replace("activation: [relu, swish]", "activation: [relu]")  # same shapes


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained_space():
    """The space the supernet was built from: the file's, and (--share-all-embeddings) sharing its embeddings."""
    return dataclasses.replace(parse_space(TINY_SPACE_YAML), share_all_embeddings=True)


def test_the_checkpoint_cfg_holds_the_space_text(custom_space_supernet):
    state = torch.load(custom_space_supernet, map_location="cpu", weights_only=True)
    model_cfg = state["cfg"]["model"]
    assert model_cfg["search_space"] == "tiny.yaml" and not (custom_space_supernet.parent.parent / "tiny.yaml").exists()
    assert parse_space(model_cfg["space_yaml"]) == _trained_space()
    assert parse_space(state["model"]["_extra_state"]["space_yaml"]) == _trained_space()


def test_collect_export_generate_from_another_folder_without_the_yaml(custom_space_supernet, demo_data, tmp_path,
                                                                        monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "archs.jsonl"
    assert main(["collect", str(demo_data), "--supernet", str(custom_space_supernet), "-n", "2", "--out", str(out),
                 "--eval-sentences", "10", "--no-progress", "--cpu", "--seed", "1"]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 2 and all(r["space"] == "tiny_custom" for r in rows)

    space = parse_space(TINY_SPACE_YAML)
    subnet = space.sample(random.Random(3))
    sub_file = tmp_path / "subnet.json"
    sub_file.write_text(subnet.to_json())
    assert main(["export", "--supernet", str(custom_space_supernet), "--subnet", str(sub_file),
                 "--out", str(tmp_path / "subnet.pt")]) == 0
    assert "exported" in capsys.readouterr().out

    gen = run_cli("fairseq_cli.generate", [str(demo_data), "--path", str(custom_space_supernet), "--user-dir",
                                           USER_DIR, "--task", "supernet_translation", "--subnet", str(sub_file),
                                           "--beam", "2", "--batch-size", "16", "--gen-subset", "test",
                                           "--max-len-b", "20", "--required-batch-size-multiple", "1"],
                  cwd=elsewhere)
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 40


def test_an_edited_space_file_is_not_read_and_a_mismatch_is_an_error(custom_space_supernet, demo_data, tmp_path,
                                                                      monkeypatch, capsys):
    from fairseq_nas.collect.evaluate import SubnetEvaluator

    work = custom_space_supernet.parent.parent  # where the relative tiny.yaml was
    monkeypatch.chdir(work)
    (work / "tiny.yaml").write_text(EDITED_YAML)
    try:
        # the checkpoint's own space, not the edited file at its path
        evaluator = SubnetEvaluator(custom_space_supernet, demo_data, max_sentences=4, device="cpu")
        assert evaluator.space == _trained_space() != parse_space(EDITED_YAML)

        # a checkpoint without the text in its cfg (as written before) is built from the edited file:
        # its weights' space (the model's extra state) differs, which is an error, not a silent mismatch
        state = torch.load(custom_space_supernet, map_location="cpu", weights_only=True)
        del state["cfg"]["model"]["space_yaml"]
        old = tmp_path / "old.pt"
        torch.save(state, old)
        assert main(["collect", str(demo_data), "--supernet", str(old), "-n", "1", "--out",
                     str(tmp_path / "a.jsonl"), "--no-progress", "--cpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err, err
        assert err.startswith(f"fairseq-nas: error: {old}: the supernet's weights were trained in space "
                              "'tiny_custom'"), err
        assert "encoder.activation: ['relu', 'swish'] vs ['relu']" in err
    finally:
        (work / "tiny.yaml").unlink()
