"""`fairseq-nas search`: evolution (or random search) in a (pruned) space, fitness from a
ranker, latency from a latency model, the final top K measured for real on this device."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Optional

from fairseq_nas.atomic import atomic_write_text
from fairseq_nas.cli.latency_cmd import add_protocol_args
from fairseq_nas.errors import FairseqNasError

EXIT_INFEASIBLE = 3  # = fairseq_nas.search.evolution.EXIT_INFEASIBLE (not imported here: keeps --help fast)

EPILOG = f"""\
exit status:
  0    done: best.json is the best-scored measured candidate that meets the limit
  2    a usage or input error, or none of the measured candidates meets the limit
       (the error names the fastest measured; see OUT/topk.jsonl)
  {EXIT_INFEASIBLE}    infeasible limit: no subnet of the space meets --latency-ms (or --max-params)
       by the latency model, not even its smallest; the one-line error names the
       limit and the fastest predicted latency reached ("no subnet meets the limit")
  130  interrupted (search.jsonl is kept: --resume continues)"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "search", help="search a space under a latency limit: best.json, topk.jsonl, search.jsonl, pareto.png",
        description="Evolutionary (HAT) or random (RankNAS) search. Candidates are scored by a ranker "
                    "(fairseq-nas rank), must meet the predicted latency (latency model) and parameter limits; "
                    "the final top K are measured on this device and the winner is the best-scored one whose "
                    "measured latency meets the limit.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, help="space to search (a shipped name or YAML; e.g. a pruned space)")
    p.add_argument("--ranker", required=True, help="ranker directory (fairseq-nas rank --out DIR, or DIR/ranker)")
    p.add_argument("--latency-model", help="latency model directory (fairseq-nas rank latency.jsonl "
                                           "--target latency_ms)")
    p.add_argument("--latency-ms", type=float, help="latency limit in ms")
    p.add_argument("--max-params", type=int, help="parameter limit")
    p.add_argument("--feature-space", help="space the ranker/latency model were fit on (default: recorded "
                                           "with the ranker, else --space)")
    p.add_argument("--strategy", choices=["evolution", "random"], default="evolution",
                   help="evolution (HAT's) or random (RankNAS's) search (default evolution)")
    p.add_argument("--seed", type=int, default=1, help="seed of the search's sampling (default 1)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted search from OUT/search.jsonl (a last line cut short by a kill is "
                        "dropped, with a warning); refused if " + ", ".join(list(SETTING_FLAGS.values())[:-1]) + " or "
                        + list(SETTING_FLAGS.values())[-1] + " differ "
                        "from the stored search's. Without --resume a search starts over: the search.jsonl, "
                        "best.json, topk.jsonl and pareto.png of an earlier one in OUT are removed first")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress of the search or the measurement (a bar on a terminal, else a line every 10%%)")
    g = p.add_argument_group("evolution (HAT's defaults)")
    g.add_argument("--population", type=int, default=125,
                   help="candidates per generation; random search: samples per round (default 125)")
    g.add_argument("--parents", type=int, default=25, help="best candidates kept and bred from (default 25)")
    g.add_argument("--mutations", type=int, default=50, help="mutated children per generation (default 50)")
    g.add_argument("--mutation-prob", type=float, default=0.3, help="chance that a gene mutates (default 0.3)")
    g.add_argument("--crossovers", type=int, default=50, help="crossover children per generation (default 50)")
    g.add_argument("--generations", type=int, default=30, help="generations bred after the first (default 30)")
    r = p.add_argument_group("random search")
    r.add_argument("--patience", type=int, default=3,
                   help="stop after this many rounds without a better best (default 3)")
    p.add_argument("--tie-break", choices=("capacity", "speed"), default="capacity",  # search.evolution.TIE_BREAKS
                   help="order of candidates the ranker scores alike: capacity (more parameters first, so the "
                        "search spends the latency budget) or speed (lower predicted latency first) (default capacity)")
    m = p.add_argument_group("final measurement")
    m.add_argument("--top-k", type=int, default=5, help="best candidates measured on this device (default 5)")
    m.add_argument("--max-measured", type=int, default=None, metavar="M",
                   help="when none of the top K meets the limit once measured, measure the next-best candidates "
                        "one by one until one does, at most M in all (default 3 x K)")
    m.add_argument("--no-measure", action="store_true", help="skip measuring the top K (predicted latency only)")
    m.add_argument("--reference", metavar="CKPT",
                   help="a trained fairseq checkpoint (e.g. the transformer to beat; --dict its data-bin) "
                        "measured in the same rounds as the top K: a candidate meets the limit when it measures "
                        "at least --reference-margin below the reference in those rounds (the median over rounds "
                        "of its time over the reference's in the same round), so a drift of the machine's speed "
                        "cannot move the verdict (--latency-ms still limits the predicted latency)")
    m.add_argument("--reference-margin", type=float, default=0.0, metavar="M",
                   help="with --reference: a candidate must measure at most (1 - M) x the reference (default 0)")
    m.add_argument("--recalibrate", type=int, default=2, metavar="N",
                   help="with --reference: when none of the measured candidates meets it, the latency model "
                        "was optimistic near the limit: scale the predicted-latency limit by what the "
                        "measurements say (the median over them of prediction x (1 - M) / measured ratio to the "
                        "reference) and search and measure again, at most N times (default 2; 0: refuse at once)")
    m.add_argument("--no-confirm", dest="confirm", action="store_false",
                   help="with --reference: take the first candidate that meets the limit; by default it is "
                        "measured again with the reference in fresh rounds and wins only if it meets again (the "
                        "first of many noisy figures to pass is often a lucky one)")
    m.add_argument("--dict", help="fairseq data-bin with dict.*.txt (vocabulary sizes for params and latency)")
    m.add_argument("--vocab-size", type=int, help="vocabulary size, instead of --dict")
    m.add_argument("--share-all-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="count one embedding shared by encoder, decoder and output (needs a joined vocabulary); "
                        "default: as the feature space says (share_all_embeddings: collect's archs.space.yaml, "
                        "recorded with the ranker, says what the supernet does), else as --space says, else not "
                        "shared")
    add_protocol_args(m)  # the top K are measured together, interleaved in rounds (default), as `latency` does
    p.set_defaults(func=run)


