"""`supernet_distillation`: weight 0 is label_smoothed_cross_entropy exactly; weight > 0 adds
weight * KL(largest || subnet) >= 0, leaves the sampled subnet set; it trains in fairseq-train."""
from __future__ import annotations

import math
import random

import pytest
import torch

from helpers import TINY_SHRINKNAS, USER_DIR, fairseq_train, train_losses


def _build(data, criterion_args: list[str]):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_nas

    fairseq_nas.register()
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--user-dir", USER_DIR, "--task", "supernet_translation",
                                                *TINY_SHRINKNAS, "--label-smoothing", "0.1", *criterion_args])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return task, model, task.build_criterion(cfg.criterion)


@pytest.fixture(scope="module")
def setup(demo_data):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    task, model, distill = _build(demo_data, ["--criterion", "supernet_distillation", "--distillation-weight",
                                              "0.5"])
    _, _, lsce = _build(demo_data, ["--criterion", "label_smoothed_cross_entropy"])
    task.load_dataset("valid")
    ds = task.dataset("valid")
    sample = ds.collater([ds[i] for i in range(16)])
    yield task, model, distill, lsce, sample
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup_nodrop(demo_data):
    nodrop = ["--dropout", "0", "--attention-dropout", "0", "--weight-dropout", "0"]
    task, model, distill = _build(demo_data, ["--criterion", "supernet_distillation", "--distillation-weight",
                                              "0.5", *nodrop])
    return task, model, distill, None, None


def _loss(criterion, model, sample, seed=3):
    torch.manual_seed(seed)  # the model has attention and weight dropout: same masks for both
    return criterion(model, sample)


def test_weight_zero_equals_label_smoothed_cross_entropy_exactly(setup, demo_data):
    task, model, _, lsce, sample = setup
    from fairseq_nas.criterions.supernet_distillation import SupernetDistillationCriterion

    assert isinstance(setup[2], SupernetDistillationCriterion)  # registered under supernet_distillation
    zero = SupernetDistillationCriterion(task, False, 0.1, distillation_weight=0.0)
    model.set_subnet(model.space.sample(random.Random(1)))
    model.train()
    loss0, size0, log0 = _loss(zero, model, sample)
    ref, size, log = _loss(lsce, model, sample)
    assert torch.equal(loss0, ref) and size0 == size
    assert torch.equal(log0["nll_loss"], log["nll_loss"]) and "distill_kl" not in log0


def test_positive_weight_adds_a_nonnegative_kl_to_the_largest_subnet(setup, setup_nodrop):
    task, model, distill, lsce, sample = setup
    subnet = model.space.sample(random.Random(2))
    model.set_subnet(subnet)
    model.train()
    loss, _, log = _loss(distill, model, sample)
    ref, _, _ = _loss(lsce, model, sample)
    kl = log["distill_kl"]
    assert float(kl) > 0
    torch.testing.assert_close(loss, ref + 0.5 * kl)
    assert model.active_subnet == subnet and model.training  # the sampled subnet is set back
    model.zero_grad()
    loss.backward()  # the teacher ran under no_grad: only the student's graph
    assert any(p.grad is not None for p in model.parameters())

    # validation (eval mode) reports the plain label-smoothed loss
    model.eval()
    val, _, val_log = _loss(distill, model, sample)
    assert torch.equal(val, _loss(lsce, model, sample)[0]) and "distill_kl" not in val_log

    # the largest subnet distilling into itself, without dropout: KL 0
    _, plain, plain_distill, _, _ = setup_nodrop
    plain.set_subnet(plain.space.largest())
    plain.train()
    _, _, self_log = _loss(plain_distill, plain, sample)
    assert abs(float(self_log["distill_kl"])) < 1e-4


def test_distillation_trains_through_fairseq_train(demo_data, tmp_path):
    proc = fairseq_train(demo_data, tmp_path / "ck", TINY_SHRINKNAS + [
        "--max-update", "8", "--no-save", "--distillation-weight", "1.0"] + [
        "--criterion", "supernet_distillation"])
    out = proc.stdout + proc.stderr
    losses = train_losses(out)
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert '"distill_kl"' in out and "valid_loss_largest" in out
