"""An update touches only the subnet it trained, in every training mode that runs on a CPU.

Each mode trains a tiny supernet for a few updates with the real `fairseq-train`, saving a
checkpoint (with the optimizer state) after every update. For each update, the parameters
its subnet did not use (other operator families in every layer, layers beyond its depth)
must be bit-identical before and after it, and their Adam state must not advance. With the
sandwich rule an update trains several subnets: what none of them used must not move.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fairseq_nas  # noqa: F401  (registers the task and models for checkpoint loading)
from fairseq_nas.space import Subnet
from helpers import TINY_SHRINKNAS, TRAIN_COMMON, env, fairseq_train, free_port, read_jsonl

UPDATES = 4
SAVE_EVERY_UPDATE = ["--max-update", str(UPDATES), "--save-interval-updates", "1", "--keep-interval-updates", "-1",
                     "--no-epoch-checkpoints", "--disable-validation", "--seed", "3", "--max-tokens", "400"]
FP16_PER_PARAM = ["--fp16", "--fp16-no-flatten-grads", "--fp16-init-scale", "8"]


def _train(demo_data: Path, save: Path, extra: list[str], ranks: int) -> Path:
    log = save / "subnets.jsonl"
    args = [*TINY_SHRINKNAS, *SAVE_EVERY_UPDATE, "--subnet-log", str(log), "--cpu", *extra]
    if ranks == 1:
        fairseq_train(demo_data, save, args)
        return log
    port = free_port()
    procs = []
    for rank in range(ranks):
        cmd = [sys.executable, "-m", "fairseq_cli.train", str(demo_data), "--save-dir", str(save), *TRAIN_COMMON,
               *args, "--distributed-world-size", str(ranks), "--distributed-rank", str(rank),
               "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
               "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env()))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    return log


def _unused_parameter_names(model, subnet: Subnet) -> set[str]:
    """Autograd's answer: the parameters that get no gradient from a forward pass of `subnet`."""
    model.set_subnet(subnet)
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    src = torch.randint(4, 30, (2, 6))
    prev = torch.randint(4, 30, (2, 5))
    out, _ = model(src, torch.tensor([6, 6]), prev)
    out.float().sum().backward()
    return {name for name, p in model.named_parameters() if p.grad is None}


def _structural_unused(subnet: Subnet, model) -> set[str]:
    """What DESIGN.md section 5 says is unused: other operator families, layers beyond the depth."""
    names = set()
    for stack_name in ("encoder", "decoder"):
        stack = getattr(model, stack_name)
        cfg = subnet.stack(stack_name)
        for i, layer in enumerate(stack.layers):
            for op, mixer in layer.mixers.items():
                if i >= cfg.depth or op != cfg.layers[i].operator:
                    names |= {f"{stack_name}.layers.{i}.mixers.{op}.{n}" for n, _ in mixer.named_parameters()}
    return names


def _check_single_path(save: Path, log: Path, ranks: int) -> None:
    from fairseq import checkpoint_utils

    fairseq_nas.register()
    rows = read_jsonl(log)
    by_rank: dict[int, dict[int, list]] = {r: {} for r in range(ranks)}
    for row in rows:  # an update trains one subnet, or several with the sandwich rule
        by_rank[row["rank"]].setdefault(row["update"], []).append(row["subnet"])
    assert all(by_rank[r] == by_rank[0] for r in range(ranks))  # the same subnets on every rank
    assert sorted(by_rank[0]) == list(range(UPDATES))

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(save / f"checkpoint_1_{UPDATES}.pt")])
    model = models[0].float()
    names = [n for n, _ in model.named_parameters()]  # the optimizer's parameter order
    states = {u: torch.load(save / f"checkpoint_1_{u}.pt", map_location="cpu", weights_only=True)
              for u in range(1, UPDATES + 1)}
    stale_momentum_seen = 0
    for u in range(2, UPDATES + 1):
        # the update that turns checkpoint u-1 into u: what none of its subnets used must not move
        subnets = [Subnet.from_dict(d) for d in by_rank[0][u - 1]]
        unused = set.intersection(*(_unused_parameter_names(model, s) for s in subnets))
        assert set.intersection(*(_structural_unused(s, model) for s in subnets)) <= unused
        before, after = states[u - 1], states[u]
        opt_before = before["last_optimizer_state"]["state"]
        opt_after = after["last_optimizer_state"]["state"]
        changed_used = 0
        for i, name in enumerate(names):
            same = torch.equal(before["model"][name], after["model"][name])
            if name in unused:
                assert same, f"update {u}: unused {name} moved"
                assert (i in opt_before) == (i in opt_after), f"update {u}: {name} gained optimizer state"
                if i in opt_before:
                    stale_momentum_seen += 1
                    for key, value in opt_before[i].items():
                        assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_after[i][key])), \
                            f"update {u}: optimizer state {key} of unused {name} advanced"
            elif not same:
                changed_used += 1
        assert changed_used > 0, f"update {u} trained nothing"
    # the check is only meaningful if some unused parameters carried momentum from earlier updates
    assert stale_momentum_seen > 0


MODES = {
    "fp32": ([], 1),
    "update_freq_2": (["--update-freq", "2"], 1),
    "fp16_per_param": (FP16_PER_PARAM, 1),
    "memory_efficient_fp16": (["--memory-efficient-fp16", "--fp16-init-scale", "8"], 1),
    "two_ranks_legacy_ddp": ([], 2),
    "two_ranks_update_freq_2_fp16": (["--update-freq", "2", *FP16_PER_PARAM], 2),
    "two_ranks_sandwich": (["--sampler", "sandwich", "--sandwich-random", "1"], 2),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_unused_parameters_and_their_optimizer_state_do_not_move(demo_data, tmp_path, mode):
    extra, ranks = MODES[mode]
    log = _train(demo_data, tmp_path / "ck", extra, ranks)
    _check_single_path(tmp_path / "ck", log, ranks)
