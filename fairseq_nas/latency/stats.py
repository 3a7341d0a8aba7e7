"""Statistics of repeated timings: trimmed mean, per-subnet noise across passes (pure Python;
scipy is imported only by `noise_report`)."""
from __future__ import annotations

import math
import statistics
from typing import Sequence


def trimmed(values: Sequence[float], trim: float = 0.1) -> list[float]:
    """The sorted values without the floor(trim x n) fastest and as many slowest
    (300 runs at 0.1: 30 dropped at each end; fewer than 10 runs: nothing dropped)."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("no values")
    k = int(len(xs) * trim)
    return xs[k:len(xs) - k]


def trimmed_mean(values: Sequence[float], trim: float = 0.1) -> float:
    """Mean of the values left after dropping the fastest and slowest `trim` fraction."""
    return statistics.fmean(trimmed(values, trim))


def summarize(values: Sequence[float], trim: float = 0.1) -> dict[str, float]:
    """{"mean": trimmed mean, "median": median of all runs, "std": std of the trimmed runs (ddof 0),
    "min": fastest run}."""
    kept = trimmed(values, trim)
    return {"mean": statistics.fmean(kept), "median": statistics.median(values),
            "std": statistics.pstdev(kept) if len(kept) > 1 else 0.0, "min": min(values)}


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample std (ddof 1) / mean; 0 for a single value."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean else math.inf


def noise_report(passes: Sequence[Sequence[float]]) -> dict:
    """Noise of K >= 2 passes over the same subnets (passes[k][i]: latency of subnet i in pass k).

    Returns the per-subnet coefficient of variation of its K latencies, their median and max,
    and Kendall's tau between every pair of passes (and their mean)."""
    from scipy.stats import kendalltau

    k = len(passes)
    if k < 2:
        raise ValueError("a noise report needs at least two passes")
    n = len(passes[0])
    if any(len(p) != n for p in passes):
        raise ValueError("every pass must time the same subnets")
    cvs = [coefficient_of_variation([p[i] for p in passes]) for i in range(n)]
    taus = {}
    for a in range(k):
        for b in range(a + 1, k):
            tau = kendalltau(passes[a], passes[b]).statistic if n > 1 else float("nan")
            taus[f"{a}-{b}"] = float(tau)
    finite = [t for t in taus.values() if not math.isnan(t)]
    return {
        "subnets": n,
        "passes": k,
        "cv": cvs,
        "median_cv": statistics.median(cvs) if cvs else float("nan"),
        "max_cv": max(cvs) if cvs else float("nan"),
        "kendall_tau": taus,
        "mean_kendall_tau": statistics.fmean(finite) if finite else float("nan"),
    }
