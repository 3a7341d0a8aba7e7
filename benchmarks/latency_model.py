"""Latency model quality on latency measured on this CPU: the latency model (a non-negative
linear part in the cost features times a boosted LightGBM correction) against linear regression
on HAT's features, LightGBM alone and HAT's MLP, at N = 50, 100, 200 training subnets.

    python benchmarks/latency_model.py [--n 260] [--runs 6] [--rounds 3] [--vocab-size 10000]
        [--spaces shrinknas_iwslt14 hat_iwslt14] [--workdir /tmp/fsnas-latency-model]

Measures --n subnets of each space with `fairseq-nas latency` (rounds protocol, fairseq's
SequenceGenerator; resumable: rerunning reuses the rows in the work dir), holds out a fixed
random part (at least 50 rows), and prints for each model and N the share of held-out subnets
within +-5% and +-10% of the measured latency, the mean relative error and Kendall tau
(averaged over --seeds draws of the training rows), on the wall latency, the CPU time and (rows
measured with the anchor, the default) the drift-corrected latency. Also the other kinds of the latency model
("analytic": the linear part alone; "linear_tree": LightGBM's linear trees), which is how its
default was chosen. Targets (issue 12): ahead of every baseline at every N; within +-10% for
at least 90% of held-out subnets at N = 100.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairseq_nas.ranking import LatencyModel, MLPRegressor, latency_accuracy  # noqa: E402
from fairseq_nas.space import Subnet, encode_many, feature_names, load_space  # noqa: E402

NEW = "latency model (linear x GBDT)"
BASELINES = ("linear regression (HAT features)", "LightGBM alone (log ms)", "MLP (HAT)")


def measure(space: str, args: argparse.Namespace, out: Path) -> list[dict]:
    subprocess.run([sys.executable, "-m", "fairseq_nas.cli.main", "latency", "--space", space, "-n", str(args.n),
                    "--seed", "0", "--vocab-size", str(args.vocab_size), "--runs", str(args.runs), "--rounds",
                    str(args.rounds), "--warmup", "2", "--threads", "1", "--src-len", str(args.src_len),
                    "--group", str(args.group), "--no-progress", "--out", str(out),
                    *(["--cores", args.cores] if args.cores else [])],
                   check=True)
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def hat_features(subnets: list[Subnet]) -> np.ndarray:
    """HAT's ten features: per stack embed dim, depth, mean FFN dim, mean heads; the decoder's mean
    number of encoder layers attended to; the largest FFN dim of the decoder."""
    rows = []
    for s in subnets:
        e, d = s.encoder, s.decoder
        rows.append([e.embed_dim, len(e.layers), np.mean([x.ffn_dim for x in e.layers]),
                     np.mean([x.heads for x in e.layers]), d.embed_dim, len(d.layers),
                     np.mean([x.ffn_dim for x in d.layers]), np.mean([x.heads for x in d.layers]),
                     np.mean([x.enc_attn_layers or 1 for x in d.layers]), max(x.ffn_dim for x in d.layers)])
    return np.array(rows, dtype=np.float64)


class LinearRegression:
    """Ordinary least squares with an intercept (HAT's linear baseline)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearRegression:
        A = np.concatenate([X, np.ones((len(X), 1))], axis=1)
        self.coef_ = np.linalg.lstsq(A, y, rcond=None)[0]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.concatenate([X, np.ones((len(X), 1))], axis=1) @ self.coef_


def models(names: list[str]) -> dict:
    """label -> (make(seed), which inputs: "encoded" or "hat")."""
    return {
        NEW: (lambda s: LatencyModel(seed=s), "encoded"),
        "  its linear part alone": (lambda s: LatencyModel(seed=s, kind="analytic"), "encoded"),
        "  LightGBM linear_tree": (lambda s: LatencyModel(seed=s, kind="linear_tree"), "encoded"),
        BASELINES[0]: (lambda s: LinearRegression(), "hat"),
        BASELINES[1]: (lambda s: LatencyModel(seed=s, kind="gbdt"), "encoded"),
        BASELINES[2]: (lambda s: MLPRegressor(seed=s), "encoded"),
    }


def evaluate(target: str, X: np.ndarray, H: np.ndarray, names: list[str], y: np.ndarray, n_test: int,
             args: argparse.Namespace) -> dict:
    print(f"  target: {target}")
    print(f"  {'N':>4} {'model':<34} {'within 10%':>11} {'within 5%':>10} {'mean err':>9} {'tau':>7}")
    perm = np.random.default_rng(12345).permutation(len(y))  # a fixed random hold-out (not the last rows)
    test, pool = perm[:n_test], perm[n_test:]
    table: dict = {}
    for n_train in args.train_sizes:
        for label, (make, inputs) in models(names).items():
            accs = []
            for seed in range(args.seeds):
                tr = np.random.default_rng(seed).permutation(pool)[:n_train]
                Z = X if inputs == "encoded" else H
                m = make(seed)
                if isinstance(m, LatencyModel):
                    m.fit(Z[tr], y[tr], feature_names=names)
                else:
                    m.fit(Z[tr], y[tr])
                accs.append(latency_accuracy(y[test], m.predict(Z[test])))
            mean = {k: float(np.mean([a[k] for a in accs])) for k in accs[0]}
            table[label, n_train] = mean
            print(f"  {n_train:>4} {label:<34} {mean['within_10pct']:>11.1%} {mean['within_5pct']:>10.1%} "
                  f"{mean['mean_abs_rel_error']:>9.2%} {mean['kendall_tau']:>7.3f}")
    ahead = all(table[NEW, n][k] > max(table[b, n][k] for b in BASELINES)
                for n in args.train_sizes for k in ("within_5pct", "within_10pct"))
    # a share of whole predictions (e.g. 162 of 180 held out over 3 draws): 0.9 must not miss by rounding
    at100 = table.get((NEW, 100), {}).get("within_10pct")
    print(f"  ahead of every baseline at every N (within 5% and 10%): {'met' if ahead else 'NOT met'}; "
          + (f"within 10% at N=100: {at100:.1%} (target 90%) -> {'met' if at100 >= 0.9 - 1e-9 else 'NOT met'}"
             if at100 is not None else ""))
    return {f"{label}@{n}": v for (label, n), v in table.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=260, help="subnets measured per space (default 260)")
    ap.add_argument("--runs", type=int, default=6, help="timed runs per subnet (default 6)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per subnet (default 3)")
    ap.add_argument("--group", type=int, default=32, help="subnets measured together (default 32)")
    ap.add_argument("--src-len", type=int, default=23, help="source = target tokens (default 23)")
    ap.add_argument("--cores", default=None, help="pin the measurement to these cores, or auto (default: none)")
    ap.add_argument("--vocab-size", type=int, default=10000, help="joined BPE vocabulary (IWSLT: ~10k)")
    ap.add_argument("--spaces", nargs="+", default=["shrinknas_iwslt14", "hat_iwslt14"])
    ap.add_argument("--train-sizes", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--seeds", type=int, default=3, help="draws of the training rows per N (default 3)")
    ap.add_argument("--workdir", default="/tmp/fsnas-latency-model")
    ap.add_argument("--json", metavar="OUT", help="also write the tables as JSON")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.spaces:
        space = load_space(name)
        rows = measure(name, args, work / f"{name}.jsonl")
        subnets = [Subnet.from_dict(r["subnet"]) for r in rows]
        X, H = encode_many(subnets, space), hat_features(subnets)
        n_test = len(rows) - max(args.train_sizes)
        if n_test < 50:
            raise SystemExit(f"need at least {max(args.train_sizes) + 50} rows, have {len(rows)}")
        cv = np.median([r["total_ms"]["cv"] for r in rows])
        busy = np.median([r["load"]["busy_by_others_mean"] for r in rows if r.get("load", {}).get(
            "busy_by_others_mean") is not None] or [np.nan])
        print(f"\n{name}: {len(rows)} subnets ({rows[0]['protocol']} protocol, {rows[0]['rounds']} rounds, "
              f"{rows[0]['runs']} runs, {rows[0]['decoder_loop']} loop, vocab {rows[0]['tgt_vocab']}), median "
              f"{np.median([r['latency_ms'] for r in rows]):.2f} ms, median CV of a subnet's runs {cv:.1%}, other "
              f"processes kept {busy:.2f} cores busy (median over rows); {n_test} held out at random")
        names = feature_names(space)
        results[name] = {}
        targets = [("latency_ms (median wall)", np.array([r["latency_ms"] for r in rows])),
                   ("CPU time (median)", np.array([r["cpu_ms"]["median"] for r in rows]))]
        if all(r.get("drift_corrected_ms") for r in rows):  # rows measured with the anchor (latency --anchor)
            levels = sorted({r["anchor"]["ms"] / r["anchor"]["ref_ms"] for r in rows})
            print(f"  anchor levels of the {len(levels)} groups against the first: "
                  f"{min(levels) - 1:+.1%} to {max(levels) - 1:+.1%}")
            targets.append(("drift_corrected_ms (wall, at the anchor's first-group level)",
                            np.array([r["drift_corrected_ms"] for r in rows])))
        for target, y in targets:
            results[name][target] = evaluate(target, X, H, names, y, n_test, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
