"""`supernet_translation`: fairseq's translation task, training one sampled subnet per update."""

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from fairseq import metrics
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.models.subnet import load_subnet_arg
from fairseq_nas.sampling import FixedSampler, UniformSampler, representative_subnets

logger = logging.getLogger(__name__)


@dataclass
class SupernetTranslationConfig(TranslationConfig):
    subnet: Optional[str] = field(
        default=None, metadata={"help": "train/evaluate/generate with this fixed subnet (JSON file)"})
    sampler: ChoiceEnum(["uniform"]) = field(
        default="uniform", metadata={"help": "how subnets are drawn per update"})
    valid_subnets: str = field(
        default="largest,smallest",
        metadata={"help": "subnets whose validation loss is logged (loss_<name>); the first is 'loss'"})
    subnet_log: Optional[str] = field(
        default=None, metadata={"help": "append one JSON line per update and rank: the subnet trained"})
    seed: int = II("common.seed")


@register_task("supernet_translation", dataclass=SupernetTranslationConfig)
class SupernetTranslationTask(TranslationTask):
    cfg: SupernetTranslationConfig

    def __init__(self, cfg: SupernetTranslationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.model = None  # the unwrapped model from build_model (DDP wrappers hide attributes)
        self.sampler = None
        self._logged_update = -1

    def build_model(self, cfg, from_checkpoint: bool = False):
        model = super().build_model(cfg, from_checkpoint)
        if not hasattr(model, "set_subnet"):
            raise FairseqNasError(f"task supernet_translation needs a supernet architecture, got "
                                  f"{type(model).__name__} (use --arch supernet_* or nas_subnet)")
        self.model = model
        space = getattr(model, "space", None)
        if self.cfg.subnet:
            subnet = load_subnet_arg(self.cfg.subnet)
            if space is not None:
                space.validate_subnet(subnet, source=str(self.cfg.subnet))
            self.sampler = FixedSampler(subnet)
        elif space is not None:
            self.sampler = UniformSampler(space, self.cfg.seed)
        if space is not None:
            model.sampler = self.sampler
            model.set_subnet(self.sampler.subnet_for_update(0) if self.cfg.subnet else space.largest())
        return model

    def _restore_sampler(self) -> None:
        pending = getattr(self.model, "sampler_state", None)
        if pending is not None and self.sampler is not None:
            self.sampler.load_state_dict(pending)
            self.model.sampler_state = None
            logger.info("restored %s sampler state from the checkpoint", self.sampler.kind)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if self.sampler is not None:
            self._restore_sampler()
            subnet = self.sampler.subnet_for_update(update_num)
            self.model.set_subnet(subnet)
            if self.cfg.subnet_log and update_num != self._logged_update:
                self._log_subnet(update_num, subnet)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def _log_subnet(self, update_num: int, subnet) -> None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        with open(self.cfg.subnet_log, "a") as f:
            f.write(json.dumps({"rank": rank, "update": update_num, "subnet": subnet.to_dict()}) + "\n")
        self._logged_update = update_num

    def _representatives(self):
        if isinstance(self.sampler, FixedSampler):
            return [("subnet", self.sampler.subnet)]
        names = [n.strip() for n in self.cfg.valid_subnets.split(",") if n.strip()]
        return representative_subnets(self.sampler.space, names)

    def valid_step(self, sample, model, criterion):
        if self.sampler is None:
            return super().valid_step(sample, model, criterion)
        self._restore_sampler()
        reps = self._representatives()
        extra = {}
        for name, subnet in reps[1:]:
            self.model.set_subnet(subnet)
            _, _, log = super(TranslationTask, self).valid_step(sample, model, criterion)
            extra[f"loss_{name}"] = log["loss"]
        self.model.set_subnet(reps[0][1])
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        logging_output[f"loss_{reps[0][0]}"] = logging_output["loss"]
        logging_output.update(extra)
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        keys = sorted({k for log in logging_outputs for k in log if k.startswith("loss_")})
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        for key in keys:
            total = sum(float(log.get(key, 0)) for log in logging_outputs)
            if sample_size > 0:
                metrics.log_scalar(key, total / sample_size / math.log(2), sample_size, round=3)

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)


def subnet_log_lines(path: "str | Path") -> list[dict]:
    """Read a --subnet-log file (used by tests and reports)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
