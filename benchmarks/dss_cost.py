"""What DSS has to spend: how small a validation batch still ranks a population as the full
batch does, and what DSS then costs as a share of supernet training at the recipes' settings.

    python benchmarks/dss_cost.py --checkpoint SUPERNET.pt --data DATA_BIN [--population 120]

1. Ranking: P subnets drawn from the checkpoint's space are scored (inherited-weight NLL, one
   forward pass each, as DSS scores them) on a reference batch (the first --reference-tokens
   target tokens of the valid split) and on random batches of fewer tokens (several seeds);
   Kendall tau of each against the reference.
2. Cost: forward tokens/s of that scoring and forward-backward tokens/s of training updates
   (Adam steps on random subnets) are measured on this machine in the same run. A DSS step
   scores `sampling.dss.scored_per_step` subnets (the remembered phase-1 subnets, then the
   children of every iteration but the last), each on `tokens` tokens. Its share of training at
   the recipes' settings is
       times * scored * tokens / (forward_tps) / (updates * max_tokens / train_tps)
   printed for a grid of population, iterations and batch sizes; the ShrinkNAS recipe trains
   50k updates of 4,096 tokens per GPU with 5 DSS steps.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a trained supernet checkpoint")
    ap.add_argument("--data", required=True, help="its data-bin (with a valid split)")
    ap.add_argument("--population", type=int, default=120, help="subnets ranked")
    ap.add_argument("--reference-tokens", type=int, default=30720, help="the full batch (ShrinkNAS: 30720)")
    ap.add_argument("--tokens", default="16384,8192,4096,2048,1024", help="smaller batches compared")
    ap.add_argument("--seeds", type=int, default=3, help="random batches per size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-updates", type=int, default=12, help="updates timed for the training rate")
    ap.add_argument("--recipe-updates", type=int, default=50000)
    ap.add_argument("--recipe-max-tokens", type=int, default=4096)
    ap.add_argument("--recipe-times", type=int, default=5)
    ap.add_argument("--keep", type=float, default=0.3)
    ap.add_argument("--recipe-epoch-updates", type=int, default=1100, help="updates per epoch (DSS every 10)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import fairseq_nas

    fairseq_nas.register()
    from fairseq import checkpoint_utils
    from scipy.stats import kendalltau

    from fairseq_nas.sampling.validator import SubnetScorer, first_sentences, make_batches, sample_sentences

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([args.checkpoint],
                                                                    arg_overrides={"data": args.data})
    model = models[0]
    task.load_dataset("valid")
    valid = task.dataset("valid")
    pad = task.target_dictionary.pad()
    space = model.space
    rng = random.Random(1)
    subnets = [space.sample(rng) for _ in range(args.population)]

    reference = SubnetScorer(model, make_batches(valid, first_sentences(valid, args.reference_tokens), 4096), pad)
    t0 = time.perf_counter()
    ref_scores = [reference.loss(s) for s in subnets]
    forward_tps = reference.tokens * len(subnets) / (time.perf_counter() - t0)
    print(f"reference: {len(subnets)} subnets on {reference.tokens} target tokens; scoring "
          f"{forward_tps:,.0f} tokens/s (forward)", flush=True)

    sizes = [int(t) for t in args.tokens.split(",") if t.strip()]
    taus: dict[int, list[float]] = {}
    print(f"\n{'tokens':>8}{'tau median':>12}{'tau min':>9}")
    for size in sizes:
        taus[size] = []
        for seed in range(args.seeds):
            idx = sample_sentences(valid, size, random.Random(100 + seed))
            scorer = SubnetScorer(model, make_batches(valid, idx, 4096), pad)
            taus[size].append(float(kendalltau(ref_scores, [scorer.loss(s) for s in subnets]).statistic))
        print(f"{size:>8}{statistics.median(taus[size]):>12.3f}{min(taus[size]):>9.3f}", flush=True)

    # training throughput: forward-backward with Adam on random subnets, batches of the train split
    task.load_dataset("train")
    train = task.dataset("train")
    batches = make_batches(train, sample_sentences(train, args.recipe_max_tokens * 2, random.Random(7)), 4096)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    for u in range(args.train_updates):
        model.set_subnet(space.sample(random.Random(500 + u)))
        b = batches[u % len(batches)]
        out = model(**b["net_input"])[0]
        loss = torch.nn.functional.cross_entropy(out.view(-1, out.size(-1)).float(), b["target"].view(-1),
                                                 ignore_index=pad, reduction="sum")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int(b["target"].ne(pad).sum())
    train_tps = tokens / (time.perf_counter() - t0)
    print(f"\ntraining: {train_tps:,.0f} tokens/s (forward-backward + Adam); a scoring token costs "
          f"{train_tps / forward_tps:.2f} of a training token", flush=True)

    train_seconds = args.recipe_updates * args.recipe_max_tokens / train_tps
    print(f"\nDSS share of training at {args.recipe_updates} updates x {args.recipe_max_tokens} tokens, "
          f"{args.recipe_times} DSS steps (this machine's rates):")
    from fairseq_nas.sampling import DSSOptions
    from fairseq_nas.sampling.dss import scored_per_step

    print(f"{'remember':>9}{'population':>11}{'iterations':>11}{'tokens':>8}{'scored':>8}{'share':>9}"
          f"{'tau(tokens)':>12}")
    grid = [(2000, 1000, 5, args.reference_tokens), (2000, 1000, 5, 4096), (500, 500, 3, 8192),
            (300, 300, 3, 4096), (200, 200, 3, 8192), (200, 200, 3, 4096), (200, 200, 2, 2048), (100, 100, 3, 4096)]
    for remember, n, k, tok in grid:
        options = DSSOptions(remember=remember, population=n, iterations=k, keep=args.keep,
                             mutation=(1 - args.keep) * 4 / 7, crossover=(1 - args.keep) * 3 / 7)
        scored = scored_per_step(options, args.recipe_epoch_updates * 10)
        seconds = args.recipe_times * scored * tok / forward_tps
        tau = statistics.median(taus[tok]) if tok in taus else (1.0 if tok == args.reference_tokens else None)
        tau_s = f"{tau:.3f}" if tau is not None else "-"
        print(f"{remember:>9}{n:>11}{k:>11}{tok:>8}{scored:>8.0f}{seconds / train_seconds:>8.1%}{tau_s:>12}")


if __name__ == "__main__":
    main()
