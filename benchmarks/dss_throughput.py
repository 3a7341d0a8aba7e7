"""DSS validator throughput: subnets scored per second by a DSS step on the supernet, against
plain forward passes (same loss) of the same subnets exported as standalone models
(`export_model`), on the same validation batch, alternating in one run.

    python benchmarks/dss_throughput.py [--data DATA_BIN] [--subnets 8] [--tokens 2048] [--rounds 3]

Prints subnets/s per round, the medians and the ratio DSS / standalone (target >= 0.90); then
a whole `dss_step` (evolution, batch building and bookkeeping included) against standalone
forward passes of exactly the subnets it scored on exactly its batch.
Last, DSS's share of training at the recipe's settings (`--recipe-*`: ShrinkNAS's 50k updates of
4,096 tokens, DSS every 10 epochs of about 1,100 updates, 5 times) with the task's default DSS
options, from the scoring rate above and a training rate (forward-backward + Adam on random
subnets) measured here: each DSS scores the remembered phase-1 subnets, then the children of
every iteration but the last, and the divergence subnets before and after (target <= 10%).
Default model: the ShrinkNAS IWSLT'14 space at the paper's dims on the generated demo corpus.
"""
from __future__ import annotations

import argparse
import math
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import USER_DIR, build_from_args, ensure_demo_data, median  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a fairseq data-bin with a valid split (default: the generated demo corpus)")
    ap.add_argument("--arch", default="supernet_shrinknas_iwslt14")
    ap.add_argument("--model-args", default="",
                    help="extra fairseq model options as one value, e.g. --model-args='--share-all-embeddings'")
    ap.add_argument("--subnets", type=int, default=8, help="subnets scored per round")
    ap.add_argument("--tokens", type=int, default=2048, help="validation batch tokens (ShrinkNAS: 30720)")
    ap.add_argument("--batch-tokens", type=int, default=0, help="forward chunks of at most this many tokens (0: one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--recipe-updates", type=int, default=50000)
    ap.add_argument("--recipe-max-tokens", type=int, default=4096)
    ap.add_argument("--recipe-epoch-updates", type=int, default=1100, help="IWSLT'14 at 4,096 tokens")
    ap.add_argument("--train-updates", type=int, default=6, help="updates timed for the training rate")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from fairseq_nas.models.export import export_model
    from fairseq_nas.sampling import DSSOptions, DSSSampler, dss_step
    from fairseq_nas.sampling.validator import SubnetScorer, batch_nll, make_batches, sample_sentences, to_device

    data = args.data or str(ensure_demo_data(Path(tempfile.mkdtemp(prefix="fsnas-bench-")) / "demo"))
    argv = [data, "--user-dir", USER_DIR, "--task", "supernet_translation", "--arch", args.arch, "--max-tokens",
            "4096", *shlex.split(args.model_args)] + (["--cpu"] if args.device == "cpu" else [])
    cfg, task, model, _ = build_from_args(argv)
    device = torch.device(args.device)
    model.to(device).eval()
    task.load_dataset("valid")
    valid, pad = task.dataset("valid"), task.target_dictionary.pad()
    indices = sample_sentences(valid, args.tokens, random.Random(0))
    batches = make_batches(valid, indices, args.batch_tokens or None)
    dev_batches = [to_device(b, device) for b in batches]
    subnets = [model.space.sample(random.Random(i)) for i in range(args.subnets)]
    exported = [export_model(model, s).to(device).eval() for s in subnets]
    scorer = SubnetScorer(model, batches, pad)
    ntok = scorer.tokens

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def timed(kind: str, i: int) -> tuple[float, float]:
        """(seconds, loss in bits/token) of scoring subnet i on the supernet or its exported model."""
        sync()
        t0 = time.perf_counter()
        if kind == "dss":
            loss = scorer.loss(subnets[i])
        else:
            loss = sum(batch_nll(exported[i], b, pad)[0] for b in dev_batches) / ntok / math.log(2)
        sync()
        return time.perf_counter() - t0, loss

    print(f"device {device}, threads {torch.get_num_threads()}, {len(indices)} sentences / {ntok} target tokens "
          f"in {len(batches)} batch(es), {len(subnets)} subnets of {args.arch}")
    for i in range(len(subnets)):  # warm-up
        timed("dss", i), timed("standalone", i)
    rates: dict[str, list[float]] = {"dss": [], "standalone": []}
    diff = 0.0
    for r in range(args.rounds):
        seconds = {"dss": 0.0, "standalone": 0.0}
        for i in range(len(subnets)):  # interleaved per subnet: background load hits both alike
            got = {}
            for k in (("dss", "standalone") if (r + i) % 2 == 0 else ("standalone", "dss")):
                dt, got[k] = timed(k, i)
                seconds[k] += dt
            diff = max(diff, abs(got["dss"] - got["standalone"]))
        for k in rates:
            rates[k].append(len(subnets) / seconds[k])
        d, sa = rates["dss"][-1], rates["standalone"][-1]
        print(f"round {r + 1}: DSS scorer {d:.2f} subnets/s, standalone {sa:.2f} subnets/s, ratio {d / sa:.3f}")
    med = {k: median(v) for k, v in rates.items()}
    print(f"max |loss difference| supernet vs standalone: {diff:.2e} bits/token")
    print(f"median subnets/s: DSS scorer {med['dss']:.2f}, standalone exported {med['standalone']:.2f}")
    print(f"throughput ratio DSS scorer / standalone: {med['dss'] / med['standalone']:.3f}  (target >= 0.90)")

    # a whole DSS step (evolution, batch building, bookkeeping included) against standalone forward
    # passes of exactly the subnets it scored, on exactly its batch (export time not counted)
    from fairseq_nas.sampling.dss import dss_rng

    sampler = DSSSampler(model.space, seed=1, remember=len(subnets))
    for s in subnets:
        sampler._note(s)
    scored: list = []
    options = DSSOptions(population=len(subnets), iterations=2, valid_tokens=args.tokens,
                         batch_tokens=args.batch_tokens or None, divergence_subnets=0)
    sync()
    t0 = time.perf_counter()
    result = dss_step(model, sampler, options, valid, pad, index=1, penalties=[lambda s: scored.append(s) or 0.0])
    sync()
    step_seconds = time.perf_counter() - t0
    step_batches = [to_device(b, device) for b in make_batches(
        valid, sample_sentences(valid, args.tokens, dss_rng(1, 1)), args.batch_tokens or None)]
    standalone_seconds = 0.0
    with torch.no_grad():
        for s in scored:
            m = export_model(model, s).to(device).eval()
            sync()
            t0 = time.perf_counter()
            for b in step_batches:
                batch_nll(m, b, pad)
            sync()
            standalone_seconds += time.perf_counter() - t0
    n = result["row"]["evaluated"]
    print(f"whole dss_step: {n} subnets in {step_seconds:.1f}s = {n / step_seconds:.2f} subnets/s; the same "
          f"subnets standalone: {standalone_seconds:.1f}s = {n / standalone_seconds:.2f} subnets/s; ratio "
          f"{standalone_seconds / step_seconds:.3f}")

    recipe_share(args, model, task, pad, scorer_tps=ntok * med["dss"], device=device)