OUTPUTS = ("best.json", "topk.jsonl", "pareto.png")
# the settings recorded in every row of search.jsonl; a --resume with other values is refused
SETTING_FLAGS = {"space": "--space", "feature_space": "--feature-space", "ranker": "--ranker",
                 "latency_model": "--latency-model", "latency_ms": "--latency-ms", "max_params": "--max-params",
                 "strategy": "--strategy", "tie_break": "--tie-break"}


def _space_id(space) -> str:
    """The space's name and a hash of its choices (not of its file's path or description)."""
    import hashlib

    from fairseq_nas.space.loader import space_to_dict

    d = space_to_dict(space)
    d.pop("description", None)
    digest = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{space.name}@{digest}"


def _settings(args, space, feature_space, ranker_dir: Path, latency_dir: Path | None) -> dict:
    return {"space": _space_id(space), "feature_space": _space_id(feature_space),
            "ranker": str(ranker_dir.resolve()),
            "latency_model": None if latency_dir is None else str(latency_dir.resolve()),
            "latency_ms": args.latency_ms, "max_params": args.max_params, "strategy": args.strategy,
            "tie_break": args.tie_break}


def _show(value) -> str:
    if value is None:
        return "(none)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_settings(log_path: Path, stored, now: dict) -> None:
    """Refuse a resume whose settings differ from those search.jsonl was written with."""
    if not isinstance(stored, dict):
        print(f"fairseq-nas: warning: {log_path}: no settings recorded (written by an older version): resuming "
              "without checking that --space, --ranker and the limits are the same", file=sys.stderr)
        return
    for key, flag in SETTING_FLAGS.items():
        if key in stored and stored[key] != now[key]:
            raise FairseqNasError(f"--resume: {log_path} was searched with {flag} {_show(stored[key])}, this run "
                                  f"has {_show(now[key])}: pass the same {flag}, or run without --resume (starts "
                                  f"over)")


