"""Dynamic Space Shrinking (ShrinkNAS section 4): the DSS sampler and one DSS step.

Phase 1 (training): the subnet of update u is drawn from `random.Random(seed + u)` out of the
current sample space, which is the YAML search space until the first shrink and a finite
set of subnets afterwards; the sampler remembers the distinct subnets it handed out since
the last shrink (the most recent `remember` of them).

Phase 2 (`dss_step`, every `every_epochs` epochs, `times` times): the remembered subnets
seed the evolutionary exploration (`evolution.evolutionary_exploration`, Algorithm 1),
scored by the validator (`validator.SubnetScorer`: one forward pass over a validation batch
of about `valid_tokens` tokens drawn afresh at every DSS, plus penalties); its final
population becomes the next sample space, its best subnet is the result of the last DSS.
Subnet divergence (`divergence.py`) is measured before and after each shrink.

Everything a resumed run needs is in `DSSSampler.state_dict()` (plain Python values, saved
in the model's extra state): the DSS counter, the current sample space, the remembered
subnets and the best subnet. The only randomness of a DSS step comes from generators
seeded by (seed, DSS index), so it is deterministic given the weights.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from fairseq_nas.atomic import atomic_write_text
from fairseq_nas.sampling.evolution import evolutionary_exploration
from fairseq_nas.space import SearchSpace, Subnet, parse_space

logger = logging.getLogger(__name__)

DSS_LOG = "dss.jsonl"
DSS_DIVERGENCE = "dss_divergence.jsonl"
DSS_BEST = "dss_best.json"
DSS_SPACE = "dss_space.jsonl"


class SampleSpace:
    """The current sample space: the YAML search space, or after a shrink a finite set of subnets
    (drawn uniformly)."""

    def __init__(self, space: SearchSpace, subnets: Optional[Sequence[Subnet]] = None):
        self.space = space
        self.subnets = list(subnets) if subnets is not None else None
        if self.subnets is not None and not self.subnets:
            raise ValueError("a finite sample space needs at least one subnet")

    @property
    def finite(self) -> bool:
        return self.subnets is not None

    def sample(self, rng: random.Random) -> Subnet:
        if self.subnets is None:
            return self.space.sample(rng)
        return self.subnets[rng.randrange(len(self.subnets))]

    def size(self) -> int:
        return len(self.subnets) if self.subnets is not None else self.space.num_subnets()


@dataclass
class DSSOptions:
    """DSS settings; the task's `--dss-*` options (defaults: ShrinkNAS where it says; the
    population, iterations, validation batch and memory, which it does not give, by measurement:
    `benchmarks/dss_settings.py`, README "Dynamic Space Shrinking")."""

    every_epochs: int = 10  # paper
    times: int = 5  # paper
    population: int = 200  # n of Algorithm 1 (not in the paper; measured)
    iterations: int = 3  # not in the paper; measured
    keep: float = 0.3  # paper
    mutation: float = 0.4  # paper
    crossover: float = 0.3  # paper
    mutation_prob: float = 0.4  # paper
    valid_tokens: int = 16384  # paper: 30,720; the smallest measured to rank as it does (tau >= 0.95)
    batch_tokens: Optional[int] = None  # memory bound per forward chunk; None: one batch
    remember: int = 200  # cap on the phase-1 subnets remembered (measured)
    max_params: Optional[int] = None
    penalty_weight: float = 10.0
    penalty_fn: Optional[str] = None
    divergence_subnets: int = 200  # paper (Fig. 4); 0: not measured
    divergence_tokens: int = 2048

    @classmethod
    def from_cfg(cls, cfg: Any) -> DSSOptions:
        """From a config with `dss_<field>` attributes (the task config)."""
        values = {}
        for name in cls.__dataclass_fields__:
            v = getattr(cfg, f"dss_{name}", None)
            if v is not None:
                values[name] = v
        return cls(**values)

    def check(self) -> None:
        """Raise FairseqNasError for settings that would fail only at the first DSS."""
        from fairseq_nas.errors import FairseqNasError
        from fairseq_nas.sampling.evolution import split_counts

        for name in ("every_epochs", "population", "iterations", "valid_tokens", "remember"):
            if getattr(self, name) < 1:
                raise FairseqNasError(f"--dss-{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.times < 0 or self.divergence_subnets < 0:
            raise FairseqNasError("--dss-times and --dss-divergence-subnets must be >= 0")
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise FairseqNasError(f"--dss-mutation-prob must be in [0, 1], got {self.mutation_prob}")
        try:
            split_counts(self.population, self.keep, self.mutation, self.crossover)
        except ValueError as e:
            raise FairseqNasError(f"--dss-keep/--dss-mutation/--dss-crossover: {e}") from None

    def due(self, epoch: int) -> int:
        """How many DSS steps must have run before training epoch `epoch` (1-based): one after
        every `every_epochs` epochs, at most `times`."""
        return min(self.times, max(0, epoch - 1) // max(1, self.every_epochs))


class DSSSampler:
    """Uniform sampling from the current sample space, remembering what it sampled; DSS state."""

    kind = "dss"

    def __init__(self, space: SearchSpace, seed: int, remember: int = DSSOptions.remember):
        self.space = space  # the model's YAML space: mutation, crossover, validation subnets
        self.seed = int(seed)
        self.remember = int(remember)
        self.subset: Optional[list[Subnet]] = None  # None: sample from the YAML space
        self.dss_done = 0
        self.updates_seen = 0  # 1 + the last update a subnet was drawn for
        self.best: Optional[Subnet] = None
        self._remembered: OrderedDict[str, Subnet] = OrderedDict()
        self._cache: tuple[int, Optional[Subnet]] = (-1, None)
        self._space_id: Optional[str] = None

    def sample_space(self) -> SampleSpace:
        return SampleSpace(self.space, self.subset)

    def space_id(self) -> str:
        """'yaml' before the first shrink, else the digest of the current set (`space_digest`)."""
        if self.subset is None:
            return "yaml"
        if self._space_id is None:
            self._space_id = space_digest([s.to_json() for s in self.subset])
        return self._space_id

    def subnet_for_update(self, update_num: int) -> Subnet:
        if self._cache[0] != update_num:
            subnet = self.sample_space().sample(random.Random(self.seed + update_num))
            self._cache = (update_num, subnet)
            self._note(subnet)
            self.updates_seen = max(self.updates_seen, update_num + 1)
        return self._cache[1]

    def subnets_for_update(self, update_num: int, n: int) -> list[Subnet]:
        """n draws for one update (the sandwich's random subnets), each remembered for phase 2;
        the first is `subnet_for_update`'s."""
        rng = random.Random(self.seed + update_num)
        space = self.sample_space()
        subnets = [space.sample(rng) for _ in range(n)]
        for subnet in subnets:  # noting twice is harmless: the memory is keyed by subnet
            self._note(subnet)
        self.updates_seen = max(self.updates_seen, update_num + 1)
        return subnets

    def _note(self, subnet: Subnet) -> None:
        key = subnet.key()
        self._remembered[key] = subnet
        self._remembered.move_to_end(key)
        while len(self._remembered) > max(1, self.remember):
            self._remembered.popitem(last=False)

    def remembered(self) -> list[Subnet]:
        """Distinct subnets trained since the last shrink, oldest first."""
        return list(self._remembered.values())

    def apply(self, result: dict[str, Any]) -> None:
        """Take the outcome of a DSS step (`dss_step`'s plain-value result): the new sample space."""
        self.subset = [Subnet.from_json(s, "DSS result") for s in result["space"]]
        self.best = Subnet.from_json(result["best"], "DSS result")
        self.dss_done = int(result["index"])
        self._remembered.clear()
        self._cache = (-1, None)
        self._space_id = None

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "space_yaml": self.space.to_yaml(),
                "dss_done": self.dss_done, "updates_seen": self.updates_seen,
                "best": self.best.to_json() if self.best else None,
                "subset": [s.to_json() for s in self.subset] if self.subset is not None else None,
                "remembered": [s.to_json() for s in self._remembered.values()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("kind")
        if kind not in (self.kind, "uniform"):
            raise ValueError(f"checkpoint holds a {kind!r} sampler state, not {self.kind!r}")
        self.seed = int(state["seed"])
        self.space = parse_space(state["space_yaml"], source="checkpoint sampler state")
        self.updates_seen = int(state.get("updates_seen", 0))
        if kind == "uniform":  # a uniform run continued with --sampler dss: no DSS done yet
            logger.info("continuing a uniform-sampling checkpoint with DSS")
            self.subset, self.best, self.dss_done = None, None, 0
            self._remembered.clear()
        else:
            src = "checkpoint sampler state"
            self.dss_done = int(state["dss_done"])
            self.best = Subnet.from_json(state["best"], src) if state.get("best") else None
            subset = state.get("subset")
            self.subset = [Subnet.from_json(s, src) for s in subset] if subset is not None else None
            self._remembered = OrderedDict((s, Subnet.from_json(s, src)) for s in state.get("remembered") or [])
        self._cache = (-1, None)
        self._space_id = None


def scored_per_step(options: DSSOptions, phase1_subnets: int) -> int:
    """Subnets one DSS step scores on its validation batch after `phase1_subnets` distinct
    subnets were trained in phase 1 (at most `options.remember` are kept): all of those, then the
    children bred by every iteration but the last (the last iteration's children form the new
    space unscored). Fewer when the space cannot supply distinct children. The divergence, when
    measured, adds 2 x `divergence_subnets` forward passes on its own batch."""
    from fairseq_nas.sampling.evolution import split_counts

    _, n_mut, n_cross = split_counts(options.population, options.keep, options.mutation, options.crossover)
    initial = min(options.remember, phase1_subnets) if phase1_subnets > 0 else options.population
    return initial + (n_mut + n_cross) * (options.iterations - 1)


def space_digest(subnets_json: Sequence[str]) -> str:
    """A short fingerprint of a finite sample space (to compare ranks in logs)."""
    return hashlib.sha1("\n".join(subnets_json).encode()).hexdigest()[:12]


def dss_rng(seed: int, index: int, stream: str = "main") -> random.Random:
    """The generator of DSS number `index` (1-based): a new sampling seed at every DSS."""
    return random.Random(f"fairseq-nas-dss:{stream}:{seed}:{index}")


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    from fairseq_nas.sampling.divergence import quantile

    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": statistics.fmean(values), "min": min(values), "p10": quantile(values, 0.1),
            "median": quantile(values, 0.5), "p90": quantile(values, 0.9), "max": max(values)}


def build_penalties(model, options: DSSOptions) -> list[Callable[[Subnet], float]]:
    """The score penalties of `options`: a parameter limit and/or a `MODULE:FUNC` hook."""
    from fairseq_nas.sampling.validator import ParamsPenalty, load_penalty_fn

    out: list[Callable[[Subnet], float]] = []
    if options.max_params:
        out.append(ParamsPenalty(model, options.max_params, options.penalty_weight))
    if options.penalty_fn:
        out.append(load_penalty_fn(options.penalty_fn, model))
    return out


@dataclass
class ScoreShard:
    """This process's share of DSS scoring in a multi-rank run: subnet i of every generation is
    scored on rank i mod world; `all_reduce_sum(tensor)` sums a tensor over ranks (in place or
    returned), so every rank sees every score and runs the same evolution."""

    rank: int
    world: int
    all_reduce_sum: Callable[[Any], Any]


def distinct_draws(space: SampleSpace, rng: random.Random, k: int) -> list[Subnet]:
    """k subnets of a sample space without replacement (all of a finite space smaller than k)."""
    if space.finite:
        return rng.sample(space.subnets, min(k, len(space.subnets)))
    out: dict[str, Subnet] = {}
    for _ in range(20 * k):
        if len(out) >= k:
            break
        s = space.sample(rng)
        out.setdefault(s.key(), s)
    return list(out.values())


def dss_step(model, sampler: DSSSampler, options: DSSOptions, dataset, pad: int, index: int, epoch: int = 0,
             update: int = 0, penalties: Optional[Sequence[Callable[[Subnet], float]]] = None,
             shard: Optional[ScoreShard] = None) -> dict[str, Any]:
    """Run DSS number `index` on `model` (a supernet) with validation data `dataset`. Returns
    plain values (JSON-able): `index`, `space` (the new sample space, subnet JSON strings),
    `best`, `row` (the dss.jsonl record) and `divergence` (raw values). With `shard`, every
    rank calls this with the same model and data, scores its share of each generation, and
    gets the same result. The model's training mode and active subnet are restored; the
    sampler is not changed (call `sampler.apply(result)`)."""
    from fairseq_nas.sampling.divergence import divergence_stats, subnet_divergence
    from fairseq_nas.sampling.validator import SubnetScorer, first_sentences, make_batches, sample_sentences

    start = time.perf_counter()
    rng = dss_rng(sampler.seed, index)
    div_rng = dss_rng(sampler.seed, index, "divergence")
    before = sampler.sample_space()
    penalties = list(penalties) if penalties is not None else build_penalties(model, options)
    was_training, previous = model.training, getattr(model, "active_subnet", None)
    try:
        indices = sample_sentences(dataset, options.valid_tokens, rng)
        scorer = SubnetScorer(model, make_batches(dataset, indices, options.batch_tokens), pad)
        div_batches = []
        if options.divergence_subnets > 0:
            div_batches = make_batches(dataset, first_sentences(dataset, options.divergence_tokens),
                                       options.batch_tokens)
        div_before = subnet_divergence(model, distinct_draws(before, div_rng, options.divergence_subnets),
                                       div_batches, pad)
        losses: dict[str, float] = {}

        def score(subnet: Subnet) -> float:
            loss = scorer.loss(subnet)
            losses[subnet.key()] = loss
            return loss + sum(p(subnet) for p in penalties)

        def score_batch(subnets: Sequence[Subnet]) -> list[float]:
            import torch

            rank, world = (shard.rank, shard.world) if shard is not None else (0, 1)
            values = torch.zeros(len(subnets), dtype=torch.float64, device=next(model.parameters()).device)
            for i, subnet in enumerate(subnets):
                if i % world == rank:
                    values[i] = scorer.loss(subnet)
            if shard is not None and world > 1:
                reduced = shard.all_reduce_sum(values)
                values = reduced if reduced is not None else values
            out = []
            for subnet, loss in zip(subnets, values.tolist()):
                losses[subnet.key()] = loss
                out.append(loss + sum(p(subnet) for p in penalties))
            return out

        initial = sampler.remembered()
        if not initial:
            initial = [before.sample(rng) for _ in range(options.population)]
        result = evolutionary_exploration(
            initial, sampler.space, score, rng, options.population, options.iterations, keep=options.keep,
            mutation=options.mutation, crossover=options.crossover, mutation_prob=options.mutation_prob,
            progress=lambda i, n: logger.info("DSS %d: iteration %d/%d done", index, i, n),
            score_batch=score_batch if shard is not None else None)
        after = SampleSpace(sampler.space, result.population)
        div_after = subnet_divergence(model, distinct_draws(after, div_rng, options.divergence_subnets),
                                      div_batches, pad)
    finally:
        if previous is not None:
            model.set_subnet(previous)
        model.train(was_training)
    d_before, d_after = divergence_stats(div_before), divergence_stats(div_after)
    reduction = None
    if div_before and d_before["mean"] > 0:
        reduction = 1.0 - d_after["mean"] / d_before["mean"]
    row = {"dss": index, "epoch": epoch, "update": update,
           "space_before": "set" if before.finite else "yaml", "space_size_before": before.size(),
           "space_size_after": len(result.population), "initial_subnets": len(result.initial_scores),
           "evaluated": result.evaluated, "valid_sentences": len(indices), "valid_tokens": scorer.tokens,
           "score_initial": _quantiles(result.initial_scores), "score_kept": _quantiles(result.parent_scores),
           "penalized": bool(penalties), "best_score": result.best_score,
           "best_loss": losses[result.best.key()], "best": result.best.to_dict(),
           "divergence_before": d_before, "divergence_after": d_after, "divergence_reduction": reduction,
           "seconds": round(time.perf_counter() - start, 3)}
    logger.info("DSS %d (epoch %d, update %d): space %s -> %d subnets, best loss %.3f, divergence %s -> %s, %.1fs",
                index, epoch, update, row["space_size_before"], row["space_size_after"], row["best_loss"],
                _fmt(d_before.get("mean")), _fmt(d_after.get("mean")), row["seconds"])
    return {"index": index, "space": [s.to_json() for s in result.population], "best": result.best.to_json(),
            "row": row, "divergence": {"before": div_before, "after": div_after}}


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4f}"


