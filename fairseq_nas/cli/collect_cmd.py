"""`fairseq-nas collect`: inherited-weight validation loss (and params, FLOPs, BLEU) of sampled subnets."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fairseq_nas.errors import FairseqNasError

DESCRIPTION = """\
Evaluate N subnets of a trained supernet with inherited weights on a fixed validation subset (the
first sentences of --subset, in file order) and append one JSON row per subnet to --out: index,
subnet, valid_loss, valid_nll_loss (label-smoothed CE / NLL per target token, base 2, as fairseq's
valid_loss), params (of the exported subnet), flops (of one --flops-len sentence, beam 5, as
latency counts them, when fairseq_nas.latency.costs is available), bleu (--bleu), n_sentences,
n_tokens, subset, seed, strategy, space, eval_s; the iterative strategy adds round, pool_size,
rounds, alpha. The space is written once beside the rows (archs.jsonl -> archs.space.yaml), where
`fairseq-nas rank` finds it. Resumable: run the same command again after an interruption; subnets
that have a row are skipped."""


def add_parser(sub) -> None:
    p = sub.add_parser("collect", help="inherited-weight validation loss of sampled subnets (archs.jsonl)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="fairseq data-bin directory (the supernet's dictionaries)")
    p.add_argument("--supernet", required=True, metavar="CKPT", help="supernet checkpoint (fairseq-train output)")
    p.add_argument("--space", metavar="NAME|FILE",
                   help="sample from this space: the checkpoint's space or a subspace of it "
                        "(default: the checkpoint's space)")
    p.add_argument("-n", "--num", type=int, required=True, metavar="N", help="how many subnets to evaluate")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--out", required=True, metavar="ARCHS.jsonl", help="rows file (appended to; resumable)")
    p.add_argument("--subset", default="valid", help="data split to evaluate on (default valid)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--eval-sentences", type=int, metavar="M",
                      help="evaluate on the first M sentences of the subset (default 500)")
    size.add_argument("--eval-tokens", type=int, metavar="T",
                      help="evaluate on the first sentences whose target tokens sum to at most T")
    # the names of an earlier version: one line saying what they are now
    size.add_argument("--max-sentences-eval", type=int, dest="old_max_sentences_eval", help=argparse.SUPPRESS)
    p.add_argument("--max-tokens", type=int, default=4096, metavar="T",
                   help="padded tokens per batch, as fairseq's --max-tokens (memory only; default 4096)")
    p.add_argument("--batch-tokens", type=int, dest="old_batch_tokens", help=argparse.SUPPRESS)
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="label smoothing of valid_loss (default: the checkpoint's criterion's)")
    p.add_argument("--flops-len", type=int, default=23,
                   help="FLOPs are counted for one sentence of this many source and target tokens, beam 5, "
                        "as `latency` counts them (default 23, HAT's IWSLT latency protocol)")
    p.add_argument("--bleu", action="store_true", help="also decode the subset and record BLEU (slow)")
    p.add_argument("--beam", type=int, default=1, help="beam size for --bleu (default 1, greedy)")
    p.add_argument("--shard", metavar="I/N", help="evaluate only subnets k with k mod N = I (I from 0); give "
                                                  "each shard its own --out (random strategy only)")
    p.add_argument("--strategy", choices=("random", "iterative"), default="random",
                   help="random: N sampled subnets; iterative: BRP-NAS/AceNAS selection of N out of a pool")
    p.add_argument("--rounds", type=int, default=5, help="iterative: number of rounds (default 5)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="iterative: share of each round taken from the ranker's predicted best (default 0.5)")
    p.add_argument("--pool-size", type=int, metavar="P", help="iterative: candidate pool size (default 20*N)")
    device = p.add_mutually_exclusive_group()
    device.add_argument("--device", choices=("cpu", "cuda"),
                        help="where to evaluate, as `latency --device` (default: cuda if available)")
    device.add_argument("--cpu", action="store_true", help="fairseq's name for --device cpu")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (a bar on a terminal, else a line every 10%%)")
    p.set_defaults(func=run)


def check_data_bin(data: str, subset: str) -> None:
    """One-line errors for a data-bin fairseq's translation task cannot read (it would raise a traceback)."""
    root = Path(data)
    if not root.is_dir():
        raise FairseqNasError(f"{data}: no such directory (expected a data-bin written by fairseq-preprocess)")
    pairs = sorted({f.name.split(".")[1] for f in root.iterdir()
                    if len(f.name.split(".")) >= 3 and len(f.name.split(".")[1].split("-")) == 2})
    if not pairs:
        raise FairseqNasError(f"{data}: no language pair (fairseq-preprocess names its files SPLIT.SRC-TGT.LANG.bin); "
                              "is this a data-bin?")
    src, tgt = pairs[0].split("-")
    missing = [name for name in (f"dict.{src}.txt", f"dict.{tgt}.txt", f"{subset}.{src}-{tgt}.{src}.idx",
                                 f"{subset}.{src}-{tgt}.{tgt}.idx") if not (root / name).is_file()]
    if missing:
        raise FairseqNasError(f"{data}: missing {', '.join(missing)} (--subset {subset} of the pair {src}-{tgt})")


