"""Interleaved measurement: a list of subnets timed in rounds.

Measuring each subnet as one block of N runs lets load drift over a few seconds move a
whole block; no statistic of the block removes it. In rounds, every round times every
subnet a few runs, in an order shuffled per round (seeded), so a subnet's runs spread over
the whole measurement and drift hits all subnets alike.

`run_rounds` is the scheduler alone (what is timed is a callback), so that the command can
persist every (subnet, round) as it completes and resume after a kill: a key's next round
is the number of rounds it has done.
"""
from __future__ import annotations

import random
from typing import Callable, Hashable, Mapping, Optional, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def runs_in_round(runs: int, rounds: int, r: int) -> int:
    """Timed runs of round r when `runs` runs are split over `rounds` rounds as evenly as possible
    (the first runs % rounds rounds get one more)."""
    base, extra = divmod(runs, rounds)
    return base + (1 if r < extra else 0)


def effective_rounds(runs: int, rounds: int) -> int:
    """Rounds actually made: at most one per run."""
    return max(1, min(rounds, runs))


def round_order(keys: Sequence[K], r: int, seed: int) -> list[K]:
    """The keys in round r's order: shuffled by a RNG seeded with (seed, r), so a rerun, and a
    resumed run, shuffle the same way."""
    order = list(keys)
    random.Random(f"rounds:{seed}:{r}").shuffle(order)
    return order


def run_rounds(keys: Sequence[K], time_round: Callable[[K, int], T], rounds: int, seed: int = 0,
               done: Optional[Mapping[K, int]] = None,
               on_result: Optional[Callable[[K, int, T], None]] = None,
               on_round_end: Optional[Callable[[int, list[K]], None]] = None) -> dict[K, list[T]]:
    """Time every key `rounds` times, one round after another.

    Round r times, in round_order, each key that has done exactly r rounds (`done`: rounds already
    done before this call, e.g. read back after a kill; default 0); `time_round(key, r)` returns
    its result, which goes to `on_result(key, r, result)` at once. After each round,
    `on_round_end(r, finished)` gets the keys that have just done their last round, in `keys`
    order. Returns the results of this call per key (rounds done earlier are not in it)."""
    count = {k: int((done or {}).get(k, 0)) for k in keys}
    results: dict[K, list[T]] = {k: [] for k in keys}
    start = min(count.values(), default=rounds)
    for r in range(start, rounds):
        todo = [k for k in keys if count[k] == r]
        for k in round_order(todo, r, seed):
            res = time_round(k, r)
            results[k].append(res)
            count[k] = r + 1
            if on_result is not None:
                on_result(k, r, res)
        if on_round_end is not None:
            on_round_end(r, [k for k in todo if count[k] >= rounds])
    return results
