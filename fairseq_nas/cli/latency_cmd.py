"""`fairseq-nas latency`: measured latency of subnets on this device, one JSON row per subnet.

By default the subnets are measured together in rounds, interleaved (see
`fairseq_nas.latency.rounds`), `--group` at a time; each round of each subnet is appended
to a sidecar (OUT's stem + .rounds.jsonl) as it ends, and a subnet's row goes to --out once
all its rounds are there. A killed run started again with the same command skips the rows
already there (keyed by the subnet's canonical JSON and the pass), continues each unfinished
subnet from the rounds in the sidecar, and cuts off a last line the kill truncated, so no row
is lost or repeated. `--protocol block` measures one subnet after the other (HAT's order).
See `fairseq_nas.latency.measure` for what one run times.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import sys
from pathlib import Path

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.latency.costs import count_params

HELP = "measure the latency of subnets on this device (HAT's protocol, corrected)"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "latency", help=HELP,
        description="Measure the latency of subnets' standalone models (random weights, real vocabulary sizes): "
                    "encoder on one source sentence, then beam search for a fixed number of target tokens with "
                    "fairseq's SequenceGenerator (what fairseq-generate runs). Subnets are measured together in "
                    "rounds, each round timing every subnet a few runs in a shuffled order, so load drift hits "
                    "all alike. Rows are appended to --out (JSON lines); an interrupted run resumes where it "
                    "stopped.")
    p.add_argument("--space", metavar="NAME|FILE",
                   help="the search space (builtin name or YAML); required but with --checkpoints")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--subnets", metavar="FILE.jsonl",
                       help="subnets to measure: JSON lines of subnets, or of rows with a 'subnet' key "
                            "(e.g. from `fairseq-nas space sample` or an earlier --out)")
    which.add_argument("-n", "--num", type=int, metavar="N", help="measure N distinct subnets sampled from the space")
    which.add_argument("--checkpoints", nargs="+", metavar="CKPT",
                       help="measure trained fairseq checkpoints instead (any arch: a fairseq transformer, a "
                            "fine-tuned nas_subnet), loaded as fairseq-generate loads them with --dict as their "
                            "data-bin, all together in the same rounds; rows name the checkpoint, arch and "
                            "params. Checkpoints already in --out are skipped")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for -n (default 0)")
    vocab = p.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--dict", metavar="DIR", help="a fairseq data-bin: vocabulary sizes from DIR/dict.*.txt")
    vocab.add_argument("--vocab-size", metavar="V|SRC,TGT", help="vocabulary size(s) instead of --dict")
    p.add_argument("--source-lang", "-s", metavar="SRC", help="with --dict: the source language (default: inferred)")
    p.add_argument("--target-lang", "-t", metavar="TGT", help="with --dict: the target language (default: inferred)")
    p.add_argument("--share-all-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="count one shared embedding (needs a joined vocabulary); default: as the space says "
                        "(share_all_embeddings: a supernet checkpoint's space always says), else as the space's "
                        "builtin arch does, if the vocabulary is joined")
    p.add_argument("--untie-decoder-output", action="store_true", help="count a separate output projection")
    add_protocol_args(p)
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="measure every subnet K times, in K passes over the list, and report the noise: per subnet "
                        "the coefficient of variation of its K latencies, and Kendall's tau between passes "
                        "(written to OUT's stem + .noise.json)")
    p.add_argument("--shard", metavar="I/N",
                   help="measure only the subnets at positions i (0-based, among the distinct subnets of the "
                        "input, in order) with i %% N == I; give each shard its own --out")
    p.add_argument("--group", type=int, default=32, metavar="G",
                   help="rounds protocol: measure G subnets together (their models are in memory together; "
                        "also capped by --group-memory) (default 32)")
    p.add_argument("--group-memory", type=float, default=4.0, metavar="GB",
                   help="rounds protocol: at most this many GB of model weights in one group (default 4)")
    p.add_argument("--anchor", action=argparse.BooleanOptionalAction, default=True,
                   help="rounds protocol, more than one group: time one subnet (the list's median-size one) in "
                        "every group too, and give each row drift_corrected_ms, its latency at the anchor's "
                        "level in the file's first group (the machine's speed drifts between groups; "
                        "latency_ms stays as measured) (default on)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress (a bar on a terminal, else a line every 10%%)")
    p.add_argument("--out", required=True, metavar="latency.jsonl", help="JSON lines output (appended, resumable)")
    p.set_defaults(func=run)


def add_protocol_args(p, runs: int = 300, warmup: int = 10) -> None:
    """The measurement options `latency` and `search` share."""
    p.add_argument("--runs", type=int, default=runs, help=f"timed runs per subnet (default {runs})")
    p.add_argument("--warmup", type=int, default=warmup,
                   help=f"untimed warm-up runs per subnet before its first round (default {warmup})")
    p.add_argument("--protocol", choices=("rounds", "block"), default="rounds",
                   help="rounds: subnets measured together, interleaved in rounds with a shuffled order per round; "
                        "block: one subnet after the other, all its runs in one block (HAT's) (default rounds)")
    p.add_argument("--rounds", type=int, default=10,
                   help="rounds protocol: rounds per subnet (at most --runs); --runs are split evenly over them, and "
                        "each round adds --round-warmup untimed runs (default 10)")
    p.add_argument("--round-warmup", type=int, default=1,
                   help="rounds protocol: untimed runs of a subnet at the start of each of its rounds (caches "
                        "warm after the other subnets ran) (default 1)")
    p.add_argument("--decoder-loop", choices=("generator", "bare"), default="generator",
                   help="generator: fairseq's SequenceGenerator, what fairseq-generate runs; bare: a minimal "
                        "beam-search loop over the model (decodes the same tokens) (default generator)")
    p.add_argument("--statistic", choices=("median", "trimmed_mean", "min"), default="median",
                   help="what latency_ms is, of the runs' totals: median, trimmed_mean (10%% dropped at each "
                        "end, HAT's) or min (default median); every row keeps all of them")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="latency_ms from wall time or from the measuring thread's CPU time (default wall; both "
                        "are recorded)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--cores", metavar="LIST|auto",
                   help="pin the process to these cores (e.g. 0 or 0,2-3; auto: the least busy ones, one per "
                        "thread) (default: no pinning)")
    p.add_argument("--strict", action="store_true",
                   help="refuse to measure when other processes leave fewer free cores than --threads (default: "
                        "a one-line warning)")
    p.add_argument("--no-tune-malloc", action="store_true",
                   help="keep glibc's default malloc thresholds (default: freed memory stays in the heap and big "
                        "blocks come from it, so runs do not pay page faults for each other)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="model dtype (default float32)")
    p.add_argument("--src-len", type=int, default=23, help="source tokens (default 23: IWSLT; HAT uses 30 for WMT)")
    p.add_argument("--tgt-len", type=int, default=None,
                   help="target tokens decoded, the last one </s> (default: --src-len)")
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")


def protocol_from_args(args: argparse.Namespace):
    """The Protocol of the shared measurement options (checked)."""
    from fairseq_nas.latency.measure import Protocol

    protocol = Protocol(src_len=args.src_len, tgt_len=args.tgt_len, beam=args.beam, warmup=args.warmup,
                        runs=args.runs, device=args.device, threads=args.threads, dtype=args.dtype,
                        protocol=args.protocol, rounds=args.rounds, round_warmup=args.round_warmup,
                        decoder_loop=args.decoder_loop, statistic=args.statistic, clock=args.clock)
    protocol.check()  # includes: --device cuda without a GPU
    return protocol


def prepare_host(args: argparse.Namespace, what: str) -> dict:
    """Control what can be controlled before measuring: the malloc thresholds, the load check
    (a warning, or with --strict an error) and the cores to pin to. Returns {"cores": list or
    None, "malloc": dict or None, "load": the sample's dict}."""
    from fairseq_nas.latency.host import check_load, parse_cores, sample_load, tune_allocator

    cores = parse_cores(args.cores)
    needed = args.threads if args.device.startswith("cpu") else 1
    if cores and len(cores) < needed:
        raise FairseqNasError(f"--cores {args.cores}: {len(cores)} core(s) for --threads {args.threads}; give at "
                              "least one core per thread")
    malloc = None if args.no_tune_malloc else tune_allocator()
    report = sample_load(needed)
    check_load(report, args.strict, what)
    if cores == []:
        cores = report.least_busy(needed)
    return {"cores": cores, "malloc": malloc, "load": report.to_dict()}


def _groups(items: list, sizes: list[int], count: int, max_bytes: float) -> list[list]:
    """Consecutive groups of at most `count` items and (beyond their first item) `max_bytes`."""
    groups: list[list] = []
    cur: list = []
    used = 0.0
    for item, size in zip(items, sizes):
        if cur and (len(cur) >= count or used + size > max_bytes):
            groups.append(cur)
            cur, used = [], 0.0
        cur.append(item)
        used += size
    if cur:
        groups.append(cur)
    return groups


def _noise_path(out: Path) -> Path:
    return out.with_name((out.stem if out.suffix else out.name) + ".noise.json")


def _write_json(path: Path, data: dict) -> None:
    from fairseq_nas.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def run(args: argparse.Namespace) -> int:
    from fairseq_nas.latency.store import distinct, parse_shard, read_subnets, sample_subnets, shard
    from fairseq_nas.latency.vocab import data_bin_vocab, parse_vocab_size
    from fairseq_nas.space import load_space

    if args.checkpoints:
        return run_checkpoints(args)
    if not args.space:
        raise FairseqNasError("--space: required (the search space the subnets belong to), unless --checkpoints")
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
    from fairseq_nas.latency.anchor import anchor_of_rows, annotate, choose_anchor
    from fairseq_nas.latency.host import LoadMeter, pinned
    from fairseq_nas.latency.measure import DTYPES, device_name, measure_many
    from fairseq_nas.latency.store import LatencyStore, RoundLog, rounds_path, row_key
    from fairseq_nas.models.supernet import SUPERNET_ARCHS
    from fairseq_nas.progress import Progress

    if args.group < 1:
        raise FairseqNasError(f"--group: expected a positive integer, got {args.group}")
    protocol = protocol_from_args(args)
    share = space.embeddings_shared(args.share_all_embeddings)
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
    settings = dict(protocol.settings(), src_vocab=vocab.src, tgt_vocab=vocab.tgt)
    store.check_protocol(settings)
    log = None
    if protocol.protocol == "rounds":
        log = RoundLog(rounds_path(out), settings)
        if log.repaired:
            print(f"fairseq-nas latency: {log.path}: repaired an unfinished last line (from an interrupted run)",
                  file=sys.stderr)
    todo = [(r, i, s) for r in range(args.repeat) for i, s in selected if row_key(s, r) not in store]
    already = args.repeat * len(selected) - len(todo)
    n_rounds = protocol.n_rounds
    prior = {}
    if log is not None:
        for r, i, s in todo:
            k = row_key(s, r)
            prior[(r, i)] = [dict(e) for e in log.rounds(k, min(log.done(k), n_rounds))]
    host = prepare_host(args, "latency") if todo else {"cores": None, "malloc": None, "load": None}
    stamp = {"share_all_embeddings": share, "cores": host["cores"], "malloc": host["malloc"]}
    bytes_per = DTYPES[protocol.dtype].itemsize

    def size_of(s) -> float:
        return count_params(s, space, vocab.src, vocab.tgt, share, args.untie_decoder_output) * bytes_per

    plan = []  # per pass: its groups of ((repeat, index), subnet)
    for rep in range(args.repeat):
        items = [((r, i), s) for r, i, s in todo if r == rep]
        if protocol.protocol == "rounds":
            plan.append(_groups(items, [size_of(s) for _, s in items], args.group, args.group_memory * 1e9))
        else:
            plan.append([items] if items else [])
    earlier = anchor_of_rows(store.rows.values())
    anchor = None
    if protocol.protocol == "rounds" and args.anchor and todo and (earlier or sum(map(len, plan)) > 1):
        anchor = earlier[0] if earlier else choose_anchor([s for _, s in selected],
                                                          [size_of(s) for _, s in selected])
    drift = {"ref_ms": earlier[1] if earlier else None, "levels": {}}  # anchor key -> its latency_ms
    group_of = {}
    if anchor is not None:
        for rep, groups in enumerate(plan):
            for g, group in enumerate(groups):
                akey = ("anchor", rep, g)
                group.insert(0, (akey, anchor))  # first, so its row is done before the others in a round
                group_of.update({k: akey for k, _ in group[1:]})
    remaining = sum(n_rounds - len(prior.get((r, i), [])) for r, i, _ in todo) + n_rounds * len(set(group_of.values()))
    bar = Progress("latency", total=remaining, unit="round", disable=args.no_progress)

    def on_round(key, rnd: int, entry: dict) -> None:
        if log is not None and key in subnet_of:  # the anchor's rounds are not rows: not kept
            log.append(subnet_of[key].to_dict(), key[0], rnd, entry, entry.get("load"))

    def on_done(key, row: dict) -> None:
        if key not in subnet_of:  # the anchor of a group
            drift["levels"][key] = row["latency_ms"]
            if drift["ref_ms"] is None:
                drift["ref_ms"] = row["latency_ms"]
            return
        if anchor is not None:
            annotate(row, anchor, drift["levels"].get(group_of.get(key)), drift["ref_ms"])
        else:  # one group, the block protocol or --no-anchor: no drift between groups was measured
            row["drift_corrected_ms"] = row["latency_ms"]
        r, i = key
        load = dict(row.pop("load") or {})
        load["before"] = host["load"]
        row = {"subnet": row.pop("subnet"), "repeat": r, "index": i, "space": space.name, **row, **stamp,
               "load": load, "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        store.append(row)
        bar.set_postfix(pass_=r, ms=f"{row['latency_ms']:.2f}")

    subnet_of = {(r, i): s for r, i, s in todo}
    meter = LoadMeter()
    try:
        with pinned(host["cores"]):
            for groups in plan:
                for group in groups:
                    measure_many(group, space, vocab.src, vocab.tgt, protocol, share, args.untie_decoder_output,
                                 prior=prior, on_round=on_round, on_done=on_done, progress=lambda: bar.update(1),
                                 meter=meter)
    finally:
        bar.close()

    _summary(args, out, store, selected, len(todo), already, device_name(args.device), row_key, protocol)
    levels = list(drift["levels"].values())
    if levels:
        rel = [v / drift["ref_ms"] - 1 for v in levels]
        print(f"anchor (timed in each of {len(levels)} group(s)): its latency {min(rel):+.1%} to {max(rel):+.1%} "
              f"of the first group's {drift['ref_ms']:.3f} ms; rows' drift_corrected_ms put every group at that level")
    return 0


def run_checkpoints(args: argparse.Namespace) -> int:
    """`--checkpoints`: trained models measured together; one row per checkpoint appended to --out."""
    from fairseq_nas.latency.host import LoadMeter, pinned
    from fairseq_nas.latency.store import append_line, read_repairing
    from fairseq_nas.latency.trained import measure_checkpoints

    def read_rows() -> dict[str, dict]:
        rows: dict[str, dict] = {}

        def add(raw: bytes) -> None:
            row = json.loads(raw)
            if not isinstance(row, dict) or "checkpoint" not in row:
                raise ValueError("a row with a 'checkpoint'")
            rows[row["checkpoint"]] = row

        if out.is_file():
            read_repairing(out, add, "a checkpoint latency row")
        return rows

    if not args.dict:
        raise FairseqNasError("--checkpoints: give --dict DIR, the data-bin the checkpoints were trained on")
    for flag, given in (("--repeat", args.repeat != 1), ("--shard", args.shard), ("--space", args.space)):
        if given:
            raise FairseqNasError(f"{flag}: not used with --checkpoints")
    protocol = protocol_from_args(args)
    out = Path(args.out)
    done = read_rows()
    todo = [c for c in dict.fromkeys(args.checkpoints) if str(c) not in done]
    if todo:
        from fairseq_nas.models.export import read_checkpoint

        for c in todo:  # a wrong file is refused in one line before anything is measured
            read_checkpoint(c)
        host = prepare_host(args, "latency")
        logging.getLogger("fairseq").setLevel(logging.WARNING)
        from fairseq_nas.progress import Progress

        bar = Progress("latency", total=protocol.n_rounds * len(todo), unit="round", disable=args.no_progress)
        try:
            with pinned(host["cores"]):
                rows = measure_checkpoints(todo, args.dict, protocol, progress=lambda: bar.update(1),
                                           meter=LoadMeter())
        finally:
            bar.close()
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        for row in rows:
            load = dict(row.pop("load") or {})
            load["before"] = host["load"]
            append_line(out, {**row, "cores": host["cores"], "load": load, "time": stamp})
    rows = read_rows()
    print(f"latency: {len(args.checkpoints)} checkpoints -> {out} ({len(todo)} measured now, "
          f"{len(args.checkpoints) - len(todo)} already there); {protocol.protocol} protocol, {args.threads} "
          f"thread(s), beam {args.beam}, src {args.src_len}, tgt {protocol.target_len}")
    for c in args.checkpoints:
        r = rows[str(c)]
        print(f"  {r['latency_ms']:9.3f} ms  {r['params']:>10,} params  {r['arch']:<12} {c}")
    return 0


def _summary(args, out: Path, store, selected, measured: int, already: int, dev: str, row_key, protocol) -> None:
    from fairseq_nas.latency.stats import noise_report

    if not selected:
        print(f"latency: no subnets in shard {args.shard} (of {args.out}); nothing measured")
        return
    passes = [[store.rows[row_key(s, r)]["latency_ms"] for _, s in selected] for r in range(args.repeat)]
    per_subnet = [statistics.fmean(p[i] for p in passes) for i in range(len(selected))]
    shard_text = f" (shard {args.shard})" if args.shard else ""
    print(f"latency: {len(selected)} subnets{shard_text} x {args.repeat} pass(es) -> {out} ({measured} measured now, "
          f"{already} already there); {dev}, {args.device}, {args.threads} thread(s), beam {args.beam}, "
          f"src {args.src_len}, tgt {protocol.target_len}; {protocol.protocol} protocol"
          + (f" ({protocol.n_rounds} rounds)" if protocol.protocol == "rounds" else "")
          + f", {protocol.decoder_loop} decoder loop")
    rows = [store.rows[row_key(s, r)] for r in range(args.repeat) for _, s in selected]
    cvs = [r["total_ms"]["cv"] for r in rows if "cv" in r.get("total_ms", {})]
    spread = f"; runs' CV median {100 * statistics.median(cvs):.1f}%" if cvs else ""
    print(f"latency_ms ({protocol.statistic} of {protocol.clock} time): median {statistics.median(per_subnet):.3f}, "
          f"min {min(per_subnet):.3f}, max {max(per_subnet):.3f}{spread}")
    if args.repeat >= 2:
        report = noise_report(passes)
        report.update(out=str(out), shard=args.shard, indices=[i for i, _ in selected],
                      subnets_json=[s.to_json() for _, s in selected])
        path = _noise_path(out)
        _write_json(path, report)
        taus = ", ".join(f"{k} {v:.3f}" for k, v in report["kendall_tau"].items())
        print(f"noise over {args.repeat} passes: median CV {100 * report['median_cv']:.2f}%, max CV "
              f"{100 * report['max_cv']:.2f}%, Kendall tau between passes: {taus} -> {path}")
