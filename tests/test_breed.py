"""space.breed: the one breeding loop of the search and of DSS's exploration."""
from __future__ import annotations

import random

import pytest

from fairseq_nas.space import load_space, parse_space
from fairseq_nas.space.breed import breed, draw_new

TINY = """
name: tiny
encoder: {layers: [1], embed_dim: [16], ffn_dim: [16, 32], heads: [2]}
decoder: {layers: [1], embed_dim: [16], ffn_dim: [16, 32], heads: [2]}
"""


def test_children_are_new_distinct_and_deterministic():
    space = load_space("hat_wmt14")
    parents = [space.sample(random.Random(i)) for i in range(4)]
    runs = [breed(space, parents, random.Random(seed), 6, 5, 0.3, 20) for seed in (1, 1, 2)]
    mutants, children = runs[0]
    keys = [s.key() for s in mutants + children]
    assert len(mutants) == 6 and len(children) == 5
    assert len(set(keys)) == 11 and not set(keys) & {p.key() for p in parents}
    assert all(space.contains(s) for s in mutants + children)
    assert [s.key() for s in runs[1][0] + runs[1][1]] == keys
    assert [s.key() for s in runs[2][0] + runs[2][1]] != keys


def test_accept_filters_and_sees_whole_batches():
    space = load_space("hat_wmt14")
    parents = [space.sample(random.Random(i)) for i in range(4)]
    batches = []

    def accept(batch):
        batches.append(len(batch))
        return [s.decoder.depth <= 3 for s in batch]

    mutants, children = breed(space, parents, random.Random(0), 5, 5, 0.5, 50, accept)
    assert mutants and children and all(s.decoder.depth <= 3 for s in mutants + children)
    assert batches[0] == 5  # the first batch is all five mutants at once


def test_a_small_space_gives_fewer_children_after_max_tries():
    space = parse_space(TINY, "tiny.yaml")  # 4 subnets in all
    parents = [space.smallest()]
    mutants, children = breed(space, parents, random.Random(0), 10, 10, 1.0, 5)
    keys = [s.key() for s in parents + mutants + children]
    assert len(keys) == len(set(keys)) == 4  # every other subnet, then no more: no endless loop
    # one parent: the crossover children are its mutants (crossed with itself it is the parent again)
    mutants, children = breed(space, parents, random.Random(0), 1, 10, 1.0, 5)
    assert len(mutants) == 1 and len(children) == 2


def test_draw_new_leaves_taken_alone_and_needs_a_parent():
    space = parse_space(TINY, "tiny.yaml")
    taken = {space.smallest().key()}
    rng = random.Random(3)
    got = draw_new(lambda: space.sample(rng), 3, taken, 50)
    assert len(got) == 3 and space.smallest().key() not in {s.key() for s in got} and len(taken) == 1
    assert draw_new(lambda: space.sample(rng), 0, taken, 50) == []
    with pytest.raises(ValueError):
        breed(space, [], rng, 1, 1, 0.5, 5)
