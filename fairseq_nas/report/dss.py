"""`fairseq-nas report dss SAVE_DIR`: plots of a DSS run.

Inputs: SAVE_DIR/dss.jsonl and SAVE_DIR/dss_divergence.jsonl (written by `--sampler dss`)
and, optionally, saved fairseq-train logs (`--log FILE`: fairseq writes no log file by
default; save its stdout, or pass fairseq-train `--log-file FILE`; `--log-format json` or
`simple`, as printed with `--no-progress-bar`). Outputs, in the output folder:

- dss_divergence.png: per DSS, histograms of subnet divergence before and after the shrink;
- dss_losses.png: training loss and validation losses against updates (from the logs), DSS
  steps marked, and the DSS validator's losses (mean of the phase-1 subnets, kept parents,
  best subnet) per DSS (from dss.jsonl).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from fairseq_nas.atomic import atomic_save
from fairseq_nas.errors import FairseqNasError

PathLike = Union[str, Path]


@dataclass
class FairseqLog:
    """Curves parsed from fairseq-train output: name -> [(update, value)]."""

    train: list[tuple[int, float]] = field(default_factory=list)  # train_inner loss
    valid: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # valid_loss, valid_loss_largest, ...


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


_JSON_TAG = re.compile(r"\|\s*(train_inner|valid)\s*\|\s*(\{.*\})\s*$")
_SIMPLE_INNER = re.compile(r"\|\s*train_inner\s*\|\s*epoch \d+:.*?((?:\w+=[^,]+,?\s*)+)$")
_SIMPLE_VALID = re.compile(r"\|\s*valid\s*\|\s*epoch \d+ \| valid on '[^']*' subset \| (.*)$")


def parse_fairseq_log(text: str) -> FairseqLog:
    """Training (train_inner) and validation curves from fairseq-train's json or simple log lines."""
    log = FairseqLog()

    def add_valid(stats: dict[str, str], prefix: str) -> None:
        update = _number(stats.get(f"{prefix}num_updates"))
        if update is None:
            return
        for key, value in stats.items():
            name = key[len(prefix):]
            if name == "loss" or name.startswith("loss_"):
                v = _number(value)
                if v is not None:
                    log.valid.setdefault(f"valid_{name}", []).append((int(update), v))

    for line in text.splitlines():
        m = _JSON_TAG.search(line)
        if m:
            try:
                stats = {k: str(v) for k, v in json.loads(m.group(2)).items()}
            except json.JSONDecodeError:
                continue
            if m.group(1) == "train_inner":
                update, loss = _number(stats.get("num_updates")), _number(stats.get("loss"))
                if update is not None and loss is not None:
                    log.train.append((int(update), loss))
            else:
                add_valid(stats, "valid_")
            continue
        m = _SIMPLE_INNER.search(line)
        if m:
            stats = dict(kv.split("=", 1) for kv in re.split(r",\s*", m.group(1).strip().rstrip(",")) if "=" in kv)
            update, loss = _number(stats.get("num_updates")), _number(stats.get("loss"))
            if update is not None and loss is not None:
                log.train.append((int(update), loss))
            continue
        m = _SIMPLE_VALID.search(line)
        if m:
            stats = dict(part.strip().split(" ", 1) for part in m.group(1).split("|") if " " in part.strip())
            add_valid(stats, "")
    log.train.sort()
    for curve in log.valid.values():
        curve.sort()
    return log


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise FairseqNasError(f"{path}: line {i + 1}: not valid JSON") from None
    return rows


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_divergence(rows: list[dict], out: Path) -> Path:
    """One panel per DSS: the histograms of subnet divergence before and after the shrink."""
    plt = _plt()
    rows = [r for r in rows if r.get("before") or r.get("after")]
    n = max(1, len(rows))
    cols = min(n, 3)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.2 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        values = list(row.get("before") or []) + list(row.get("after") or [])
        bins = 20
        if values and max(values) > min(values):
            lo, hi = min(values), max(values)
            bins = [lo + (hi - lo) * i / 20 for i in range(21)]
        for key, color in (("before", "tab:blue"), ("after", "tab:red")):
            vals = row.get(key) or []
            if vals:
                mean = sum(vals) / len(vals)
                ax.hist(vals, bins=bins, alpha=0.55, color=color, label=f"{key} (mean {mean:.3f})")
        ax.set_title(f"DSS {row['dss']} (epoch {row.get('epoch')}, update {row.get('update')})", fontsize=9)
        ax.set_xlabel("subnet divergence (RMS distance to the mean normalised output)", fontsize=7)
        ax.set_ylabel("subnets")
        ax.legend(fontsize=7)
    if not rows:
        axes.flat[0].text(0.5, 0.5, "no divergence measured (--dss-divergence-subnets 0)", ha="center")
    fig.tight_layout()
    path = atomic_save(out / "dss_divergence.png", lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path


def plot_losses(dss_rows: list[dict], logs: Sequence[FairseqLog], out: Path) -> Path:
    """Training/validation loss curves (from logs) with DSS steps marked, and the DSS validator's losses."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, log in enumerate(logs):
        suffix = f" [{i + 1}]" if len(logs) > 1 else ""
        if log.train:
            ax1.plot(*zip(*log.train), lw=0.8, alpha=0.8, label=f"train loss{suffix}")
        for name, curve in sorted(log.valid.items()):
            ax1.plot(*zip(*curve), marker="o", ms=3, lw=1, label=f"{name}{suffix}")
    for j, row in enumerate(dss_rows):
        ax1.axvline(row.get("update", 0), color="grey", ls="--", lw=0.8, label="DSS" if j == 0 else None)
    ax1.set_xlabel("update")
    ax1.set_ylabel("loss (bits/token)")
    ax1.set_title("supernet training" if any(log.train for log in logs) else "supernet training (no --log given)")
    ax1.legend(fontsize=7)
    if dss_rows:
        x = [r["dss"] for r in dss_rows]
        for key, label in (("score_initial", "phase-1 subnets (mean)"), ("score_kept", "kept parents (mean)")):
            ax2.plot(x, [r.get(key, {}).get("mean") for r in dss_rows], marker="o", label=label)
        ax2.plot(x, [r.get("best_loss") for r in dss_rows], marker="s", label="best subnet")
        ax2.set_xticks(x)
    ax2.set_xlabel("DSS")
    ax2.set_ylabel("validator loss (bits/token, + penalties)")
    ax2.set_title("DSS validator")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = atomic_save(out / "dss_losses.png", lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path


def report_dss(save_dir: PathLike, logs: Sequence[PathLike] = (), out_dir: Optional[PathLike] = None) -> list[Path]:
    """Write dss_divergence.png and dss_losses.png; returns their paths."""
    save = Path(save_dir)
    dss_path = save / "dss.jsonl"
    if not dss_path.is_file():
        raise FairseqNasError(f"{dss_path}: no such file (was {save} trained with --sampler dss, or given "
                              "another --dss-dir?)")
    rows = read_jsonl(dss_path)
    div_path = save / "dss_divergence.jsonl"
    div_rows = read_jsonl(div_path) if div_path.is_file() else []
    parsed = []
    for p in logs:
        path = Path(p)
        if not path.is_file():
            raise FairseqNasError(f"{path}: no such log file (--log)")
        log = parse_fairseq_log(path.read_text(errors="replace"))
        if not log.train and not log.valid:
            raise FairseqNasError(f"{path}: no fairseq train_inner/valid lines found (use fairseq-train "
                                  "--log-format json or simple with --no-progress-bar)")
        parsed.append(log)
    out = Path(out_dir) if out_dir else save
    out.mkdir(parents=True, exist_ok=True)
    return [plot_divergence(div_rows, out), plot_losses(rows, parsed, out)]


def summary(save_dir: PathLike) -> str:
    """A few lines per DSS: space sizes, best loss, divergence before -> after."""
    lines = []
    for r in read_jsonl(Path(save_dir) / "dss.jsonl"):
        db, da = r.get("divergence_before", {}), r.get("divergence_after", {})
        div = ""
        if db.get("n"):
            red = r.get("divergence_reduction")
            div = f", divergence mean {db['mean']:.4f} -> {da['mean']:.4f}" + (f" ({-red:+.0%})" if red else "")
        lines.append(f"DSS {r['dss']} (epoch {r['epoch']}, update {r['update']}): space {r['space_size_before']:.3g} "
                     f"-> {r['space_size_after']} subnets, best loss {r['best_loss']:.3f}{div}, {r['seconds']:.1f}s")
    return "\n".join(lines)
