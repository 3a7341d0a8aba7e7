"""`fairseq-nas rank`: fit an architecture ranker (or a latency model) on collected rows.

Reads JSON-lines rows (``fairseq-nas collect`` or ``latency`` output), encodes the subnets, fits the
chosen objective and the GBDT regression baseline on the same training part, reports Kendall tau,
Spearman rho and NDCG@10 on the held-out part, the permutation importance of every feature group
(RankNAS eq. 7) and, with ``--prune``, the space with the unimportant groups fixed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from fairseq_nas.errors import FairseqNasError

OBJECTIVES = {
    "pairwise": ("PairwiseRanker", "pairwise GBDT (RankNAS)"),
    "lambdarank": ("LambdaRanker", "LambdaRank GBDT (AceNAS)"),
    "regression": ("GBDTRegressor", "GBDT regression"),
    "mlp": ("MLPRegressor", "MLP regression (HAT)"),
    "latency": ("LatencyModel", "linear + GBDT latency model"),
}
BASELINE = "regression"
LATENCY_BASELINE = "mlp"  # HAT's latency predictor

DESCRIPTION = """\
Fit a ranker on rows of (subnet, target) and measure it on held-out rows.

The target is oriented so that larger is better before fitting: a loss, latency, perplexity, params
or FLOPs target (lower is better) is fit on its negative; BLEU/accuracy as is (override with
--lower-is-better / --higher-is-better). --target may be a dotted path into the row
(latency.total_ms). With a latency target this is the latency model.
The search space: --space, else ROWS' sidecar (archs.jsonl -> archs.space.yaml, written by collect),
else the builtin space named by the rows' "space" field.

Writes DIR/ranker/ (the fitted model: ranker.json + LightGBM text or .npz), DIR/space.yaml (the
space its features encode; search reads it), DIR/metrics.json, DIR/importance.json,
DIR/importance.png and with --prune DIR/pruned_space.yaml and DIR/fixed.json."""


def add_parser(sub) -> None:
    p = sub.add_parser("rank", help="fit a ranker on archs.jsonl: Kendall tau, importance, pruned space",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", nargs="+", metavar="ROWS.jsonl", help="rows files (e.g. the shards of collect)")
    p.add_argument("--target", default="valid_loss",
                   help="the row field to rank by: valid_loss (default), valid_nll_loss, bleu, latency_ms, ...")
    p.add_argument("--objective", choices=tuple(OBJECTIVES), default=None,
                   help="pairwise (RankNAS; default), lambdarank (AceNAS), regression (GBDT), mlp (HAT), latency "
                        "(LightGBM on log ms; the default for a latency target: the model search --latency-model "
                        "takes)")
    p.add_argument("--baseline", choices=(*OBJECTIVES, "none"), default=None,
                   help="model fit on the same split for comparison (default: regression; mlp, HAT's predictor, "
                        "for the latency model)")
    p.add_argument("--space", metavar="NAME|FILE", help="the rows' search space (default: see above)")
    p.add_argument("--train-fraction", type=float, default=0.8,
                   help="share of the rows to fit on; the rest is held out (default 0.8; 1 = no hold-out)")
    p.add_argument("--seed", type=int, default=0, help="split and model seed (default 0)")
    p.add_argument("--importance-samples", type=int, default=200, metavar="n",
                   help="architectures to permute features over (held-out rows first; default 200)")
    p.add_argument("--importance-repeats", type=int, default=5, help="permutations per group (default 5)")
    p.add_argument("--theta", type=float, default=1.15,
                   help="importance threshold: groups with I < theta are fixed by --prune (default 1.15)")
    p.add_argument("--prune", action="store_true", help="write the pruned space DIR/pruned_space.yaml")
    p.add_argument("--keep-important", action="append", default=[], metavar="IMPORTANCE.json",
                   help="with --prune, also keep every group with I >= theta in this importance.json of another "
                        "rank run, e.g. the latency model's (RankNAS hardware-aware search selects the features "
                        "of latency too); repeatable")
    p.add_argument("--refit", action="store_true",
                   help="after measuring, refit the saved ranker on all rows (metrics describe the split)")
    way = p.add_mutually_exclusive_group()
    way.add_argument("--lower-is-better", dest="direction", action="store_const", const="lower")
    way.add_argument("--higher-is-better", dest="direction", action="store_const", const="higher")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=run)


def _read_importance(path: str, groups) -> dict[str, float]:
    """The ``importance`` mapping of another rank run's importance.json, checked against `groups`."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise FairseqNasError(f"--keep-important {path}: cannot read it ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise FairseqNasError(f"--keep-important {path}: not JSON ({e.msg}, line {e.lineno})") from None
    imp = data.get("importance") if isinstance(data, dict) else None
    if not isinstance(imp, dict) or not all(isinstance(v, (int, float)) for v in imp.values()):
        raise FairseqNasError(f"--keep-important {path}: field 'importance' must map group names to numbers "
                              "(the importance.json that fairseq-nas rank writes)")
    unknown = sorted(set(imp) - set(groups))
    if unknown:
        raise FairseqNasError(f"--keep-important {path}: field 'importance' has groups {', '.join(unknown)} that "
                              f"this space does not have; valid: {', '.join(groups)}")
    return {g: float(v) for g, v in imp.items()}


