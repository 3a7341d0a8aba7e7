"""The demo's report: OUT/REPORT.md (the claim first, then the search, ranking, DSS and plots),
OUT/comparison.jsonl, and the verdict and table on stdout (see `fairseq_nas.report.claim`).

    python -m fairseq_nas.report.demo OUT [--seconds S] [--data DIR] [--space FILE]
        [--scratch-updates B] [--ft-updates F] [--recipe TEXT]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from fairseq_nas.report.claim import _fmt, _json, _jsonl, quiet_logging

PLOTS = (("pareto-*.png", "Search: candidates, Pareto front, measured top K"),
         ("importance.png", "Permutation feature importance"),
         ("dss_divergence.png", "Subnet divergence before/after each shrink"),
         ("dss_losses.png", "Training and validation losses"))


def describe(subnet: dict) -> str:
    """One line per stack: embed dim, depth, and operator/FFN/heads of each layer."""
    parts = []
    for st in ("encoder", "decoder"):
        s = subnet[st]
        ops = ", ".join(f"{lay['operator']}/{lay['ffn_dim']}/{lay['heads']}h" for lay in s["layers"])
        parts.append(f"{st} {s['embed_dim']}d x{len(s['layers'])}: {ops}")
    return "; ".join(parts)


def _importance_items(imp: Any) -> list[tuple[str, float]]:
    items = imp.get("importance", imp) if isinstance(imp, dict) else {}
    out = []
    for k, v in items.items():
        val = v.get("importance") if isinstance(v, dict) else v
        try:
            out.append((k, float(val)))
        except (TypeError, ValueError):
            continue
    return sorted(out, key=lambda kv: -kv[1])


def _metrics_section(out: Path) -> list[str]:
    md: list[str] = []
    m = _json(out / "ranker" / "metrics.json")
    if m:
        md += ["## Ranking (RankNAS pairwise GBDT)", "", "Held-out subnets, inherited-weight validation loss:",
               "", "```json", json.dumps(m, indent=2)[:3000], "```", ""]
    items = _importance_items(_json(out / "ranker" / "importance.json") or {})
    if items:
        md += ["Permutation importance (RankNAS eq. 7; groups below theta are fixed in the pruned space):", "",
               "| feature group | importance |", "|---|---:|"]
        md += [f"| {k} | {v:.3f} |" for k, v in items[:12]] + [""]
    fixed = _json(out / "ranker" / "fixed.json")
    if fixed:
        md += [f"Pruned space fixes: `{json.dumps(fixed)}`", ""]
    lm = _json(out / "latency_model" / "metrics.json")
    if lm:
        md += ["## Latency model", "", "```json", json.dumps(lm, indent=2)[:2000], "```", ""]
    return md


def _dss_section(out: Path) -> list[str]:
    rows = _jsonl(out / "supernet" / "dss.jsonl")
    if not rows:
        return []
    md = ["## Dynamic Space Shrinking", "", "```json"] + [json.dumps(
        {k: v for k, v in r.items() if not isinstance(v, (list, dict))}) for r in rows] + ["```"]
    best = _json(out / "supernet" / "dss_best.json")
    if best:
        md += ["", f"Best subnet of the last DSS: `{describe(best)}`"]
    return md + [""]


def _search_section(out: Path) -> list[str]:
    md: list[str] = []
    for name in ((out / "claim" / "baselines.txt").read_text().split()
                 if (out / "claim" / "baselines.txt").is_file() else []):
        top = _jsonl(out / "claim" / name / "search" / "topk.jsonl")
        limit = (_json(out / "claim" / name / "search.json") or {}).get("limit_ms")
        if not top:
            continue
        md += [f"## Search for {name} (latency limit {_fmt(limit, '.2f')} ms)", "",
               "| rank | ranker score | predicted ms | measured ms | params | meets limit |",
               "|---:|---:|---:|---:|---:|:---:|"]
        for r in top:
            md.append(f"| {r['rank']} | {r['score']:.4f} | {_fmt(r.get('predicted_latency_ms'), '.2f')} | "
                      f"{_fmt(r.get('measured_latency_ms'), '.2f')} | {_fmt(r.get('params'), ',')} | "
                      f"{r.get('meets_limit')} |")
        md.append("")
    return md


def write_report(out: Path, seconds: Optional[int] = None, data: Optional[str] = None,
                 space: str = "scripts/demo-space.yaml", scratch_updates: Optional[int] = None,
                 ft_updates: Optional[int] = None, recipe: Optional[str] = None) -> list[dict]:
    """Write OUT/REPORT.md and OUT/comparison.jsonl atomically; returns the comparison rows."""
    from fairseq_nas.report.claim import write_report as write_claim

    corpus = f"Corpus: the data-bin `{data}`" if data else "Generated corpus (`data-prep/prepare-demo.sh`)"
    what = (f"{corpus}; search space `{space}`. Baselines: fairseq `transformer` models inside the space, "
            f"trained from scratch for {_fmt(scratch_updates)} updates; the found architectures are trained "
            f"from scratch for the same updates, and the found subnets are fine-tuned from their inherited "
            f"weights for {_fmt(ft_updates)} updates. BLEU on the test split, beam 5. Latency: every trained "
            "model measured together on this CPU, 1 thread, beam 5, source and target 23 tokens.")
    if recipe:
        what += f" Training: {recipe}."
    if seconds is not None:
        what += f" Wall time of the demo: {seconds // 60} min {seconds % 60} s."
    extra = _search_section(out) + _metrics_section(out) + _dss_section(out) + ["## Plots", ""]
    for pattern, title in PLOTS:
        for png in sorted((out / "plots").glob(pattern)):
            extra += [f"### {title} ({png.stem})", "", f"![{title}](plots/{png.name})", ""]
    return write_claim(out, "fairseq-nas demo report", what, extra)


def main(argv: Optional[list[str]] = None) -> int:
    quiet_logging()
    from fairseq_nas.report.claim import print_summary

    ap = argparse.ArgumentParser(description="Write OUT/REPORT.md and OUT/comparison.jsonl for a demo run.")
    ap.add_argument("out")
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--data", help="the data-bin used, when not the generated corpus")
    ap.add_argument("--space", default="scripts/demo-space.yaml")
    ap.add_argument("--scratch-updates", type=int)
    ap.add_argument("--ft-updates", type=int)
    ap.add_argument("--recipe", help="the training settings, as one sentence for the report")
    args = ap.parse_args(argv)
    rows = write_report(Path(args.out), args.seconds, args.data, args.space, args.scratch_updates, args.ft_updates,
                        args.recipe)
    print_summary(rows, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