def _append_row(path: Path, row: dict[str, Any]) -> None:
    """Append `row`, first dropping rows of the same or later DSS (a DSS redone after a resume
    from an earlier checkpoint replaces its old record instead of duplicating it)."""
    kept = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                if line.strip() and int(json.loads(line)["dss"]) < int(row["dss"]):
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        if len(kept) != sum(1 for line in path.read_text().splitlines() if line.strip()):
            atomic_write_text(path, "".join(line + "\n" for line in kept))
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def write_dss_outputs(out_dir: Union[str, Path], result: dict[str, Any], last: bool) -> None:
    """DIR/dss.jsonl (one row per DSS), DIR/dss_divergence.jsonl (raw divergences), DIR/dss_space.jsonl
    (the current sample space, one subnet per line) and, after the last DSS, DIR/dss_best.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    row = result["row"]
    _append_row(out / DSS_LOG, row)
    _append_row(out / DSS_DIVERGENCE, {"dss": row["dss"], "epoch": row["epoch"], "update": row["update"],
                                       **result["divergence"]})
    atomic_write_text(out / DSS_SPACE, "".join(s + "\n" for s in result["space"]))
    if last:
        best = Subnet.from_json(result["best"], "DSS result")
        atomic_write_text(out / DSS_BEST, json.dumps(best.to_dict(), indent=1) + "\n")