def make_ranker(objective: str, seed: int):
    """An unfitted ranker for an objective name."""
    import fairseq_nas.ranking as ranking

    return getattr(ranking, OBJECTIVES[objective][0])(seed=seed)


def use_case(target: str) -> str:
    """A latency target (latency_ms, drift_corrected_ms, total_ms.median, ...: a time in ms) fits
    the latency model; anything else an architecture ranker."""
    name = target.lower()
    return "latency model" if "latency" in name or "_ms" in name else "architecture ranker"


def _fit(objective: str, seed: int, X, y, names) -> tuple[Any, float]:
    """Fit on the oriented target y (higher = better); the latency model fits the latency itself (-y)."""
    ranker = make_ranker(objective, seed)
    t = time.perf_counter()
    try:
        ranker.fit(X, -y if objective == "latency" else y, feature_names=names)
    except ValueError as e:
        raise FairseqNasError(f"fitting the {OBJECTIVES[objective][1]}: {' '.join(str(e).split())}") from None
    return ranker, time.perf_counter() - t


def _oriented(objective: str, model):
    """A view of `model` whose predict is higher = better (the latency model predicts ms)."""
    if objective != "latency":
        return model

    class _Negated:
        n_features_in_ = model.n_features_in_
        feature_names_ = model.feature_names_

        def predict(self, X):
            return -model.predict(X)

    return _Negated()


