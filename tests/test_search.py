"""Search under limits: deterministic, respects limits, keeps the best ever, resumes
exactly, fails clearly when infeasible, and evolution beats random search."""
from __future__ import annotations

import argparse
import json
import random

import numpy as np
import pytest

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.search import (
    Candidate,
    CandidateScorer,
    Constraints,
    EvolutionConfig,
    evolution_search,
    plot_pareto,
    random_search,
    top_k,
)
from fairseq_nas.search.pareto import pareto_front
from fairseq_nas.space import encode_many, feature_names, parse_space

SMALL_SPACE = """
name: tiny
encoder: {layers: [2], embed_dim: [16, 32], ffn_dim: [32, 64], heads: [2, 4]}
decoder: {layers: [1, 2], embed_dim: [16, 32], ffn_dim: [32, 64], heads: [2, 4], enc_attn_layers: [1, 2]}
"""


@pytest.fixture(scope="module")
def space():
    return parse_space(SMALL_SPACE, "tiny.yaml")


def _synthetic(space, target_seed=123):
    """A ranker whose best subnet is known: score = number of features equal to the target's."""
    target = space.sample(random.Random(target_seed))
    t = encode_many([target], space)[0]

    def score(X):
        return np.sum(np.where(np.isnan(X) & np.isnan(t), 1.0, X == t), axis=1)

    def latency(X):  # grows with widths and depth: a realistic shape for a latency model
        return np.nansum(X, axis=1) / 10.0

    return target, score, latency


def _evals_to_find(scorer, target) -> int:
    keys = list(scorer.cache)
    return keys.index(target.key()) + 1 if target.key() in scorer.cache else len(keys) + 10**6


SMALL_EVO = EvolutionConfig(population=20, parents=5, mutations=8, mutation_prob=0.3, crossovers=7, generations=40)


def test_evolution_finds_the_known_best_in_fewer_evaluations_than_random(space):
    """Random search gets as many evaluations as evolution needed: it rarely finds the best."""
    assert space.num_subnets() > 2000
    evo_evals, random_found = [], 0
    for seed in range(5):
        target, score, _ = _synthetic(space, 100 + seed)
        s1 = CandidateScorer(space, score)
        res = evolution_search(space, s1, Constraints(), SMALL_EVO, seed=seed)
        assert res.best.subnet == target
        evo_evals.append(_evals_to_find(s1, target))
        s2 = CandidateScorer(space, score)
        rounds = evo_evals[-1] // 20 + 1
        random_search(space, s2, Constraints(), EvolutionConfig(population=20, patience=10**6, max_rounds=rounds),
                      seed=seed)
        random_found += _evals_to_find(s2, target) <= evo_evals[-1]
    assert max(evo_evals) < space.num_subnets() / 4, evo_evals
    assert random_found <= 1, (evo_evals, random_found)


def test_deterministic_limits_respected_and_best_ever_kept(space):
    _, score, latency = _synthetic(space)
    params = lambda s: s.encoder.embed_dim * 1000 + s.decoder.depth  # noqa: E731
    cons = Constraints(latency_ms=30.0, max_params=20000)
    runs = []
    for _ in range(2):
        scorer = CandidateScorer(space, score, latency, params)
        res = evolution_search(space, scorer, cons, SMALL_EVO, seed=7)
        runs.append((res.best.subnet, [json.dumps(r["population"]) for r in res.history]))
        for row in res.history:
            assert len(row["population"]) > 0
        feasible = [c for c in scorer.all_candidates() if cons.feasible(c)]
        assert all(cons.feasible(c) for c in top_k(scorer, cons, 10))
        assert res.best.score == max(c.score for c in feasible)  # best ever, not the last generation's
        assert res.best.latency_ms <= 30.0 and res.best.params <= 20000
    assert runs[0] == runs[1]
    assert len(runs[0][1]) == SMALL_EVO.generations + 1  # the last bred generation is scored too


def test_resume_continues_exactly(space):
    _, score, latency = _synthetic(space)
    cons = Constraints(latency_ms=40.0)
    full = evolution_search(space, CandidateScorer(space, score, latency), cons, SMALL_EVO, seed=3)
    rows = full.history[:12]  # as if killed after generation 11
    resumed = evolution_search(space, CandidateScorer(space, score, latency), cons, SMALL_EVO, seed=3,
                               resume_from=rows[-1])
    assert [r["population"] for r in rows + resumed.history] == [r["population"] for r in full.history]
    assert resumed.best.subnet == full.best.subnet


