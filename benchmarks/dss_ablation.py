"""Ablation on real data: uniform single-path one-shot (SPOS) training against DSS, with the same
number of updates, on the IWSLT'14 De-En sample and a CPU-sized ShrinkNAS space.

    python benchmarks/dss_ablation.py [--work /tmp/fsnas-dss-ablation] [--epochs 7] [--dss-every 2] ...

Data: /work/shared/data/iwslt14-de-en-sample (or --sample DIR): train on its `valid` split
(7,283 pairs), validate (fairseq validation and the DSS validator) on the first 800 pairs of
`test`, hold out the next 800 pairs of `test` for the final comparison; joint sentencepiece
BPE 4000 via data-prep/prepare-parallel.sh, all under --work (outside the repository).
Space: supernet_shrinknas_iwslt14 scaled down (embed {64,96,128}, encoder 3 layers, decoder
1-3; FFN ratios, heads, the five operators and three activations as in the paper).

The two runs train at the same time, one CPU thread each. Afterwards, for each supernet:
the best subnet (DSS: the best of the last DSS, as ShrinkNAS; both: an evolutionary search
with the DSS settings on the final supernet over the whole space), its inherited-weight loss
on the held-out pairs, the mean held-out loss of subnets drawn from the whole space (and
from DSS's final sample space), subnet divergence, and the training/validation loss curves.
Writes WORK/ablation.json, WORK/ablation_losses.png and the `fairseq-nas report dss` plots
of the DSS run (WORK/runs/dss/*.png), and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_nas")
SAMPLE = Path("/work/shared/data/iwslt14-de-en-sample")
SPACE_ARGS = ["--arch", "supernet_shrinknas_iwslt14", "--encoder-embed-choices", "64,96,128",
              "--decoder-embed-choices", "64,96,128", "--encoder-layers-choices", "3",
              "--decoder-layers-choices", "1,2,3", "--share-all-embeddings"]


def prepare(work: Path, sample: Path, n_valid: int, n_test: int, n_train: int = 0) -> Path:
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for lang in ("de", "en"):
        train = (sample / f"valid.{lang}").read_text().splitlines(keepends=True)
        (raw / f"train.{lang}").write_text("".join(train[:n_train] if n_train else train))
        test = (sample / f"test.{lang}").read_text().splitlines(keepends=True)
        (raw / f"valid.{lang}").write_text("".join(test[:n_valid]))
        (raw / f"test.{lang}").write_text("".join(test[n_valid:n_valid + n_test]))
    subprocess.run(["bash", str(REPO / "data-prep" / "prepare-parallel.sh"), "--src", "de", "--tgt", "en",
                    "--train", str(raw / "train"), "--valid", str(raw / "valid"), "--test", str(raw / "test"),
                    "--tokenize", "none", "--bpe-size", "4000", "--out", str(work / "prep"), "--workers", "2"],
                   check=True, stdout=subprocess.DEVNULL)
    return work / "prep" / "data-bin"


def train_args(args: argparse.Namespace, data: Path, name: str) -> list[str]:
    out = [str(data), "--user-dir", USER_DIR, "--task", "supernet_translation", *SPACE_ARGS,
           "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", str(args.lr), "--lr-scheduler",
           "inverse_sqrt", "--warmup-updates", str(args.warmup), "--max-tokens", str(args.max_tokens),
           "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0.1",
           "--max-epoch", str(args.epochs), "--seed", str(args.seed), "--save-dir", str(args.work / "runs" / name),
           "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "10", "--no-progress-bar",
           "--num-workers", "0", "--required-batch-size-multiple", "1", "--max-tokens-valid", "4096",
           "--subnet-log", str(args.work / "runs" / name / "subnets.jsonl")]
    if name == "dss":
        out += ["--sampler", "dss", "--dss-every-epochs", str(args.dss_every), "--dss-times", str(args.dss_times),
                "--dss-population", str(args.population), "--dss-iterations", str(args.iterations),
                "--dss-valid-tokens", str(args.valid_tokens), "--dss-remember", str(args.remember),
                "--dss-divergence-subnets", str(args.div_subnets), "--dss-divergence-tokens", str(args.div_tokens)]
    return out


def worker(args: argparse.Namespace) -> None:
    """Train one run (fairseq-train), then evaluate its supernet; writes WORK/runs/NAME/result.json."""
    import torch

    torch.set_num_threads(1)
    name, data = args.worker, Path(args.data)
    run_dir = args.work / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(run_dir / "train.log", "w") as log:
        subprocess.run([sys.executable, "-m", "fairseq_cli.train", *train_args(args, data, name)], check=True,
                       stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1",
                                                                      MKL_NUM_THREADS="1"))
    train_seconds = time.time() - t0
    train_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)

    import fairseq_nas

    fairseq_nas.register()
    from fairseq import checkpoint_utils

    from fairseq_nas.sampling import DSSSampler, SampleSpace, evolutionary_exploration
    from fairseq_nas.sampling.divergence import divergence_stats, subnet_divergence
    from fairseq_nas.sampling.validator import SubnetScorer, first_sentences, make_batches, sample_sentences
    from fairseq_nas.space import Subnet

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(run_dir / "checkpoint_last.pt")], arg_overrides={"data": str(data)})
    model = models[0].eval()
    pad = task.target_dictionary.pad()
    for split in ("valid", "test"):
        task.load_dataset(split)
    valid, test = task.dataset("valid"), task.dataset("test")
    t1 = time.time()
    held_out = SubnetScorer(model, make_batches(test, first_sentences(test, args.test_tokens), 4096), pad)
    validator = SubnetScorer(model, make_batches(valid, sample_sentences(valid, args.valid_tokens,
                                                                         random.Random(args.seed + 99)), 4096), pad)
    space = model.space
    rng = random.Random(args.seed + 7)
    initial = [space.sample(rng) for _ in range(args.population)]
    search = evolutionary_exploration(initial, space, validator.loss, rng, args.population, args.iterations,
                                      mutation_prob=0.4)
    result = {"name": name, "train_seconds": round(train_seconds, 1),
              "train_cpu_seconds": round(train_cpu.ru_utime + train_cpu.ru_stime, 1),
              "search_best": search.best.to_dict(), "search_best_valid": search.best_score,
              "search_best_test": held_out.loss(search.best)}
    whole = [space.sample(random.Random(1000 + i)) for i in range(args.eval_subnets)]
    result["space_mean_test"] = statistics.fmean(held_out.loss(s) for s in whole)
    div_batches = make_batches(valid, first_sentences(valid, args.div_tokens), 4096)
    div_rng = random.Random(5)
    result["divergence_space_end"] = divergence_stats(
        subnet_divergence(model, [space.sample(div_rng) for _ in range(args.div_subnets)], div_batches, pad))
    if name == "dss":
        best = Subnet.load(run_dir / "dss_best.json")
        result["dss_best"] = best.to_dict()
        result["dss_best_test"] = held_out.loss(best)
        sampler = DSSSampler(space, args.seed)
        sampler.load_state_dict(model.sampler_state)
        final = SampleSpace(space, sampler.subset)
        result["final_space_size"] = final.size()
        draws = [final.sample(random.Random(2000 + i)) for i in range(args.eval_subnets)]
        result["final_space_mean_test"] = statistics.fmean(held_out.loss(s) for s in draws)
        result["divergence_final_space_end"] = divergence_stats(
            subnet_divergence(model, [final.sample(div_rng) for _ in range(args.div_subnets)], div_batches, pad))
    result["eval_seconds"] = round(time.time() - t1, 1)
    own = resource.getrusage(resource.RUSAGE_SELF)
    result["eval_cpu_seconds"] = round(own.ru_utime + own.ru_stime, 1)
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))


def curves(log_path: Path):
    from fairseq_nas.report.dss import parse_fairseq_log

    return parse_fairseq_log(log_path.read_text())


def per_epoch(train: list[tuple[int, float]], n: int) -> list[float]:
    """The training loss averaged over n equal chunks of the run."""
    if not train:
        return []
    size = max(1, len(train) // n)
    return [statistics.fmean(v for _, v in train[i:i + size]) for i in range(0, size * n, size) if train[i:i + size]]


def summarize(args: argparse.Namespace) -> None:
    runs = {n: json.loads((args.work / "runs" / n / "result.json").read_text()) for n in ("uniform", "dss")}
    logs = {n: curves(args.work / "runs" / n / "train.log") for n in runs}
    dss_rows = [json.loads(line) for line in (args.work / "runs" / "dss" / "dss.jsonl").read_text().splitlines()]
    from fairseq_nas.report.dss import _plt, report_dss

    report_dss(args.work / "runs" / "dss", [args.work / "runs" / "dss" / "train.log"])
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for n, log in logs.items():
        if log.train:
            axes[0].plot(*zip(*log.train), lw=0.8, label=f"{n} train")
        for key in ("valid_loss_largest", "valid_loss_smallest"):
            if key in log.valid:
                axes[1].plot(*zip(*log.valid[key]), marker="o", ms=3, label=f"{n} {key[6:]}")
    for r in dss_rows:
        for ax in axes:
            ax.axvline(r["update"], color="grey", ls="--", lw=0.7)
    axes[0].set_title("training loss (sampled subnets)")
    axes[1].set_title("validation loss of representative subnets")
    for ax in axes:
        ax.set_xlabel("update")
        ax.set_ylabel("loss (bits/token)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.work / "ablation_losses.png", dpi=110)
    plt.close(fig)
    summary = {"runs": runs, "dss": [{k: r[k] for k in ("dss", "epoch", "update", "space_size_before",
                                                        "space_size_after", "best_loss", "divergence_before",
                                                        "divergence_after", "divergence_reduction", "seconds")}
                                     for r in dss_rows],
               "train_loss_by_fifth": {n: per_epoch(log.train, 5) for n, log in logs.items()},
               "updates": {n: sum(1 for _ in open(args.work / "runs" / n / "subnets.jsonl")) for n in runs}}
    (args.work / "ablation.json").write_text(json.dumps(summary, indent=1))
    u, d = runs["uniform"], runs["dss"]
    cpu = ""
    if "train_cpu_seconds" in u and "train_cpu_seconds" in d:
        cpu = (f"; CPU (training + evaluation) uniform {u['train_cpu_seconds'] + u['eval_cpu_seconds']:.0f}s, "
               f"dss {d['train_cpu_seconds'] + d['eval_cpu_seconds']:.0f}s")
    print(f"\nupdates: uniform {summary['updates']['uniform']}, dss {summary['updates']['dss']}; training wall "
          f"uniform {u['train_seconds']:.0f}s, dss {d['train_seconds']:.0f}s (in parallel, 1 thread each){cpu}")
    print("training loss (mean over fifths of the run): "
          + "; ".join(f"{n} " + " ".join(f"{x:.2f}" for x in v) for n, v in summary["train_loss_by_fifth"].items()))
    for r in summary["dss"]:
        db, da = r["divergence_before"], r["divergence_after"]
        nan = float("nan")
        print(f"DSS {r['dss']} (epoch {r['epoch']}, update {r['update']}): space {r['space_size_before']:.3g} -> "
              f"{r['space_size_after']}, best validator loss {r['best_loss']:.3f}, divergence mean "
              f"{db.get('mean', nan):.4f} -> {da.get('mean', nan):.4f} ({-(r['divergence_reduction'] or 0):+.1%}), "
              f"median {db.get('median', nan):.4f} -> {da.get('median', nan):.4f}, {r['seconds']:.0f}s")
    print(f"held-out loss (bits/token, {args.test_tokens} tokens of test, inherited weights):")
    print(f"  uniform: best of a search on the final supernet {u['search_best_test']:.3f}; "
          f"mean of {args.eval_subnets} subnets of the whole space {u['space_mean_test']:.3f}")
    print(f"  dss:     best of the last DSS {d['dss_best_test']:.3f}; best of the same search "
          f"{d['search_best_test']:.3f}; mean of the whole space {d['space_mean_test']:.3f}; mean of its final "
          f"sample space ({d['final_space_size']} subnets) {d['final_space_mean_test']:.3f}")
    print(f"divergence at the end (mean / median of {args.div_subnets} subnets): whole space: uniform "
          f"{u['divergence_space_end']['mean']:.4f} / {u['divergence_space_end']['median']:.4f}, dss "
          f"{d['divergence_space_end']['mean']:.4f} / {d['divergence_space_end']['median']:.4f}; dss final "
          f"sample space {d['divergence_final_space_end']['mean']:.4f} / "
          f"{d['divergence_final_space_end']['median']:.4f}")
    print(f"wrote {args.work / 'ablation.json'}, {args.work / 'ablation_losses.png'}, "
          f"{args.work / 'runs' / 'dss'}/dss_*.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fsnas-dss-ablation"))
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    ap.add_argument("--epochs", type=int, default=7)
    ap.add_argument("--dss-every", type=int, default=2)
    ap.add_argument("--dss-times", type=int, default=3)
    ap.add_argument("--population", type=int, default=30)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--remember", type=int, default=60)
    ap.add_argument("--valid-tokens", type=int, default=4096)
    ap.add_argument("--test-tokens", type=int, default=6000)
    ap.add_argument("--div-subnets", type=int, default=30)
    ap.add_argument("--div-tokens", type=int, default=1024)
    ap.add_argument("--eval-subnets", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--train-lines", type=int, default=0, help="use only the first N training pairs (0: all)")
    ap.add_argument("--worker", choices=["uniform", "dss"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--summarize-only", action="store_true", help="only re-read finished runs")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.summarize_only:
        t0 = time.time()
        data = prepare(args.work, args.sample, 800, 800, args.train_lines)
        print(f"data: {data} ({time.time() - t0:.0f}s)", flush=True)
        for name in ("uniform", "dss"):
            shutil.rmtree(args.work / "runs" / name, ignore_errors=True)
        base = [sys.executable, __file__, *sys.argv[1:], "--data", str(data)]
        procs = [subprocess.Popen(base + ["--worker", n]) for n in ("uniform", "dss")]
        codes = [p.wait() for p in procs]
        if any(codes):
            sys.exit(f"a run failed (exit codes {codes}); see {args.work}/runs/*/train.log")
        print(f"both runs and their evaluation took {time.time() - t0:.0f}s", flush=True)
    summarize(args)


if __name__ == "__main__":
    main()
