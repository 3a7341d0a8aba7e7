"""Supernet training through the real `fairseq-train`: loss falls, subnet sequences are
seeded and survive a resume, and distributed ranks train the same subnet."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fairseq_nas.sampling import UniformSampler
from fairseq_nas.space import load_space
from helpers import (
    TINY_HAT,
    TINY_RANKNAS,
    TINY_SHRINKNAS,
    TRAIN_COMMON,
    env,
    fairseq_train,
    free_port,
    read_jsonl,
    train_losses,
)


def _falls(losses: list[float]) -> bool:
    k = max(3, len(losses) // 5)
    return sum(losses[-k:]) / k < sum(losses[:k]) / k - 0.5


def test_shrinknas_supernet_trains_and_loss_falls(demo_data, tmp_path):
    proc = fairseq_train(demo_data, tmp_path / "ck", TINY_SHRINKNAS + [
        "--max-update", "40", "--subnet-log", str(tmp_path / "subnets.jsonl"), "--no-save"])
    losses = train_losses(proc.stdout + proc.stderr)
    assert len(losses) == 40
    assert _falls(losses), losses
    rows = read_jsonl(tmp_path / "subnets.jsonl")
    assert [r["update"] for r in rows] == list(range(40))
    ops = {lay["operator"] for r in rows for st in ("encoder", "decoder") for lay in r["subnet"][st]["layers"]}
    assert len(ops) >= 4, ops  # heterogeneous: several operator families were trained
    out = proc.stdout + proc.stderr
    assert "loss_largest" in out and "loss_smallest" in out


@pytest.mark.parametrize("arch_args", [TINY_HAT, TINY_RANKNAS], ids=["hat", "ranknas"])
def test_hat_and_ranknas_supernets_train(demo_data, tmp_path, arch_args):
    proc = fairseq_train(demo_data, tmp_path / "ck", arch_args + ["--max-update", "30", "--no-save"])
    losses = train_losses(proc.stdout + proc.stderr)
    assert len(losses) == 30 and _falls(losses), losses


def test_same_seed_same_subnets_and_resume_continues_the_sequence(demo_data, tmp_path):
    def run(save_dir, max_update, seed, log):
        fairseq_train(demo_data, save_dir, TINY_SHRINKNAS + [
            "--max-update", str(max_update), "--seed", str(seed), "--subnet-log", str(log),
            "--save-interval-updates", "4", "--no-epoch-checkpoints", "--disable-validation"])

    run(tmp_path / "a", 8, 5, tmp_path / "a.jsonl")
    run(tmp_path / "b", 4, 5, tmp_path / "b.jsonl")  # stopped after 4 updates ...
    run(tmp_path / "b", 8, 5, tmp_path / "b.jsonl")  # ... and resumed from checkpoint_last.pt
    a, b = (read_jsonl(tmp_path / f"{n}.jsonl") for n in "ab")
    assert [r["update"] for r in b] == list(range(8))  # no update repeated or skipped
    assert [r["subnet"] for r in a] == [r["subnet"] for r in b]
    assert len({str(r["subnet"]) for r in a}) > 4
    # the sampler state travelled in the checkpoint (loaded under weights_only=True)
    state = torch.load(tmp_path / "b" / "checkpoint_last.pt", weights_only=True)
    assert state["model"]["_extra_state"]["sampler"]["kind"] == "uniform"
    assert state["model"]["_extra_state"]["sampler"]["seed"] == 5


def test_subnet_sequence_depends_only_on_seed_and_update():
    space = load_space("shrinknas_iwslt14")
    a, b, c = UniformSampler(space, 5), UniformSampler(space, 5), UniformSampler(space, 6)
    seq_a = [a.subnet_for_update(u) for u in range(20)]
    assert seq_a == [b.subnet_for_update(u) for u in reversed(range(20))][::-1]  # order of asking is irrelevant
    assert seq_a != [c.subnet_for_update(u) for u in range(20)]
    restored = UniformSampler(load_space("hat_iwslt14"), 0)
    restored.load_state_dict(a.state_dict())
    assert [restored.subnet_for_update(u) for u in range(20)] == seq_a


def test_two_cpu_ranks_train_the_same_subnet_at_every_update(demo_data, tmp_path):
    port = free_port()
    log = tmp_path / "subnets.jsonl"
    procs = []
    for rank in (0, 1):
        args = [sys.executable, "-m", "fairseq_cli.train", str(demo_data), "--save-dir", str(tmp_path / "ck"),
                *TRAIN_COMMON, *TINY_SHRINKNAS, "--max-update", "8", "--no-save", "--subnet-log", str(log),
                "--cpu", "--distributed-world-size", "2", "--distributed-rank", str(rank),
                "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
                "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=env()))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    rows = read_jsonl(log)
    by_rank = {r: {row["update"]: row["subnet"] for row in rows if row["rank"] == r} for r in (0, 1)}
    assert sorted(by_rank[0]) == sorted(by_rank[1]) == list(range(8))
    assert by_rank[0] == by_rank[1]
    assert len({str(s) for s in by_rank[0].values()}) > 1  # the subnet did change between updates