def _read_log(log_path: Path) -> tuple[list[str], list[dict]]:
    """(lines, rows) of search.jsonl that are intact. A last line cut short by a kill is dropped with a
    one-line warning; an unreadable line with rows after it is an error (not a kill's doing)."""
    numbered = [(n, line) for n, line in enumerate(log_path.read_text(encoding="utf-8", errors="replace")
                                                   .splitlines(), 1) if line.strip()]
    lines = [line for _, line in numbered]
    rows: list[dict] = []
    for i, (n, line) in enumerate(numbered):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or "generation" not in row:
            if i < len(lines) - 1:
                raise FairseqNasError(f"{log_path}: line {n} is not a search row, and {len(lines) - i - 1} rows "
                                      "follow it (a kill cuts only the last line): repair or delete the file, or "
                                      "run without --resume (starts over)")
            then = (f"resuming after generation {rows[-1]['generation']}" if rows else
                    "no complete row before it: starting over")
            print(f"fairseq-nas: warning: {log_path}: dropped line {n}, cut short (killed mid-write); {then}",
                  file=sys.stderr)
            break
        rows.append(row)
    return lines[:len(rows)], rows


def _ranker_dir(path: str) -> Path:
    p = Path(path)
    if (p / "ranker").is_dir():
        return p / "ranker"
    if not p.exists():
        raise FairseqNasError(f"{p}: no such ranker directory (fairseq-nas rank --out DIR writes DIR/ranker)")
    return p


def _recorded_space(ranker_dir: Path):
    from fairseq_nas.space import load_space

    for cand in (ranker_dir / "space.yaml", ranker_dir.parent / "space.yaml"):
        if cand.is_file():
            return load_space(str(cand))
    return None


def _load_predictor(path: str, what: str):
    from fairseq_nas.ranking import load_ranker

    d = _ranker_dir(path)
    try:
        return load_ranker(d), d
    except (FileNotFoundError, ValueError) as e:
        raise FairseqNasError(f"{d}: {what}: {e}") from None


def _vocab(args):
    if args.dict:
        from fairseq_nas.latency.vocab import data_bin_vocab

        v = data_bin_vocab(args.dict)
        return v.src, v.tgt, v.joined
    if args.vocab_size:
        return args.vocab_size, args.vocab_size, True
    return None


def _shared(args, feature_space, space, vocab) -> bool:
    """Whether embeddings are shared: as the feature space says, else --space, else the flag (default no)."""
    said = feature_space.embeddings_shared(args.share_all_embeddings)
    if said is None:
        said = space.embeddings_shared(args.share_all_embeddings)
    if said and not vocab[2]:
        raise FairseqNasError("--share-all-embeddings (or the space's share_all_embeddings: true) needs one joined "
                              "vocabulary; --dict has different source and target dictionaries")
    return bool(said)


