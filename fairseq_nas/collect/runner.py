"""`fairseq-nas collect`: inherited-weight validation scores of sampled subnets, one JSON row each.

Two strategies:

* ``random``: the ``n`` distinct subnets drawn from ``random.Random(seed)`` (the same list for a
  given space, ``n`` and seed), optionally split into shards (subnet k belongs to shard k mod N);
* ``iterative`` (BRP-NAS 4.2, AceNAS 3.2): a pool of ``pool_size`` distinct sampled subnets; the
  budget ``n`` is spent over ``rounds`` rounds by :func:`fairseq_nas.ranking.select_iteratively`
  (half the ranker's predicted best, half random among the predicted top part), label = -valid_loss.

Resumable: subnets that already have a row are not evaluated again (their stored labels feed the
iterative selection, which is deterministic, so a resumed run retraces the same choices).
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Union

import numpy as np

from fairseq_nas.collect.rows import RowWriter, read_rows, space_sidecar
from fairseq_nas.errors import FairseqNasError, SpaceError

logger = logging.getLogger(__name__)

#: row fields that must agree between a resumed run and the rows already in the file
RESUME_KEYS = ("subset", "n_sentences", "seed", "strategy")


class Evaluator(Protocol):
    """What collection needs from an evaluator (``SubnetEvaluator`` or a test double)."""

    n_sentences: int

    def loss(self, subnet: Any) -> dict[str, Any]: ...

    def params(self, subnet: Any) -> int: ...

    def flops(self, subnet: Any) -> Optional[int]: ...

    def bleu(self, subnet: Any, beam: int = 1) -> float: ...


@dataclass
class CollectSummary:
    out: Path
    n_target: int
    n_new: int = 0
    n_resumed: int = 0
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"collect: {len(self.rows)}/{self.n_target} subnets in {self.out} "
                 f"({self.n_new} evaluated now, {self.n_resumed} from an earlier run) in {self.seconds:.1f} s"]
        losses = np.array([r["valid_loss"] for r in self.rows], dtype=float)
        if losses.size:
            best = self.rows[int(np.argmin(losses))]
            lines.append(f"  valid_loss min {losses.min():.4f}  median {np.median(losses):.4f}  "
                         f"max {losses.max():.4f} (base 2, per target token)")
            params = np.array([r["params"] for r in self.rows], dtype=float)
            lines.append(f"  params {params.min():,.0f} .. {params.max():,.0f}")
            if all("bleu" in r for r in self.rows):
                bleu = np.array([r["bleu"] for r in self.rows], dtype=float)
                lines.append(f"  bleu {bleu.min():.2f} .. {bleu.max():.2f}")
            lines.append(f"  best: index {best['index']} valid_loss {best['valid_loss']:.4f} "
                         f"params {best['params']:,}")
        return "\n".join(lines)


def sample_distinct(space: Any, n: int, seed: int, what: str = "-n") -> list:
    """``n`` distinct subnets drawn in order from ``random.Random(seed)``; an error if the space is too small."""
    rng = random.Random(seed)
    out, seen = [], set()
    tries, max_tries = 0, 50 * n + 1000
    while len(out) < n:
        tries += 1
        if tries > max_tries:
            raise FairseqNasError(f"{what} {n}: found only {len(out)} distinct subnets of space {space.name} in "
                                  f"{max_tries} draws; ask for fewer")
        s = space.sample(rng)
        k = s.key()
        if k not in seen:
            seen.add(k)
            out.append(s)
    return out


def check_in_supernet(subnets: list, supernet_space: Any, checkpoint: str, space_name: str) -> None:
    """Every subnet must fit the checkpoint's space (the given space is that space or a subspace of it)."""
    for k, s in enumerate(subnets):
        try:
            supernet_space.validate_subnet(s, source=f"subnet {k} of space {space_name}")
        except SpaceError as e:
            raise FairseqNasError(f"{e} (not in the space of the supernet {checkpoint}, "
                                  f"{supernet_space.name}: give that space or a subspace of it)") from None


def _existing(out: Path, space: Any, expect: dict[str, Any]) -> dict[str, dict]:
    """Rows already in ``out`` by subnet key, after checking they come from the same settings."""
    from fairseq_nas.space import Subnet

    rows, truncated = read_rows(out)
    if truncated:
        logger.warning("%s: dropping a truncated last line (an interrupted run); it is evaluated again", out)
    done: dict[str, dict] = {}
    for no, row in rows:
        for key, want in expect.items():
            if key in row and row[key] != want:
                raise FairseqNasError(f"{out}:{no}: {key}: the rows here were collected with {key}={row[key]!r}, "
                                      f"this run uses {want!r}; use another --out or the same options")
        try:
            subnet = Subnet.from_dict(row.get("subnet"), source=f"{out}:{no}: subnet")
            space.validate_subnet(subnet, source=f"{out}:{no}: subnet")
        except SpaceError as e:
            raise FairseqNasError(f"{e} (rows from another space? use another --out)") from None
        if not isinstance(row.get("valid_loss"), (int, float)):
            raise FairseqNasError(f"{out}:{no}: valid_loss: missing or not a number")
        done.setdefault(subnet.key(), row)
    return done


