"""Subnet divergence (ShrinkNAS section 3.2 and Fig. 4): how far apart the normalised outputs of
subnets drawn from one sample space lie, for one fixed input.

Definition. Fix a batch; let t run over its T non-padding target positions. For a subnet a
with decoder output logits z_a(t) (a vector over the target vocabulary, teacher forcing),

    u_a(t) = c_a(t) / ||c_a(t)||_2,   c_a(t) = z_a(t) - mean_v z_a(t)[v]

is its normalised output: centred (softmax ignores a constant shift) and L2-normalised
(scale-free), so a unit vector. For K subnets a_1..a_K with centroid m(t) = mean_k u_k(t),

    divergence(a) = sqrt( mean_t || u_a(t) - m(t) ||_2^2 )        (0 <= divergence <= 2)

the root-mean-square distance of the subnet's normalised output from the subnets' mean
output: one value per subnet, whose distribution is the histogram of Fig. 4. Its mean
square is the total variance of the outputs around their mean (the paper's "variance of
the model output with the same input"), and the mean squared pairwise distance
mean_{a != b} mean_t ||u_a(t) - u_b(t)||^2 equals 2 K / (K - 1) times that variance.

A proxy, not the paper's exact quantity: section 3.2 takes the variance of the normalised
output x^ of the last Transformer layer, whose width is the subnet's embed dim, so it is
not comparable between subnets of different widths. The logits live in one space for every
subnet, so the variance is measured there. `dss_step` draws the subnets of a finite sample
space without replacement.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

import torch

from fairseq_nas.sampling.validator import Batch, to_device
from fairseq_nas.space import Subnet

# Keep every subnet's normalised output in memory (one pass) below this many bytes, else
# run the subnets twice (first for the centroid, then for the distances).
ONE_PASS_BYTES = 256 * 2**20


@torch.no_grad()
def normalized_outputs(model, subnet: Subnet, batches: Sequence[Batch], pad: int) -> torch.Tensor:
    """u_a: [T, V] float32, the subnet's centred, L2-normalised logits at non-pad target positions."""
    model.eval()
    model.set_subnet(subnet)
    rows = []
    for b in batches:
        logits = model(**b["net_input"])[0].float()
        z = logits[b["target"].ne(pad)]
        z = z - z.mean(dim=-1, keepdim=True)
        rows.append(z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    return torch.cat(rows, dim=0)


@torch.no_grad()
def subnet_divergence(model, subnets: Sequence[Subnet], batches: Sequence[Batch], pad: int) -> list[float]:
    """divergence(a) for every subnet in `subnets` (see the module docstring), in order. The
    caller restores the model's mode and active subnet afterwards."""
    if not subnets:
        return []
    device = next(model.parameters()).device
    batches = [to_device(b, device) for b in batches]
    first = normalized_outputs(model, subnets[0], batches, pad)
    if first.numel() * 4 * len(subnets) <= ONE_PASS_BYTES:
        outs = [first] + [normalized_outputs(model, s, batches, pad) for s in subnets[1:]]
        centroid = torch.stack(outs).mean(dim=0)
        return [math.sqrt(float(((u - centroid) ** 2).sum(dim=-1).mean())) for u in outs]
    total = first.clone()
    for s in subnets[1:]:
        total += normalized_outputs(model, s, batches, pad)
    centroid = total / len(subnets)
    values = []
    for s in subnets:
        u = normalized_outputs(model, s, batches, pad)
        values.append(math.sqrt(float(((u - centroid) ** 2).sum(dim=-1).mean())))
    return values


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty sequence."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def divergence_stats(values: Sequence[float]) -> dict[str, float]:
    """Summary of per-subnet divergences: n, mean, std, p10, median, p90, variance (mean square)
    and the mean squared pairwise distance 2K/(K-1) * variance."""
    if not values:
        return {"n": 0}
    k = len(values)
    variance = sum(v * v for v in values) / k
    return {"n": k, "mean": statistics.fmean(values), "std": statistics.pstdev(values),
            "p10": quantile(values, 0.1), "median": quantile(values, 0.5), "p90": quantile(values, 0.9),
            "variance": variance, "pairwise_sq": 2 * k / (k - 1) * variance if k > 1 else 0.0}
