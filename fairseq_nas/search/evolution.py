"""Evolutionary and random search under latency/parameter limits (HAT's evolution,
RankNAS's random search), with the mistakes of HAT's implementation avoided:
an infeasible limit is an error instead of an endless loop, the best subnet ever seen is
kept, and the last generation is scored too.

Each generation appends a row to `log` (the population, the best so far and the RNG
state), so an interrupted search resumes from its last row and continues exactly as an
uninterrupted one would. The row's `evaluated` counts the distinct subnets scored by the
current process (a resumed process starts counting again).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.search.candidates import Candidate, CandidateScorer, Constraints
from fairseq_nas.space import Subnet
from fairseq_nas.space.breed import breed, draw_new


class InfeasibleLimitError(FairseqNasError):
    """No subnet of the space meets the latency/parameter limits (not even its smallest).
    `fairseq-nas search` exits with EXIT_INFEASIBLE for it, so a script can tell it apart."""

    exit_code = 3


EXIT_INFEASIBLE = InfeasibleLimitError.exit_code


@dataclass
class EvolutionConfig:
    population: int = 125
    parents: int = 25
    mutations: int = 50
    mutation_prob: float = 0.3
    crossovers: int = 50
    generations: int = 30
    max_tries: int = 50  # batches of attempts for a feasible sample/child before giving up
    patience: int = 3  # random search: stop after this many rounds without a better best
    max_rounds: int = 100  # random search: hard limit on rounds
    tie_break: str = "capacity"  # between equal ranker scores: see TIE_BREAKS


@dataclass
class SearchResult:
    best: Candidate
    generations: int
    evaluations: int
    history: list[dict] = field(default_factory=list)


# Between equal ranker scores (a tree ensemble gives one score to subnets that differ only in
# genes it ignores) the ranker has nothing to say, so a prior decides:
# - capacity: more parameters first (within the limits, a larger model trains to a better one), then
#   the lower predicted latency: the search spends the latency budget the ranker cannot value;
# - speed: the lower predicted latency first, then fewer parameters: the fastest of the equals.
TIE_BREAKS = ("capacity", "speed")


def rank_key(c: Candidate, tie_break: str = "capacity") -> tuple[float, float, float]:
    """Order of candidates: ranker score, then `tie_break` (one of TIE_BREAKS)."""
    lat = math.inf if c.latency_ms is None else c.latency_ms
    if tie_break == "capacity":  # an unknown params count ranks last, as an unknown latency does
        return (-c.score, math.inf if c.params is None else -c.params, lat)
    if tie_break == "speed":
        return (-c.score, lat, math.inf if c.params is None else c.params)
    raise FairseqNasError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")


def _best(cands: Sequence[Candidate], tie_break: str = "capacity") -> Optional[Candidate]:
    return min(cands, key=lambda c: rank_key(c, tie_break)) if cands else None


def _row(gen: int, pop: Sequence[Candidate], best: Candidate, scorer: CandidateScorer, rng: random.Random) -> dict:
    scores = [c.score for c in pop]
    return {"generation": gen, "best": best.to_dict(), "generation_best_score": max(scores),
            "mean_score": sum(scores) / len(scores), "population_size": len(pop), "evaluated": scorer.n_evaluated,
            "population": [c.subnet.to_dict() for c in pop], "rng_state": _state_to_json(rng.getstate())}


def _state_to_json(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _state_from_json(data) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


def _feasible_samples(make: Callable[[], Subnet], n: int, scorer: CandidateScorer, cons: Constraints,
                      max_tries: int, exclude: set[str]) -> tuple[list[Candidate], list[Candidate]]:
    """Up to n new feasible candidates from `make` (see `space.breed.draw_new`).
    Returns (feasible, everything tried)."""
    tried: list[Candidate] = []
    found = draw_new(make, n, exclude, max_tries, _feasible_by(scorer, cons, tried))
    return scorer.evaluate(found), tried


def _feasible_by(scorer: CandidateScorer, cons: Constraints, tried: list[Candidate]):
    """`accept` for `draw_new`: scores a batch at once, keeps what it tried, admits what meets the limits."""
    def accept(batch: Sequence[Subnet]) -> list[bool]:
        cands = scorer.evaluate(batch)
        tried.extend(cands)
        return [cons.feasible(c) for c in cands]

    return accept


def _infeasible_error(tried: Sequence[Candidate], cons: Constraints, space) -> InfeasibleLimitError:
    parts = []
    if cons.latency_ms is not None:
        fastest = min((c.latency_ms for c in tried if c.latency_ms is not None), default=None)
        parts.append(f"--latency-ms {cons.latency_ms:g}: no subnet meets the limit; the fastest predicted "
                     f"latency seen was {fastest:.2f} ms" if fastest is not None else "")
    if cons.max_params is not None:
        smallest = min((c.params for c in tried if c.params is not None), default=None)
        parts.append(f"--max-params {cons.max_params}: the smallest subnet seen has {smallest} parameters")
    msg = "; ".join(p for p in parts if p) or "no feasible subnet"
    return InfeasibleLimitError(f"{msg} ({len(tried)} subnets of space {space.name} tried, including its smallest)")


def initial_population(space, scorer: CandidateScorer, cons: Constraints, n: int, rng: random.Random,
                       max_tries: int) -> list[Candidate]:
    found, tried = _feasible_samples(lambda: space.sample(rng), n, scorer, cons, max_tries, set())
    if not found:
        smallest = scorer.evaluate([space.smallest()])
        if cons.feasible(smallest[0]):
            return smallest
        raise _infeasible_error(tried + smallest, cons, space)
    return found


def evolution_search(space, scorer: CandidateScorer, cons: Constraints, cfg: EvolutionConfig, seed: int = 0,
                     log: Optional[Callable[[dict], None]] = None, resume_from: Optional[dict] = None,
                     progress: Optional[Callable[[int], None]] = None) -> SearchResult:
    rng = random.Random(seed)
    history: list[dict] = []
    if resume_from is None:
        population = initial_population(space, scorer, cons, cfg.population, rng, cfg.max_tries)
        best = _best(population, cfg.tie_break)
        start = 0
    else:
        population = scorer.evaluate([Subnet.from_dict(d, "search.jsonl") for d in resume_from["population"]])
        best = scorer.evaluate([Subnet.from_dict(resume_from["best"]["subnet"], "search.jsonl")])[0]
        rng.setstate(_state_from_json(resume_from["rng_state"]))
        start = resume_from["generation"] + 1
        if start <= cfg.generations:  # a finished search (its last generation logged) breeds nothing more
            population = _breed(space, scorer, cons, cfg, population, rng)
    for gen in range(start, cfg.generations + 1):
        # generation `cfg.generations` is the last bred population: scored, never bred from
        population = scorer.evaluate([c.subnet for c in population])
        gen_best = _best(population, cfg.tie_break)
        if rank_key(gen_best, cfg.tie_break) < rank_key(best, cfg.tie_break):
            best = gen_best
        row = _row(gen, population, best, scorer, rng)
        history.append(row)
        if log:
            log(row)
        if progress:
            progress(gen)
        if gen < cfg.generations:
            population = _breed(space, scorer, cons, cfg, population, rng)
    return SearchResult(best, cfg.generations, scorer.n_evaluated, history)


def _breed(space, scorer, cons, cfg: EvolutionConfig, population: list[Candidate], rng: random.Random):
    parents = sorted(population, key=lambda c: rank_key(c, cfg.tie_break))[: cfg.parents]
    mutants, children = breed(space, [c.subnet for c in parents], rng, cfg.mutations, cfg.crossovers,
                              cfg.mutation_prob, cfg.max_tries, _feasible_by(scorer, cons, []))
    return parents + scorer.evaluate(mutants) + scorer.evaluate(children)


def random_search(space, scorer: CandidateScorer, cons: Constraints, cfg: EvolutionConfig, seed: int = 0,
                  log: Optional[Callable[[dict], None]] = None, resume_from: Optional[dict] = None,
                  progress: Optional[Callable[[int], None]] = None) -> SearchResult:
    """RankNAS's random search: rounds of `population` feasible samples until the best is
    unchanged for `patience` rounds."""
    rng = random.Random(seed)
    history: list[dict] = []
    best: Optional[Candidate] = None
    stale, start = 0, 0
    if resume_from is not None:
        best = scorer.evaluate([Subnet.from_dict(resume_from["best"]["subnet"], "search.jsonl")])[0]
        rng.setstate(_state_from_json(resume_from["rng_state"]))
        stale, start = int(resume_from.get("stale", 0)), resume_from["generation"] + 1
        if stale >= cfg.patience:  # the search had ended: no more rounds
            return SearchResult(best, start, scorer.n_evaluated, history)
    for rnd in range(start, cfg.max_rounds):
        if rnd == 0:
            batch = initial_population(space, scorer, cons, cfg.population, rng, cfg.max_tries)
        else:
            batch, _ = _feasible_samples(lambda: space.sample(rng), cfg.population, scorer, cons, cfg.max_tries,
                                         set())
        cand = _best(batch, cfg.tie_break)
        if cand is not None and (best is None or rank_key(cand, cfg.tie_break) < rank_key(best, cfg.tie_break)):
            best, stale = cand, 0
        else:
            stale += 1
        row = _row(rnd, batch or [best], best, scorer, rng)
        row["stale"] = stale
        history.append(row)
        if log:
            log(row)
        if progress:
            progress(rnd)
        if stale >= cfg.patience:
            break
    return SearchResult(best, len(history) + start, scorer.n_evaluated, history)


def top_k(scorer: CandidateScorer, cons: Constraints, k: int, tie_break: str = "capacity") -> list[Candidate]:
    """The k best feasible candidates seen during the search (in `rank_key` order)."""
    return sorted((c for c in scorer.all_candidates() if cons.feasible(c)), key=lambda c: rank_key(c, tie_break))[:k]