def _measure_top(args, finalists, reserve, space, vocab, share: bool, max_measured: int):
    """Measure the top K together (interleaved in rounds by default), then the next-best in batches
    of K while none meets the limit. Returns ([(candidate, ms)], {subnet key: how it was measured})."""
    from fairseq_nas.cli.latency_cmd import prepare_host, protocol_from_args
    from fairseq_nas.latency.host import LoadMeter, pinned
    from fairseq_nas.latency.measure import build_standalone, measure_many, row_fields
    from fairseq_nas.latency.trained import checkpoint_fields, load_trained
    from fairseq_nas.progress import Progress
    from fairseq_nas.search import measure_until_one_meets

    protocol = protocol_from_args(args)
    host = prepare_host(args, "search: measuring the top K")
    details: dict = {}
    meter = LoadMeter()
    ref = "reference"  # the key of the reference model among a batch's (index, subnet) items
    with_ref = int(args.reference is not None)

    bar = Progress("measuring top K", total=protocol.n_rounds * (len(finalists) + with_ref), unit="round",
                   disable=args.no_progress)
    counted = [len(finalists)]  # candidates the bar's total covers

    def build(key):
        if key == ref:
            return reference_model  # loaded once, timed again in each batch
        return build_standalone(subnets[key], space, vocab[0], vocab[1], share)

    def fields(key):
        if key == ref:
            return checkpoint_fields(args.reference, reference_model, protocol)
        return row_fields(subnets[key], space, vocab[0], vocab[1], protocol, share)

    def timed(cands) -> dict:
        """Rows of the candidates (keys 0 .. n-1) and the reference, measured together."""
        items = list(enumerate(c.subnet for c in cands)) + ([(ref, None)] if with_ref else [])
        subnets.clear()
        subnets.update(items)
        return measure_many(items, space, vocab[0], vocab[1], protocol, share, meter=meter, progress=bar.update,
                            build_model=build, fields_of=fields)

    def against_reference(r: dict, ref_row: dict) -> dict:
        ratio = _ratio(r, ref_row)
        return {"reference_ms": ref_row["latency_ms"], "limit_ms": ref_row["latency_ms"] * (1 - args.reference_margin),
                "ratio": ratio, "meets": ratio <= 1 - args.reference_margin}

    def measure_batch(cands) -> list[float]:
        if counted[0] <= 0:  # the next-best, measured after the top K: the bar grows by their rounds
            bar.add_total(protocol.n_rounds * (len(cands) + with_ref))
        counted[0] -= len(cands)
        rows = timed(cands)
        for i, c in enumerate(cands):
            r = rows[i]
            details[c.subnet.key()] = {
                "latency_stat": r["latency_stat"], "latency_clock": r["latency_clock"], "protocol": r["protocol"],
                "rounds": r["rounds"], "decoder_loop": r["decoder_loop"], "measured_with": len(cands),
                **{k: r["total_ms"][k] for k in ("median", "trimmed_mean", "min", "iqr", "cv")},
                "cpu_ms_median": r["cpu_ms"]["median"], "load": r["load"], "round_ms": r.get("round_ms"),
                **(against_reference(r, rows[ref]) if with_ref else {})}
        return [rows[i]["latency_ms"] for i in range(len(cands))]

    def meets_of(c, ms: float) -> bool:
        return details[c.subnet.key()]["meets"]

    def confirm(c) -> bool:
        bar.add_total(protocol.n_rounds * 2)
        rows = timed([c])
        check = {"latency_ms": rows[0]["latency_ms"], **against_reference(rows[0], rows[ref])}
        details[c.subnet.key()]["confirmation"] = check
        return check["meets"]

    subnets: dict = {}
    reference_model = load_trained(args.reference, args.dict) if with_ref else None
    with pinned(host["cores"]), bar:
        measured = measure_until_one_meets(finalists, reserve, args.latency_ms, max_measured,
                                           measure_many=measure_batch, meets_of=meets_of if with_ref else None,
                                           confirm=confirm if with_ref and args.confirm else None)
    return measured, details


def _ratio(row: dict, ref_row: dict) -> float:
    """A candidate's time over the reference's: per round when both rows have rounds, else overall."""
    from fairseq_nas.search import round_ratio

    paired = round_ratio(row.get("round_ms"), ref_row.get("round_ms"))
    return paired if paired is not None else row["latency_ms"] / ref_row["latency_ms"]


def _verdict(d: dict, confirm: bool) -> Optional[bool]:
    """Whether a candidate measured with the reference meets the limit: in its batch, and again in its
    confirmation. None: it met in its batch but was never confirmed (a better-ranked one had won)."""
    if not d["meets"]:
        return False
    if "confirmation" in d:
        return d["confirmation"]["meets"]
    return None if confirm else True


