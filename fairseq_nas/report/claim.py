"""The tool's claim, measured (DESIGN.md section 11): at the measured latency of each fairseq
`transformer` baseline, the subnet the search finds is better.

Two claims per baseline, each its own column:

1. *architecture*: the found architecture trained from scratch for B updates beats the baseline
   trained from scratch for the same B updates, at no more measured latency;
2. *inheritance*: the found subnet fine-tuned from its inherited weights for F < B updates
   reaches at least the from-scratch BLEU of claim 1.

    python -m fairseq_nas.report.claim baselines --space S --specs 96:3:1,128:3:2 --out DIR
    python -m fairseq_nas.report.claim limit --latency L.jsonl --checkpoint CK --margin 0.02 --out search.json
    python -m fairseq_nas.report.claim report OUT

`baselines` writes, per baseline, DIR/NAME/baseline.json (its architecture as a subnet of the
space: a baseline outside the space is an error) and DIR/NAME/baseline.args (the fairseq-train
arguments of the same `transformer`), and prints the names. `report` reads a run's files (layout
below), writes OUT/comparison.jsonl (one row per baseline), OUT/plots/claim.png (BLEU against
measured latency) and OUT/REPORT.md (which says first whether each claim held), and prints
the table.

Layout of a run, OUT/claim/NAME/: baseline.json, baseline/checkpoint_best.pt, search/ (best.json),
found.json, scratch/ and finetune/ (checkpoints), {baseline,scratch,finetune}.bleu.json; and
OUT/claim/latency.jsonl (`fairseq-nas latency --checkpoints` of every trained model, measured
together) and OUT/claim/compute.jsonl (one row per stage: updates, passes, seconds).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fairseq_nas.atomic import atomic_save, atomic_write_text
from fairseq_nas.errors import FairseqNasError

MODELS = ("baseline", "scratch", "finetune")
LABELS = {"baseline": "fairseq transformer, from scratch", "scratch": "found architecture, from scratch",
          "finetune": "found subnet, fine-tuned from inherited weights"}


@dataclass(frozen=True)
class Baseline:
    """A fairseq `transformer` size: embed dim, encoder and decoder layers; FFN = ffn_ratio x embed
    dim, `heads` attention heads, ReLU, pre-norm (--encoder/decoder-normalize-before), every
    decoder layer attending to the last encoder layer, all embeddings shared."""

    embed_dim: int
    encoder_layers: int
    decoder_layers: int
    ffn_ratio: float = 2.0
    heads: int = 4

    @property
    def ffn_dim(self) -> int:
        return int(round(self.embed_dim * self.ffn_ratio))

    @property
    def name(self) -> str:
        return f"transformer-{self.embed_dim}d-{self.encoder_layers}x{self.decoder_layers}"

    def subnet(self) -> dict[str, Any]:
        layer = dict(operator="self_attention", ffn_dim=self.ffn_dim, heads=self.heads, activation="relu",
                     rpr_len=0, norm="pre")
        return {"encoder": {"embed_dim": self.embed_dim, "layers": [layer] * self.encoder_layers},
                "decoder": {"embed_dim": self.embed_dim,
                            "layers": [dict(layer, enc_attn_layers=1)] * self.decoder_layers}}

    def fairseq_args(self, share_all_embeddings: bool = True) -> list[str]:
        """fairseq-train's arguments of this transformer; without `share_all_embeddings` (separate
        dictionaries, as a supernet trained without it has) the decoder's input and output
        embeddings are still tied, as nas_subnet ties them."""
        e, f, h = str(self.embed_dim), str(self.ffn_dim), str(self.heads)
        share = "--share-all-embeddings" if share_all_embeddings else "--share-decoder-input-output-embed"
        return ["--arch", "transformer", share, "--encoder-normalize-before",
                "--decoder-normalize-before", "--activation-fn", "relu",
                "--encoder-embed-dim", e, "--decoder-embed-dim", e, "--encoder-ffn-embed-dim", f,
                "--decoder-ffn-embed-dim", f, "--encoder-attention-heads", h, "--decoder-attention-heads", h,
                "--encoder-layers", str(self.encoder_layers), "--decoder-layers", str(self.decoder_layers)]


def parse_baselines(text: str, source: str = "--specs") -> list[Baseline]:
    """'96:3:1,128:3:2' (EMBED:ENC_LAYERS:DEC_LAYERS[:FFN_RATIO[:HEADS]], comma-separated)."""
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        if not re.fullmatch(r"\d+:\d+:\d+(:\d+(\.\d+)?(:\d+)?)?", part):
            raise FairseqNasError(f"{source}: {part!r} is not EMBED:ENC_LAYERS:DEC_LAYERS[:FFN_RATIO[:HEADS]] "
                                  "(e.g. 128:3:2)")
        v = part.split(":")
        out.append(Baseline(int(v[0]), int(v[1]), int(v[2]), float(v[3]) if len(v) > 3 else 2.0,
                            int(v[4]) if len(v) > 4 else 4))
    if not out:
        raise FairseqNasError(f"{source}: no baseline given (e.g. 96:3:1,128:3:2)")
    if len({b.name for b in out}) != len(out):
        raise FairseqNasError(f"{source}: the same baseline is given twice in {text!r}")
    return out


def check_in_space(baseline: Baseline, space) -> None:
    """A baseline must be a subnet of the space the search runs in (else the search could not even
    find the baseline itself): SpaceError naming the field otherwise."""
    from fairseq_nas.space import Subnet

    space.validate_subnet(Subnet.from_dict(baseline.subnet()), source=f"baseline {baseline.name}")


def write_baselines(space_arg: str, specs: str, out: Path, share_all_embeddings: bool = True) -> list[Baseline]:
    from fairseq_nas.space import load_space

    space = load_space(space_arg)
    baselines = parse_baselines(specs)
    for b in baselines:
        check_in_space(b, space)
    for b in baselines:
        d = out / b.name
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "baseline.json", json.dumps(b.subnet()) + "\n")
        atomic_write_text(d / "baseline.args", "\n".join(b.fairseq_args(share_all_embeddings)) + "\n")
    return baselines


def predicted_ms(latency_model: Path, subnet_file: Path, space_arg: str) -> float:
    """The latency model's figure for a subnet (a JSON file), encoded in `space_arg` (the space the
    model was fit in, as `search --feature-space`)."""
    from fairseq_nas.ranking import LatencyModel, load_ranker
    from fairseq_nas.space import Subnet, encode_many, load_space

    model_dir = latency_model / "ranker" if (latency_model / "ranker").is_dir() else latency_model
    try:
        model = load_ranker(model_dir)
    except (FileNotFoundError, ValueError) as e:
        raise FairseqNasError(f"{model_dir}: --latency-model: {e}") from None
    if not isinstance(model, LatencyModel):
        raise FairseqNasError(f"{model_dir}: --latency-model: not a latency model (it holds a "
                              f"{type(model).__name__}); fit one with fairseq-nas rank --target latency_ms")
    space = load_space(space_arg)
    subnet = Subnet.from_dict(json.loads(subnet_file.read_text()), str(subnet_file))
    space.validate_subnet(subnet, str(subnet_file))
    return float(model.predict(encode_many([subnet], space))[0])


def write_limit(latency: Path, checkpoint: Path, margin: float, out: Path,
                predicted: Optional[tuple[Path, Path, str]] = None) -> float:
    """OUT (search.json) = {baseline_ms, margin, limit_ms}: the baseline checkpoint's measured
    latency (a row of `latency --checkpoints`) less `margin`; returns limit_ms.

    With `predicted` = (latency model dir, the baseline's subnet JSON, space): the limit is instead
    the latency model's own figure for the baseline's architecture less the margin (also recorded,
    as predicted_ms). The search compares predictions with it, and a prediction compared with a
    prediction does not move with the machine's speed: on a shared VM the baseline measured 88 ms
    in one measurement and 34 ms a minute later, while the model was fit on rows measured earlier."""
    if not 0 <= margin < 1:
        raise FairseqNasError(f"--margin: expected a share in [0, 1), got {margin}")
    rows = {str(Path(r["checkpoint"]).resolve()): r for r in _jsonl(latency) if "checkpoint" in r}
    row = rows.get(str(checkpoint.resolve()))
    if row is None:
        raise FairseqNasError(f"{latency}: no row for checkpoint {checkpoint} (measure it with "
                              "`fairseq-nas latency --checkpoints`)")
    ms = float(row["latency_ms"])
    record: dict[str, Any] = {"baseline_ms": ms, "margin": margin}
    if predicted is not None:
        record["predicted_ms"] = round(predicted_ms(*predicted), 3)
        limit = round(record["predicted_ms"] * (1 - margin), 3)
    else:
        limit = round(ms * (1 - margin), 3)
    record["limit_ms"] = limit
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record) + "\n")
    return limit


# --- reading a run -------------------------------------------------------------------------------
def _json(path: Path) -> Optional[Any]:
    return json.loads(path.read_text()) if path.is_file() else None


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _checkpoint(run: Path, model: str) -> Path:
    return run / model / "checkpoint_best.pt"


def _updates(run: Path, model: str) -> Optional[int]:
    """The updates a training really made: fairseq's own count in its last checkpoint."""
    path = run / model / "checkpoint_last.pt"
    if not path.is_file():
        return None
    from fairseq_nas.models.export import read_checkpoint

    state = read_checkpoint(path)
    return int(state.get("optimizer_history", [{}])[-1].get("num_updates", 0) or 0) or None


def comparison_rows(out: Path, read_updates: bool = True) -> list[dict[str, Any]]:
    """One row per baseline directory in OUT/claim (in the order of OUT/claim/baselines.txt)."""
    claim = out / "claim"
    order = (claim / "baselines.txt").read_text().split() if (claim / "baselines.txt").is_file() else []
    lat = {str(Path(r["checkpoint"]).resolve()): r for r in _jsonl(claim / "latency.jsonl")}
    rows = []
    for name in order:
        run = claim / name
        search = _json(run / "search.json") or {}
        row: dict[str, Any] = {"name": name, "limit_ms": search.get("baseline_ms"),
                               "search_limit_ms": search.get("limit_ms"), "predicted_ms": search.get("predicted_ms")}
        for model in MODELS:
            bleu = _json(run / f"{model}.bleu.json") or {}
            meas = lat.get(str(_checkpoint(run, model).resolve())) or {}
            arch = _json(run / ("baseline.json" if model == "baseline" else "found.json"))
            row[model] = {
                "bleu": bleu.get("tokenized_bleu"), "sacrebleu": bleu.get("sacrebleu"),
                "sacrebleu_signature": bleu.get("sacrebleu_signature"),
                "latency_ms": meas.get("latency_ms"), "params": meas.get("params"),
                "updates": _updates(run, model) if read_updates else None, "subnet": arch,
                "round_ms": meas.get("round_ms"),
            }
        base_rounds = row["baseline"]["round_ms"]
        for model in MODELS:
            row[model]["latency_ratio"] = _ratio_to(row[model].pop("round_ms"), base_rounds)
        row.update(judge(row))
        rows.append(row)
    return rows


def _ratio_to(rounds: Optional[list], baseline_rounds: Optional[list]) -> Optional[float]:
    """A model's latency over the baseline's, round by round (all models are measured together,
    interleaved), so drift between rounds cancels; None without paired rounds."""
    from fairseq_nas.search import round_ratio

    ratio = round_ratio(rounds, baseline_rounds)
    return None if ratio is None else round(ratio, 4)


def _no_slower(model: dict[str, Any], base: dict[str, Any]) -> bool:
    """At no more measured latency than the baseline: the paired per-round ratio where there is one,
    else the two figures."""
    if model.get("latency_ratio") is not None:
        return model["latency_ratio"] <= 1.0
    return model["latency_ms"] <= base["latency_ms"]


def judge(row: dict[str, Any]) -> dict[str, Any]:
    """claim1 / claim2 of a row: True, False, or None where a figure is missing.

    claim1: the found architecture from scratch has higher BLEU than the baseline and no more
    measured latency. claim2: the found subnet fine-tuned for fewer updates than the from-scratch
    runs reaches at least the found architecture's from-scratch BLEU and the baseline's BLEU, at
    no more latency than the baseline. Latency: `_no_slower`."""
    base, scratch, ft = row["baseline"], row["scratch"], row["finetune"]
    out: dict[str, Any] = {"claim1": None, "claim2": None}
    if None not in (base["bleu"], scratch["bleu"], base["latency_ms"], scratch["latency_ms"]):
        out["claim1"] = bool(scratch["bleu"] > base["bleu"] and _no_slower(scratch, base))
    if None not in (base["bleu"], scratch["bleu"], ft["bleu"], base["latency_ms"], ft["latency_ms"]):
        fewer = None if None in (ft["updates"], scratch["updates"]) else ft["updates"] < scratch["updates"]
        out["claim2"] = bool(ft["bleu"] >= max(scratch["bleu"], base["bleu"])
                             and _no_slower(ft, base) and fewer is not False)
    return out


# --- the report ----------------------------------------------------------------------------------
def quiet_logging() -> None:
    """Warnings only, configured before fairseq is imported: one of its modules calls
    logging.basicConfig(level=DEBUG) on import, which floods stderr with matplotlib's debug lines."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s | %(name)s | %(message)s")


def _fmt(v: Any, spec: str = "") -> str:
    return "n/a" if v is None else format(v, spec)


def _verdict(v: Optional[bool]) -> str:
    return {True: "holds", False: "FAILS", None: "not measured"}[v]


def verdict_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The report's first lines: whether each claim held at every limit, with the numbers where not."""
    if not rows:
        return ["No baseline was run: nothing is claimed."]
    lines = []
    for key, what in (("claim1", "Claim 1 (found architecture from scratch beats the transformer at no more "
                                 "latency)"),
                      ("claim2", "Claim 2 (found subnet fine-tuned from inherited weights, fewer updates, "
                                 "reaches the from-scratch BLEU)")):
        held = [r for r in rows if r[key]]
        status = "holds at every limit" if len(held) == len(rows) else (
            f"holds at {len(held)} of {len(rows)} limits" if held else "FAILS at every limit")
        lines.append(f"- **{what}: {status}.**")
        for r in rows:
            if not r[key]:
                b, s, f = r["baseline"], r["scratch"], r["finetune"]
                other = s if key == "claim1" else f
                lines.append(f"  - {r['name']} ({_fmt(b['latency_ms'], '.2f')} ms, BLEU {_fmt(b['bleu'], '.2f')}): "
                             f"{'from scratch' if key == 'claim1' else 'fine-tuned'} BLEU "
                             f"{_fmt(other['bleu'], '.2f')} at {_fmt(other['latency_ms'], '.2f')} ms"
                             + (f" ({other['latency_ratio']:.3f} x the baseline round by round)"
                                if other.get("latency_ratio") is not None else "")
                             + (f" (from scratch {_fmt(s['bleu'], '.2f')})" if key == "claim2" else "")
                             + (f" after {other['updates']} updates" if other.get("updates") else ""))
    return lines


def table(rows: list[dict[str, Any]]) -> str:
    head = ["| limit (baseline) | model | BLEU | sacreBLEU | latency ms | x baseline | params | updates |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for m in MODELS:
            x = r[m]
            head.append(f"| {r['name']} | {LABELS[m]} | {_fmt(x['bleu'], '.2f')} | {_fmt(x['sacrebleu'], '.2f')} | "
                        f"{_fmt(x['latency_ms'], '.2f')} | {_fmt(x.get('latency_ratio'), '.3f')} | "
                        f"{_fmt(x['params'], ',')} | {_fmt(x['updates'])} |")
    return "\n".join(head)


def _timed_with_baseline(out: Path, r: dict) -> str:
    """How the search timed the found subnet against the baseline in the same rounds (search
    --reference), from its topk.jsonl; "" when it was not timed so."""
    path = Path(out) / "claim" / r["name"] / "search" / "topk.jsonl"
    if not path.is_file():
        return ""
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    found = [x for x in found if x.get("subnet") == r["scratch"]["subnet"]]
    # the row it won in (a recalibrated search may have measured it in an earlier attempt too)
    for row in sorted(found, key=lambda x: x.get("meets_limit") is not True):
        m = row.get("measured") or {}
        if m.get("reference_ms"):
            ratio = f" ({m['ratio']:.3f} x it round by round)" if m.get("ratio") is not None else ""
            again = m.get("confirmation") or {}
            again = f", {again['ratio']:.3f} x again in fresh rounds" if again.get("ratio") is not None else ""
            return (f"; the search timed it at {row['measured_latency_ms']:.2f} ms against the baseline's "
                    f"{m['reference_ms']:.2f} ms in the same rounds{ratio}{again}")
    return ""


def compute_lines(out: Path) -> list[str]:
    rows = _jsonl(out / "claim" / "compute.jsonl")
    if not rows:
        return []
    lines = ["| stage | runs | updates | forward-backward passes | wall s |", "|---|---:|---:|---:|---:|"]
    by: dict[str, dict[str, float]] = {}
    for r in rows:
        t = by.setdefault(r["stage"], {"runs": 0, "updates": 0, "passes": 0, "seconds": 0})
        t["runs"] += 1
        for k in ("updates", "passes", "seconds"):
            t[k] += r.get(k) or 0
    for stage, t in by.items():
        lines.append(f"| {stage} | {t['runs']} | {int(t['updates']):,} | {int(t['passes']):,} | {t['seconds']:.0f} |")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> Optional[Path]:
    """BLEU against measured latency: the transformers' curve and the found models' curves."""
    try:
        import logging

        import matplotlib

        logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's import leaves the root at DEBUG
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for m, style in (("baseline", "s-"), ("scratch", "o-"), ("finetune", "^--")):
        pts = sorted((r[m]["latency_ms"], r[m]["bleu"]) for r in rows
                     if r[m]["latency_ms"] is not None and r[m]["bleu"] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=LABELS[m])
    ax.set_xlabel("measured latency (ms, same protocol, measured together)")
    ax.set_ylabel("BLEU (tokenized, beam 5)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Found models vs fairseq transformers of equal latency")
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path


def write_report(out: Path, title: str = "fairseq-nas report", preamble: str = "",
                 extra: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """OUT/comparison.jsonl, OUT/plots/claim.png and OUT/REPORT.md (all written atomically)."""
    rows = comparison_rows(out)
    atomic_write_text(out / "comparison.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    png = plot(rows, out / "plots" / "claim.png")
    md = [f"# {title}", ""] + verdict_lines(rows) + [""]
    if png:
        md += ["![BLEU against measured latency](plots/claim.png)", ""]
    if preamble:
        md += [preamble, ""]
    md += ["## The claim, per latency limit", "", table(rows), ""]
    for r in rows:
        if r["scratch"]["subnet"]:
            from fairseq_nas.report.demo import describe

            source = (f"the latency model's {r['predicted_ms']:.2f} ms for the baseline's architecture less the "
                      f"margin; the baseline measured {_fmt(r['limit_ms'], '.2f')} ms" if r.get("predicted_ms")
                      else f"the baseline's {_fmt(r['limit_ms'], '.2f')} ms less the margin")
            md.append(f"- {r['name']}: predicted-latency limit {_fmt(r['search_limit_ms'], '.2f')} ms ({source})"
                      f"{_timed_with_baseline(out, r)}; found "
                      f"`{describe(r['scratch']['subnet'])}`")
    md.append("")
    comp = compute_lines(out)
    if comp:
        md += ["## Compute of each path", "", "The supernet, its latency samples, collection and ranking are "
               "shared by every limit (one supernet, searched once per baseline).", ""] + comp + [""]
    md += list(extra or [])
    atomic_write_text(out / "REPORT.md", "\n".join(md) + "\n")
    return rows


def print_summary(rows: list[dict[str, Any]], out: Path) -> None:
    """The verdict and the table on stdout, and where the files are."""
    print("\n".join(verdict_lines(rows)))
    print()
    print(table(rows))
    print(f"\nreport: {out / 'REPORT.md'}; one row per limit: {out / 'comparison.jsonl'}")


def main(argv: Optional[list[str]] = None) -> int:
    quiet_logging()
    ap = argparse.ArgumentParser(prog="python -m fairseq_nas.report.claim", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("baselines", help="write each baseline's subnet JSON and fairseq-train arguments")
    b.add_argument("--space", required=True)
    b.add_argument("--specs", required=True, help="EMBED:ENC:DEC[:FFN_RATIO[:HEADS]],... e.g. 96:3:1,128:3:2")
    b.add_argument("--out", help="folder; one sub-folder per baseline")
    b.add_argument("--share-all-embeddings", action=argparse.BooleanOptionalAction, default=True,
                   help="the transformers share all embeddings, as the supernet must then (default: yes)")
    b.add_argument("--print", dest="print_args", action="store_true",
                   help="write nothing: print 'NAME ARG ARG ...' per baseline (the recipes' dry runs)")
    lim = sub.add_parser("limit", help="a baseline's search limit: its measured latency less the margin")
    lim.add_argument("--latency", required=True, help="`fairseq-nas latency --checkpoints` rows (JSON lines)")
    lim.add_argument("--checkpoint", required=True, help="the baseline's checkpoint, as measured")
    lim.add_argument("--margin", type=float, default=0.02, help="share taken off (default 0.02)")
    lim.add_argument("--out", required=True, help="search.json: baseline_ms, margin, limit_ms (printed too)")
    lim.add_argument("--latency-model", metavar="DIR",
                     help="take the limit from this latency model's prediction for the baseline's architecture "
                          "(--subnet, encoded in --space) instead of the measured figure")
    lim.add_argument("--subnet", metavar="FILE", help="with --latency-model: the baseline's subnet JSON")
    lim.add_argument("--space", help="with --latency-model: the space it was fit in")
    r = sub.add_parser("report", help="comparison.jsonl, plots/claim.png and REPORT.md of a run")
    r.add_argument("out")
    r.add_argument("--title", default="fairseq-nas report")
    r.add_argument("--preamble", default="", help="a paragraph after the verdict (what was run)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "baselines":
            if args.print_args:
                from fairseq_nas.space import load_space

                space = load_space(args.space)
                for bl in parse_baselines(args.specs):
                    check_in_space(bl, space)
                    print(" ".join([bl.name, *bl.fairseq_args(args.share_all_embeddings)]))
                return 0
            if not args.out:
                raise FairseqNasError("baselines: give --out DIR (or --print)")
            for bl in write_baselines(args.space, args.specs, Path(args.out), args.share_all_embeddings):
                print(bl.name)
            return 0
        if args.cmd == "limit":
            predicted = None
            if args.latency_model:
                if not (args.subnet and args.space):
                    raise FairseqNasError("limit --latency-model needs --subnet FILE and --space")
                predicted = (Path(args.latency_model), Path(args.subnet), args.space)
            print(write_limit(Path(args.latency), Path(args.checkpoint), args.margin, Path(args.out), predicted))
            return 0
        rows = write_report(Path(args.out), args.title, args.preamble)
    except FairseqNasError as e:
        print(f"claim: error: {e}", file=sys.stderr)
        return 2
    print_summary(rows, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
