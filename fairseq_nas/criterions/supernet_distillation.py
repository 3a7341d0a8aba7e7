"""`supernet_distillation`: label-smoothed cross-entropy plus in-place distillation from the
largest subnet (the teacher) on the same batch.

    loss = label_smoothed_cross_entropy + distillation_weight * KL(p_largest || p_subnet)

summed over the batch's non-padding target tokens like the cross-entropy. The teacher's
forward runs on the unwrapped supernet with the largest subnet of its space, in eval mode
(no dropout, so it draws no random numbers and the student's part of the loss is exactly
label_smoothed_cross_entropy's) and under no_grad; the sampled subnet and the training mode
are set back before the student's forward. Distillation applies to training steps only;
validation reports the plain label-smoothed loss. Weight 0 (the default) is exactly
label_smoothed_cross_entropy and costs nothing extra.
"""

import math
from dataclasses import dataclass, field

import torch
from fairseq.criterions import CRITERION_REGISTRY, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.logging import metrics

from fairseq_nas.errors import FairseqNasError

NAME = "supernet_distillation"


@dataclass
class SupernetDistillationConfig(LabelSmoothedCrossEntropyCriterionConfig):
    distillation_weight: float = field(
        default=0.0, metadata={"help": "weight of the KL term to the largest subnet's output (0: off)"})


class SupernetDistillationCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 distillation_weight: float = 0.0):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        if distillation_weight < 0:
            raise FairseqNasError(f"--distillation-weight must be >= 0, got {distillation_weight}")
        self.distillation_weight = float(distillation_weight)

    def _supernet(self, model):
        """The unwrapped supernet (the task's, else found through DDP wrappers' `.module`)."""
        found = getattr(self.task, "model", None)
        if found is not None and hasattr(found, "set_subnet") and hasattr(found, "space"):
            return found
        while not hasattr(model, "set_subnet") and hasattr(model, "module"):
            model = model.module
        if not (hasattr(model, "set_subnet") and hasattr(model, "space")):
            raise FairseqNasError("criterion supernet_distillation needs a supernet model (--arch supernet_*)")
        return model

    @torch.no_grad()
    def teacher_lprobs(self, model, sample) -> torch.Tensor:
        """[N, V] log-probabilities of the largest subnet at the loss's positions (detached)."""
        supernet = self._supernet(model)
        current, was_training = getattr(supernet, "active_subnet", None), supernet.training
        try:
            supernet.eval()
            supernet.set_subnet(supernet.space.largest())
            out = supernet(**sample["net_input"])
            lprobs, _ = self.get_lprobs_and_target(supernet, out, sample)
        finally:
            if current is not None:
                supernet.set_subnet(current)
            supernet.train(was_training)
        return lprobs.float()

    def forward(self, model, sample, reduce=True):
        if self.distillation_weight == 0 or not model.training:
            return super().forward(model, sample, reduce)
        teacher = self.teacher_lprobs(model, sample)
        net_output = model(**sample["net_input"])
        loss, nll_loss = self.compute_loss(model, net_output, sample, reduce=reduce)
        lprobs, target = self.get_lprobs_and_target(model, net_output, sample)
        kl = (teacher.exp() * (teacher - lprobs.float())).sum(dim=-1)
        kl = kl.masked_fill(target.eq(self.padding_idx), 0.0)
        if reduce:
            kl = kl.sum()
        loss = loss + self.distillation_weight * kl.to(loss.dtype)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {"loss": loss.data, "nll_loss": nll_loss.data, "distill_kl": kl.data,
                          "ntokens": sample["ntokens"], "nsentences": sample["target"].size(0),
                          "sample_size": sample_size}
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = n_correct.item()
            logging_output["total"] = total.item()
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        if any("distill_kl" in log for log in logging_outputs):
            kl = sum(float(log.get("distill_kl", 0)) for log in logging_outputs)
            ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
            metrics.log_scalar("distill_kl", kl / max(1, ntokens) / math.log(2), ntokens, round=4)


if NAME not in CRITERION_REGISTRY:  # register_criterion raises on a second registration
    register_criterion(NAME, dataclass=SupernetDistillationConfig)(SupernetDistillationCriterion)