def _finalists_measured(args, scorer, cons, result, feature_space, vocab, share: bool, max_measured: int):
    """The top K of a search (and, while none meets, the next-best) measured: (topk rows, measured)."""
    from fairseq_nas.search import meets_limit, select_finalists

    finalists, reserve = select_finalists(scorer, cons, result.best, args.top_k, max_measured, args.tie_break)
    measured, details = [], {}
    if not args.no_measure:
        if vocab is None:
            raise FairseqNasError("measuring the top K needs --dict DIR or --vocab-size V (or pass --no-measure)")
        measured, details = _measure_top(args, finalists, reserve, feature_space, vocab, share, max_measured)
        if len(measured) > len(finalists):
            met = (f"{1 - args.reference_margin:g} x the reference" if args.reference else f"{cons.latency_ms:g} ms")
            print(f"none of the top {len(finalists)} met {met} when measured; measured the next "
                  f"{len(measured) - len(finalists)} candidates in batches of {len(finalists)} (at most "
                  f"{max_measured} in all)", file=sys.stderr)
        finalists = [c for c, _ in measured]
    ms = [m for _, m in measured] if measured else [None] * len(finalists)
    # a measured candidate meets --latency-ms, or (--reference) measures (1 - M) x the reference or less in its
    # batch's rounds, and again in its confirmation
    if measured and args.reference:
        verdicts = [_verdict(details[c.subnet.key()], args.confirm) for c in finalists]
    else:
        verdicts = [meets_limit(m, cons.latency_ms) for m in ms]
    rows = [{"rank": i + 1, **c.to_dict(), "measured_latency_ms": m, "meets_limit": v,
             **({"measured": details[c.subnet.key()]} if measured else {})}
            for i, (c, m, v) in enumerate(zip(finalists, ms, verdicts))]
    return rows, measured


def _recalibrated_limit(rows: list[dict], target_ratio: float) -> Optional[float]:
    """The predicted latency at which the measured candidates would have met the reference: each
    one's prediction scaled by target / its measured ratio to the reference; the median of them."""
    scaled = [r["predicted_latency_ms"] * target_ratio / r["measured"]["ratio"] for r in rows
              if r.get("predicted_latency_ms") is not None and (r.get("measured") or {}).get("ratio")]
    return statistics.median(scaled) if scaled else None


def _check_reference(args) -> None:
    """--reference and its margin, refused in one line before the search runs."""
    if args.reference is None:
        return
    if not 0 <= args.reference_margin < 1:
        raise FairseqNasError(f"--reference-margin {args.reference_margin:g}: expected 0 <= M < 1 (a share of the "
                              "reference's latency)")
    if args.recalibrate < 0:
        raise FairseqNasError(f"--recalibrate {args.recalibrate}: expected 0 or more searches again")
    if args.no_measure:
        raise FairseqNasError("--reference: nothing is measured with --no-measure; drop one of them")
    if args.latency_ms is None:
        raise FairseqNasError("--reference needs --latency-ms, the limit of the predicted latency (e.g. the "
                              "reference's figure from fairseq-nas latency --checkpoints)")
    if not args.dict:
        raise FairseqNasError("--reference needs --dict DIR, the data-bin the reference checkpoint was trained on")
    from fairseq_nas.models.export import read_checkpoint

    try:
        read_checkpoint(args.reference)  # a missing or foreign file: one line naming it and the flag
    except FairseqNasError as e:
        raise FairseqNasError(f"--reference: {e}") from None


def _steps(args, result) -> str:
    """What the search ran, in the user's terms: --generations counts the bred ones, not the first."""
    if args.strategy == "evolution":
        return f"initial population + {args.generations} generation{'s' * (args.generations != 1)}"
    return f"{result.generations} round{'s' * (result.generations != 1)}"


