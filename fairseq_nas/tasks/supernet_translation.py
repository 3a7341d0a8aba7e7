"""`supernet_translation`: fairseq's translation task, training one sampled subnet per update,
with Dynamic Space Shrinking (`--sampler dss`) run from `begin_epoch`."""

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
from fairseq_nas.models.config import keep_in_checkpoint
from fairseq_nas.models.subnet import load_subnet_arg
from fairseq_nas.sampling import (
    DSSOptions,
    DSSSampler,
    FixedSampler,
    ScoreShard,
    UniformSampler,
    dss_step,
    representative_subnets,
    space_digest,
    write_dss_outputs,
)
from fairseq_nas.sampling.validator import load_penalty_fn
from fairseq_nas.tasks.sandwich import check_criterion, sandwich_subnets, sandwich_train_step
from fairseq_nas.tasks.single_path import SinglePathGuard

logger = logging.getLogger(__name__)


@dataclass
class SupernetTranslationConfig(TranslationConfig):
    subnet: Optional[str] = field(
        default=None, metadata={"help": "train/evaluate/generate with this fixed subnet (JSON file)"})
    sampler: ChoiceEnum(["uniform", "dss", "sandwich", "dss_sandwich"]) = field(
        default="uniform", metadata={"help": "how subnets are drawn per update: uniform (SPOS: one subnet); dss "
                                             "(uniform from a sample space shrunk by Dynamic Space Shrinking); "
                                             "sandwich (largest + smallest + --sandwich-random random subnets, "
                                             "in-place distillation from the largest); dss_sandwich (both)"})
    sandwich_random: int = field(
        default=2, metadata={"help": "random subnets per update with a sandwich sampler (BigNAS: 2); an update "
                                     "costs 2 + N forward-backward passes"})
    sandwich_distill: float = field(
        default=1.0, metadata={"help": "a in (1 - a) * label loss + a * KL(largest || subnet) for the sandwich's "
                                       "smaller subnets (BigNAS: 1, soft labels only); the largest trains on labels"})
    valid_subnets: str = field(
        default="largest,smallest",
        metadata={"help": "subnets whose validation loss is logged (loss_<name>): largest, smallest, best "
                          "(the best subnet of the last DSS; largest before any); the first is 'loss'"})
    subnet_log: Optional[str] = field(
        default=None, metadata={"help": "append one JSON line per update and rank: the subnet trained"})
    # --- Dynamic Space Shrinking (ShrinkNAS); used with --sampler dss; defaults from DSSOptions -----
    dss_every_epochs: int = field(
        default=DSSOptions.every_epochs, metadata={"help": "DSS after every N epochs (ShrinkNAS: 10)"})
    dss_times: int = field(default=DSSOptions.times, metadata={"help": "number of DSS steps (ShrinkNAS: 5)"})
    dss_population: int = field(
        default=DSSOptions.population,
        metadata={"help": "n of the evolutionary exploration: size of the shrunk sample space "
                          "(not in ShrinkNAS; chosen by benchmarks/dss_settings.py)"})
    dss_iterations: int = field(
        default=DSSOptions.iterations, metadata={"help": "iterations of the evolutionary exploration"})
    dss_keep: float = field(default=DSSOptions.keep, metadata={"help": "share of the population kept as parents"})
    dss_mutation: float = field(default=DSSOptions.mutation, metadata={"help": "share refilled by mutation"})
    dss_crossover: float = field(default=DSSOptions.crossover, metadata={"help": "share refilled by crossover"})
    dss_mutation_prob: float = field(
        default=DSSOptions.mutation_prob, metadata={"help": "per-gene mutation probability"})
    dss_valid_tokens: int = field(
        default=DSSOptions.valid_tokens,
        metadata={"help": "tokens of the validation batch drawn (afresh at each DSS) to score "
                          "each subnet with one forward pass (ShrinkNAS: 30720)"})
    dss_valid_subset: str = field(default="valid", metadata={"help": "data split the DSS validator draws from"})
    dss_batch_tokens: Optional[int] = field(
        default=None,
        metadata={"help": "split the validation batch into forward chunks of at most this many padded tokens "
                          "(memory only; the loss is the same); default --max-tokens-valid"})
    dss_remember: int = field(
        default=DSSOptions.remember,
        metadata={"help": "cap on the distinct phase-1 subnets remembered (the most recent); "
                          "they seed the evolutionary exploration"})
    dss_max_params: Optional[int] = field(
        default=None, metadata={"help": "parameter limit: subnets above it get a score penalty"})
    dss_penalty_weight: float = field(
        default=DSSOptions.penalty_weight,
        metadata={"help": "penalty per unit of relative excess over --dss-max-params (bits/token)"})
    dss_penalty_fn: Optional[str] = field(
        default=None, metadata={"help": "MODULE:FUNC, FUNC(subnet, model) -> float added to every subnet's score "
                                        "(hook for e.g. a latency model)"})
    dss_divergence_subnets: int = field(
        default=DSSOptions.divergence_subnets,
        metadata={"help": "subnets sampled before and after each shrink to measure subnet divergence (0: off)"})
    dss_divergence_tokens: int = field(
        default=DSSOptions.divergence_tokens,
        metadata={"help": "tokens of the fixed input (first valid sentences) for divergence"})
    dss_dir: Optional[str] = field(
        default=None, metadata={"help": "where dss.jsonl, dss_divergence.jsonl, dss_space.jsonl and dss_best.json "
                                        "go (default --save-dir)"})
    seed: int = II("common.seed")
    # fairseq fills an interpolated task field only when it has the name of the option it mirrors
    save_dir: Optional[str] = II("checkpoint.save_dir")
    max_tokens_valid: Optional[int] = II("dataset.max_tokens_valid")


