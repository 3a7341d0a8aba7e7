"""The tool's claim on real text: found models against fairseq transformers of equal measured
latency, on the IWSLT'14 De-En sample (DESIGN.md section 11; issue "Prove the point").

    python benchmarks/end_to_end.py --work DIR [--data DATA_BIN | --raw ../shared/data/iwslt14-de-en-sample]
        [--quick] [--sampler dss|uniform|sandwich]

Without --data it builds the data-bin from the sample (train: its 7,283 valid pairs; valid: the
first 1,000 test pairs; test: the next --test-sentences; `prepare-parallel.sh --tokenize none
--bpe-size 4000`, text already Moses-tokenized and lowercased). Then it runs `scripts/demo.sh`
on that data-bin with the space benchmarks/end_to_end-space.yaml and three fairseq
`transformer` baselines inside it: one supernet, one search per baseline (its measured latency
as the limit), the found architecture trained from scratch for as many updates as the
baseline, and the found subnet fine-tuned from its inherited weights for a quarter of them.

It prints, and writes to WORK/summary.json: per baseline the three models' BLEU (tokenized and
sacreBLEU with its signature), measured latency, params and updates, whether each claim holds;
the compute of each path; and three checks of the search itself: how the latency model ranks
the measured candidates near each limit (Kendall tau, and how often it was right about meeting
the limit), which groups pruning fixed, and how well inherited-weight loss ranked the found
subnets (and of the baselines' architectures as subnets) after training. Every stage resumes
(rerun the same command after a kill).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fairseq_nas.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "benchmarks" / "end_to_end-space.yaml"
SAMPLE = REPO.parent / "shared" / "data" / "iwslt14-de-en-sample"

SIZES = {  # environment of scripts/demo.sh
    "full": dict(SUPER_UPDATES=3200, SCRATCH_UPDATES=800, FT_UPDATES=200, DSS_EVERY=6, DSS_TIMES=2, DSS_ITERS=3,
                 DSS_POP=16, DIV_SUBNETS=16, N_LAT=40, LAT_RUNS=20, N_COLLECT=50, EVAL_SENTS=200, GENS=15, POP=40,
                 PARENTS=10, MUT=15, CROSS=15, TOPK=3, LAT_ROUNDS=10, BASELINES="128:3:2,192:3:3,256:3:3",
                 LR="1e-3", FT_LR="1e-3", LATENCY_MARGIN="0.02"),
    "quick": dict(SUPER_UPDATES=900, SCRATCH_UPDATES=150, FT_UPDATES=40, DSS_EVERY=2, DSS_TIMES=1, DSS_ITERS=2,
                  DSS_POP=8, DIV_SUBNETS=8, N_LAT=20, LAT_RUNS=5, N_COLLECT=20, EVAL_SENTS=100, GENS=4, POP=16,
                  PARENTS=4, MUT=6, CROSS=6, TOPK=2, LAT_ROUNDS=3, BASELINES="192:3:2,256:3:3",
                  LR="1e-3", FT_LR="1e-3", LATENCY_MARGIN="0.02"),
}
# SUPER_UPDATES above are uniform (SPOS) updates, one forward-backward pass each. A sandwich update
# is three passes and, as it always runs the largest subnet, cost about 3.4x a uniform one on this CPU:
# it gets as many updates as fit in the same wall time.
SANDWICH_SHARE = 0.3


def prepare_data(raw: Path, work: Path, test_sentences: int) -> Path:
    """WORK/data/data-bin from the sample's text (skipped when it is there)."""
    bin_dir = work / "data" / "data-bin"
    if (bin_dir / "test.de-en.en.idx").is_file():
        return bin_dir
    for name in ("valid.de", "valid.en", "test.de", "test.en"):
        if not (raw / name).is_file():
            sys.exit(f"end_to_end: error: {raw / name}: missing (the IWSLT'14 sample: valid.de/en and test.de/en); "
                     "give --raw DIR or --data DATA_BIN")
    split = work / "data" / "raw"
    split.mkdir(parents=True, exist_ok=True)
    for lang in ("de", "en"):
        valid = (raw / f"valid.{lang}").read_text(encoding="utf-8").splitlines(keepends=True)
        test = (raw / f"test.{lang}").read_text(encoding="utf-8").splitlines(keepends=True)
        (split / f"train.{lang}").write_text("".join(valid), encoding="utf-8")
        (split / f"valid.{lang}").write_text("".join(test[:1000]), encoding="utf-8")
        (split / f"test.{lang}").write_text("".join(test[1000:1000 + test_sentences]), encoding="utf-8")
    subprocess.run(["bash", str(REPO / "data-prep" / "prepare-parallel.sh"), "--src", "de", "--tgt", "en",
                    "--train", str(split / "train"), "--valid", str(split / "valid"), "--test", str(split / "test"),
                    "--tokenize", "none", "--bpe-size", "4000", "--workers", "2", "--out", str(work / "data")],
                   check=True)
    return bin_dir


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def latency_model_near_limit(run: Path, limit: float) -> dict:
    """The search's measured candidates: Kendall tau of predicted vs measured latency, and the share
    where the prediction was right about meeting the limit."""
    from scipy.stats import kendalltau

    rows = [r for r in _jsonl(run / "search" / "topk.jsonl")
            if r.get("predicted_latency_ms") is not None and r.get("measured_latency_ms") is not None]
    if not rows:
        return {"measured": 0}
    pred = [r["predicted_latency_ms"] for r in rows]
    meas = [r["measured_latency_ms"] for r in rows]
    right = sum((p <= limit) == (m <= limit) for p, m in zip(pred, meas))
    tau = kendalltau(pred, meas).statistic if len(rows) > 1 else None
    return {"measured": len(rows), "kendall_tau": None if tau != tau else tau, "limit_agreement": right / len(rows),
            "mean_abs_error_pct": 100 * sum(abs(p - m) / m for p, m in zip(pred, meas)) / len(rows)}


