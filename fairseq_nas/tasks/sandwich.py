"""The sandwich rule with in-place distillation (BigNAS, OFA), as one fairseq update.

Each update runs, on the same batch, a forward-backward pass of
- the largest subnet of the space, on the labels (the criterion's label-smoothed loss);
- the smallest subnet and N random ones (drawn by the sampler, so DSS shrinking applies),
  each on (1 - a) * label-smoothed loss + a * KL(p_largest || p_subnet), with the largest's
  output of this very update as the teacher (detached), a = --sandwich-distill.

The gradients of all passes add up before the step, so one update costs 2 + N
forward-backward passes. The teacher is trained at every update, unlike a teacher that is
only trained when uniform sampling happens to draw it.
"""
from __future__ import annotations

from typing import Any

import torch
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from torch import Tensor

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.space import Subnet


def sandwich_subnets(sampler, space, update_num: int, n_random: int) -> list[tuple[str, Subnet]]:
    """(role, subnet) of one update: largest, smallest, then the sampler's random draws."""
    randoms = sampler.subnets_for_update(update_num, n_random) if n_random else []
    return [("largest", space.largest()), ("smallest", space.smallest())] + [("random", s) for s in randoms]


def check_criterion(criterion) -> None:
    for name in ("eps", "get_lprobs_and_target"):
        if not hasattr(criterion, name):
            raise FairseqNasError(f"--sampler sandwich needs a label-smoothed criterion "
                                  f"(--criterion label_smoothed_cross_entropy), got {type(criterion).__name__}")
    if getattr(criterion, "distillation_weight", 0.0):
        raise FairseqNasError("--sampler sandwich distils in place from its own largest subnet: use --criterion "
                              "label_smoothed_cross_entropy and set the weight with --sandwich-distill")


def _kl_to_teacher(teacher: Tensor, lprobs: Tensor, target: Tensor, padding_idx: int) -> Tensor:
    """Summed KL(teacher || student) over non-padding positions; [N, V] log-probabilities."""
    kl = (teacher.exp() * (teacher - lprobs.float())).sum(dim=-1)
    return kl.masked_fill(target.eq(padding_idx), 0.0).sum()


def sandwich_train_step(supernet, roles: list[tuple[str, Subnet]], sample, model, criterion, optimizer,
                        distill: float, ignore_grad: bool = False) -> tuple[Tensor, Any, dict]:
    """Forward-backward of every subnet of `roles` on `sample`; returns the largest's loss and
    fairseq's logging output, with per-role losses (loss_smallest, loss_random: their
    label-smoothed losses; loss_kl: their mean distillation term)."""
    model.train()
    teacher = None
    result = None
    extra: dict[str, float] = {}
    n_random = sum(1 for role, _ in roles if role == "random")
    for role, subnet in roles:
        supernet.set_subnet(subnet)
        with torch.autograd.profiler.record_function("forward"):
            net_output = model(**sample["net_input"])
            # one log-softmax per pass: criterion.compute_loss would compute it a second time
            lprobs, target = criterion.get_lprobs_and_target(model, net_output, sample)
            ce, nll = label_smoothed_nll_loss(lprobs, target, criterion.eps, ignore_index=criterion.padding_idx,
                                              reduce=True)
            if teacher is None:
                loss = ce
                teacher = lprobs.detach().float()
            else:
                kl = _kl_to_teacher(teacher, lprobs, target, criterion.padding_idx)
                loss = (1.0 - distill) * ce + distill * kl.to(ce.dtype)
                extra["loss_kl"] = extra.get("loss_kl", 0.0) + float(kl.detach()) / (len(roles) - 1)
        if ignore_grad:
            loss = loss * 0
        with torch.autograd.profiler.record_function("backward"):
            optimizer.backward(loss)
        if result is None:
            sample_size = sample["target"].size(0) if criterion.sentence_avg else sample["ntokens"]
            result = (ce.detach(), sample_size, {
                "loss": ce.data, "nll_loss": nll.data, "ntokens": sample["ntokens"],
                "nsentences": sample["target"].size(0), "sample_size": sample_size})
        else:
            key = f"loss_{role}"
            share = 1.0 / n_random if role == "random" else 1.0
            extra[key] = extra.get(key, 0.0) + float(ce.detach()) * share
    loss, sample_size, logging_output = result
    logging_output.update(extra)
    return loss, sample_size, logging_output