def recipe_share(args, model, task, pad: int, scorer_tps: float, device) -> None:
    from fairseq_nas.sampling import DSSOptions
    from fairseq_nas.sampling.dss import scored_per_step
    from fairseq_nas.sampling.validator import make_batches, sample_sentences, to_device

    task.load_dataset("train")
    train = task.dataset("train")
    batches = [to_device(b, device) for b in make_batches(
        train, sample_sentences(train, args.recipe_max_tokens * 3, random.Random(7)), args.recipe_max_tokens)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    for u in range(args.train_updates):
        model.set_subnet(model.space.sample(random.Random(500 + u)))
        b = batches[u % len(batches)]
        out = model(**b["net_input"])[0]
        loss = torch.nn.functional.cross_entropy(out.view(-1, out.size(-1)).float(), b["target"].view(-1),
                                                 ignore_index=pad, reduction="sum")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int(b["target"].ne(pad).sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_tps = tokens / (time.perf_counter() - t0)
    options = DSSOptions()
    scored = scored_per_step(options, options.every_epochs * args.recipe_epoch_updates)
    div = 2 * options.divergence_subnets
    dss_seconds = options.times * (scored * options.valid_tokens + div * options.divergence_tokens) / scorer_tps
    train_seconds = args.recipe_updates * args.recipe_max_tokens / train_tps
    print(f"training {train_tps:,.0f} tokens/s (forward-backward + Adam), scoring {scorer_tps:,.0f} tokens/s")
    print(f"recipe ({args.recipe_updates} updates x {args.recipe_max_tokens} tokens), default DSS options "
          f"(remember {options.remember}, population {options.population}, iterations {options.iterations}, "
          f"{options.valid_tokens} tokens, {options.times} times, divergence {options.divergence_subnets}): "
          f"{scored} + {div} divergence subnets scored per DSS; DSS {dss_seconds / 3600:.2f} h against training "
          f"{train_seconds / 3600:.2f} h on this machine: share {dss_seconds / train_seconds:.1%} (target <= 10%)")


if __name__ == "__main__":
    main()
