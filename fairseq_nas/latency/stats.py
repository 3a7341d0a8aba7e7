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


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default)."""
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("no values")
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


STATISTICS = ("median", "trimmed_mean", "min")


def summarize(values: Sequence[float], trim: float = 0.1) -> dict[str, float]:
    """Statistics of one subnet's runs:

    - "mean": the trimmed mean (HAT's figure; kept under this name for older readers), also as
      "trimmed_mean"; "median"; "min" (the fastest run); "max";
    - "std": std of the trimmed runs (ddof 0); "cv": that std over the trimmed mean (the runs'
      spread with the outliers that trimming removes left out);
    - "q1", "q3", "iqr": the quartiles and their distance (linear interpolation)."""
    kept = trimmed(values, trim)
    mean = statistics.fmean(kept)
    std = statistics.pstdev(kept) if len(kept) > 1 else 0.0
    q1, q3 = quantile(values, 0.25), quantile(values, 0.75)
    return {"mean": mean, "trimmed_mean": mean, "median": statistics.median(values), "std": std,
            "cv": std / mean if mean else 0.0, "min": min(values), "max": max(values), "q1": q1, "q3": q3,
            "iqr": q3 - q1}


def statistic(values: Sequence[float], name: str, trim: float = 0.1) -> float:
    """One of STATISTICS of the runs (what a row's latency_ms is)."""
    if name == "median":
        return float(statistics.median(values))
    if name == "trimmed_mean":
        return trimmed_mean(values, trim)
    if name == "min":
        return float(min(values))
    raise ValueError(f"statistic: expected one of {', '.join(STATISTICS)}, got {name!r}")


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
