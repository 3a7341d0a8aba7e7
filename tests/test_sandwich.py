"""The sandwich rule with in-place distillation: largest + smallest + N random subnets per
update, trained through the real `fairseq-train`; the distillation term is a real KL to
the largest subnet's output of the same update."""
from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from test_dss import DSS_ARGS

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.sampling import DSSSampler, UniformSampler
from fairseq_nas.space import Subnet, load_space
from fairseq_nas.tasks.sandwich import check_criterion, sandwich_subnets, sandwich_train_step
from helpers import TINY_SHRINKNAS, fairseq_train, read_jsonl, train_losses
from model_utils import build_supernet, toy_dictionary


def _falls(losses: list[float]) -> bool:
    k = max(3, len(losses) // 5)
    return sum(losses[-k:]) / k < sum(losses[:k]) / k - 0.5


@pytest.mark.parametrize("sampler", ["sandwich", "dss_sandwich"])
def test_sandwich_training_trains_largest_smallest_and_random_subnets_and_loss_falls(demo_data, tmp_path, sampler):
    log = tmp_path / "subnets.jsonl"
    extra = DSS_ARGS[2:] if sampler == "dss_sandwich" else []  # DSS every epoch, tiny population
    proc = fairseq_train(demo_data, tmp_path / "ck", TINY_SHRINKNAS + [
        "--sampler", sampler, "--sandwich-random", "2", "--max-update", "24", "--subnet-log", str(log),
        "--no-save", "--seed", "4", *extra])
    out = proc.stdout + proc.stderr
    losses = train_losses(out)
    assert len(losses) == 24 and _falls(losses), losses
    assert "loss_kl" in out and "loss_smallest" in out and "loss_random" in out
    by_update: dict[int, list[dict]] = defaultdict(list)
    for row in read_jsonl(log):
        by_update[row["update"]].append(row)
    assert sorted(by_update) == list(range(24))
    for rows in by_update.values():
        assert [r["role"] for r in rows] == ["largest", "smallest", "random", "random"]
        subnets = [Subnet.from_dict(r["subnet"]) for r in rows]
        assert subnets[0].encoder.embed_dim == 32 and subnets[1].encoder.embed_dim == 16
        assert len({s.key() for s in subnets[2:]}) >= 1
    if sampler == "dss_sandwich":
        assert (tmp_path / "ck" / "dss.jsonl").is_file()  # DSS ran on top of the sandwich
        assert "DSS 1 applied" in out


def test_the_sandwich_draws_its_random_subnets_from_the_sampler():
    space = load_space("shrinknas_iwslt14")
    uniform = UniformSampler(space, 3)
    roles = sandwich_subnets(uniform, space, 7, 3)
    assert [r for r, _ in roles] == ["largest", "smallest", "random", "random", "random"]
    assert roles[0][1] == space.largest() and roles[1][1] == space.smallest()
    assert roles[2][1] == uniform.subnet_for_update(7)  # the first draw is the one-subnet sampler's
    assert [s for _, s in sandwich_subnets(uniform, space, 7, 3)] == [s for _, s in roles]  # seeded per update
    dss = DSSSampler(space, 3)
    drawn = [s for role, s in sandwich_subnets(dss, space, 0, 3) if role == "random"]
    assert {s.key() for s in drawn} <= {s.key() for s in dss.remembered()}  # DSS phase 1 remembers them all


class _Backward:
    """The one optimizer method the step uses: fairseq's optimizers call loss.backward()."""

    def backward(self, loss):
        loss.backward()


def _criterion(task_dict):
    task = type("T", (), {"target_dictionary": task_dict})()
    return LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)


def _sample(d, bsz=3, src_len=6, tgt_len=5):
    torch.manual_seed(0)
    src = torch.randint(4, len(d), (bsz, src_len))
    tgt = torch.randint(4, len(d), (bsz, tgt_len))
    prev = torch.cat([torch.full((bsz, 1), d.eos()), tgt[:, :-1]], dim=1)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.full((bsz,), src_len), "prev_output_tokens": prev},
            "target": tgt, "ntokens": bsz * tgt_len}


def test_distillation_term_is_the_kl_to_the_largest_and_zero_for_the_largest_itself():
    d = toy_dictionary()
    model = build_supernet("shrinknas_iwslt14", d).train()
    crit, sample = _criterion(d), _sample(d)
    largest = model.space.largest()
    _, _, log = sandwich_train_step(model, [("largest", largest), ("random", largest)], sample, model, crit,
                                    _Backward(), distill=1.0)
    assert abs(log["loss_kl"]) < 1e-4  # a student equal to the teacher has nothing to learn from it
    with torch.no_grad():  # the largest trains on exactly the criterion's label-smoothed loss
        model.set_subnet(largest)
        expected, _, _ = crit(model, sample)
    assert log["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    small = model.space.smallest()
    model.zero_grad(set_to_none=True)
    _, _, log = sandwich_train_step(model, [("largest", largest), ("smallest", small)], sample, model, crit,
                                    _Backward(), distill=1.0)
    assert log["loss_kl"] > 0.01
    # with distill = 1 the student's gradient is exactly the KL's: recompute it by hand
    model.zero_grad(set_to_none=True)
    model.set_subnet(largest)
    with torch.no_grad():
        teacher = crit.get_lprobs_and_target(model, model(**sample["net_input"]), sample)[0].float()
    model.set_subnet(small)
    lprobs, target = crit.get_lprobs_and_target(model, model(**sample["net_input"]), sample)
    kl = (teacher.exp() * (teacher - lprobs)).sum(-1).masked_fill(target.eq(crit.padding_idx), 0).sum()
    assert kl.item() == pytest.approx(log["loss_kl"], rel=1e-4)


def test_sandwich_refuses_a_criterion_it_cannot_distil_with():
    d = toy_dictionary()
    with pytest.raises(FairseqNasError, match="label-smoothed criterion"):
        check_criterion(object())
    crit = _criterion(d)
    crit.distillation_weight = 0.5  # supernet_distillation's own (eval-mode) teacher
    with pytest.raises(FairseqNasError, match="--sandwich-distill"):
        check_criterion(crit)


def test_fairseq_train_refuses_a_distillation_criterion_with_the_sandwich_before_training(demo_data, tmp_path):
    proc = fairseq_train(demo_data, tmp_path / "ck", TINY_SHRINKNAS + [
        "--sampler", "sandwich", "--criterion", "supernet_distillation", "--distillation-weight", "0.5",
        "--max-update", "2", "--no-save"], check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fairseq-nas: error:")]
    assert len(errors) == 1 and "--sandwich-distill" in errors[0]
    assert "Traceback" not in proc.stderr and "train_inner" not in proc.stdout + proc.stderr
