"""Breeding a generation: mutants and crossover children of parents, new and distinct.

Shared by the search (`search.evolution`, where a child must also meet the limits) and by
DSS's evolutionary exploration (`sampling.evolution`). A child that repeats a subnet already
taken (a parent, an earlier child) or that `accept` refuses is drawn again; draws go in
batches of the number still missing (so a batch-scoring `accept` sees many subnets at once),
at most `max_tries` batches, so a small or tightly limited space yields fewer children
instead of an endless loop.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence

from fairseq_nas.space.subnet import Subnet

if TYPE_CHECKING:
    from fairseq_nas.space.searchspace import SearchSpace

Accept = Callable[[Sequence[Subnet]], Sequence[bool]]


def draw_new(make: Callable[[], Subnet], n: int, taken: Iterable[str], max_tries: int,
             accept: Optional[Accept] = None) -> list[Subnet]:
    """Up to n subnets from `make()` whose keys are not in `taken` nor repeat each other, and that
    `accept(batch) -> [bool]` admits (all, without it); in draw order. `taken` is not changed."""
    seen = set(taken)
    found: list[Subnet] = []
    for _ in range(max_tries):
        if len(found) >= n:
            break
        batch = [make() for _ in range(n - len(found))]
        admitted = accept(batch) if accept is not None else [True] * len(batch)
        for s, ok in zip(batch, admitted):
            k = s.key()
            if ok and k not in seen and len(found) < n:
                seen.add(k)
                found.append(s)
    return found


def breed(space: SearchSpace, parents: Sequence[Subnet], rng: random.Random, n_mutants: int, n_crossovers: int,
          mutation_prob: float, max_tries: int, accept: Optional[Accept] = None) -> tuple[list[Subnet], list[Subnet]]:
    """(mutants, crossover children) of `parents`: every one new (not a parent, not another child).
    A mutant mutates a random parent (each gene with `mutation_prob`); a crossover child mixes two
    distinct random parents, or is a mutant when there is only one parent (a parent crossed with
    itself is that parent again)."""
    if not parents:
        raise ValueError("breeding needs at least one parent")
    parents = list(parents)
    taken = {s.key() for s in parents}

    def mutant() -> Subnet:
        return space.mutate(rng.choice(parents), rng, mutation_prob)

    def cross() -> Subnet:
        if len(parents) == 1:
            return mutant()
        a, b = rng.sample(parents, 2)
        return space.crossover(a, b, rng)

    mutants = draw_new(mutant, n_mutants, taken, max_tries, accept)
    taken |= {s.key() for s in mutants}
    return mutants, draw_new(cross, n_crossovers, taken, max_tries, accept)
