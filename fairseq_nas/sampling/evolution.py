"""Evolutionary exploration (ShrinkNAS Algorithm 1): shrink a set of subnets to a new sample space.

Pure Python: the caller supplies `score(subnet) -> float` (lower is better) and a
`random.Random`; the same inputs and generator state give the same result.

    A <- initial subnets
    repeat `iterations` times:
        A_g <- the best keep*n of A (scored)          # parents, best first
        A_m <- mutation*n mutants of random parents     # every gene resampled with mutation_prob
        A_c <- the rest (crossover*n) by crossover of two random parents
        A <- A_g + A_m + A_c
    return A (the new sample space); the best subnet is A_g[0] of the last iteration
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from fairseq_nas.space import SearchSpace, Subnet
from fairseq_nas.space.breed import breed


@dataclass
class ExplorationResult:
    population: list[Subnet]  # the new sample space: distinct subnets, the kept parents first (best first)
    best: Subnet
    best_score: float
    initial_scores: list[float]  # scores of the (distinct) initial subnets, in their order
    parent_scores: list[float]  # scores of the parents kept in the last iteration, best first
    scores: dict[str, float] = field(default_factory=dict)  # subnet key -> score, every subnet scored
    evaluated: int = 0  # score() calls


def split_counts(population: int, keep: float, mutation: float, crossover: float) -> tuple[int, int, int]:
    """(parents, mutants, crossovers) for a population of `population`, summing to it."""
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    if min(keep, mutation, crossover) < 0 or not math.isclose(keep + mutation + crossover, 1.0, abs_tol=1e-6):
        raise ValueError(f"keep + mutation + crossover ratios must be >= 0 and sum to 1, got "
                         f"{keep} + {mutation} + {crossover}")
    n_keep = min(population, max(1, round(keep * population)))
    n_mut = min(population - n_keep, round(mutation * population))
    return n_keep, n_mut, population - n_keep - n_mut


def _dedup(subnets: Sequence[Subnet]) -> list[Subnet]:
    seen: set[str] = set()
    out = []
    for s in subnets:
        k = s.key()
        if k not in seen:
            seen.add(k)
            out.append(s)
    return out


def evolutionary_exploration(initial: Sequence[Subnet], space: SearchSpace, score: Callable[[Subnet], float],
                             rng: random.Random, population: int, iterations: int, keep: float = 0.3,
                             mutation: float = 0.4, crossover: float = 0.3, mutation_prob: float = 0.4,
                             max_tries: int = 20,
                             progress: Optional[Callable[[int, int], None]] = None,
                             score_batch: Optional[Callable[[Sequence[Subnet]], list[float]]] = None,
                             ) -> ExplorationResult:
    """Algorithm 1 of ShrinkNAS. Children are drawn again (up to `max_tries` batches, see
    `space.breed`) when they repeat a subnet already in the new population, so the returned
    space is as large as the space allows. `progress(iteration, iterations)` is called after each iteration.
    `score_batch(subnets) -> scores`, when given, replaces `score` and receives every
    not-yet-scored subnet of a generation at once (e.g. to shard them over ranks)."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    n_keep, n_mut, n_cross = split_counts(population, keep, mutation, crossover)
    current = _dedup(initial)
    if not current:
        raise ValueError("evolutionary exploration needs at least one initial subnet")
    scores: dict[str, float] = {}
    calls = 0

    def scored(s: Subnet) -> float:
        nonlocal calls
        k = s.key()
        if k not in scores:
            scores[k] = float(score(s))
            calls += 1
        return scores[k]

    def score_all(subnets: Sequence[Subnet]) -> None:
        nonlocal calls
        if score_batch is None:
            return
        todo = [s for s in subnets if s.key() not in scores]
        if todo:
            for s, v in zip(todo, score_batch(todo)):
                scores[s.key()] = float(v)
            calls += len(todo)

    score_all(current)
    initial_scores = [scored(s) for s in current]
    parents: list[Subnet] = []
    for it in range(iterations):
        score_all(current)
        ranked = sorted(range(len(current)), key=lambda i: (scored(current[i]), i))
        parents = [current[i] for i in ranked[:n_keep]]
        mutants, children = breed(space, parents, rng, n_mut, n_cross, mutation_prob, max_tries)
        current = parents + mutants + children
        if progress is not None:
            progress(it + 1, iterations)
    return ExplorationResult(population=current, best=parents[0], best_score=scored(parents[0]),
                             initial_scores=initial_scores, parent_scores=[scored(s) for s in parents],
                             scores=scores, evaluated=calls)
