"""Ranker quality on real data: pairwise GBDT (RankNAS) vs LambdaRank (AceNAS) vs GBDT and MLP regression.

    python benchmarks/ranker_quality.py [--workdir DIR] [--updates 1000] [--collect 500] ...

Stages, each cached in --workdir (re-running the script resumes where it stopped):

1. data: the IWSLT'14 De-En sample (/work/shared/data/iwslt14-de-en-sample, never copied into the
   repo): train on its `valid` split (7,283 pairs); the first --dev-lines of `test` are the
   validation split, the rest the test split; data-prep/prepare-parallel.sh --tokenize none
   --bpe-size 4000 (joint sentencepiece).
2. train: a ShrinkNAS supernet scaled down for a CPU (embed --embed-choices, --enc-layers encoder
   layers, --dec-layers decoder depths, FFN ratio {1,1.5,2}, heads {2,4}, five operators, three
   activations) for --updates updates with fairseq-train (resumes from checkpoint_last.pt).
3. collect: `fairseq-nas collect` of --collect random subnets on the first --eval-sentences
   sentences of the validation split (resumable archs.jsonl).
4. rank: a fixed held-out set of --test-size subnets; for every N in --sizes and each of --seeds
   seeds, N training subnets drawn from the rest; each model is fit on the same N and scored on the
   held-out set (Kendall tau, NDCG@10, Spearman rho; results cached in results.jsonl). Then the fit
   time on 300 subnets and the scoring speed (encode + predict, subnets per second).

Prints the table and writes DIR/report.md. Threads: 1 per process by default (on a busy 2-core
machine OpenMP threads waiting for each other made training 5x slower).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SOURCE = Path("/work/shared/data/iwslt14-de-en-sample")
MODELS = {
    "pairwise": ("PairwiseRanker", "pairwise GBDT (RankNAS)"),
    "lambdarank": ("LambdaRanker", "LambdaRank GBDT (AceNAS)"),
    "regression": ("GBDTRegressor", "GBDT regression"),
    "mlp": ("MLPRegressor", "MLP regression (HAT)"),
}
REGRESSION_BASELINES = ("regression", "mlp")


def log(msg: str) -> None:
    print(f"[ranker_quality {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore",
               CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", ""))
    return env


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------
def stage_data(args: argparse.Namespace, work: Path) -> Path:
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for lang in ("de", "en"):
        lines = (args.source / f"test.{lang}").read_text(encoding="utf-8").splitlines(keepends=True)
        for name, part in (("dev", lines[: args.dev_lines]), ("test", lines[args.dev_lines:])):
            p = raw / f"{name}.{lang}"
            text = "".join(part)
            if not p.exists() or p.read_text(encoding="utf-8") != text:
                p.write_text(text, encoding="utf-8")
    out = work / "data"
    cmd = ["bash", str(REPO / "data-prep" / "prepare-parallel.sh"), "--src", "de", "--tgt", "en",
           "--train", str(args.source / "valid"), "--valid", str(raw / "dev"), "--test", str(raw / "test"),
           "--out", str(out), "--tokenize", "none", "--bpe-size", str(args.bpe_size), "--workers", "2"]
    log("data: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=True, env=child_env(args.threads))
    return out / "data-bin"


def _num_updates(ckpt: Path) -> int:
    import torch

    from fairseq_nas import safe_globals  # noqa: F401  (numpy globals for weights_only loading)

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hist = state.get("optimizer_history") or [{}]
    return int(hist[-1].get("num_updates", 0))


def train_args(args: argparse.Namespace, data: Path, save: Path) -> list[str]:
    return [str(data), "--save-dir", str(save), "--user-dir", str(REPO / "fairseq_nas"),
            "--task", "supernet_translation", "--arch", "supernet_shrinknas_iwslt14",
            "--encoder-embed-choices", args.embed_choices, "--decoder-embed-choices", args.embed_choices,
            "--encoder-layers-choices", str(args.enc_layers), "--decoder-layers-choices", args.dec_layers,
            "--share-all-embeddings", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", str(args.lr),
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(args.warmup), "--max-tokens",
            str(args.max_tokens), "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--dropout", "0.1", "--max-update", str(args.updates), "--disable-validation",
            "--no-epoch-checkpoints", "--save-interval-updates", "200", "--keep-interval-updates", "1",
            "--log-format", "simple", "--log-interval", "50", "--num-workers", "0", "--seed", "1",
            "--no-progress-bar"]


def stage_train(args: argparse.Namespace, work: Path, data: Path) -> Path:
    save = work / "supernet"
    ckpt = save / "checkpoint_last.pt"
    if ckpt.exists() and _num_updates(ckpt) >= args.updates:
        log(f"train: {ckpt} has {_num_updates(ckpt)} updates (>= {args.updates}); reusing it")
        return ckpt
    cmd = [sys.executable, "-m", "fairseq_cli.train", *train_args(args, data, save)]
    log(f"train: {args.updates} updates -> {save} (log: {work / 'train.log'})")
    t = time.perf_counter()
    with open(work / "train.log", "a") as f:
        subprocess.run(cmd, check=True, env=child_env(args.threads), stdout=f, stderr=subprocess.STDOUT)
    log(f"train: done in {time.perf_counter() - t:.0f} s")
    return ckpt


def stage_collect(args: argparse.Namespace, work: Path, data: Path, ckpt: Path) -> Path:
    out = work / "archs.jsonl"
    cmd = [sys.executable, "-m", "fairseq_nas.cli.main", "collect", str(data), "--supernet", str(ckpt),
           "-n", str(args.collect), "--out", str(out), "--eval-sentences", str(args.eval_sentences),
           "--seed", "0", "--cpu"]
    log("collect: fairseq-nas " + " ".join(cmd[3:]))
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=child_env(args.threads), cwd=str(REPO))
    log(f"collect: done in {time.perf_counter() - t:.0f} s")
    return out


def make(model: str, seed: int):
    import fairseq_nas.ranking as ranking

    return getattr(ranking, MODELS[model][0])(seed=seed)


def stage_rank(args: argparse.Namespace, work: Path, rows_path: Path) -> dict:
    from fairseq_nas.collect.rows import load_rowset
    from fairseq_nas.ranking import kendall_tau, ndcg_at_k, spearman_rho
    from fairseq_nas.space import encode_many, feature_names

    rs = load_rowset([rows_path], "valid_loss")
    space = rs.space
    X = encode_many(rs.subnets, space)
    y = -rs.values  # lower loss is better: fit on -valid_loss
    names = feature_names(space)
    n = len(rs)
    perm = np.random.default_rng(0).permutation(n)
    test, pool = perm[: args.test_size], perm[args.test_size:]
    if pool.size < max(args.sizes):
        raise SystemExit(f"{n} rows: {args.test_size} held out leaves {pool.size} to train on; "
                         f"need {max(args.sizes)} (collect more or lower --test-size)")
    log(f"rank: {n} subnets, {test.size} held out, training pool {pool.size}; valid_loss "
        f"{rs.values.min():.3f} .. {rs.values.max():.3f}")

    results_path = work / "results.jsonl"
    cached = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                cached[(r["model"], r["n"], r["seed"], r["test_size"], r["n_rows"])] = r
    results = []
    with open(results_path, "a") as f:
        for n_train in args.sizes:
            for seed in range(args.seeds):
                tr = np.random.default_rng(1000 * seed + n_train).choice(pool, size=n_train, replace=False)
                for model in args.models:
                    key = (model, n_train, seed, int(test.size), n)
                    if key in cached:
                        results.append(cached[key])
                        continue
                    ranker = make(model, seed)
                    t = time.perf_counter()
                    ranker.fit(X[tr], y[tr], feature_names=names)
                    fit_s = time.perf_counter() - t
                    pred = ranker.predict(X[test])
                    r = {"model": model, "n": n_train, "seed": seed, "test_size": int(test.size), "n_rows": n,
                         "kendall_tau": kendall_tau(y[test], pred), "ndcg@10": ndcg_at_k(y[test], pred, 10),
                         "spearman_rho": spearman_rho(y[test], pred), "fit_s": fit_s}
                    f.write(json.dumps(r) + "\n")
                    f.flush()
                    results.append(r)
            log(f"rank: N={n_train} done")

    # trivial references: the subnet's size alone
    params = np.array([row["params"] for row in rs.rows], dtype=float)
    refs = {"params (larger = better, no model)": kendall_tau(y[test], params[test])}
    if all("flops" in row for row in rs.rows):
        flops = np.array([row["flops"] for row in rs.rows], dtype=float)
        refs["flops (larger = better, no model)"] = kendall_tau(y[test], flops[test])

    # fit time on 300 subnets; scoring speed (cached in speed.json)
    speed_path = work / "speed.json"
    speed_key = {"n_rows": n, "models": list(args.models), "speed_subnets": args.speed_subnets}
    cached_speed = json.loads(speed_path.read_text()) if speed_path.exists() else {}
    n_fit = min(300, n)
    fit_rows = perm[:n_fit]
    speed_subnets = [space.sample(random.Random(10_000 + i)) for i in range(args.speed_subnets)]
    speed = cached_speed.get("speed", {}) if cached_speed.get("key") == speed_key else {}
    for model in args.models:
        if model in speed:
            continue
        times = []
        for rep in range(args.fit_repeats):
            ranker = make(model, rep)
            t = time.perf_counter()
            ranker.fit(X[fit_rows], y[fit_rows], feature_names=names)
            times.append(time.perf_counter() - t)
            if times[-1] > 10.0:  # slow (the MLP): one measurement is enough
                break
        t = time.perf_counter()
        Xs = encode_many(speed_subnets, space)
        ranker.predict(Xs)
        score_s = time.perf_counter() - t
        speed[model] = {"fit_s_300": statistics.median(times), "fit_n": n_fit,
                        "score_per_s": len(speed_subnets) / score_s}
        speed_path.write_text(json.dumps({"key": speed_key, "speed": speed}, indent=1))
    return {"results": results, "refs": refs, "speed": speed, "n_rows": n, "test_size": int(test.size),
            "pool": int(pool.size), "space": space.name, "loss_range": [float(rs.values.min()),
                                                                        float(rs.values.max())]}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def summarize(out: dict, args: argparse.Namespace) -> str:
    res = out["results"]

    def agg(model: str, n: int, key: str) -> tuple[float, float]:
        vals = [r[key] for r in res if r["model"] == model and r["n"] == n]
        return float(np.mean(vals)), float(np.std(vals))

    lines = [f"Held-out ranking quality on {out['test_size']} subnets (mean ± std over {args.seeds} seeds; "
             f"training subnets drawn from a pool of {out['pool']}; target -valid_loss of inherited weights)", ""]
    head = "| model | " + " | ".join(f"N={n} tau" for n in args.sizes) + " | " + \
        " | ".join(f"N={n} NDCG@10" for n in args.sizes) + " |"
    lines += [head, "|" + "---|" * (1 + 2 * len(args.sizes))]
    for model in args.models:
        taus = [agg(model, n, "kendall_tau") for n in args.sizes]
        ndcgs = [agg(model, n, "ndcg@10") for n in args.sizes]
        lines.append(f"| {MODELS[model][1]} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in taus) + " | "
                     + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in ndcgs) + " |")
    lines.append("")
    for name, tau in out["refs"].items():
        lines.append(f"reference: Kendall tau of {name}: {tau:.3f}")
    lines += ["", "| model | fit time on 300 subnets (s, median) | scoring (encode + predict), subnets/s |",
              "|---|---|---|"]
    for model, sp in out["speed"].items():
        lines.append(f"| {MODELS[model][1]} | {sp['fit_s_300']:.2f} | {sp['score_per_s']:,.0f} |")
    # the targets, reported as measured
    if "pairwise" in args.models:
        lines.append("")
        for n in args.sizes:
            pt = agg("pairwise", n, "kendall_tau")[0]
            base = {m: agg(m, n, "kendall_tau")[0] for m in REGRESSION_BASELINES if m in args.models}
            ok = all(pt >= v for v in base.values())
            lines.append(f"N={n}: pairwise tau {pt:.3f} vs " + ", ".join(f"{m} {v:.3f}" for m, v in base.items())
                         + (" -> pairwise >= every regression baseline" if ok else " -> NOT >= every baseline"))
        lines.append("")
        for m in REGRESSION_BASELINES:
            if m not in args.models:
                continue
            diffs = []
            for n in args.sizes:
                by_seed = {r["seed"]: r["kendall_tau"] for r in res if r["model"] == m and r["n"] == n}
                d = [r["kendall_tau"] - by_seed[r["seed"]] for r in res
                     if r["model"] == "pairwise" and r["n"] == n and r["seed"] in by_seed]
                diffs.append(f"N={n} {np.mean(d):+.3f} ± {np.std(d):.3f}")
            lines.append(f"pairwise - {m} tau, paired over seeds (same training subnets): " + ", ".join(diffs))
        if 100 in args.sizes:
            pt = agg("pairwise", 100, "kendall_tau")[0]
            lines.append(f"target tau >= 0.8 at N=100: {'met' if pt >= 0.8 else 'not met'} ({pt:.3f})")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/fairseq-nas-ranker-quality"),
                   help="cache of every stage (outside the repo; default /tmp/fairseq-nas-ranker-quality)")
    p.add_argument("--source", type=Path, default=SOURCE, help="the IWSLT'14 sample folder")
    p.add_argument("--dev-lines", type=int, default=1000, help="lines of test used as the validation split")
    p.add_argument("--bpe-size", type=int, default=4000)
    p.add_argument("--embed-choices", default="64,96,128", help="encoder and decoder embed dims")
    p.add_argument("--enc-layers", type=int, default=3)
    p.add_argument("--dec-layers", default="1,2,3")
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--collect", type=int, default=500, help="subnets to evaluate")
    p.add_argument("--eval-sentences", type=int, default=150, help="validation sentences per subnet")
    p.add_argument("--test-size", type=int, default=250, help="held-out subnets")
    p.add_argument("--sizes", default="25,50,100,200", help="training set sizes N")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--models", default=",".join(MODELS), help="models to compare")
    p.add_argument("--speed-subnets", type=int, default=20000, help="subnets scored for the speed measurement")
    p.add_argument("--fit-repeats", type=int, default=3, help="fits timed on 300 subnets (median; 1 if > 10 s)")
    p.add_argument("--threads", type=int, default=1, help="threads per process (OMP_NUM_THREADS)")
    args = p.parse_args()
    args.sizes = [int(v) for v in args.sizes.split(",")]
    args.models = [m for m in args.models.split(",") if m]
    for m in args.models:
        if m not in MODELS:
            p.error(f"--models: unknown {m!r}; valid: {', '.join(MODELS)}")
    work = args.workdir.resolve()
    if REPO in work.parents or work == REPO:
        p.error("--workdir must be outside the repository (the real data must not be copied into it)")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))

    t0 = time.perf_counter()
    data = stage_data(args, work)
    ckpt = stage_train(args, work, data)
    rows = stage_collect(args, work, data, ckpt)
    out = stage_rank(args, work, rows)
    text = summarize(out, args)
    setup = (f"Set-up: supernet_shrinknas_iwslt14 scaled down (embed {args.embed_choices}, {args.enc_layers} "
             f"encoder layers, decoder depth {args.dec_layers}), {args.updates} updates of {args.max_tokens} "
             f"tokens on the IWSLT'14 sample's valid split; {out['n_rows']} subnets evaluated with inherited "
             f"weights on {args.eval_sentences} held-out sentences (valid_loss "
             f"{out['loss_range'][0]:.3f} .. {out['loss_range'][1]:.3f}); space {out['space']}.")
    report = f"# Ranker quality\n\n{setup}\n\n{text}\n"
    (work / "report.md").write_text(report)
    print("\n" + report)
    log(f"total {time.perf_counter() - t0:.0f} s; report: {work / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