def _scores(y, pred) -> dict[str, float]:
    from fairseq_nas.ranking import kendall_tau, ndcg_at_k, spearman_rho

    return {"kendall_tau": kendall_tau(y, pred), "spearman_rho": spearman_rho(y, pred),
            "ndcg@10": ndcg_at_k(y, pred, 10)}


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fairseq_nas.collect.rows import load_rowset, target_direction
    from fairseq_nas.ranking import (
        importance_table,
        permutation_importance,
        plot_importance,
        prune_space,
    )
    from fairseq_nas.ranking.base import atomic_write_text
    from fairseq_nas.space import encode_many, feature_groups, feature_names

    if not 0.0 < args.train_fraction <= 1.0:
        raise FairseqNasError(f"--train-fraction: expected a value in (0, 1], got {args.train_fraction}")
    if args.importance_samples < 2 or args.importance_repeats < 1:
        raise FairseqNasError("--importance-samples must be >= 2 and --importance-repeats >= 1")
    target = args.target
    direction = args.direction or target_direction(target)
    latency_case = use_case(target) == "latency model" and direction == "lower"
    if args.objective is None:
        args.objective = "latency" if latency_case else "pairwise"
    if args.objective == "latency" and not latency_case:
        raise FairseqNasError(f"--objective latency: needs a latency target where lower is better, got {target}")
    baseline = args.baseline or (LATENCY_BASELINE if args.objective == "latency" else BASELINE)
    rs = load_rowset(args.rows, target, args.space)
    for path in rs.truncated:
        print(f"warning: {path}: skipped a truncated last line (an interrupted writer)", file=sys.stderr)
    n = len(rs)
    space = rs.space
    y_raw = rs.values
    if n < 4:
        raise FairseqNasError(f"{args.rows[0]}: {n} usable rows; need at least 4 to fit and measure a ranker")
    if float(np.ptp(y_raw)) == 0.0:
        raise FairseqNasError(f"{args.rows[0]}: {target}: every row has the same value; nothing to rank")
    # other runs' importances (read before any fitting, so a bad file fails at once)
    other_importance = [(path, _read_importance(path, feature_groups(space))) for path in args.keep_important]
    if other_importance and not args.prune:
        raise FairseqNasError("--keep-important only matters with --prune")
    y = y_raw if direction == "higher" else -y_raw
    fit_on = target if direction == "higher" else f"-{target}"
    X = encode_many(rs.subnets, space)
    names = feature_names(space)
    n_train = n if args.train_fraction >= 1.0 else int(round(args.train_fraction * n))
    n_train = min(max(n_train, 2), n)
    if n - n_train == 1 or (args.train_fraction < 1.0 and n - n_train < 2):
        raise FairseqNasError(f"--train-fraction {args.train_fraction}: leaves {n - n_train} of {n} rows held out; "
                              "need at least 2 (or use 1 for no hold-out)")
    perm = np.random.default_rng(args.seed).permutation(n)
    tr, te = np.sort(perm[:n_train]), np.sort(perm[n_train:])

    what = use_case(target)
    label = OBJECTIVES[args.objective][1]
    print(f"rank: {n} subnets from {', '.join(map(str, args.rows))}"
          + (f" ({rs.duplicates} repeated rows: their {target} values averaged)" if rs.duplicates else ""))
    print(f"space: {space.name} (from {rs.space_source})")
    print(f"{what}: {label} on {target}; {direction} is better, so it is fit on {fit_on} (higher score = better)")
    print(f"split: {tr.size} train / {te.size} held-out (seed {args.seed})")

    objectives = [args.objective] + ([baseline] if baseline not in (args.objective, "none") else [])
    models: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for obj in objectives:
        model, secs = _fit(obj, args.seed, X[tr], y[tr], names)
        models[obj] = model
        res: dict[str, Any] = {"model": OBJECTIVES[obj][1], "fit_s": secs}
        scorer = _oriented(obj, model)
        if te.size:
            res.update(_scores(y[te], scorer.predict(X[te])))
            if latency_case:
                from fairseq_nas.ranking import latency_accuracy

                res.update(latency_accuracy(-y[te], -scorer.predict(X[te])))
        res["train_kendall_tau"] = _scores(y[tr], scorer.predict(X[tr]))["kendall_tau"]
        results[obj] = res

    if te.size:
        print(f"held-out ranking quality ({te.size} subnets):")
        w = max(len(f"{OBJECTIVES[o][1]} (baseline)") for o in objectives) + 2
        print(f"  {'model':<{w}}{'kendall_tau':>12}{'spearman_rho':>14}{'ndcg@10':>10}{'fit_s':>9}")
        for obj in objectives:
            r = results[obj]
            tag = " (baseline)" if obj == baseline else ""
            extra = (f"   within 5%: {r['within_5pct']:.0%}  within 10%: {r['within_10pct']:.0%}"
                     if latency_case else "")
            print(f"  {OBJECTIVES[obj][1] + tag:<{w}}{r['kendall_tau']:>12.4f}{r['spearman_rho']:>14.4f}"
                  f"{r['ndcg@10']:>10.4f}{r['fit_s']:>9.2f}{extra}")
    else:
        print("no held-out rows (--train-fraction 1): no ranking quality is reported; importance uses training rows")

    # permutation importance (RankNAS eq. 7) with the chosen model
    model = models[args.objective]
    imp_rows = te if te.size >= 2 else tr
    rng = np.random.default_rng(args.seed + 1)
    if imp_rows.size > args.importance_samples:
        imp_rows = np.sort(rng.choice(imp_rows, size=args.importance_samples, replace=False))
    groups = feature_groups(space)
    varying = {}
    constant = []
    for g, cols in groups.items():
        block = X[:, cols]
        if np.unique(block[~np.isnan(block)]).size <= 1:  # one value (absent layers aside)
            constant.append(g)
        else:
            varying[g] = cols
    # a stack's per-layer columns carry its depth (absent layers are NaN): see permutation_importance
    depth = {f"{p}.layers": [c for g, cols in groups.items() if g.startswith(f"{p}.")
                             and g.split(".", 1)[1] not in ("embed_dim", "layers") for c in cols]
             for p in ("enc", "dec")}
    importance = permutation_importance(_oriented(args.objective, model), X[imp_rows], y[imp_rows], groups=varying,
                                        n_repeats=args.importance_repeats, seed=args.seed, depth=depth)
    all_importance = {g: importance.get(g, 1.0) for g in groups}
    where = "held-out" if te.size >= 2 else "training"
    print(f"\npermutation importance (RankNAS eq. 7, I = L_group / L_total, L = 1 - Kendall tau) over "
          f"{imp_rows.size} {where} subnets, {args.importance_repeats} permutations each:")
    print(importance_table(importance, theta=args.theta))
    if constant:
        print(f"not varying in these rows (I = 1): {', '.join(constant)}")
    if where == "training":
        print("note: measured on the rows the ranker was fit on; it orders them almost perfectly, so the "
              "ratios are inflated (hold rows out for honest importances)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.refit and te.size:
        model, secs = _fit(args.objective, args.seed, X, y, names)
        results[args.objective]["refit_s"] = secs
    model.save(out / "ranker")
    space.save(out / "space.yaml")  # the ranker's feature space: search finds it (and its embedding sharing) here
    plot_importance(importance, out / "importance.png", theta=args.theta,
                    title=f"Permutation importance, {label} on {target}")
    atomic_write_text(out / "importance.json", json.dumps({
        "importance": all_importance, "varying": list(varying), "constant": constant, "theta": args.theta,
        "n_samples": int(imp_rows.size), "rows": where, "n_repeats": args.importance_repeats,
        "metric": "1 - kendall_tau", "objective": args.objective, "target": target}, indent=2) + "\n")
    metrics = {
        "use_case": what, "target": target, "direction": direction, "fit_on": fit_on,
        "objective": args.objective, "baseline": baseline, "space": space.name, "space_source": rs.space_source,
        "rows": [str(p) for p in args.rows], "n_rows": n, "n_train": int(tr.size), "n_test": int(te.size),
        "duplicates": rs.duplicates, "train_fraction": args.train_fraction, "seed": args.seed,
        "refit_on_all_rows": bool(args.refit), "models": results,
    }
    written = [out / "ranker", out / "space.yaml", out / "metrics.json", out / "importance.json",
               out / "importance.png"]
    if args.prune:
        best = int(np.argmax(y))
        combined = dict(all_importance)
        kept_for: dict[str, str] = {}
        for path, imp in other_importance:
            for g, value in imp.items():
                if value >= args.theta and combined.get(g, 1.0) < args.theta:
                    kept_for[g] = path
                combined[g] = max(combined.get(g, 1.0), value)
        pruned, fixed = prune_space(space, combined, args.theta, values=rs.subnets[best])
        pruned = dataclasses.replace(pruned, name=f"{space.name}-pruned")
        pruned.save(out / "pruned_space.yaml")
        atomic_write_text(out / "fixed.json", json.dumps(
            {"fixed": fixed, "theta": args.theta, "values_from": rs.where[best]}, indent=2, default=str) + "\n")
        metrics["pruned"] = {"fixed": fixed, "kept": [g for g in groups if g not in fixed], "kept_for": kept_for,
                             "num_subnets_before": float(space.num_subnets()),
                             "num_subnets_after": float(pruned.num_subnets())}
        print(f"\npruned space (theta {args.theta:g}; fixed values from the best row, {rs.where[best]}):")
        changed = {g: v for g, v in fixed.items() if g not in constant}
        print("  fixed: " + (", ".join(f"{g}={v}" for g, v in changed.items()) or "nothing that varies"))
        for g, path in kept_for.items():
            print(f"  kept {g}: important in {path}")
        print(f"  subnets: {space.num_subnets():.3g} -> {pruned.num_subnets():.3g}")
        written += [out / "pruned_space.yaml", out / "fixed.json"]
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0
