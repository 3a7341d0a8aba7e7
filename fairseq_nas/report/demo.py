"""The demo's report: OUT/REPORT.md (tables and plots) and a summary table on stdout.

    python -m fairseq_nas.report.demo OUT [--limit-ms L] [--seconds S]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Optional

MODELS = [("found", "subnet found by the search"), ("largest", "largest subnet"),
          ("smallest", "smallest subnet"), ("transformer", "fairseq transformer (from scratch)")]
PLOTS = (("pareto.png", "Search: candidates, soft Pareto front, measured top K"),
         ("importance.png", "Permutation feature importance"),
         ("dss_divergence.png", "Subnet divergence before/after each shrink"),
         ("dss_losses.png", "Training and validation losses"))


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _json(path: Path) -> Optional[Any]:
    return json.loads(path.read_text()) if path.is_file() else None


def _canon(subnet: dict) -> str:
    from fairseq_nas.space import Subnet

    return Subnet.from_dict(subnet).to_json()


def describe(subnet: dict) -> str:
    """One line per stack: embed dim, depth, and operator/FFN/heads of each layer."""
    parts = []
    for st in ("encoder", "decoder"):
        s = subnet[st]
        ops = ", ".join(f"{lay['operator']}/{lay['ffn_dim']}/{lay['heads']}h" for lay in s["layers"])
        parts.append(f"{st} {s['embed_dim']}d x{len(s['layers'])}: {ops}")
    return "; ".join(parts)


def comparison_rows(out: Path) -> list[dict]:
    lat = {_canon(r["subnet"]): r for r in _jsonl(out / "compare.latency.jsonl")}
    rows = []
    for name, label in MODELS:
        sub = _json(out / f"{name}.json")
        bleu = _json(out / f"{name}.bleu.json") or {}
        meas = lat.get(_canon(sub)) if sub else None
        rows.append({"name": name, "label": label, "subnet": sub,
                     "params": meas.get("params") if meas else None,
                     "latency_ms": meas.get("latency_ms") if meas else None,
                     "bleu": bleu.get("tokenized_bleu"), "sacrebleu": bleu.get("sacrebleu")})
    return rows


def _fmt(v: Any, spec: str = "") -> str:
    return "n/a" if v is None else format(v, spec)


def summary_table(rows: list[dict]) -> str:
    lines = ["| model | params | latency (ms, this CPU) | BLEU (tokenized) | sacreBLEU |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {_fmt(r['params'], ',')} | {_fmt(r['latency_ms'], '.2f')} | "
                     f"{_fmt(r['bleu'], '.2f')} | {_fmt(r['sacrebleu'], '.2f')} |")
    return "\n".join(lines)


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


def write_report(out: Path, limit_ms: Optional[float] = None, seconds: Optional[int] = None,
                 data: Optional[str] = None) -> str:
    """Write OUT/REPORT.md atomically; returns the comparison table (markdown)."""
    rows = comparison_rows(out)
    top = _jsonl(out / "search" / "topk.jsonl")
    md = ["# fairseq-nas demo report", ""]
    if seconds is not None:
        md.append(f"Wall time of the demo: {seconds // 60} min {seconds % 60} s.")
    corpus = f"Corpus: the data-bin `{data}`" if data else "Generated corpus (`data-prep/prepare-demo.sh`)"
    md += [f"{corpus}, and the demo space `scripts/demo-space.yaml` "
           "(ShrinkNAS's structure at CPU size). The subnets are fine-tuned from their inherited weights, the "
           "transformer is trained from scratch for as many updates as the supernet and the fine-tuning together. "
           "BLEU on the test split, beam 5. Latency: this CPU, 1 thread, HAT's protocol.", "",
           "## Comparison", "", summary_table(rows), ""]
    if rows[0]["subnet"]:
        md += [f"Subnet found: `{describe(rows[0]['subnet'])}`", ""]
    if top:
        md += [f"## Search (latency limit {_fmt(limit_ms, '.2f')} ms)", "",
               "| rank | ranker score | predicted ms | measured ms | params | meets limit |",
               "|---:|---:|---:|---:|---:|:---:|"]
        for r in top:
            md.append(f"| {r['rank']} | {r['score']:.4f} | {_fmt(r.get('predicted_latency_ms'), '.2f')} | "
                      f"{_fmt(r.get('measured_latency_ms'), '.2f')} | {_fmt(r.get('params'), ',')} | "
                      f"{r.get('meets_limit')} |")
        md.append("")
    md += _metrics_section(out) + _dss_section(out) + ["## Plots", ""]
    for png, title in PLOTS:
        if (out / "plots" / png).is_file():
            md += [f"### {title}", "", f"![{title}](plots/{png})", ""]
    tmp = out / "REPORT.md.tmp"
    tmp.write_text("\n".join(md) + "\n")
    os.replace(tmp, out / "REPORT.md")
    return summary_table(rows)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Write OUT/REPORT.md for a demo run.")
    ap.add_argument("out")
    ap.add_argument("--limit-ms", type=float)
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--data", help="the data-bin used, when not the generated corpus")
    args = ap.parse_args(argv)
    table = write_report(Path(args.out), args.limit_ms, args.seconds, args.data)
    print(table)
    print(f"\nreport: {Path(args.out) / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
