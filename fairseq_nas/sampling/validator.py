"""The DSS validator: a fixed validation batch, one forward pass per subnet, loss + penalties.

Works on any fairseq language-pair dataset and any model with `set_subnet`; no fairseq
import at module level (only torch).
"""
from __future__ import annotations

import importlib
import math
import random
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from fairseq_nas.errors import FairseqNasError
from fairseq_nas.space import Subnet, parse_space

Batch = dict[str, Any]
PenaltyFn = Callable[[Subnet], float]


def _take_up_to(dataset, order, tokens: int) -> list[int]:
    """Sentences of `order` while their token counts (max of source and target length, fairseq's
    `num_tokens`) add up to at most about `tokens` (at least one sentence)."""
    chosen, total = [], 0
    for i in order:
        n = int(dataset.num_tokens(i))
        if chosen and total + n > tokens:
            break
        chosen.append(i)
        total += n
    return chosen


def sample_sentences(dataset, tokens: int, rng: random.Random) -> list[int]:
    """Indices of randomly drawn sentences adding up to about `tokens` tokens."""
    order = list(range(len(dataset)))
    rng.shuffle(order)
    return _take_up_to(dataset, order, tokens)


def first_sentences(dataset, tokens: int) -> list[int]:
    """The first sentences of the dataset, up to about `tokens` tokens (a fixed input)."""
    return _take_up_to(dataset, range(len(dataset)), tokens)


def make_batches(dataset, indices: Sequence[int], batch_tokens: Optional[int] = None) -> list[Batch]:
    """Collate `indices` (sorted by length) into batches of at most `batch_tokens` padded tokens
    each (None or 0: one batch). Splitting only bounds memory: the summed loss is the same."""
    idx = sorted(indices, key=lambda i: (int(dataset.num_tokens(i)), i))
    groups: list[list[int]] = []
    cur: list[int] = []
    for i in idx:  # ascending lengths: sentence i is the longest of its batch so far
        if cur and batch_tokens and int(dataset.num_tokens(i)) * (len(cur) + 1) > batch_tokens:
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    return [dataset.collater([dataset[i] for i in g]) for g in groups]


def to_device(batch: Batch, device: torch.device) -> Batch:
    def move(x):
        if torch.is_tensor(x):
            return x.to(device)
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    return move(batch)


def batch_nll(model, batch: Batch, pad: int) -> tuple[float, int]:
    """(summed token NLL in nats, target tokens) of the model's active subnet on one batch."""
    logits = model(**batch["net_input"])[0]
    target = batch["target"]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), target.reshape(-1), ignore_index=pad,
                          reduction="sum")
    return float(nll.detach()), int(target.ne(pad).sum())


class SubnetScorer:
    """Validation loss of subnets on fixed batches: per-token NLL in bits (base 2, as fairseq's
    nll_loss), one forward pass per subnet, eval mode and no_grad. The caller restores the
    model's mode and subnet afterwards (see `dss.dss_step`)."""

    def __init__(self, model, batches: Sequence[Batch], pad: int):
        self.model = model
        self.pad = pad
        device = next(model.parameters()).device
        self.batches = [to_device(b, device) for b in batches]
        self.tokens = sum(int(b["target"].ne(pad).sum()) for b in self.batches)

    @torch.no_grad()
    def loss(self, subnet: Subnet) -> float:
        self.model.eval()
        self.model.set_subnet(subnet)
        total = 0.0
        for b in self.batches:
            total += batch_nll(self.model, b, self.pad)[0]
        return total / max(1, self.tokens) / math.log(2)


def subnet_params(supernet, subnet: Subnet, space_yaml: Optional[str] = None) -> int:
    """Parameters of the subnet's standalone (exported) model, embeddings included: exactly
    `latency.costs.count_params` with the supernet's vocabularies and embedding sharing
    (about 0.015 ms a subnet, against about 70 ms for building the model to count it)."""
    from fairseq_nas.latency.costs import count_params

    space = supernet.space if space_yaml is None else parse_space(space_yaml, source="subnet_params")
    cfg = supernet.cfg
    return count_params(subnet, space, len(supernet.encoder.dictionary), len(supernet.decoder.dictionary),
                        share_all_embeddings=bool(getattr(cfg, "share_all_embeddings", False)),
                        untie_decoder_output=bool(getattr(cfg, "untie_decoder_output", False)))


class ParamsPenalty:
    """`weight * (params / max_params - 1)` for subnets over the limit, 0 otherwise (cached)."""

    def __init__(self, supernet, max_params: int, weight: float):
        self.supernet, self.max_params, self.weight = supernet, int(max_params), float(weight)
        self.space_yaml = supernet.space.to_yaml()
        self.cache: dict[str, int] = {}

    def params(self, subnet: Subnet) -> int:
        k = subnet.key()
        if k not in self.cache:
            self.cache[k] = subnet_params(self.supernet, subnet, self.space_yaml)
        return self.cache[k]

    def __call__(self, subnet: Subnet) -> float:
        return self.weight * max(0.0, self.params(subnet) / self.max_params - 1.0)


def load_penalty_fn(spec: str, model) -> PenaltyFn:
    """`--dss-penalty-fn MODULE:FUNC`: FUNC(subnet, model) -> float is added to each subnet's
    score (the hook for, e.g., a latency model). Returns a one-argument callable."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise FairseqNasError(f"--dss-penalty-fn: expected MODULE:FUNCTION, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise FairseqNasError(f"--dss-penalty-fn: cannot load {spec!r} ({e})") from None
    return lambda subnet: float(fn(subnet, model))