def run(args: argparse.Namespace) -> int:
    from fairseq_nas.progress import Progress
    from fairseq_nas.ranking import LatencyModel
    from fairseq_nas.search import (
        CandidateScorer,
        Constraints,
        EvolutionConfig,
        evolution_search,
        plot_pareto,
        random_search,
        winner_index,
    )
    from fairseq_nas.search.evolution import InfeasibleLimitError
    from fairseq_nas.space import Subnet, feature_names, load_space

    max_measured = 3 * args.top_k if args.max_measured is None else args.max_measured
    if args.top_k < 1 or max_measured < args.top_k:
        raise FairseqNasError(f"--top-k {args.top_k} / --max-measured {max_measured}: expected 1 <= top K <= "
                              "max measured")
    _check_reference(args)
    space = load_space(args.space)
    ranker, ranker_dir = _load_predictor(args.ranker, "--ranker")
    feature_space = load_space(args.feature_space) if args.feature_space else (_recorded_space(ranker_dir) or space)
    latency_fn, latency_dir = None, None
    if args.latency_ms is not None:
        if not args.latency_model:
            raise FairseqNasError("--latency-ms needs --latency-model DIR (fit with fairseq-nas rank latency.jsonl "
                                  "--target latency_ms)")
        if args.latency_ms <= 0:
            raise FairseqNasError(f"--latency-ms: expected a positive limit, got {args.latency_ms:g}")
    if args.latency_model:
        lat_model, latency_dir = _load_predictor(args.latency_model, "--latency-model")
        if not isinstance(lat_model, LatencyModel):
            raise FairseqNasError(f"{args.latency_model}: not a latency model (it holds a "
                                  f"{type(lat_model).__name__}); fit one with --target latency_ms")
        latency_fn = lat_model.predict
    vocab = _vocab(args)
    params_fn = None
    share = _shared(args, feature_space, space, vocab) if vocab is not None else False
    if vocab is not None:
        from fairseq_nas.latency.costs import count_params

        def params_fn(s):
            return count_params(s, feature_space, vocab[0], vocab[1], share)
    elif args.max_params is not None:
        raise FairseqNasError("--max-params needs --dict DIR or --vocab-size V (to count embedding parameters)")
    if ranker.n_features_in_ != len(feature_names(feature_space)):
        raise FairseqNasError(f"{ranker_dir}: the ranker was fit on {ranker.n_features_in_} features, space "
                              f"{feature_space.name} encodes a different number; pass --feature-space")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "search.jsonl"
    settings = _settings(args, space, feature_space, ranker_dir, latency_dir)
    resume_row = None
    if args.resume and log_path.is_file():
        kept, rows = _read_log(log_path)
        if rows:
            _check_settings(log_path, rows[-1].get("settings"), settings)
            resume_row = rows[-1]
            # without the cut line, and ending in a newline: the rows appended start on a line of their own
            atomic_write_text(log_path, "".join(line + "\n" for line in kept))
    if resume_row is None:  # a new search: nothing an earlier one wrote into OUT survives it
        for name in ("search.jsonl", *OUTPUTS):
            (out / name).unlink(missing_ok=True)

    cons = Constraints(args.latency_ms, args.max_params)
    cfg = EvolutionConfig(args.population, args.parents, args.mutations, args.mutation_prob, args.crossovers,
                          args.generations, patience=args.patience, tie_break=args.tie_break)
    scorer = CandidateScorer(feature_space, ranker.predict, latency_fn, params_fn)
    total = args.generations + 1 if args.strategy == "evolution" else None
    bar = Progress(args.strategy, total=total, unit="population" if total else "round",
                   initial=(resume_row["generation"] + 1) if resume_row else 0, disable=args.no_progress)

    with open(log_path, "a") as log_f:
        def log(row):
            log_f.write(json.dumps({**row, "settings": settings}) + "\n")
            log_f.flush()
            bar.set_postfix(best=f"{row['best']['score']:.4f}", evaluated=row["evaluated"])

        search = evolution_search if args.strategy == "evolution" else random_search
        try:
            result = search(space, scorer, cons, cfg, seed=args.seed, log=log, resume_from=resume_row,
                            progress=lambda g: bar.update(1))
        except FairseqNasError as e:
            bar.close(leave=False)  # the error is the last line, not a stale progress bar
            if isinstance(e, InfeasibleLimitError):  # its own exit status; the line as main() prints errors
                print(f"fairseq-nas: error: {' '.join(str(e).split())}", file=sys.stderr)
                return EXIT_INFEASIBLE
            raise
        finally:
            bar.close()

    attempts = 1 + (args.recalibrate if args.reference and not args.no_measure else 0)
    limit_ms, rows, measured = args.latency_ms, [], []
    for attempt in range(1, attempts + 1):
        if attempt > 1:  # the same search again, under the recalibrated limit (its candidates scored so far count)
            cons = Constraints(limit_ms, args.max_params)
            try:
                result = search(space, scorer, cons, cfg, seed=args.seed + attempt - 1)
            except InfeasibleLimitError as e:
                print(f"search: the recalibrated limit {limit_ms:.2f} ms is out of reach ({' '.join(str(e).split())})"
                      "; stopping", file=sys.stderr)
                break
        got, measured = _finalists_measured(args, scorer, cons, result, feature_space, vocab, share, max_measured)
        rows += [{**r, "rank": len(rows) + i + 1, "attempt": attempt, "predicted_limit_ms": limit_ms}
                 for i, r in enumerate(got)]
        if winner_index([r["meets_limit"] for r in got]) is not None or attempt == attempts:
            break
        new_limit = _recalibrated_limit(got, 1 - args.reference_margin)
        if new_limit is None or new_limit >= limit_ms:
            break
        print(f"none of the {len(got)} measured met {1 - args.reference_margin:g} x the reference: the latency "
              f"model was {limit_ms / new_limit:.3f} x optimistic there; searching again under a predicted-latency "
              f"limit of {new_limit:.2f} ms (attempt {attempt + 1} of {attempts}, --recalibrate)", file=sys.stderr)
        limit_ms = new_limit
    atomic_write_text(out / "topk.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    won = winner_index([r["meets_limit"] for r in rows])
    if won is None:
        (out / "best.json").unlink(missing_ok=True)  # of an earlier run resumed: it is not this run's result
        plot_pareto(scorer.all_candidates(), out / "pareto.png", limit_ms, measured)
        fastest = min(rows, key=lambda r: r["measured_latency_ms"])
        if args.reference:
            d = min((r["measured"] for r in rows), key=lambda d: d["ratio"])
            unconfirmed = sum(1 for r in rows if r["measured"].get("confirmation", {}).get("meets") is False)
            again = (f"; {unconfirmed} that met it did not meet it again when measured a second time"
                     if unconfirmed else "")
            raise FairseqNasError(
                f"--reference {args.reference}: none of the {len(rows)} best candidates measures at most "
                f"{1 - args.reference_margin:g} x the reference in the same rounds (closest {d['ratio']:.3f} x: "
                f"{d['median']:.2f} ms against the reference's {d['reference_ms']:.2f} ms{again}); lower "
                f"--latency-ms or --reference-margin, raise --top-k or --max-measured, or refit the latency "
                f"model; see {out / 'topk.jsonl'}")
        raise FairseqNasError(f"--latency-ms {args.latency_ms:g}: none of the {len(rows)} best candidates meets the "
                              f"limit when measured (fastest {fastest['measured_latency_ms']:.2f} ms); raise --top-k "
                              f"or --max-measured, lower the limit for the search, or refit the latency model; see "
                              f"{out / 'topk.jsonl'}")
    best = Subnet.from_dict(rows[won]["subnet"], "topk")
    atomic_write_text(out / "best.json", json.dumps(best.to_dict(), indent=2) + "\n")
    plot_pareto(scorer.all_candidates(), out / "pareto.png", limit_ms, measured)

    print(f"{args.strategy} search in {space.name}: {result.evaluations} subnets scored, {_steps(args, result)}")
    print(f"{'rank':>4} {'score':>10} {'pred ms':>9} {'meas ms':>9} {'params':>12}  meets")
    for r in rows:
        pm = "" if r["predicted_latency_ms"] is None else f"{r['predicted_latency_ms']:.2f}"
        mm = "" if r["measured_latency_ms"] is None else f"{r['measured_latency_ms']:.2f}"
        pa = "" if r["params"] is None else f"{r['params']:,}"
        print(f"{r['rank']:>4} {r['score']:>10.4f} {pm:>9} {mm:>9} {pa:>12}  {r['meets_limit']}")
    if args.reference:
        d = rows[won]["measured"]
        again = d.get("confirmation")
        again = f", {again['ratio']:.3f} x again in fresh rounds" if again else ""
        print(f"reference {args.reference}: {d['reference_ms']:.2f} ms in the same rounds as the winner, which "
              f"measured {d['ratio']:.3f} x it round by round{again}; limit {1 - args.reference_margin:g} x")
    print(f"best: {out / 'best.json'} (rank {rows[won]['rank']}); also topk.jsonl, search.jsonl, pareto.png")
    return 0