def _bin(tool: str) -> str:
    """A console script of this Python's environment (the benchmark may run without .venv/bin on PATH)."""
    here = Path(sys.executable).parent / tool
    return str(here) if here.is_file() else tool


def valid_loss(data: Path, checkpoint: Path) -> float:
    """fairseq-validate's label-smoothed valid loss (base 2) of a checkpoint."""
    proc = subprocess.run([_bin("fairseq-validate"), str(data), "--user-dir", str(REPO / "fairseq_nas"), "--path",
                           str(checkpoint), "--task", "translation", "--valid-subset", "valid", "--max-tokens", "4096",
                           "--cpu", "--required-batch-size-multiple", "1", "--num-workers", "0"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    for line in reversed((proc.stdout + proc.stderr).splitlines()):
        if "| loss " in line:
            return float(line.split("| loss ")[1].split()[0])
    raise RuntimeError(f"fairseq-validate {checkpoint} printed no loss:\n{proc.stderr[-2000:]}")


def inheritance_ranking(data: Path, out: Path, names: list[str]) -> dict:
    """Does inherited-weight loss (what the ranker is fit on) rank subnets as training them does?
    Over the found subnets and the baselines' architectures as subnets of the supernet: valid
    loss with inherited weights (exported, untrained) against valid loss after training (the
    found subnet fine-tuned; the baseline transformer from scratch). Kendall tau over all of
    them, and over the found subnets alone."""
    from scipy.stats import kendalltau

    supernet = out / "supernet" / "checkpoint_last.pt"
    rows = []
    for n in names:
        run = out / "claim" / n
        base_inh = run / "baseline-inherited.pt"
        if not base_inh.is_file():
            subprocess.run([_bin("fairseq-nas"), "export", "--supernet", str(supernet), "--subnet",
                            str(run / "baseline.json"), "--out", str(base_inh)], check=True, capture_output=True)
        for kind, inherited, trained in (("found", run / "found.pt", run / "finetune" / "checkpoint_best.pt"),
                                         ("baseline", base_inh, run / "baseline" / "checkpoint_best.pt")):
            rows.append({"limit": n, "subnet": kind, "inherited_loss": valid_loss(data, inherited),
                         "trained_loss": valid_loss(data, trained)})

    def tau(rs):
        if len(rs) < 2:
            return None
        t = kendalltau([r["inherited_loss"] for r in rs], [r["trained_loss"] for r in rs]).statistic
        return None if t != t else round(float(t), 3)

    return {"rows": rows, "kendall_tau_all": tau(rows),
            "kendall_tau_found": tau([r for r in rows if r["subnet"] == "found"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--data", type=Path, help="a data-bin (default: built from --raw)")
    ap.add_argument("--raw", type=Path, default=SAMPLE, help=f"the IWSLT'14 sample's text (default {SAMPLE})")
    ap.add_argument("--test-sentences", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="a short smoke run of the same protocol")
    ap.add_argument("--sampler", default="uniform", choices=("dss", "uniform", "sandwich"),
                    help="the supernet's sampler (default uniform: on this sample, at equal wall time, its subnets' "
                         "inherited loss was 0.7-1.1 lower than the sandwich rule's)")
    ap.add_argument("--baselines", help="override the baselines (EMBED:ENC:DEC,...)")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or prepare_data(args.raw, args.work, args.test_sentences)
    env = dict(os.environ, DATA_BIN=str(data), TGT_LANG="en", SPACE=str(SPACE), SAMPLER=args.sampler,
               **{k: str(v) for k, v in SIZES["quick" if args.quick else "full"].items()})
    if args.baselines:
        env["BASELINES"] = args.baselines
    if args.sampler == "sandwich":
        env["SUPER_UPDATES"] = str(round(int(env["SUPER_UPDATES"]) * SANDWICH_SHARE))
    out = args.work / "run"
    t0 = time.time()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), str(out)], env=env)
    pipeline_s = time.time() - t0
    if proc.returncode != 0:
        print(f"end_to_end: scripts/demo.sh failed with status {proc.returncode}", file=sys.stderr)
        return proc.returncode
    rows = _jsonl(out / "comparison.jsonl")
    names = [r["name"] for r in rows]
    checks = {
        "latency_model_near_limit": {
            r["name"]: latency_model_near_limit(out / "claim" / r["name"], r["search_limit_ms"]) for r in rows},
        "pruning_fixed": json.loads((out / "ranker" / "fixed.json").read_text())
        if (out / "ranker" / "fixed.json").is_file() else None,
        "inheritance_ranking": inheritance_ranking(data, out, names),
    }
    seconds = time.time() - t0  # the pipeline and the checks, as the 90-minute budget counts them
    summary = {"rows": rows, "checks": checks, "seconds_this_call": round(seconds),
               "seconds_pipeline": round(pipeline_s),
               "compute": _jsonl(out / "claim" / "compute.jsonl"),
               "env": {k: env[k] for k in ("SAMPLER", *SIZES["full"])}}
    atomic_write_text(args.work / "summary.json", json.dumps(summary, indent=1) + "\n")
    print()
    print((out / "REPORT.md").read_text().split("## Search")[0])
    print("search checks:", json.dumps(checks, indent=1))
    print(f"summary: {args.work / 'summary.json'}; this call took {seconds / 60:.1f} min "
          f"(the pipeline {pipeline_s / 60:.1f}, the checks {(seconds - pipeline_s) / 60:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