def test_resuming_a_finished_search_scores_nothing_new(space):
    """From the last row of a finished search: no generation/round more, nothing bred or sampled
    (which would add candidates the uninterrupted search never saw to top K and pareto.png)."""
    _, score, latency = _synthetic(space)
    cons = Constraints(latency_ms=40.0)
    full = evolution_search(space, CandidateScorer(space, score, latency), cons, SMALL_EVO, seed=3)
    scorer = CandidateScorer(space, score, latency)
    again = evolution_search(space, scorer, cons, SMALL_EVO, seed=3, resume_from=full.history[-1])
    assert again.history == [] and again.best.subnet == full.best.subnet
    assert scorer.n_evaluated <= len(full.history[-1]["population"]) + 1  # the last population and the best
    longer = evolution_search(space, CandidateScorer(space, score, latency), cons,
                              EvolutionConfig(**{**SMALL_EVO.__dict__, "generations": SMALL_EVO.generations + 2}),
                              seed=3, resume_from=full.history[-1])  # more generations: it goes on
    assert [r["generation"] for r in longer.history] == [SMALL_EVO.generations + 1, SMALL_EVO.generations + 2]

    cfg = EvolutionConfig(population=10, patience=2)
    done = random_search(space, CandidateScorer(space, score, latency), cons, cfg, seed=1)
    assert done.history[-1]["stale"] == 2
    scorer = CandidateScorer(space, score, latency)
    again = random_search(space, scorer, cons, cfg, seed=1, resume_from=done.history[-1])
    assert again.history == [] and again.best.subnet == done.best.subnet and scorer.n_evaluated == 1


def test_infeasible_limit_is_an_error_naming_the_fastest_latency(space):
    _, score, latency = _synthetic(space)
    scorer = CandidateScorer(space, score, latency)
    with pytest.raises(FairseqNasError, match=r"--latency-ms 0.5: no subnet meets the limit; the fastest "
                                              r"predicted latency seen was [0-9.]+ ms"):
        evolution_search(space, scorer, Constraints(latency_ms=0.5), SMALL_EVO, seed=0)
    with pytest.raises(FairseqNasError, match="--max-params"):
        random_search(space, CandidateScorer(space, score, latency, lambda s: 10**9),
                      Constraints(max_params=5), EvolutionConfig(population=10), seed=0)


def _distinct_subnets(space, n):
    subs = list({s.key(): s for s in (space.sample(random.Random(i)) for i in range(20 * n))}.values())
    assert len(subs) >= n
    return subs[:n]


def _dominated(c, cands):
    return any(d.latency_ms <= c.latency_ms and d.score >= c.score
               and (d.latency_ms < c.latency_ms or d.score > c.score) for d in cands)


def test_pareto_front_is_exactly_the_non_dominated_points(space):
    """A hand-made set: dominated points at equal latency, at equal score, and just after a
    better one (the old soft front kept all of these), plus two identical points (both kept)."""
    pts = [(1, 1), (2, 3), (2, 2), (3, 2), (4, 5), (5, 4), (5, 5), (6, 6), (6, 6), (7, 0), (0.5, float("nan"))]
    cands = [Candidate(s, float(sc), float(lat), None) for s, (lat, sc) in zip(_distinct_subnets(space, len(pts)),
                                                                               pts)]
    cands.append(Candidate(space.smallest(), 9.0, None, None))  # no latency: not plotted, not on the front
    front = pareto_front(cands)
    assert [(c.latency_ms, c.score) for c in front] == [(1, 1), (2, 3), (4, 5), (6, 6), (6, 6)]
    assert {c.subnet.key() for c in front} == {cands[i].subnet.key() for i in (0, 1, 4, 7, 8)}
    again = pareto_front(list(reversed(cands)))  # the input order does not matter
    assert [(c.latency_ms, c.score) for c in again] == [(c.latency_ms, c.score) for c in front]
    assert pareto_front([]) == []


