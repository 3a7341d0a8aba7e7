"""Noise of the latency protocol, and what weight slicing costs at inference.

    python benchmarks/latency_noise.py [--n 30] [--runs 300] [--warmup 10] [--threads 1]
        [--device cpu] [--vocab 10000] [--compare 5] [--seed 0] [--json OUT.json]

1. Noise: `--n` subnets of the shrinknas_iwslt14 space (real dims; a vocabulary of ~10k like
   IWSLT'14's joined BPE) measured with the protocol of `fairseq_nas.latency.measure` in two
   passes (pass 2 starts after pass 1 has measured every subnet; each pass builds each model
   afresh, as two runs of `fairseq-nas latency` would). Prints Kendall's tau between the passes'
   latencies (target >= 0.9) and the median coefficient of variation of a subnet's two trimmed
   means (target <= 3%).
2. Slicing: for the first `--compare` subnets, the exported standalone model (`export_model`,
   weights copied from the supernet) against the supernet running the same subnet (its weights
   sliced on every call), timed with the same protocol in the same run, alternating which goes
   first. Prints the ratio supernet / exported per subnet and the median ratios (encoder,
   decoder, total).

On a shared or small machine expect noise: the medians and the within-run ratios are what to read.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACE = "shrinknas_iwslt14"


def _compare(space, subnets, vocab: int, protocol, trim: float) -> list[dict]:
    import fairseq_nas

    fairseq_nas.register()
    from fairseq_nas.latency.measure import time_model
    from fairseq_nas.latency.stats import trimmed_mean
    from fairseq_nas.models.config import SupernetConfig
    from fairseq_nas.models.export import _SizedDictionary, export_model
    from fairseq_nas.models.supernet import SupernetModel

    d = _SizedDictionary(vocab, 1)
    supernet = SupernetModel.build_model(SupernetConfig(search_space=SPACE, dropout=0.0),
                                         SimpleNamespace(source_dictionary=d, target_dictionary=d)).eval()
    results = []
    for i, subnet in enumerate(subnets):
        supernet.set_subnet(subnet)
        exported = export_model(supernet, subnet).eval()
        models = {"exported": exported, "supernet": supernet}
        order = ["exported", "supernet"] if i % 2 == 0 else ["supernet", "exported"]
        stats = {}
        for kind in order:
            times = time_model(models[kind], protocol)
            totals = [e + t for e, t in zip(times["encoder"], times["decoder"])]
            stats[kind] = {part: trimmed_mean(v, trim) for part, v in
                           (("encoder", times["encoder"]), ("decoder", times["decoder"]), ("total", totals))}
        supernet.cpu()
        ratio = {part: stats["supernet"][part] / stats["exported"][part] for part in ("encoder", "decoder", "total")}
        results.append({"subnet": subnet.to_dict(), **stats, "ratio": ratio})
        print(f"  subnet {i}: exported {stats['exported']['total']:8.2f} ms, supernet "
              f"{stats['supernet']['total']:8.2f} ms, ratio {ratio['total']:.3f} (encoder {ratio['encoder']:.3f}, "
              f"decoder {ratio['decoder']:.3f})", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30, help="subnets (default 30)")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per measurement (default 300)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up runs (default 10)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--vocab", type=int, default=10000, help="vocabulary size (default 10000)")
    ap.add_argument("--src-len", type=int, default=23, help="source = target tokens (default 23)")
    ap.add_argument("--compare", type=int, default=5, help="subnets for supernet vs exported (default 5; 0: skip)")
    ap.add_argument("--seed", type=int, default=0, help="subnet sampling seed (default 0)")
    ap.add_argument("--json", metavar="OUT", help="also write all figures as JSON")
    args = ap.parse_args()
    logging.getLogger("fairseq").setLevel(logging.WARNING)

    import torch

    from fairseq_nas.latency.measure import Protocol, device_name, measure
    from fairseq_nas.latency.stats import noise_report
    from fairseq_nas.latency.store import sample_subnets
    from fairseq_nas.space import load_space

    space = load_space(SPACE)
    subnets = sample_subnets(space, args.n, args.seed)
    protocol = Protocol(src_len=args.src_len, warmup=args.warmup, runs=args.runs, device=args.device,
                        threads=args.threads)
    protocol.check()
    print(f"{SPACE}: {len(subnets)} subnets, vocab {args.vocab}, {device_name(args.device)} ({args.device}, "
          f"{args.threads} thread(s)), torch {torch.__version__}; protocol: src/tgt {args.src_len} tokens, beam "
          f"{protocol.beam}, {args.warmup} warm-up + {args.runs} timed runs, 10% trimmed", flush=True)

    start = time.perf_counter()
    passes: list[list[float]] = []
    rows: list[list[dict]] = []
    for p in range(2):
        rows.append([])
        for i, subnet in enumerate(subnets):
            row = measure(subnet, space, args.vocab, args.vocab, protocol)
            rows[p].append(row)
            print(f"  pass {p + 1} subnet {i:2d}: {row['latency_ms']:8.2f} ms (encoder "
                  f"{row['encoder_ms']['mean']:.2f}, decoder {row['decoder_ms']['mean']:.2f}, std of runs "
                  f"{row['total_ms']['std']:.2f}), {row['params'] / 1e6:.1f}M params, "
                  f"{row['flops'] / 1e9:.2f} GFLOPs", flush=True)
        passes.append([r["latency_ms"] for r in rows[p]])
    noise = noise_report(passes)
    noise_s = time.perf_counter() - start

    print(f"\nnoise ({noise_s:.0f} s): median latency pass 1 {statistics.median(passes[0]):.2f} ms, pass 2 "
          f"{statistics.median(passes[1]):.2f} ms; range {min(passes[0]):.2f}-{max(passes[0]):.2f} ms")
    print(f"Kendall tau between passes: {noise['kendall_tau']['0-1']:.3f} (target >= 0.9)")
    print(f"coefficient of variation of a subnet's trimmed means: median {100 * noise['median_cv']:.2f}% "
          f"(target <= 3%), max {100 * noise['max_cv']:.2f}%")
    for stat in ("median", "min"):  # the same two passes summarised by other statistics, for comparison
        alt = noise_report([[r["total_ms"][stat] for r in rows[p]] for p in range(2)])
        print(f"  (for comparison, the {stat} of the runs instead: Kendall tau {alt['kendall_tau']['0-1']:.3f}, "
              f"median CV {100 * alt['median_cv']:.2f}%)")
    within = [r["total_ms"]["std"] / r["total_ms"]["mean"] for r in rows[0]]
    print(f"within-run spread (std / mean of the trimmed runs), median over subnets: "
          f"{100 * statistics.median(within):.2f}%", flush=True)

    compare = []
    if args.compare > 0:
        print(f"\nsupernet (weights sliced) vs exported standalone model, {min(args.compare, len(subnets))} subnets:")
        compare = _compare(space, subnets[:args.compare], args.vocab, protocol, protocol.trim)
        med = {part: statistics.median(c["ratio"][part] for c in compare) for part in ("encoder", "decoder", "total")}
        print(f"median ratio supernet / exported: total {med['total']:.3f}, encoder {med['encoder']:.3f}, "
              f"decoder {med['decoder']:.3f}")
        print(f"median latency: exported {statistics.median(c['exported']['total'] for c in compare):.2f} ms, "
              f"supernet {statistics.median(c['supernet']['total'] for c in compare):.2f} ms")

    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "noise": noise, "rows": rows,
                                               "compare": compare}, indent=1) + "\n")


if __name__ == "__main__":
    main()
