"""Training throughput and peak memory: supernet (fixed all-self-attention subnet) against
fairseq's own `transformer` with the same dims, on the same batches, alternating in one run.

    python benchmarks/supernet_overhead.py [--data DATA_BIN] [--rounds 5] [--steps 8]

Prints tokens/s per round, the medians and the ratio supernet / transformer (target >= 0.90).
Peak memory: CUDA max allocated on GPU; on CPU the peak RSS of a child process per model.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import build_from_args, ensure_demo_data, median  # noqa: E402

# The subnet: HAT IWSLT space's 512-dim attention model (qkv 512 = embed, so it is a plain Transformer).
DIMS = dict(embed=512, ffn=1024, heads=4, enc_layers=6, dec_layers=6)


KINDS = ("transformer", "supernet_tight", "supernet")


def subnet_json(d=DIMS) -> str:
    lay = dict(operator="self_attention", ffn_dim=d["ffn"], heads=d["heads"], activation="relu", rpr_len=0,
               norm="post")
    return json.dumps({"encoder": {"embed_dim": d["embed"], "layers": [lay] * d["enc_layers"]},
                       "decoder": {"embed_dim": d["embed"],
                                   "layers": [dict(lay, enc_attn_layers=1)] * d["dec_layers"]}})


def model_args(kind: str, data: str, subnet_file: str, max_tokens: int, device: str) -> list[str]:
    common = [data, "--max-tokens", str(max_tokens), "--criterion", "label_smoothed_cross_entropy",
              "--label-smoothing", "0.1", "--dropout", "0.1", "--attention-dropout", "0.1",
              "--optimizer", "adam", "--lr", "1e-4", "--seed", "1"] + (["--cpu"] if device == "cpu" else [])
    if kind == "transformer":
        d = DIMS
        return common + ["--arch", "transformer", "--share-decoder-input-output-embed",
                         "--encoder-embed-dim", str(d["embed"]), "--decoder-embed-dim", str(d["embed"]),
                         "--encoder-ffn-embed-dim", str(d["ffn"]), "--decoder-ffn-embed-dim", str(d["ffn"]),
                         "--encoder-attention-heads", str(d["heads"]), "--decoder-attention-heads",
                         str(d["heads"]), "--encoder-layers", str(d["enc_layers"]),
                         "--decoder-layers", str(d["dec_layers"])]
    supernet = common + ["--user-dir", str(Path(__file__).resolve().parents[1] / "fairseq_nas"), "--task",
                         "supernet_translation", "--arch", "supernet_hat_iwslt14", "--subnet", subnet_file]
    if kind == "supernet_tight":
        # The space's maxima equal the subnet: what the elastic code alone costs.
        d = DIMS
        for stack in ("encoder", "decoder"):
            supernet += [f"--{stack}-embed-choices", str(d["embed"]), f"--{stack}-ffn-choices", str(d["ffn"]),
                         f"--{stack}-heads-choices", str(d["heads"])]
        supernet += ["--decoder-layers-choices", str(d["dec_layers"])]
    return supernet


class Runner:
    def __init__(self, argv: list[str], device: str):
        self.cfg, self.task, self.model, self.criterion = build_from_args(argv)
        self.device = torch.device(device)
        self.model.to(self.device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=1e-4)
        self.n_params = sum(p.numel() for p in params)

    def batches(self, n: int):
        self.task.load_dataset("train")
        itr = self.task.get_batch_iterator(
            self.task.dataset("train"), max_tokens=self.cfg.dataset.max_tokens, seed=1,
            max_positions=(1024, 1024), required_batch_size_multiple=1).next_epoch_itr(shuffle=True)
        out = []
        for sample in itr:
            out.append(sample)
            if len(out) == n:
                break
        return out

    def step(self, sample) -> int:
        sample = {k: (v.to(self.device) if torch.is_tensor(v) else
                      {kk: vv.to(self.device) for kk, vv in v.items()} if isinstance(v, dict) else v)
                  for k, v in sample.items()}
        self.optimizer.zero_grad(set_to_none=True)
        loss, _, _ = self.criterion(self.model, sample)
        loss.backward()
        self.optimizer.step()
        return int(sample["ntokens"])

    def timed(self, batches) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0, tokens = time.perf_counter(), 0
        for s in batches:
            tokens += self.step(s)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return tokens / (time.perf_counter() - t0)


def peak_memory_child(kind: str, argv: list[str], steps: int, device: str) -> float:
    """Peak memory (MiB) of `steps` training steps of one model in a fresh process."""
    code = (
        "import sys, json, resource, torch; sys.path.insert(0, %r);"
        "from supernet_overhead import Runner;"
        "r = Runner(json.loads(%r), %r); bs = r.batches(%d);"
        "[r.step(b) for b in bs];"
        "print(json.dumps({'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
        "'cuda': torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0}))"
    ) % (str(Path(__file__).resolve().parent), json.dumps(argv), device, steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    return row["cuda"] if device == "cuda" else row["rss"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a fairseq data-bin (default: the generated demo corpus)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="training steps per model per round")
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-model peak memory runs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="fsnas-bench-"))
    data = args.data or str(ensure_demo_data(tmp / "demo"))
    subnet_file = tmp / "subnet.json"
    subnet_file.write_text(subnet_json())

    argvs = {k: model_args(k, data, str(subnet_file), args.max_tokens, args.device)
             for k in KINDS}
    runners = {k: Runner(a, args.device) for k, a in argvs.items()}
    for k, r in runners.items():
        print(f"{k:12s} params in the forward: "
              f"{r.n_params if k == 'transformer' else 'subnet of a supernet with ' + str(r.n_params)}")
    batches = runners["transformer"].batches(args.steps)
    for r in runners.values():  # warm-up
        r.timed(batches[:2])
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(args.rounds):
        order = KINDS if i % 2 == 0 else KINDS[::-1]
        for k in order:
            rates[k].append(runners[k].timed(batches))
        print(f"round {i + 1}: " + "   ".join(f"{k} {rates[k][-1]:8.0f} tok/s" for k in KINDS))
    med = {k: median(v) for k, v in rates.items()}
    print(f"\ndevice {args.device}, threads {torch.get_num_threads()}, {args.steps} steps x {args.rounds} rounds, "
          f"max_tokens {args.max_tokens}")
    print("median tokens/s: " + ", ".join(f"{k} {med[k]:.0f}" for k in KINDS))
    print(f"throughput ratio supernet (HAT space maxima) / transformer: "
          f"{med['supernet'] / med['transformer']:.3f}  (target >= 0.90)")
    print(f"throughput ratio supernet (maxima = subnet) / transformer: "
          f"{med['supernet_tight'] / med['transformer']:.3f}")
    if not args.no_memory:
        mem = {k: peak_memory_child(k, argvs[k], 3, args.device) for k in argvs}
        what = "CUDA max allocated" if args.device == "cuda" else "peak RSS of a fresh process"
        print(f"peak memory ({what}): " + ", ".join(f"{k} {mem[k]:.0f} MiB" for k in KINDS)
              + f"; ratio supernet/transformer {mem['supernet'] / mem['transformer']:.2f}")



if __name__ == "__main__":
    main()