@register_task("supernet_translation", dataclass=SupernetTranslationConfig)
class SupernetTranslationTask(TranslationTask):
    cfg: SupernetTranslationConfig

    def __init__(self, cfg: SupernetTranslationConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.model = None  # the unwrapped model from build_model (DDP wrappers hide attributes)
        self.sampler = None
        self._logged_update = -1
        self.single_path = SinglePathGuard()
        self._guarded_update = -1

    def build_model(self, cfg, from_checkpoint: bool = False):
        model = super().build_model(cfg, from_checkpoint)
        if not hasattr(model, "set_subnet"):
            raise FairseqNasError(f"task supernet_translation needs a supernet architecture, got "
                                  f"{type(model).__name__} (use --arch supernet_* or nas_subnet)")
        self.model = model
        space = getattr(model, "space", None)
        if space is not None:  # `cfg` is what the checkpoint saves: it carries the space, not a path to it
            keep_in_checkpoint(cfg, space_yaml=space.to_yaml())
        if self.cfg.subnet:
            subnet = load_subnet_arg(self.cfg.subnet)
            if space is not None:
                space.validate_subnet(subnet, source=str(self.cfg.subnet))
            self.sampler = FixedSampler(subnet)
        elif space is not None and self.cfg.sampler in ("dss", "dss_sandwich"):
            options = self.dss_options()
            options.check()
            if options.penalty_fn:  # fail now, not at the first DSS
                load_penalty_fn(options.penalty_fn, model)
            self.sampler = DSSSampler(space, self.cfg.seed, options.remember)
        elif space is not None:
            self.sampler = UniformSampler(space, self.cfg.seed)
        if space is not None:
            model.sampler = self.sampler
            model.set_subnet(self.sampler.subnet_for_update(0) if self.cfg.subnet else space.largest())
        if self.sandwich:
            if self.cfg.sandwich_random < 0:
                raise FairseqNasError(f"--sandwich-random must be >= 0, got {self.cfg.sandwich_random}")
            if not 0.0 <= self.cfg.sandwich_distill <= 1.0:
                raise FairseqNasError(f"--sandwich-distill must be in [0, 1], got {self.cfg.sandwich_distill}")
        return model

    def build_criterion(self, cfg, from_checkpoint: bool = False):
        """A criterion the sandwich rule cannot use is refused before any data is loaded."""
        criterion = super().build_criterion(cfg, from_checkpoint)
        if self.sandwich:
            check_criterion(criterion)
        return criterion

    def _restore_sampler(self) -> None:
        pending = getattr(self.model, "sampler_state", None)
        if pending is not None and self.sampler is not None:
            self.sampler.load_state_dict(pending)
            self.model.sampler_state = None
            logger.info("restored %s sampler state from the checkpoint", self.sampler.kind)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if self.sampler is None:
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        self._restore_sampler()
        if update_num != self._guarded_update:  # a new update (the last one's step may have been skipped)
            self.single_path.check_optimizer(optimizer)
            self.single_path.release()
            self._guarded_update = update_num
        if self.sandwich:
            roles = sandwich_subnets(self.sampler, self.sampler.space, update_num, self.cfg.sandwich_random)
            if self.cfg.subnet_log and update_num != self._logged_update:
                for role, subnet in roles:
                    self._log_subnet(update_num, subnet, role)
            model.set_num_updates(update_num)
            out = sandwich_train_step(self.model, roles, sample, model, criterion, optimizer,
                                      self.cfg.sandwich_distill, ignore_grad)
        else:
            subnet = self.sampler.subnet_for_update(update_num)
            self.model.set_subnet(subnet)
            if self.cfg.subnet_log and update_num != self._logged_update:
                self._log_subnet(update_num, subnet)
            out = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        self.single_path.mark_unused(self.model)
        return out

    @property
    def sandwich(self) -> bool:
        return str(self.cfg.sampler).endswith("sandwich") and not isinstance(self.sampler, FixedSampler)

    def optimizer_step(self, optimizer, model, update_num):
        """The step leaves out every parameter the update's subnet did not use (see single_path)."""
        self.single_path.before_step(optimizer)
        try:
            super().optimizer_step(optimizer, model, update_num)
        finally:
            self.single_path.release()

    def _log_subnet(self, update_num: int, subnet, role: Optional[str] = None) -> None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        row = {"rank": rank, "update": update_num, "subnet": subnet.to_dict()}
        if role is not None:
            row["role"] = role  # sandwich: largest, smallest, random
        if isinstance(self.sampler, DSSSampler):
            row["space"] = self.sampler.space_id()  # "yaml", or the digest of the shrunk set
        with open(self.cfg.subnet_log, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._logged_update = update_num

    def _representatives(self):
        if isinstance(self.sampler, FixedSampler):
            return [("subnet", self.sampler.subnet)]
        names = [n.strip() for n in self.cfg.valid_subnets.split(",") if n.strip()]
        out = []
        for name in names:
            if name == "best":
                best = getattr(self.sampler, "best", None)
                out.append(("best", best if best is not None else self.sampler.space.largest()))
            else:
                out.extend(representative_subnets(self.sampler.space, [name]))
        return out

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

    # --- Dynamic Space Shrinking ----------------------------------------------------------------
    def _interpolated(self, name: str):
        """A task field mirroring a global option, or None where there is no global config."""
        try:
            value = getattr(self.cfg, name, None)
        except Exception:  # an interpolation without the full fairseq config behind it
            return None
        return None if isinstance(value, str) and value.startswith("${") else value

    def dss_options(self) -> DSSOptions:
        options = DSSOptions.from_cfg(self.cfg)
        if not options.batch_tokens:
            options.batch_tokens = self._interpolated("max_tokens_valid")
        return options

    def _check_same_space(self, result: dict, dist_utils) -> None:
        """Every rank must shrink to the same space: compare the digests (a sum over ranks)."""
        digest = space_digest(result["space"])
        mine = torch.tensor([int(digest[:12], 16)], dtype=torch.float64, device=next(self.model.parameters()).device)
        total = dist_utils.all_reduce(mine.clone(), group=dist_utils.get_global_group())
        if float(total.item()) != float(mine.item()) * dist_utils.get_global_world_size():
            raise FairseqNasError(f"DSS {result['index']}: ranks reached different sample spaces (rank "
                                  f"{dist_utils.get_global_rank()}: {digest}); the supernets or data differ")

    def begin_epoch(self, epoch, model):
        """Run the DSS step due before epoch `epoch` (one after every --dss-every-epochs epochs, at
        most --dss-times). The DSS counter lives in the checkpointed sampler state, so a resumed
        run neither repeats nor skips a step. Every rank runs it, scoring its share of each
        generation; the scores are summed over ranks, so all shrink to the same space."""
        super().begin_epoch(epoch, model)
        if not isinstance(self.sampler, DSSSampler):
            return
        self._restore_sampler()
        options = self.dss_options()
        due = options.due(epoch)
        if self.sampler.dss_done >= due:
            return
        if due > self.sampler.dss_done + 1:
            logger.warning("DSS steps %d-%d are overdue (options changed on resume?): running only DSS %d",
                           self.sampler.dss_done + 1, due, due)
        from fairseq.distributed import utils as dist_utils

        rank, world = dist_utils.get_global_rank(), dist_utils.get_global_world_size()
        split = self.cfg.dss_valid_subset
        if split not in self.datasets:
            self.load_dataset(split)
        shard = None
        if world > 1:  # every rank scores its share of each generation; the sums reach every rank
            group = dist_utils.get_global_group()
            shard = ScoreShard(rank, world, lambda t: dist_utils.all_reduce(t, group=group))
        result = dss_step(self.model, self.sampler, options, self.dataset(split), self.tgt_dict.pad(), due,
                          epoch=epoch, update=self.sampler.updates_seen, shard=shard)
        if world > 1:
            self._check_same_space(result, dist_utils)
        self.sampler.apply(result)
        logger.info("DSS %d applied on rank %d: sample space of %d subnets, digest %s", due, rank,
                    len(result["space"]), space_digest(result["space"]))
        if rank == 0:
            out_dir = self.cfg.dss_dir or self._interpolated("save_dir")
            if out_dir:
                write_dss_outputs(out_dir, result, last=due >= options.times)
            else:
                logger.warning("no --dss-dir (nor --save-dir): DSS records are not written")


def subnet_log_lines(path: "str | Path") -> list[dict]:
    """Read a --subnet-log file (used by tests and reports)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
