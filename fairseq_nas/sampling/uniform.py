"""Single-path one-shot sampling: one subnet per update.

The subnet of update u is drawn from `random.Random(seed + u)`, so it depends only on the
seed, the update number and the current sample space: every distributed rank draws the
same subnet, and a resumed run continues the same sequence without saving an RNG.
"""
from __future__ import annotations

import random
from typing import Any, Optional

from fairseq_nas.space import Subnet, parse_space


class UniformSampler:
    kind = "uniform"

    def __init__(self, space, seed: int):
        self.space = space
        self.seed = int(seed)
        self._cache: tuple[int, Optional[Subnet]] = (-1, None)

    def subnet_for_update(self, update_num: int) -> Subnet:
        if self._cache[0] != update_num:
            self._cache = (update_num, self.space.sample(random.Random(self.seed + update_num)))
        return self._cache[1]

    def subnets_for_update(self, update_num: int, n: int) -> list[Subnet]:
        """n draws for one update (the sandwich's random subnets); the first is `subnet_for_update`'s."""
        rng = random.Random(self.seed + update_num)
        return [self.space.sample(rng) for _ in range(n)]

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "space_yaml": self.space.to_yaml()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"checkpoint holds a {state.get('kind')!r} sampler state, not {self.kind!r}")
        self.seed = int(state["seed"])
        self.space = parse_space(state["space_yaml"], source="checkpoint sampler state")
        self._cache = (-1, None)


class FixedSampler:
    """`--subnet FILE`: train or evaluate one fixed subnet."""

    kind = "fixed"

    def __init__(self, subnet: Subnet):
        self.subnet = subnet

    def subnet_for_update(self, update_num: int) -> Subnet:
        return self.subnet

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subnet": self.subnet.to_json()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The command line's --subnet wins over the checkpoint's.
        pass


def representative_subnets(space, names: list[str]) -> list[tuple[str, Subnet]]:
    """Named subnets reported at validation: largest, smallest (of the current sample space)."""
    out = []
    for name in names:
        if name == "largest":
            out.append((name, space.largest()))
        elif name == "smallest":
            out.append((name, space.smallest()))
        else:
            raise ValueError(f"unknown representative subnet {name!r}; valid: largest, smallest")
    return out