def test_pareto_front_of_a_search_is_monotone_and_non_dominated(space, tmp_path):
    _, score, latency = _synthetic(space)
    scorer = CandidateScorer(space, score, latency)
    scorer.evaluate([space.sample(random.Random(i)) for i in range(300)])
    cands = scorer.all_candidates()
    front = pareto_front(cands)
    keys = {c.subnet.key() for c in front}
    assert 1 < len(front) < len(cands) / 4
    for c in cands:  # on the front iff no other candidate dominates it
        assert (c.subnet.key() in keys) == (not _dominated(c, cands))
    lat, sc = [c.latency_ms for c in front], [c.score for c in front]
    assert lat == sorted(lat) and sc == sorted(sc)  # a monotone staircase
    assert all(a < b for a, b in zip(sc, sc[1:]))  # no identical points here: strictly better each step
    assert front[-1].score == max(c.score for c in cands)
    assert front[0].latency_ms == min(c.latency_ms for c in cands)
    out = plot_pareto(cands, tmp_path / "pareto.png", limit_ms=20.0, measured=[(front[0], 12.0)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert feature_names(space)


def test_predict_subnets_in_chunks_equals_one_batch(space):
    """The pipelined path (chunks predicted in a worker thread) gives the rows in order."""
    from fairseq_nas.search import predict_subnets

    _, score, latency = _synthetic(space)
    subs = [space.sample(random.Random(i)) for i in range(1000)]
    X = encode_many(subs, space)
    whole = predict_subnets(subs, space, [score, latency])
    chunked = predict_subnets(subs, space, [score, latency], chunk=64)
    np.testing.assert_array_equal(whole[0], score(X))
    np.testing.assert_array_equal(whole[1], latency(X))
    for a, b in zip(whole, chunked):
        np.testing.assert_array_equal(a, b)


def _candidates(n):
    space = parse_space(SMALL_SPACE, "tiny.yaml")
    return [Candidate(space.sample(random.Random(i)), score=float(-i), latency_ms=1.0, params=None) for i in range(n)]


def test_measurement_walks_down_the_ranking_only_when_no_finalist_meets_the_limit():
    from fairseq_nas.search import measure_until_one_meets

    cands = _candidates(10)
    real = {c.subnet.key(): ms for c, ms in zip(cands, [9, 8, 9, 7, 6, 2, 1, 1, 1, 1])}
    calls = []

    def measure(c):
        calls.append(c)
        return real[c.subnet.key()]

    got = measure_until_one_meets(cands[:3], cands[3:], 5.0, 9, measure)
    assert [ms for _, ms in got] == [9, 8, 9, 7, 6, 2] and calls == cands[:6]  # stops at the first that meets
    calls.clear()
    got = measure_until_one_meets(cands[:3], cands[3:], 5.0, 4, measure)
    assert [ms for _, ms in got] == [9, 8, 9, 7]  # the budget ends the walk: the caller reports failure
    got = measure_until_one_meets(cands[:3], cands[3:], 8.5, 9, measure)
    assert len(got) == 3  # a finalist meets: nothing more is measured
    assert len(measure_until_one_meets(cands[:3], cands[3:], None, 9, measure)) == 3  # no limit: top K only


def test_equal_scores_are_ordered_by_the_tie_break(space):
    """A tree ensemble gives one score to subnets that differ only in genes it ignores: among
    them `capacity` (the default) puts the larger first, `speed` the faster (then the smaller)."""
    subs = [space.sample(random.Random(i)) for i in range(40)]
    subs = list({s.key(): s for s in subs}.values())[:6]
    lat = {s.key(): float(10 - i) for i, s in enumerate(subs)}
    params = {s.key(): 100 + i for i, s in enumerate(subs)}  # the last is the largest and the fastest
    scorer = CandidateScorer(space, lambda X: np.ones(len(X)), lambda X: np.zeros(len(X)))
    scorer.cache = {s.key(): Candidate(s, 1.0, lat[s.key()], params[s.key()]) for s in subs}
    assert [c.subnet.key() for c in top_k(scorer, Constraints(), 6, "speed")] == [s.key() for s in reversed(subs)]
    assert [c.subnet.key() for c in top_k(scorer, Constraints(), 6)] == [s.key() for s in reversed(subs)]
    for i, s in enumerate(subs):  # now the larger is the slower: the two orders disagree
        scorer.cache[s.key()] = Candidate(s, 1.0, float(i), 100 + i)
    assert [c.subnet.key() for c in top_k(scorer, Constraints(), 6)] == [s.key() for s in reversed(subs)]
    assert [c.subnet.key() for c in top_k(scorer, Constraints(), 6, "speed")] == [s.key() for s in subs]
    scorer.cache[subs[0].key()] = Candidate(subs[0], 1.5, 99.0, 1)  # a higher score still wins
    assert top_k(scorer, Constraints(), 1)[0].subnet == subs[0]
    assert top_k(scorer, Constraints(), 1, "speed")[0].subnet == subs[0]
    with pytest.raises(FairseqNasError, match="tie_break"):
        top_k(scorer, Constraints(), 1, "biggest")


def test_tie_break_choices_of_the_cli_are_the_search_modules():
    from fairseq_nas.cli.main import build_parser
    from fairseq_nas.search.evolution import TIE_BREAKS

    sub = next(a for a in build_parser(["search"])._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices["search"]._actions if "--tie-break" in a.option_strings)
    assert tuple(action.choices) == TIE_BREAKS
