"""Scoring candidates: ranker score, predicted latency and params, cached per subnet."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from fairseq_nas.space import Subnet, encode_many

Predictor = Callable[[np.ndarray], np.ndarray]


def predict_subnets(subnets: Sequence[Subnet], feature_space, predictors: Sequence[Predictor],
                    chunk: int = 8192) -> list[np.ndarray]:
    """Encode `subnets` and apply each predictor; one float array per predictor.

    Large batches go in chunks, and chunk k is predicted in a worker thread while chunk k+1 is
    encoded: encoding is Python (holds the GIL), LightGBM's predict is native code called through
    ctypes (releases it), so the two run on different cores."""
    subnets = list(subnets)

    def run(X: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(p(X), dtype=float) for p in predictors]

    if len(subnets) <= chunk:
        return run(encode_many(subnets, feature_space))
    with ThreadPoolExecutor(max_workers=1) as worker:
        futures = [worker.submit(run, encode_many(subnets[i:i + chunk], feature_space))
                   for i in range(0, len(subnets), chunk)]
        parts = [f.result() for f in futures]
    return [np.concatenate([part[j] for part in parts]) for j in range(len(predictors))]


@dataclass(frozen=True)
class Candidate:
    subnet: Subnet
    score: float  # ranker score: higher = better
    latency_ms: Optional[float]  # predicted
    params: Optional[int]

    def to_dict(self) -> dict:
        """`predicted_latency_ms`, never `latency_ms`: that name is latency.jsonl's measured number."""
        return {"subnet": self.subnet.to_dict(), "score": self.score, "predicted_latency_ms": self.latency_ms,
                "params": self.params}


@dataclass(frozen=True)
class Constraints:
    latency_ms: Optional[float] = None
    max_params: Optional[int] = None

    def feasible(self, c: Candidate) -> bool:
        if self.latency_ms is not None and c.latency_ms is not None and c.latency_ms > self.latency_ms:
            return False
        return not (self.max_params is not None and c.params is not None and c.params > self.max_params)


class CandidateScorer:
    """Batch-scores subnets; each distinct subnet is encoded and predicted once.

    `feature_space` is the space the ranker and latency model were fit on: features are
    always encoded in it, also when the search runs in a pruned space.
    """

    def __init__(self, feature_space, score_fn: Callable[[np.ndarray], np.ndarray],
                 latency_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                 params_fn: Optional[Callable[[Subnet], int]] = None):
        self.feature_space = feature_space
        self.score_fn, self.latency_fn, self.params_fn = score_fn, latency_fn, params_fn
        self.cache: dict[str, Candidate] = {}

    @property
    def n_evaluated(self) -> int:
        return len(self.cache)

    def evaluate(self, subnets: Sequence[Subnet]) -> list[Candidate]:
        keys = [s.key() for s in subnets]
        todo: dict[str, Subnet] = {}
        for k, s in zip(keys, subnets):
            if k not in self.cache and k not in todo:
                todo[k] = s
        if todo:
            new = list(todo.values())
            predicted = predict_subnets(new, self.feature_space,
                                        [self.score_fn] + ([self.latency_fn] if self.latency_fn else []))
            scores = predicted[0]
            lat = predicted[1] if self.latency_fn else [None] * len(new)
            for k, s, sc, la in zip(todo, new, scores, lat):
                params = int(self.params_fn(s)) if self.params_fn else None
                self.cache[k] = Candidate(s, float(sc), None if la is None else float(la), params)
        return [self.cache[k] for k in keys]

    def all_candidates(self) -> list[Candidate]:
        return list(self.cache.values())
