"""The Pareto front of the candidates over (predicted latency, ranker score), and its plot."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

from fairseq_nas.atomic import atomic_save
from fairseq_nas.search.candidates import Candidate


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """The non-dominated candidates, by increasing latency (and so increasing score).

    A candidate is on the front iff no other candidate has a lower-or-equal latency and a
    higher-or-equal score with at least one of the two strict. Candidates without a latency (no
    latency model) or with a NaN latency or score are left out; candidates at the very same
    (latency, score) do not dominate each other, so all of them are kept."""
    ordered = sorted((c for c in cands if c.latency_ms is not None and not math.isnan(c.latency_ms)
                      and not math.isnan(c.score)), key=lambda c: (c.latency_ms, -c.score))
    front: list[Candidate] = []
    for c in ordered:
        # everything before c is at most as slow; the last point kept holds the best score so far
        # at the lowest latency that reaches it
        if not front or c.score > front[-1].score or (c.score == front[-1].score
                                                      and c.latency_ms == front[-1].latency_ms):
            front.append(c)
    return front


def plot_pareto(cands: Sequence[Candidate], path: str | Path, limit_ms: Optional[float] = None,
                measured: Optional[Sequence[tuple[Candidate, float]]] = None) -> Path:
    """All candidates by predicted latency and score, the Pareto front as a step line, the latency
    limit and the measured top K (PNG, written atomically)."""

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = [c for c in cands if c.latency_ms is not None]
    ax.scatter([c.latency_ms for c in pts], [c.score for c in pts], s=6, alpha=0.35, color="tab:gray",
               label=f"candidates ({len(pts)})", zorder=1)
    front = pareto_front(pts)
    if front:
        xs, ys = [c.latency_ms for c in front], [c.score for c in front]
        right = max(c.latency_ms for c in pts)
        if right > xs[-1]:  # the best score stays reachable at any higher latency
            xs, ys = xs + [right], ys + [ys[-1]]
        ax.step(xs, ys, where="post", color="tab:blue", lw=1.2, zorder=2,
                label=f"Pareto front ({len(front)} non-dominated)")
        ax.scatter([c.latency_ms for c in front], [c.score for c in front], s=14, color="tab:blue", zorder=2)
    if measured:
        for c, m in measured:  # from the predicted latency to the measured one
            if c.latency_ms is not None:
                ax.plot([c.latency_ms, m], [c.score, c.score], color="tab:red", lw=0.6, ls=":", zorder=3)
        ax.scatter([m for _, m in measured], [c.score for c, _ in measured], marker="*", s=90, color="tab:red",
                   label=f"measured latency ({len(measured)} best-ranked)", zorder=4)
    if limit_ms is not None:
        ax.axvline(limit_ms, color="tab:red", ls="--", lw=1, label=f"limit {limit_ms:g} ms")
    ax.set_xlabel("latency (ms): predicted; stars measured")
    ax.set_ylabel("predicted quality (ranker score)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return atomic_save(path, fig.savefig)