def run(args: argparse.Namespace) -> int:
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    from fairseq_nas.collect.rows import parse_shard

    for old, new in (("--max-sentences-eval", "--eval-sentences M (the evaluation subset's size)"),
                     ("--batch-tokens", "--max-tokens T (tokens per batch, as in fairseq)")):
        if getattr(args, "old_" + old[2:].replace("-", "_")) is not None:
            raise FairseqNasError(f"{old} was renamed: use {new}; the subset's size in tokens is --eval-tokens")
    shard = parse_shard(args.shard)
    if args.num < 1:
        raise FairseqNasError(f"-n: expected a positive number of subnets, got {args.num}")
    for opt, v in (("--eval-sentences", args.eval_sentences), ("--eval-tokens", args.eval_tokens),
                   ("--max-tokens", args.max_tokens), ("--beam", args.beam),
                   ("--flops-len", args.flops_len)):
        if v is not None and v < 1:
            raise FairseqNasError(f"{opt}: expected a positive number, got {v}")
    max_sentences = args.eval_sentences
    if max_sentences is None and args.eval_tokens is None:
        max_sentences = 500

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise FairseqNasError("--device cuda: no CUDA device is available here; use --device cpu")
    check_data_bin(args.data, args.subset)
    import fairseq_nas

    fairseq_nas.register()
    from fairseq_nas.collect.evaluate import SubnetEvaluator, find_flops_counter
    from fairseq_nas.collect.runner import collect
    from fairseq_nas.models.export import load_supernet_checkpoint, supernet_from_checkpoint
    from fairseq_nas.space import load_space

    supernet_space, _ = supernet_from_checkpoint(load_supernet_checkpoint(args.supernet))
    space = load_space(args.space) if args.space else supernet_space

    def make_evaluator() -> SubnetEvaluator:
        return SubnetEvaluator(args.supernet, args.data, subset=args.subset, max_sentences=max_sentences,
                               max_tokens=args.eval_tokens, batch_tokens=args.max_tokens,
                               label_smoothing=args.label_smoothing, device="cpu" if args.cpu else args.device,
                               flops_len=args.flops_len)

    summary = collect(make_evaluator, space, args.num, Path(args.out), seed=args.seed, subset=args.subset,
                      bleu=args.bleu, beam=args.beam, shard=shard, strategy=args.strategy, rounds=args.rounds,
                      alpha=args.alpha, pool_size=args.pool_size, supernet_space=supernet_space,
                      checkpoint=str(args.supernet), progress=not args.no_progress)
    print(summary.text())
    if find_flops_counter() is None:
        print("  (no FLOPs: fairseq_nas.latency.costs.count_flops is not available)")
    if args.strategy == "iterative":
        rounds = sorted({r.get("round") for r in summary.rows if r.get("round") is not None})
        print(f"  iterative selection: {len(summary.rows)} of a pool of {args.pool_size or 20 * args.num} "
              f"over rounds {rounds}")
    return 0
