"""Fine-tuning an exported subnet through fairseq-train: inherited weights start lower than
training from scratch; the fine-tuned checkpoint works with fairseq-generate,
fairseq-interactive and fairseq's hub interface."""
from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest

from fairseq_nas.models.export import export_checkpoint, load_supernet_checkpoint, supernet_from_checkpoint
from helpers import USER_DIR, env, run_cli, train_losses

FINETUNE = ["--user-dir", USER_DIR, "--arch", "nas_subnet", "--optimizer", "adam", "--lr", "5e-4",
            "--max-tokens", "1500", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--no-progress-bar", "--log-format", "json", "--log-interval", "1", "--required-batch-size-multiple",
            "1", "--num-workers", "0", "--dropout", "0.0", "--max-update", "8", "--no-epoch-checkpoints",
            "--seed", "3"]


@pytest.fixture(scope="module")
def finetuned(trained_supernet, demo_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("finetune")
    space, _ = supernet_from_checkpoint(load_supernet_checkpoint(trained_supernet))
    subnet = space.sample(random.Random(8))
    (work / "subnet.json").write_text(subnet.to_json())
    export_checkpoint(trained_supernet, subnet, work / "subnet.pt")
    inherited = run_cli("fairseq_cli.train", [str(demo_data), "--save-dir", str(work / "ft"), *FINETUNE,
                                              "--subnet", str(work / "subnet.pt"),
                                              "--finetune-from-model", str(work / "subnet.pt")])
    scratch = run_cli("fairseq_cli.train", [str(demo_data), "--save-dir", str(work / "scratch"), *FINETUNE,
                                            "--subnet", str(work / "subnet.json"), "--no-save"])
    return work, train_losses(inherited.stdout + inherited.stderr), train_losses(scratch.stdout + scratch.stderr)


def test_inherited_weights_start_lower_than_scratch(finetuned):
    _, inherited, scratch = finetuned
    assert len(inherited) == len(scratch) == 8
    assert inherited[0] < scratch[0] - 0.5, (inherited, scratch)
    assert min(inherited) < min(scratch)


def test_finetuned_checkpoint_generates_interactive_and_hub(finetuned, demo_data):
    work, _, _ = finetuned
    ckpt = work / "ft" / "checkpoint_last.pt"
    gen = run_cli("fairseq_cli.generate", [str(demo_data), "--path", str(ckpt), "--user-dir", USER_DIR,
                                           "--beam", "5", "--batch-size", "16", "--gen-subset", "test",
                                           "--required-batch-size-multiple", "1"])
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 40
    bleu4 = float(re.search(r"BLEU4 = ([0-9.]+)", gen.stdout).group(1))
    from fairseq_nas.bleu import parse_generate_output, score

    report = score(*parse_generate_output(gen.stdout), lang="en")
    assert report.tokenized_bleu == pytest.approx(bleu4, abs=0.02)  # the papers' metric = fairseq's BLEU4

    src_line = (demo_data.parent / "raw" / "test.src").read_text().splitlines()[0]
    inter = subprocess.run([sys.executable, "-m", "fairseq_cli.interactive", str(demo_data), "--path", str(ckpt),
                            "--user-dir", USER_DIR, "--beam", "5", "--source-lang", "src", "--target-lang", "tgt"],
                           input=src_line + "\n", capture_output=True, text=True, env=env(), timeout=300)
    assert inter.returncode == 0, inter.stderr[-2000:]
    assert any(line.startswith("H-0") for line in inter.stdout.splitlines())

    from fairseq_nas.models.subnet import NasSubnetModel

    hub = NasSubnetModel.from_pretrained(str(ckpt.parent), checkpoint_file=ckpt.name,
                                         data_name_or_path=str(demo_data), user_dir=USER_DIR)
    hyp = hub.translate(src_line, beam=5)
    assert isinstance(hyp, str) and hyp.strip()
