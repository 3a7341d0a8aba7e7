"""Search speed: candidates scored per second (encode + ranker predict + latency model predict)
and the wall time of a full 30-generation evolution with HAT's settings, no measurement.

    python benchmarks/search_speed.py [--space shrinknas_iwslt14] [--batch 100000] [--repeats 5]

Targets (issue 6): >= 100,000 candidates per second on 2 cores; a 30-generation evolution
in < 10 s. The ranker and latency model are real LightGBM models fit here on 300 subnets with
synthetic labels: a size signal plus noise, so that the held-out tau (~0.8) and the early-stopped
number of trees (~70) are like a ranker fit on real `collect` data (on the IWSLT sample: 55-134
trees for N = 50-200, 267 for the refit on 500). Prediction time grows with the number of trees,
so the rate is also printed for rankers with a fixed 300 and 1000 trees.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairseq_nas.ranking import LatencyModel, PairwiseRanker  # noqa: E402
from fairseq_nas.search import (  # noqa: E402
    CandidateScorer,
    Constraints,
    EvolutionConfig,
    evolution_search,
    predict_subnets,
)
from fairseq_nas.space import encode_many, load_space  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="shrinknas_iwslt14")
    ap.add_argument("--batch", type=int, default=100_000, help="candidates per scoring batch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="LightGBM threads for predict")
    args = ap.parse_args()

    space = load_space(args.space)
    rng = random.Random(0)
    train = [space.sample(rng) for _ in range(300)]
    X = encode_many(train, space)
    size = np.array([s.encoder.embed_dim + s.decoder.embed_dim + 20 * s.decoder.depth
                     + sum(lay.ffn_dim for lay in s.decoder.layers) / 20 for s in train], float)
    noise = np.random.default_rng(0)
    quality = (size - size.mean()) / size.std() + noise.normal(0, 0.3, size.size)
    latency = (10 + np.nansum(X, axis=1) / 100) * np.exp(noise.normal(0, 0.03, size.size))
    rankers = {"early-stopped (realistic)": PairwiseRanker(num_threads=args.threads).fit(X, quality)}
    for trees in (300, 1000):
        rankers[f"fixed {trees} trees"] = PairwiseRanker(
            num_threads=args.threads, early_stopping_rounds=0, fallback_rounds=trees).fit(X, quality)
    ranker = rankers["early-stopped (realistic)"]
    lat_model = LatencyModel(num_threads=args.threads).fit(X, latency)

    pool = [space.sample(rng) for _ in range(args.batch)]
    enc_t = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        Xp = encode_many(pool, space)
        enc_t.append(time.perf_counter() - t0)
    print(f"space {space.name}: {args.batch:,} candidates per batch, {args.repeats} repeats (medians), "
          f"latency model {lat_model.booster_.num_trees()} trees")
    print(f"  encode only:                                  {args.batch / statistics.median(enc_t):12,.0f} "
          f"candidates/s")
    print("  encode + ranker + latency model, one batch (baseline) | chunks predicted while the next is encoded "
          "(predict_subnets, what the search runs):")
    for label, rk in rankers.items():
        one, piped = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            Xp = encode_many(pool, space)
            rk.predict(Xp)
            lat_model.predict(Xp)
            t1 = time.perf_counter()
            predict_subnets(pool, space, [rk.predict, lat_model.predict])
            one.append(t1 - t0)
            piped.append(time.perf_counter() - t1)
        r1, r2 = args.batch / statistics.median(one), args.batch / statistics.median(piped)
        name = f"{label}, {rk.booster_.num_trees()} trees:"
        print(f"    {name:<37} {r1:10,.0f} | {r2:10,.0f} candidates/s  (pipelined = {r2 / r1:.2f} x one batch, "
              f"{r2 / 100_000:.2f} x the 100,000 target)")

    walls, evals = [], []
    limit = float(np.median(latency))
    for seed in range(3):
        scorer = CandidateScorer(space, ranker.predict, lat_model.predict)
        t0 = time.perf_counter()
        res = evolution_search(space, scorer, Constraints(latency_ms=limit), EvolutionConfig(), seed=seed)
        walls.append(time.perf_counter() - t0)
        evals.append(res.evaluations)
    print(f"  30-generation evolution (HAT settings, latency limit {limit:.1f} ms): median "
          f"{statistics.median(walls):.2f} s over 3 seeds, {int(statistics.median(evals)):,} subnets scored "
          f"(target < 10 s)")


if __name__ == "__main__":
    main()
