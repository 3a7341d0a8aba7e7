"""Which DSS settings are enough: smaller memories, populations, iteration counts and validation
batches against the full setting, from the same trained supernet, in one run.

    python benchmarks/dss_settings.py --checkpoint SUPERNET.pt --data DATA_BIN --work DIR
        [--reference 2000:1000:5:4096] [--settings 500:500:3:4096,200:200:3:8192,...]
        [--train 2000:1000:5:4096,200:200:3:8192,uniform] [--train-updates 150]

A setting is REMEMBER:POPULATION:ITERATIONS:TOKENS: the phase-1 subnets DSS starts from (the
task's --dss-remember; phase 1 samples uniformly, so they are REMEMBER uniform draws, noted
through the sampler as training notes them), then `dss_step` itself (the code the task runs)
with that population, iteration count and validation batch. For each setting:

1. the shrunk set: its size, the forward passes DSS spent (scored subnets x batch tokens) and
   its seconds, and the inherited-weight loss on the judge batch (the whole valid split, about
   the full 30,720-token batch of ShrinkNAS) of --judge-subnets subnets drawn from the set and
   of the set's best subnet;
2. ranking: Kendall tau between the loss of --tau-subnets uniform subnets on the batch this
   setting's DSS drew and on the judge batch (the issue's ">= 0.95 against the full setting");
3. training (settings in --train, and "uniform": the unshrunk space as a control): the
   supernet trained --train-updates more updates sampling from the set (Adam, fairseq's
   label-smoothed criterion, the checkpoint's batches), then the same judge losses again.

Every result is appended to WORK/results.jsonl as it is measured; a rerun skips what is there.
The summary prints each setting against the reference and DSS's share of training at the
ShrinkNAS recipe (50k updates x 4,096 tokens, 5 DSS steps) from the scoring and training rates
measured here. Losses are bits per token (as fairseq's nll_loss); lower is better.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEED = 1


def parse_setting(text: str) -> tuple[int, int, int, int]:
    parts = text.split(":")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        sys.exit(f"dss_settings: error: setting {text!r}: expected REMEMBER:POPULATION:ITERATIONS:TOKENS, "
                 "four positive integers, e.g. 200:200:3:8192")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def read_results(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out[row["key"]] = row
    return out


def append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


class Bench:
    def __init__(self, args: argparse.Namespace):
        import fairseq_nas

        fairseq_nas.register()
        from fairseq import checkpoint_utils

        from fairseq_nas.sampling.validator import SubnetScorer, make_batches

        self.args = args
        state = checkpoint_utils.load_checkpoint_to_cpu(str(args.checkpoint))
        self.cfg = state["cfg"]
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(args.checkpoint)],
                                                                        arg_overrides={"data": str(args.data)})
        self.model, self.task = models[0], task
        self.initial_weights = copy.deepcopy(self.model.state_dict())
        task.load_dataset("valid")
        self.valid = task.dataset("valid")
        self.pad = task.target_dictionary.pad()
        self.space = self.model.space
        judge_idx = list(range(len(self.valid)))
        self.judge = SubnetScorer(self.model, make_batches(self.valid, judge_idx, 4096), self.pad)
        self.make_batches = make_batches
        self._judged: dict[str, float] = {}  # judge losses at the checkpoint's weights

    def judge_loss(self, subnet, trained: bool = False) -> float:
        if trained:
            return self.judge.loss(subnet)
        key = subnet.key()
        if key not in self._judged:
            self._judged[key] = self.judge.loss(subnet)
        return self._judged[key]

    def reset_weights(self) -> None:
        self.model.load_state_dict(self.initial_weights)

    def judge_set(self, subnets: list, best, trained: bool = False) -> dict:
        rng = random.Random(SEED + 7)
        drawn = subnets if len(subnets) <= self.args.judge_subnets else rng.sample(subnets, self.args.judge_subnets)
        losses = [self.judge_loss(s, trained) for s in drawn]
        return {"judged": len(drawn), "mean": statistics.mean(losses), "median": statistics.median(losses),
                "best_of_drawn": min(losses),
                "set_best": self.judge_loss(best, trained) if best is not None else None}

    def run_dss(self, setting: tuple[int, int, int, int]) -> dict:
        from fairseq_nas.sampling import DSSOptions, DSSSampler, dss_step

        remember, population, iterations, tokens = setting
        sampler = DSSSampler(self.space, SEED, remember=remember)
        for u in range(remember * 3):  # phase 1: uniform draws, noted by the sampler
            sampler.subnet_for_update(u)
            if len(sampler.remembered()) >= remember:
                break
        options = DSSOptions(population=population, iterations=iterations, valid_tokens=tokens,
                             remember=remember, divergence_subnets=0,
                             batch_tokens=self.args.batch_tokens or None)
        t0 = time.perf_counter()
        result = dss_step(self.model, sampler, options, self.valid, self.pad, index=1)
        seconds = time.perf_counter() - t0
        row = result["row"]
        sampler.apply(result)
        return {"sampler": sampler, "seconds": seconds, "evaluated": row["evaluated"],
                "valid_tokens": row["valid_tokens"], "initial": row["initial_subnets"],
                "size": row["space_size_after"], "best_own_loss": row["best_loss"]}

    def tau_of_batch(self, tokens: int) -> float:
        """Kendall tau between the judge and the batch DSS draws at `tokens` (its first step's)."""
        from scipy.stats import kendalltau

        from fairseq_nas.sampling.dss import dss_rng
        from fairseq_nas.sampling.validator import SubnetScorer, sample_sentences

        rng = random.Random(SEED + 11)
        subnets = [self.space.sample(rng) for _ in range(self.args.tau_subnets)]
        idx = sample_sentences(self.valid, tokens, dss_rng(SEED, 1))
        scorer = SubnetScorer(self.model, self.make_batches(self.valid, idx, 4096), self.pad)
        return float(kendalltau([self.judge_loss(s) for s in subnets], [scorer.loss(s) for s in subnets]).statistic)

    def train_on(self, subnets: list, updates: int) -> dict:
        """`updates` Adam steps of the supernet on random members of `subnets` (label-smoothed CE
        from the checkpoint's criterion config, train batches of the checkpoint's max tokens)."""
        from fairseq import criterions

        criterion = criterions.build_criterion(self.cfg.criterion, self.task)
        self.task.load_dataset("train")
        itr = self.task.get_batch_iterator(dataset=self.task.dataset("train"), max_tokens=self.args.max_tokens,
                                           required_batch_size_multiple=1, seed=SEED + 3,
                                           num_workers=0).next_epoch_itr(shuffle=True)
        opt = torch.optim.Adam(self.model.parameters(), lr=self.args.train_lr, betas=(0.9, 0.98))
        rng = random.Random(SEED + 5)
        self.model.train()
        tokens, t0 = 0, time.perf_counter()
        for _ in range(updates):
            try:
                sample = next(itr)
            except StopIteration:
                itr = self.task.get_batch_iterator(dataset=self.task.dataset("train"),
                                                   max_tokens=self.args.max_tokens, required_batch_size_multiple=1,
                                                   seed=SEED + 4, num_workers=0).next_epoch_itr(shuffle=True)
                sample = next(itr)
            self.model.set_subnet(subnets[rng.randrange(len(subnets))])
            loss, _, _ = criterion(self.model, sample)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tokens += int(sample["ntokens"])
        return {"train_tokens_per_s": tokens / (time.perf_counter() - t0)}


def name_of(setting: tuple[int, int, int, int]) -> str:
    return ":".join(str(x) for x in setting)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="a trained supernet checkpoint")
    ap.add_argument("--data", type=Path, required=True, help="its data-bin (train and valid splits)")
    ap.add_argument("--work", type=Path, required=True, help="output folder (results.jsonl)")
    ap.add_argument("--reference", default="2000:1000:5:4096", help="the full setting (defaults' memory, "
                    "population and iterations; the batch is compared separately by --tau-tokens)")
    ap.add_argument("--settings", default="500:500:3:4096,200:200:3:4096,200:200:3:8192,200:200:2:4096,"
                    "100:100:3:4096", help="comma-separated settings compared with the reference")
    ap.add_argument("--train", default="2000:1000:5:4096,200:200:3:8192,uniform",
                    help="settings whose shrunk set is trained further ('uniform': the unshrunk space)")
    ap.add_argument("--tau-tokens", default="2048,4096,8192,16384", help="batches ranked against the judge")
    ap.add_argument("--tau-subnets", type=int, default=40)
    ap.add_argument("--judge-subnets", type=int, default=30)
    ap.add_argument("--train-updates", type=int, default=150)
    ap.add_argument("--train-lr", type=float, default=5e-4)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--batch-tokens", type=int, default=4096,
                    help="DSS's forward chunks (the task's default: --max-tokens-valid); 0: one batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recipe-updates", type=int, default=50000)
    ap.add_argument("--recipe-times", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    for path, what in ((args.checkpoint, "--checkpoint"), (args.data / "dict.en.txt", "--data")):
        if not path.exists():
            sys.exit(f"dss_settings: error: {what}: {path} does not exist")
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.work / "results.jsonl"
    done = read_results(out)

    reference = parse_setting(args.reference)
    settings = [reference] + [parse_setting(s) for s in args.settings.split(",") if s.strip()]
    train = [t.strip() for t in args.train.split(",") if t.strip()]
    bench = Bench(args)
    from fairseq_nas.space import Subnet
    print(f"judge: the whole valid split, {bench.judge.tokens} target tokens; space {bench.space.name}", flush=True)

    for setting in settings[1:] + settings[:1]:  # the reference, the longest, last
        key = f"dss {name_of(setting)}"
        if key in done:
            continue
        bench.reset_weights()
        r = bench.run_dss(setting)
        sampler = r.pop("sampler")
        row = {"key": key, "setting": name_of(setting), **r, "judge": bench.judge_set(sampler.subset, sampler.best),
               "set": [s.to_json() for s in sampler.subset], "best": sampler.best.to_json()}
        append(out, row)
        done[key] = row
        print(f"{key}: {r['evaluated']} scored on {r['valid_tokens']} tokens in {r['seconds']:.0f} s; "
              f"judged mean {row['judge']['mean']:.3f}, best {row['judge']['set_best']:.3f}", flush=True)

    bench.reset_weights()
    for tokens in [int(t) for t in args.tau_tokens.split(",") if t.strip()]:
        key = f"tau {tokens}"
        if key not in done:
            done[key] = {"key": key, "tokens": tokens, "tau": bench.tau_of_batch(tokens)}
            append(out, done[key])
            print(f"{key}: {done[key]['tau']:.3f}", flush=True)

    key = "judge uniform"  # the unshrunk space at the checkpoint's weights: what DSS improves on
    if key not in done:
        rng = random.Random(SEED + 11)  # the subnets of the tau rows (their judge losses are cached)
        uniform = [bench.space.sample(rng) for _ in range(args.tau_subnets)]
        done[key] = {"key": key, "judge": bench.judge_set(uniform, None)}
        append(out, done[key])

    for name in train:
        key = f"train {name}"
        if key in done:
            continue
        bench.reset_weights()
        if name == "uniform":
            rng = random.Random(SEED + 9)
            subnets, best = [bench.space.sample(rng) for _ in range(2000)], None
        else:
            if f"dss {name}" not in done:
                sys.exit(f"dss_settings: error: --train {name}: not among the reference and --settings")
            row = done[f"dss {name}"]
            subnets = [Subnet.from_json(s, "results.jsonl") for s in row["set"]]
            best = Subnet.from_json(row["best"], "results.jsonl")
        t = bench.train_on(subnets, args.train_updates)
        done[key] = {"key": key, "setting": name, "updates": args.train_updates, **t,
                     "judge": bench.judge_set(subnets, best, trained=True)}
        append(out, done[key])
        print(f"{key}: judged mean {done[key]['judge']['mean']:.3f} after {args.train_updates} updates", flush=True)

    summarize(done, reference, settings, train, args)


def summarize(done: dict, reference, settings, train, args) -> None:
    ref = done[f"dss {name_of(reference)}"]
    forward_tps = statistics.median(done[f"dss {name_of(s)}"]["evaluated"] * done[f"dss {name_of(s)}"]["valid_tokens"]
                                    / done[f"dss {name_of(s)}"]["seconds"] for s in settings)
    rates = [done[f"train {t}"]["train_tokens_per_s"] for t in train if f"train {t}" in done]
    train_tps = statistics.median(rates) if rates else None
    taus = {done[k]["tokens"]: done[k]["tau"] for k in done if k.startswith("tau ")}
    print(f"\nscoring {forward_tps:,.0f} tokens/s (forward)" +
          (f", training {train_tps:,.0f} tokens/s (forward-backward + Adam)" if train_tps else ""))
    print(f"\n{'setting':>20}{'scored':>8}{'fwd Mtok':>10}{'s':>7}{'set mean':>10}{'d ref':>8}"
          f"{'set best':>10}{'d ref':>8}{'share':>8}")
    for s in settings:
        r = done[f"dss {name_of(s)}"]
        j, jr = r["judge"], ref["judge"]
        share = "-"
        if train_tps:
            remember, population, iterations, tokens = s
            scored = r["evaluated"]
            train_seconds = args.recipe_updates * args.max_tokens / train_tps
            share = f"{args.recipe_times * scored * tokens / forward_tps / train_seconds:.1%}"
        print(f"{name_of(s):>20}{r['evaluated']:>8}{r['evaluated'] * r['valid_tokens'] / 1e6:>10.2f}"
              f"{r['seconds']:>7.0f}{j['mean']:>10.3f}{j['mean'] - jr['mean']:>+8.3f}{j['set_best']:>10.3f}"
              f"{j['set_best'] - jr['set_best']:>+8.3f}{share:>8}")
    if "judge uniform" in done:
        j = done["judge uniform"]["judge"]
        d = j["mean"] - ref["judge"]["mean"]
        print(f"{'uniform (no DSS)':>20}{'-':>8}{'-':>10}{'-':>7}{j['mean']:>10.3f}{d:>+8.3f}"
              f"{'-':>10}{'-':>8}{'-':>8}   (best of {j['judged']} drawn: {j['best_of_drawn']:.3f})")
    if taus:
        print("\nKendall tau, DSS batch vs judge (40 uniform subnets): " +
              ", ".join(f"{t} tokens {v:.3f}" for t, v in sorted(taus.items())))
    rows = [(t, done[f"train {t}"]) for t in train if f"train {t}" in done]
    if rows:
        print(f"\nafter {rows[0][1]['updates']} more updates on the set:")
        base = dict(rows).get(name_of(reference))
        for t, r in rows:
            j = r["judge"]
            d = f"{j['mean'] - base['judge']['mean']:+.3f}" if base else "-"
            best = f"{j['set_best']:.3f}" if j["set_best"] is not None else "-"
            print(f"{t:>20}  set mean {j['mean']:.3f} ({d} vs reference), set best {best}, "
                  f"best of drawn {j['best_of_drawn']:.3f}")


if __name__ == "__main__":
    main()
