"""The soft Pareto front of the Neural Predictor (Wen et al.), and its plot."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from fairseq_nas.search.scoring import Candidate


def soft_pareto_front(cands: Sequence[Candidate], window: int = 6) -> list[Candidate]:
    """Sort by latency; keep a candidate if its score exceeds the minimum score of the
    `window` candidates just before it (all of the first `window` are kept)."""
    ordered = sorted((c for c in cands if c.latency_ms is not None), key=lambda c: (c.latency_ms, -c.score))
    front = []
    for i, c in enumerate(ordered):
        prev = ordered[max(0, i - window):i]
        if len(prev) < window or c.score > min(p.score for p in prev):
            front.append(c)
    return front


def plot_pareto(cands: Sequence[Candidate], path: str | Path, limit_ms: Optional[float] = None,
                measured: Optional[Sequence[tuple[Candidate, float]]] = None, window: int = 6) -> Path:
    """All candidates by predicted latency and score, the soft front, and measured top K (PNG)."""
    import os

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = [c for c in cands if c.latency_ms is not None]
    ax.scatter([c.latency_ms for c in pts], [c.score for c in pts], s=6, alpha=0.35, color="tab:gray",
               label=f"candidates ({len(pts)})")
    front = soft_pareto_front(pts, window)
    ax.plot([c.latency_ms for c in front], [c.score for c in front], color="tab:blue", lw=1.2,
            label=f"soft Pareto front (J={window})")
    if measured:
        ax.scatter([m for _, m in measured], [c.score for c, _ in measured], marker="*", s=90, color="tab:red",
                   label="top K, measured latency", zorder=3)
    if limit_ms is not None:
        ax.axvline(limit_ms, color="tab:red", ls="--", lw=1, label=f"limit {limit_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("predicted quality (ranker score)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path
