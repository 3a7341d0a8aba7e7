"""`fairseq-nas latency`: measured latency of subnets on this device, one JSON row per subnet.

Rows are appended to --out and flushed one by one; a killed run started again with the
same command skips the rows already there (keyed by the subnet's canonical JSON and the
pass) and cuts off a last line the kill truncated. See `fairseq_nas.latency.measure` for
what one run times.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import sys
from pathlib import Path

from fairseq_nas.errors import FairseqNasError

HELP = "measure the latency of subnets on this device (HAT's protocol, corrected)"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "latency", help=HELP,
        description="Measure the latency of subnets' standalone models (random weights, real vocabulary sizes): "
                    "encoder on one source sentence, then incremental beam search for a fixed number of target "
                    "tokens; warm-up runs, then timed runs whose fastest and slowest 10% are dropped. Rows are "
                    "appended to --out (JSON lines); an interrupted run resumes where it stopped.")
    p.add_argument("--space", required=True, metavar="NAME|FILE", help="the search space (builtin name or YAML)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--subnets", metavar="FILE.jsonl",
                       help="subnets to measure: JSON lines of subnets, or of rows with a 'subnet' key "
                            "(e.g. from `fairseq-nas space sample` or an earlier --out)")
    which.add_argument("-n", "--num", type=int, metavar="N", help="measure N distinct subnets sampled from the space")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for -n (default 0)")
    vocab = p.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--dict", metavar="DIR", help="a fairseq data-bin: vocabulary sizes from DIR/dict.*.txt")
    vocab.add_argument("--vocab-size", metavar="V|SRC,TGT", help="vocabulary size(s) instead of --dict")
    p.add_argument("--source-lang", "-s", metavar="SRC", help="with --dict: the source language (default: inferred)")
    p.add_argument("--target-lang", "-t", metavar="TGT", help="with --dict: the target language (default: inferred)")
    p.add_argument("--share-all-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="count one shared embedding (needs a joined vocabulary); default: as the space's "
                        "builtin arch does, if the vocabulary is joined")
    p.add_argument("--untie-decoder-output", action="store_true", help="count a separate output projection")
    p.add_argument("--runs", type=int, default=300, help="timed runs per subnet (default 300)")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs per subnet (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="model dtype (default float32)")
    p.add_argument("--src-len", type=int, default=23, help="source tokens (default 23: IWSLT; HAT uses 30 for WMT)")
    p.add_argument("--tgt-len", type=int, default=None, help="target tokens decoded (default: --src-len)")
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="measure every subnet K times, in K passes over the list, and report the noise: per subnet "
                        "the coefficient of variation of its K latencies, and Kendall's tau between passes "
                        "(written to OUT's stem + .noise.json)")
    p.add_argument("--shard", metavar="I/N",
                   help="measure only the subnets at positions i (0-based, among the distinct subnets of the "
                        "input, in order) with i %% N == I; give each shard its own --out")
    p.add_argument("--out", required=True, metavar="latency.jsonl", help="JSON lines output (appended, resumable)")
    p.set_defaults(func=run)


def _noise_path(out: Path) -> Path:
    return out.with_name((out.stem if out.suffix else out.name) + ".noise.json")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    from fairseq_nas.latency.store import distinct, parse_shard, read_subnets, sample_subnets, shard
    from fairseq_nas.latency.vocab import data_bin_vocab, parse_vocab_size
    from fairseq_nas.space import load_space

    shard_index, shard_count = parse_shard(args.shard)
    if args.repeat < 1:
        raise FairseqNasError(f"--repeat: expected a positive integer, got {args.repeat}")
    space = load_space(args.space)
    if args.subnets:
        subnets = distinct(read_subnets(args.subnets, space))
    elif args.num is not None:
        if args.num < 1:
            raise FairseqNasError(f"-n: expected a positive number of subnets, got {args.num}")
        subnets = sample_subnets(space, args.num, args.seed)
        if len(subnets) < args.num:
            print(f"fairseq-nas latency: the space has only {len(subnets)} distinct subnets (asked for {args.num})",
                  file=sys.stderr)
    else:
        raise FairseqNasError("which subnets? give --subnets FILE.jsonl or -n N")
    if args.dict:
        vocab = data_bin_vocab(args.dict, args.source_lang, args.target_lang)
    else:
        if args.source_lang or args.target_lang:
            raise FairseqNasError("--source-lang/--target-lang go with --dict")
        vocab = parse_vocab_size(args.vocab_size)

    logging.getLogger("fairseq").setLevel(logging.WARNING)
    from tqdm import tqdm

    from fairseq_nas.latency.measure import Protocol, device_name, measure
    from fairseq_nas.latency.store import LatencyStore, row_key
    from fairseq_nas.models.supernet import SUPERNET_ARCHS

    protocol = Protocol(src_len=args.src_len, tgt_len=args.tgt_len, beam=args.beam, warmup=args.warmup,
                        runs=args.runs, device=args.device, threads=args.threads, dtype=args.dtype)
    protocol.check()  # includes: --device cuda without a GPU
    share = args.share_all_embeddings
    if share is None:
        share = vocab.joined and bool(SUPERNET_ARCHS.get(f"supernet_{space.name}", {}).get("share_all_embeddings"))
    elif share and not vocab.joined:
        raise FairseqNasError(f"--share-all-embeddings needs one joined vocabulary; source {vocab.src} and target "
                              f"{vocab.tgt} symbols are different dictionaries")

    selected = shard(subnets, shard_index, shard_count)
    out = Path(args.out)
    store = LatencyStore(out)
    if store.repaired:
        print(f"fairseq-nas latency: {out}: repaired an unfinished last line (from an interrupted run)",
              file=sys.stderr)
    store.check_protocol(dict(device=args.device.split(":", 1)[0], dtype=args.dtype, threads=args.threads,
                              src_len=protocol.src_len, tgt_len=protocol.target_len, beam=protocol.beam,
                              src_vocab=vocab.src, tgt_vocab=vocab.tgt, runs=protocol.runs))
    todo = [(r, i, s) for r in range(args.repeat) for i, s in selected if row_key(s, r) not in store]
    already = args.repeat * len(selected) - len(todo)
    bar = tqdm(total=len(todo), desc="latency", unit="subnet", file=sys.stderr, dynamic_ncols=True)
    try:
        for r, i, subnet in todo:
            row = measure(subnet, space, vocab.src, vocab.tgt, protocol, share, args.untie_decoder_output)
            row = {"subnet": row.pop("subnet"), "repeat": r, "index": i, "space": space.name, **row,
                   "share_all_embeddings": share,
                   "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            store.append(row)
            bar.update(1)
            bar.set_postfix(pass_=r, ms=f"{row['latency_ms']:.2f}")
    finally:
        bar.close()

    _summary(args, out, store, selected, len(todo), already, device_name(args.device), row_key)
    return 0


def _summary(args, out: Path, store, selected, measured: int, already: int, dev: str, row_key) -> None:
    from fairseq_nas.latency.stats import noise_report

    passes = [[store.rows[row_key(s, r)]["latency_ms"] for _, s in selected] for r in range(args.repeat)]
    if not selected:
        print(f"latency: no subnets in shard {args.shard} (of {args.out}); nothing measured")
        return
    per_subnet = [statistics.fmean(p[i] for p in passes) for i in range(len(selected))]
    shard_text = f" (shard {args.shard})" if args.shard else ""
    print(f"latency: {len(selected)} subnets{shard_text} x {args.repeat} pass(es) -> {out} ({measured} measured now, "
          f"{already} already there); {dev}, {args.device}, {args.threads} thread(s), beam {args.beam}, "
          f"src {args.src_len}, tgt {args.tgt_len or args.src_len}")
    print(f"latency_ms: median {statistics.median(per_subnet):.3f}, min {min(per_subnet):.3f}, "
          f"max {max(per_subnet):.3f}")
    if args.repeat >= 2:
        report = noise_report(passes)
        report.update(out=str(out), shard=args.shard, indices=[i for i, _ in selected],
                      subnets_json=[s.to_json() for _, s in selected])
        path = _noise_path(out)
        _write_json(path, report)
        taus = ", ".join(f"{k} {v:.3f}" for k, v in report["kendall_tau"].items())
        print(f"noise over {args.repeat} passes: median CV {100 * report['median_cv']:.2f}%, max CV "
              f"{100 * report['max_cv']:.2f}%, Kendall tau between passes: {taus} -> {path}")
