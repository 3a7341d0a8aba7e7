"""search.finalists: the candidates measured at the end of a search, and the winner among them."""
from __future__ import annotations

import random

import numpy as np

from fairseq_nas.search import CandidateScorer, Constraints, meets_limit, select_finalists, winner_index
from fairseq_nas.search.evolution import rank_key
from fairseq_nas.space import parse_space

SPACE = """
name: tiny
encoder: {layers: [2], embed_dim: [16, 32], ffn_dim: [32, 64], heads: [2, 4]}
decoder: {layers: [1, 2], embed_dim: [16, 32], ffn_dim: [32, 64], heads: [2, 4], enc_attn_layers: [1, 2]}
"""


def _scored(n=30):
    """A scorer that has seen n subnets; score = sum of features, latency = a tenth of it."""
    space = parse_space(SPACE, "tiny.yaml")
    scorer = CandidateScorer(space, lambda X: np.nansum(X, axis=1), lambda X: np.nansum(X, axis=1) / 10.0)
    scorer.evaluate([space.sample(random.Random(i)) for i in range(n)])
    return scorer


def test_finalists_are_the_top_k_feasible_and_the_reserve_the_next_best():
    scorer = _scored()
    ranked = sorted(scorer.all_candidates(), key=rank_key)
    limit = ranked[3].latency_ms  # some of the best miss it
    cons = Constraints(latency_ms=limit)
    feasible = [c for c in ranked if cons.feasible(c)]
    finalists, reserve = select_finalists(scorer, cons, feasible[0], 3, 7)
    assert [c.subnet.key() for c in finalists] == [c.subnet.key() for c in feasible[:3]]
    assert [c.subnet.key() for c in reserve] == [c.subnet.key() for c in feasible[3:7]]
    assert all(cons.feasible(c) for c in finalists + reserve)


def test_the_searchs_best_is_always_a_finalist_and_leaves_the_reserve():
    scorer = _scored()
    cons = Constraints()
    ranked = sorted(scorer.all_candidates(), key=rank_key)
    outside = ranked[5]  # e.g. the search's best under another tie-break
    finalists, reserve = select_finalists(scorer, cons, outside, 3, 8)
    keys = [c.subnet.key() for c in finalists]
    assert keys == [outside.subnet.key()] + [c.subnet.key() for c in ranked[:2]]
    assert outside.subnet.key() not in {c.subnet.key() for c in reserve} and len(reserve) == 5


def test_winner_is_the_first_that_meets_the_limit():
    assert winner_index([False, True, True]) == 1
    assert winner_index([False, False]) is None
    assert winner_index([None, None]) == 0  # not measured: the best-ranked
    assert winner_index([False, None, True]) == 1  # met but not (yet) confirmed is not a miss
    assert winner_index([]) is None
    assert meets_limit(3.5, 3.5) is True and meets_limit(3.6, 3.5) is False and meets_limit(None, 3.5) is None
