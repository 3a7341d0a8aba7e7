"""Speed of the elastic convolutions against fairseq's pure-PyTorch modules at the same shapes.

    python benchmarks/conv_speed.py [--level module|block] [--time 30] [--batch 64] [--channels 320]
        [--heads 4] [--kernels 3 7 15 31] [--threads 1 2] [--sides encoder decoder] [--rounds 15] [--calls 5]

Ours: `ElasticLightweightConv` and `ElasticDynamicConv` (full sequences; channel c in head
c mod H), non-causal (encoder, K // 2 padding each side) and causal (decoder, K - 1 on the
left). Baselines: fairseq's `LightweightConv1dTBC` and `DynamicConv1dTBC` (their default
full-sequence path, the band matrix, at T <= 512; their CUDA kernels are not used), with the
same weights (channel order permuted) and checked to give the same output before timing.
Modes: `fwd` = eval under no_grad; `train` = train mode, forward and backward (input and
parameter gradients) against a fixed random output gradient.

Each timing is `--calls` calls; after `--warmup` untimed rounds, every round times ours and
fairseq's back to back, alternating which goes first, so load from other processes hits both
alike. Prints per-call medians over `--rounds` and ratio = fairseq / ours (target >= 1.0),
and the load average before and after: on a machine whose cores are busy with other work,
runs with more threads than free cores measure mostly the scheduler.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import median  # noqa: E402


def _fairseq_order(c: int, heads: int) -> torch.Tensor:
    """Our channel at fairseq's position k (fairseq's head j owns a block of C / heads channels)."""
    return torch.arange(c).view(c // heads, heads).t().reshape(-1)


def build_pair(kind: str, c: int, heads: int, k: int, causal: bool, weight_dropout: float):
    from fairseq.modules import DynamicConv1dTBC, LightweightConv1dTBC

    from fairseq_nas.modules import ElasticDynamicConv, ElasticLightweightConv

    pad = k - 1 if causal else k // 2
    if kind == "lightweight":
        ours = ElasticLightweightConv(heads, k, causal, weight_dropout)
        ref = LightweightConv1dTBC(c, kernel_size=k, padding_l=pad, num_heads=heads, weight_softmax=True,
                                   weight_dropout=weight_dropout)
        ref.weight.data.copy_(ours.weight.detach().unsqueeze(1))
        return (lambda x: ours(x, heads)), ref, ours
    ours = ElasticDynamicConv(c, heads, k, causal, weight_dropout)
    ref = DynamicConv1dTBC(c, kernel_size=k, padding_l=pad, num_heads=heads, weight_softmax=True,
                           weight_dropout=weight_dropout)
    # fairseq's kernel predictor reads its input in its own channel order
    ref.weight_linear.weight.data.copy_(ours.weight_linear.weight.detach()[:, _fairseq_order(c, heads)])
    return (lambda x: ours(x, heads)), ref, ours


class FairseqConvBlock(torch.nn.Module):
    """Our `ElasticConvBlock` built from fairseq's parts: GLU input projection (nn.Linear), fairseq's
    convolution, output projection. With the projections' rows / columns permuted into fairseq's
    channel order it computes the same function as ours on the same input."""

    def __init__(self, ours, conv: torch.nn.Module, c: int, heads: int):
        super().__init__()
        order = _fairseq_order(c, heads)
        self.value, self.gate, self.out = (torch.nn.Linear(c, c) for _ in range(3))
        for mine, theirs in ((ours.value, self.value), (ours.gate, self.gate)):
            theirs.weight.data.copy_(mine.weight.detach()[:c, :c][order])
            theirs.bias.data.copy_(mine.bias.detach()[:c][order])
        self.out.weight.data.copy_(ours.out.weight.detach()[:c, :c][:, order])
        self.out.bias.data.copy_(ours.out.bias.detach()[:c])
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(self.value(x) * torch.sigmoid(self.gate(x))))


def build_block_pair(kind: str, c: int, heads: int, k: int, causal: bool, weight_dropout: float):
    from fairseq_nas.modules import ElasticConvBlock

    _, ref_conv, ours_conv = build_pair(kind, c, heads, k, causal, weight_dropout)
    block = ElasticConvBlock(c, heads, k, causal, kind == "dynamic", weight_dropout)
    block.conv.load_state_dict(ours_conv.state_dict())
    return (lambda x: block(x, heads)), FairseqConvBlock(block, ref_conv, c, heads), block


def check_same(ours_call, ref, x: torch.Tensor, heads: int, level: str) -> float:
    with torch.no_grad():
        if level == "block":  # the fairseq block permutes inside its projections
            return (ours_call(x) - ref(x)).abs().max().item()
        order = _fairseq_order(x.size(-1), heads)
        expected = torch.empty_like(x)
        expected[..., order] = ref(x[..., order])
        return (ours_call(x) - expected).abs().max().item()


def make_step(call, params: list[torch.nn.Parameter], x: torch.Tensor, grad: torch.Tensor, mode: str):
    if mode == "fwd":
        def step():
            with torch.no_grad():
                call(x)
    else:
        def step():
            for p in params:
                p.grad = None
            xx = x.detach().requires_grad_()
            call(xx).backward(grad)
    return step


def timed(step, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - t0) / calls * 1e3


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", type=int, default=30, help="sequence length T")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels", type=int, default=320)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kernels", type=int, nargs="+", default=[3, 7, 15, 31])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ops", nargs="+", default=["lightweight", "dynamic"], choices=["lightweight", "dynamic"])
    ap.add_argument("--modes", nargs="+", default=["fwd", "train"], choices=["fwd", "train"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds before the timed ones")
    ap.add_argument("--calls", type=int, default=5, help="calls per timing")
    ap.add_argument("--sides", nargs="+", default=["encoder", "decoder"], choices=["encoder", "decoder"],
                    help="encoder: non-causal; decoder: causal")
    ap.add_argument("--level", choices=["module", "block"], default="module",
                    help="module: the convolutions alone; block: the GLU + conv + output projection block "
                         "(ElasticConvBlock) against the same block of nn.Linear and fairseq's conv")
    ap.add_argument("--weight-dropout", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t, b, c, h = args.time, args.batch, args.channels, args.heads
    print(f"{args.level} level: T={t} B={b} C={c} heads={h}, weight dropout {args.weight_dropout}; "
          f"torch {torch.__version__}, "
          f"oneDNN {torch.backends.mkldnn.is_available()}; {args.rounds} rounds x {args.calls} calls, "
          f"medians per call")
    print(f"load average at start {loadavg()}")
    header = (f"{'threads':>7} {'side':>7} {'op':>11} {'K':>3} {'mode':>5} {'ours ms':>9} {'fairseq ms':>10} "
              f"{'ratio':>6}")
    print(header)
    print("-" * len(header))
    rows = []
    for threads, side, op, k in itertools.product(args.threads, args.sides, args.ops, args.kernels):
        torch.set_num_threads(threads)
        torch.manual_seed(args.seed)
        build = build_block_pair if args.level == "block" else build_pair
        ours_call, ref, ours = build(op, c, h, k, side == "decoder", args.weight_dropout)
        x, grad = torch.randn(t, b, c), torch.randn(t, b, c)
        ours.eval()
        ref.eval()
        err = check_same(ours_call, ref, x, h, args.level)
        if err > 1e-4:
            raise SystemExit(f"{op} {side} K={k}: ours and fairseq differ by {err:.2e}")
        for mode in args.modes:
            ours.train(mode == "train")
            ref.train(mode == "train")
            steps = {"ours": make_step(ours_call, list(ours.parameters()), x, grad, mode),
                     "fairseq": make_step(ref, list(ref.parameters()), x, grad, mode)}
            ms: dict[str, list[float]] = {"ours": [], "fairseq": []}
            for r in range(args.warmup + args.rounds):
                # alternate who goes first, so drift and load fall on both alike
                for name in (("ours", "fairseq") if r % 2 == 0 else ("fairseq", "ours")):
                    v = timed(steps[name], args.calls)
                    if r >= args.warmup:
                        ms[name].append(v)
            mo, mf = median(ms["ours"]), median(ms["fairseq"])
            rows.append((threads, side, op, k, mode, mo, mf, mf / mo))
            print(f"{threads:>7} {side:>7} {op:>11} {k:>3} {mode:>5} {mo:>9.2f} {mf:>10.2f} {mf / mo:>6.2f}",
                  flush=True)
    print(f"load average at end {loadavg()}")
    below = [r for r in rows if r[-1] < 1.0]
    worst = min(rows, key=lambda r: r[-1])
    print(f"{len(rows) - len(below)} of {len(rows)} ratios >= 1.0 (target: all); lowest {worst[-1]:.2f} "
          f"({worst[2]} K={worst[3]} {worst[1]} {worst[4]}, {worst[0]} threads)")


if __name__ == "__main__":
    main()
