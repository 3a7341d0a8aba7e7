"""Which supernet training makes inherited weights worth trusting? Uniform SPOS, DSS, the
sandwich rule and sandwich + DSS at equal compute, on a real data-bin (the IWSLT'14 sample).

    python benchmarks/supernet_training.py --data DATA_BIN --work DIR [--passes 1200] \
        [--methods uniform,dss,sandwich,dss_sandwich] [--subnets 10] [--finetune-updates 40]

Equal compute means equal forward-backward passes, not updates: a sandwich update runs
2 + --sandwich-random passes, so it gets that many times fewer updates (and a warm-up
scaled alike). DSS's scoring forwards are extra and reported apart (its seconds).

For each method: the supernet is trained with `fairseq-train`, then the same K subnets
(drawn from the space with a fixed seed) are scored with inherited weights (per-token NLL in
bits on the valid split) and fine-tuned from those weights for F updates each (export +
`fairseq-train --arch nas_subnet --finetune-from-model`), whose final valid NLL is the
"after" loss. Reported per method: Kendall tau between inherited and fine-tuned loss (does
the supernet rank subnets as training them would?), the fine-tuned loss of the subnet the
supernet picks (best inherited), the mean fine-tuned loss, and the largest and smallest
subnets' inherited loss.

Rows go to WORK/results.jsonl as they are computed; a rerun skips what is done. The table is
printed and written to WORK/summary.json at the end. Two jobs run at a time, one thread each.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_nas")
DEMO_SPACE = REPO / "scripts" / "demo-space.yaml"
METHODS = ("uniform", "dss", "sandwich", "dss_sandwich")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def passes_per_update(method: str, n_random: int) -> int:
    return 2 + n_random if method.endswith("sandwich") else 1


def train_args(args: argparse.Namespace, method: str, run_dir: Path) -> list[str]:
    per = passes_per_update(method, args.sandwich_random)
    updates = max(1, args.passes // per)
    warmup = max(1, args.warmup // per)
    out = [str(args.data), "--user-dir", USER_DIR, "--task", "supernet_translation", "--arch", "supernet",
           "--search-space", str(args.space), "--share-all-embeddings", "--optimizer", "adam",
           "--adam-betas", "(0.9,0.98)", "--lr", str(args.lr), "--lr-scheduler", "inverse_sqrt",
           "--warmup-updates", str(warmup), "--max-tokens", str(args.max_tokens),
           "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0.1",
           "--max-update", str(updates), "--seed", str(args.seed), "--save-dir", str(run_dir),
           "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "20", "--no-progress-bar",
           "--num-workers", "0", "--required-batch-size-multiple", "1", "--max-tokens-valid", "4096",
           "--cpu", "--sampler", method, "--sandwich-random", str(args.sandwich_random),
           "--sandwich-distill", str(args.sandwich_distill)]
    if method.startswith("dss"):
        epochs = max(1, round(updates / args.updates_per_epoch))
        every = max(1, epochs // (args.dss_times + 1))
        out += ["--dss-every-epochs", str(every), "--dss-times", str(args.dss_times),
                "--dss-population", str(args.dss_population), "--dss-iterations", str(args.dss_iterations),
                "--dss-valid-tokens", str(args.dss_valid_tokens), "--dss-divergence-subnets", "0"]
    return out


def train(args: argparse.Namespace, method: str) -> dict:
    run_dir = args.work / "runs" / method
    done = run_dir / "train.json"
    if done.is_file():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(run_dir / "train.log", "w") as log:
        subprocess.run([sys.executable, "-m", "fairseq_cli.train", *train_args(args, method, run_dir)],
                       check=True, stdout=log, stderr=subprocess.STDOUT, env=ENV)
    per = passes_per_update(method, args.sandwich_random)
    dss_seconds = 0.0
    if (run_dir / "dss.jsonl").is_file():
        dss_seconds = sum(float(json.loads(line).get("seconds", 0))
                          for line in (run_dir / "dss.jsonl").read_text().splitlines() if line.strip())
    info = {"method": method, "updates": max(1, args.passes // per), "passes": max(1, args.passes // per) * per,
            "train_seconds": round(time.time() - t0, 1), "dss_seconds": round(dss_seconds, 1)}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, done)
    return info


def eval_subnets(args: argparse.Namespace):
    from fairseq_nas.space import load_space

    space = load_space(str(args.space))
    rng = random.Random(args.seed + 1000)
    named = [("largest", space.largest()), ("smallest", space.smallest())]
    return named + [(f"s{i}", space.sample(rng)) for i in range(args.subnets)]


def inherited_losses(args: argparse.Namespace, method: str, subnets) -> dict[str, float]:
    import torch

    import fairseq_nas

    torch.set_num_threads(1)
    fairseq_nas.register()
    from fairseq import checkpoint_utils

    from fairseq_nas.sampling.validator import SubnetScorer, first_sentences, make_batches

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(args.work / "runs" / method / "checkpoint_last.pt")], arg_overrides={"data": str(args.data)})
    model = models[0].eval()
    task.load_dataset("valid")
    valid = task.dataset("valid")
    scorer = SubnetScorer(model, make_batches(valid, first_sentences(valid, args.eval_tokens), 4096),
                          task.target_dictionary.pad())
    return {name: scorer.loss(s) for name, s in subnets}


VALID_NLL = re.compile(r'"valid_nll_loss": "?([0-9.]+)')


def finetune(args: argparse.Namespace, method: str, name: str, subnet) -> float:
    from fairseq_nas.models.export import export_checkpoint

    work = args.work / "finetune" / method / name
    work.mkdir(parents=True, exist_ok=True)
    export_checkpoint(args.work / "runs" / method / "checkpoint_last.pt", subnet, work / "subnet.pt")
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(args.data), "--user-dir", USER_DIR, "--arch", "nas_subnet",
           "--subnet", str(work / "subnet.pt"), "--finetune-from-model", str(work / "subnet.pt"),
           "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", str(args.finetune_lr),
           "--lr-scheduler", "fixed", "--max-tokens", str(args.max_tokens), "--criterion",
           "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-update", str(args.finetune_updates),
           "--seed", str(args.seed), "--save-dir", str(work / "ck"), "--no-save", "--log-format", "json",
           "--no-progress-bar", "--num-workers", "0", "--required-batch-size-multiple", "1", "--cpu",
           "--max-tokens-valid", "4096"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"fine-tuning {method}/{name} failed:\n{proc.stderr[-3000:]}")
    found = VALID_NLL.findall(proc.stdout + proc.stderr)
    if not found:
        raise RuntimeError(f"fine-tuning {method}/{name}: no validation line in the log")
    return float(found[-1])


def is_random(name: str) -> bool:
    """Random subnets are fine-tuned; the largest and smallest get their inherited loss only."""
    return name not in ("largest", "smallest")


def kendall_tau(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def load_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut by a kill: dropped, recomputed
            continue
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="fairseq data-bin (joined dictionary)")
    ap.add_argument("--work", type=Path, required=True, help="output folder (outside the repository)")
    ap.add_argument("--space", type=Path, default=DEMO_SPACE, help="search space YAML")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated samplers")
    ap.add_argument("--passes", type=int, default=1200, help="forward-backward passes per supernet")
    ap.add_argument("--warmup", type=int, default=200, help="warm-up, in passes")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--updates-per-epoch", type=int, default=76, help="to place DSS steps (IWSLT sample: 76)")
    ap.add_argument("--sandwich-random", type=int, default=2)
    ap.add_argument("--sandwich-distill", type=float, default=1.0)
    ap.add_argument("--dss-times", type=int, default=2)
    ap.add_argument("--dss-population", type=int, default=40)
    ap.add_argument("--dss-iterations", type=int, default=2)
    ap.add_argument("--dss-valid-tokens", type=int, default=4000)
    ap.add_argument("--subnets", type=int, default=10, help="random subnets scored and fine-tuned per method")
    ap.add_argument("--eval-tokens", type=int, default=20000, help="valid target tokens for inherited loss")
    ap.add_argument("--finetune-updates", type=int, default=40)
    ap.add_argument("--finetune-lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            ap.error(f"--methods: unknown method {m!r}; valid: {', '.join(METHODS)}")
    if not (args.data / "dict.en.txt").is_file() and not any(args.data.glob("dict.*.txt")):
        ap.error(f"--data {args.data}: no fairseq data-bin (no dict.*.txt)")
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.work / "results.jsonl"
    subnets = eval_subnets(args)

    with ThreadPoolExecutor(args.jobs) as pool:
        infos = {i["method"]: i for i in pool.map(lambda m: train(args, m), methods)}
    for m in methods:
        print(f"trained {m}: {infos[m]['updates']} updates, {infos[m]['passes']} passes, "
              f"{infos[m]['train_seconds']:.0f} s (DSS {infos[m]['dss_seconds']:.0f} s)", flush=True)

    done = {(r["method"], r["subnet_name"]) for r in load_rows(results)}
    with open(results, "a") as out:
        for m in methods:
            if all((m, n) in done for n, _ in subnets):
                continue
            inherited = inherited_losses(args, m, subnets)
            todo = [(n, s) for n, s in subnets if (m, n) not in done and is_random(n)]
            for n, _ in subnets:
                if (m, n) not in done and not is_random(n):  # largest/smallest: inherited loss only
                    out.write(json.dumps({"method": m, "subnet_name": n, "inherited_nll": inherited[n]}) + "\n")
            with ThreadPoolExecutor(args.jobs) as pool:
                for (n, s), tuned in zip(todo, pool.map(lambda ns, m=m: finetune(args, m, *ns), todo)):
                    out.write(json.dumps({"method": m, "subnet_name": n, "subnet": s.to_dict(),
                                          "inherited_nll": inherited[n], "finetuned_nll": tuned}) + "\n")
                    out.flush()
            print(f"evaluated {m}", flush=True)

    rows = load_rows(results)
    summary = {}
    print(f"\n{'method':<14}{'passes':>8}{'updates':>9}{'train s':>9}{'tau':>7}{'picked':>9}{'mean FT':>9}"
          f"{'largest':>9}{'smallest':>9}")
    for m in methods:
        mine = {r["subnet_name"]: r for r in rows if r["method"] == m}
        tuned = [r for n, r in mine.items() if is_random(n)]
        inh, ft = [r["inherited_nll"] for r in tuned], [r["finetuned_nll"] for r in tuned]
        picked = min(tuned, key=lambda r: r["inherited_nll"])
        s = {"passes": infos[m]["passes"], "updates": infos[m]["updates"], "train_seconds": infos[m]["train_seconds"],
             "dss_seconds": infos[m]["dss_seconds"], "kendall_tau": kendall_tau(inh, ft),
             "picked_finetuned_nll": picked["finetuned_nll"], "mean_finetuned_nll": statistics.fmean(ft),
             "best_finetuned_nll": min(ft), "mean_inherited_nll": statistics.fmean(inh),
             "largest_inherited_nll": mine["largest"]["inherited_nll"],
             "smallest_inherited_nll": mine["smallest"]["inherited_nll"], "n_subnets": len(tuned)}
        summary[m] = s
        print(f"{m:<14}{s['passes']:>8}{s['updates']:>9}{s['train_seconds']:>9.0f}{s['kendall_tau']:>7.3f}"
              f"{s['picked_finetuned_nll']:>9.3f}{s['mean_finetuned_nll']:>9.3f}{s['largest_inherited_nll']:>9.3f}"
              f"{s['smallest_inherited_nll']:>9.3f}")
    print("\nlosses: per-token NLL in bits on the valid split; tau: Kendall tau between inherited and fine-tuned "
          f"loss over {args.subnets} subnets; picked: fine-tuned loss of the best-inherited subnet; "
          f"fine-tuning: {args.finetune_updates} updates each")
    tmp = args.work / "summary.json.tmp"
    tmp.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "methods": summary}, indent=1))
    os.replace(tmp, args.work / "summary.json")


if __name__ == "__main__":
    main()