def _write_sidecar(out: Path, space: Any) -> None:
    from fairseq_nas.space import parse_space

    side = space_sidecar(out)
    if side.is_file():
        try:
            old = parse_space(side.read_text(encoding="utf-8"), str(side))
        except SpaceError as e:
            raise FairseqNasError(str(e)) from None
        if old != space:
            raise FairseqNasError(f"{side}: the rows of {out} were collected in another space ({old.name}); "
                                  "use another --out or the same --space")
        return
    space.save(side)


def collect(
    evaluator: Union[Evaluator, Callable[[], Evaluator]],
    space: Any,
    n: int,
    out: Path,
    seed: int = 0,
    subset: str = "valid",
    bleu: bool = False,
    beam: int = 1,
    shard: tuple[int, int] = (0, 1),
    strategy: str = "random",
    rounds: int = 5,
    alpha: float = 0.5,
    pool_size: Optional[int] = None,
    supernet_space: Any = None,
    checkpoint: str = "",
    progress: bool = True,
) -> CollectSummary:
    """Evaluate subnets and append one row per subnet to ``out``; see the module docstring.

    ``evaluator``: an evaluator, or a function that builds one; it is called after the cheap checks
    (options, membership of every candidate in ``supernet_space``), so mistakes fail fast.
    """
    from fairseq_nas.progress import Progress
    from fairseq_nas.space import encode_many

    out = Path(out)
    if n < 1:
        raise FairseqNasError(f"-n: expected a positive number of subnets, got {n}")
    if strategy not in ("random", "iterative"):
        raise FairseqNasError(f"--strategy: expected random or iterative, got {strategy!r}")
    if strategy == "iterative" and shard[1] > 1:
        raise FairseqNasError("--shard: the iterative strategy is sequential (each round depends on the "
                              "previous ones); run it without --shard")
    t0 = time.perf_counter()
    if strategy == "random":
        candidates = sample_distinct(space, n, seed)
    else:
        pool_size = 20 * n if pool_size is None else int(pool_size)
        if pool_size < n:
            raise FairseqNasError(f"--pool-size {pool_size}: must be at least -n ({n})")
        if rounds < 1 or not 0.0 <= alpha <= 1.0:
            raise FairseqNasError(f"--rounds {rounds} / --alpha {alpha}: need rounds >= 1 and alpha in [0, 1]")
        candidates = sample_distinct(space, pool_size, seed, what="--pool-size")
    if supernet_space is not None:
        check_in_supernet(candidates, supernet_space, checkpoint, space.name)
    if not hasattr(evaluator, "loss"):
        evaluator = evaluator()

    expect = {"subset": subset, "n_sentences": evaluator.n_sentences, "seed": seed, "strategy": strategy}
    if strategy == "iterative":
        expect.update(pool_size=pool_size, rounds=rounds, alpha=alpha)
    done = _existing(out, space, expect)
    _write_sidecar(out, space)
    summary = CollectSummary(out=out, n_target=0)
    base = {"n_sentences": evaluator.n_sentences, "subset": subset, "seed": seed, "strategy": strategy,
            "space": space.name}

    def evaluate_one(index: int, subnet: Any, writer: RowWriter, extra: dict[str, Any]) -> dict:
        t = time.perf_counter()
        row: dict[str, Any] = {"index": index, "subnet": subnet.to_dict()}
        row.update(evaluator.loss(subnet))
        row["params"] = evaluator.params(subnet)
        flops = evaluator.flops(subnet)
        if flops is not None:
            row["flops"] = flops
        if bleu:
            row["bleu"] = evaluator.bleu(subnet, beam=beam)
        row.update(base)
        row.update(extra)
        row["eval_s"] = round(time.perf_counter() - t, 4)
        writer.write(row)
        return row

    with RowWriter(out) as writer:
        if strategy == "random":
            i_shard, n_shards = shard
            mine = [(k, s) for k, s in enumerate(candidates) if k % n_shards == i_shard]
            summary.n_target = len(mine)
            resumed = [done[s.key()] for _, s in mine if s.key() in done]
            summary.n_resumed = len(resumed)
            summary.rows.extend(resumed)
            todo = [(k, s) for k, s in mine if s.key() not in done]
            bar = Progress("collect", total=len(mine), initial=len(mine) - len(todo), unit="subnet",
                           disable=not progress)
            for k, s in todo:
                row = evaluate_one(k, s, writer, {})
                summary.rows.append(row)
                summary.n_new += 1
                bar.set_postfix(loss=f"{row['valid_loss']:.3f}")
                bar.update(1)
            bar.close()
        else:
            from fairseq_nas.ranking import select_iteratively

            summary.n_target = n
            X = encode_many(candidates, space)
            bar = Progress("collect (iterative)", total=n, unit="subnet", disable=not progress)
            round_no = [0]

            def evaluate(indices: np.ndarray) -> list[float]:
                round_no[0] += 1
                labels = []
                for idx in indices.tolist():
                    s = candidates[idx]
                    row = done.get(s.key())
                    if row is not None:
                        summary.n_resumed += 1
                    else:
                        row = evaluate_one(idx, s, writer, {"round": round_no[0], "pool_size": pool_size,
                                                            "rounds": rounds, "alpha": alpha})
                        summary.n_new += 1
                        bar.set_postfix(round=round_no[0], loss=f"{row['valid_loss']:.3f}")
                    summary.rows.append(row)
                    bar.update(1)
                    labels.append(-float(row["valid_loss"]))
                return labels

            select_iteratively(X, evaluate, budget=n, rounds=rounds, alpha=alpha, seed=seed)
            bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary
