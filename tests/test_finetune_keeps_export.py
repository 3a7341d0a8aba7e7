"""Fine-tuning an export with the README's command keeps the exported model: the options it stores
(shared embeddings, dropouts, ...) are read back, a contradicting structural option is a one-line
error, another one a logged override; the fine-tuned checkpoint carries its subnet and space."""
from __future__ import annotations

import logging
import random
from types import SimpleNamespace

import pytest
import torch

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.models.export import export_checkpoint
from fairseq_nas.models.subnet import apply_exported_options
from fairseq_nas.space import parse_space
from helpers import TINY_SPACE_YAML, USER_DIR, run_cli

# the README's command (section 5), with small settings; no --dropout etc.: the export's apply
README_FINETUNE = ["--user-dir", USER_DIR, "--arch", "nas_subnet", "--optimizer", "adam", "--lr", "5e-4",
                   "--max-tokens", "1500", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                   "--no-progress-bar", "--required-batch-size-multiple", "1", "--num-workers", "0",
                   "--max-update", "2", "--no-epoch-checkpoints", "--seed", "3"]


def n_params(state_dict: dict) -> int:
    """Parameters of a saved model, a tensor shared by several names counted once."""
    seen, total = set(), 0
    for t in state_dict.values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel()
    return total


@pytest.fixture(scope="module")
def export(custom_space_supernet, tmp_path_factory):
    """An export of a supernet trained with --share-all-embeddings: (folder, subnet.pt, its model)."""
    work = tmp_path_factory.mktemp("keep_export")
    subnet = parse_space(TINY_SPACE_YAML).sample(random.Random(6))
    model = export_checkpoint(custom_space_supernet, subnet, work / "subnet.pt")
    return work, work / "subnet.pt", model


def test_finetuning_keeps_the_exported_model(export, demo_data, tmp_path):
    work, subnet_pt, model = export
    exported = torch.load(subnet_pt, map_location="cpu", weights_only=True)
    assert exported["cfg"]["model"]["share_all_embeddings"] is True
    n_exported = n_params(exported["model"])
    assert n_exported == sum(p.numel() for p in model.parameters())

    proc = run_cli("fairseq_cli.train", [str(demo_data), "--save-dir", str(tmp_path / "ft"), *README_FINETUNE,
                                         "--subnet", "subnet.pt", "--finetune-from-model", "subnet.pt",
                                         "--attention-dropout", "0.2"], cwd=work)
    assert "--attention-dropout 0.2 overrides the export's 0.0 (subnet.pt)" in proc.stdout + proc.stderr
    tuned = torch.load(tmp_path / "ft" / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert n_params(tuned["model"]) == n_exported
    assert tuned["model"].keys() == exported["model"].keys()
    cfg = tuned["cfg"]["model"]
    for name in ("share_all_embeddings", "untie_decoder_output", "dropout", "activation_dropout", "weight_dropout"):
        assert cfg[name] == exported["cfg"]["model"][name], name
    assert cfg["attention_dropout"] == 0.2
    assert cfg["subnet"] == exported["cfg"]["model"]["subnet"]  # the subnet itself, not the path subnet.pt

    # the fine-tuned checkpoint carries its subnet and space: it needs no subnet.pt
    subnet_pt.rename(tmp_path / "moved.pt")
    try:
        gen = run_cli("fairseq_cli.generate", [str(demo_data), "--path", str(tmp_path / "ft" / "checkpoint_last.pt"),
                                               "--user-dir", USER_DIR, "--beam", "2", "--batch-size", "16",
                                               "--gen-subset", "test", "--max-len-b", "20",
                                               "--required-batch-size-multiple", "1"], cwd=work)
    finally:
        (tmp_path / "moved.pt").rename(subnet_pt)
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 40


def test_a_contradicting_structural_option_is_a_one_line_error(export, demo_data, tmp_path):
    work, subnet_pt, _ = export
    proc = run_cli("fairseq_cli.train", [str(demo_data), "--save-dir", str(tmp_path / "ft"), *README_FINETUNE,
                                         "--subnet", str(subnet_pt), "--finetune-from-model", str(subnet_pt),
                                         "--untie-decoder-output"], check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"fairseq-nas: error: {subnet_pt}: --untie-decoder-output contradicts the export, which has "
                      "untie_decoder_output=False (it changes the parameters: fine-tuning would not start from the "
                      "exported model); drop --untie-decoder-output"], proc.stderr[-3000:]
    assert not (tmp_path / "ft" / "checkpoint_last.pt").exists()


def test_exported_options_fill_override_or_contradict(caplog):
    exported = {"share_all_embeddings": False, "untie_decoder_output": False, "dropout": 0.3,
                "attention_dropout": 0.1, "max_source_positions": 1024}
    cfg = SimpleNamespace(share_all_embeddings=None, untie_decoder_output=None, dropout=None, attention_dropout=0.1,
                          max_source_positions=256)
    with caplog.at_level(logging.INFO, logger="fairseq_nas.models.subnet"):
        apply_exported_options(cfg, exported, "x.pt")
    assert (cfg.share_all_embeddings, cfg.untie_decoder_output, cfg.dropout) == (False, False, 0.3)  # filled
    assert cfg.attention_dropout == 0.1 and cfg.max_source_positions == 256
    assert [r.getMessage() for r in caplog.records] == ["--max-source-positions 256 overrides the export's 1024 (x.pt)"]
    # an export without shared embeddings, fine-tuned with --share-all-embeddings
    cfg = SimpleNamespace(share_all_embeddings=True)
    with pytest.raises(FairseqNasError, match=r"^x\.pt: --share-all-embeddings contradicts the export, which has "
                                              r"share_all_embeddings=False"):
        apply_exported_options(cfg, exported, "x.pt")
