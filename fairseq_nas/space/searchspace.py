"""`SearchSpace`: an encoder and a decoder `StackSpace`, always valid once constructed."""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from fairseq_nas.errors import SpaceError
from fairseq_nas.space import describe as _describe
from fairseq_nas.space import evolve
from fairseq_nas.space.schema import CATEGORICAL, GROUP_DIMS, PREFIXES, StackSpace, group_names, ratio_times
from fairseq_nas.space.subnet import Subnet
from fairseq_nas.space.validate import check_space, fmt, validate_subnet


@dataclass(frozen=True)
class SearchSpace:
    """A search space. Equality ignores `source` (the file it came from), so a saved and
    reloaded space equals the original."""

    name: str
    encoder: StackSpace
    decoder: StackSpace
    description: str = ""
    source: str = field(default="<space>", compare=False)
    # Whether the model shares one embedding between encoder, decoder and output (fairseq's
    # --share-all-embeddings); None: the space does not say (the command line decides). A supernet
    # checkpoint's space always says, so collect, latency and search count params as it built them.
    share_all_embeddings: Optional[bool] = None

    def __post_init__(self) -> None:
        check_space(self)

    def embeddings_shared(self, flag: Optional[bool], option: str = "--share-all-embeddings") -> Optional[bool]:
        """The space's share_all_embeddings, or `flag` (a command line's; None: not given) when the
        space does not say. A flag that contradicts the space is a one-line error."""
        said = self.share_all_embeddings
        if said is None:
            return flag
        if flag is not None and flag != said:
            given = option if flag else "--no-" + option[2:]
            raise SpaceError(self.source, "share_all_embeddings", f"the space says {str(said).lower()}, the command "
                                                                  f"line has {given}: drop {given} (or edit the space)")
        return said

    def stack(self, name: str) -> StackSpace:
        if name not in ("encoder", "decoder"):
            raise ValueError(f"stack must be 'encoder' or 'decoder', got {name!r}")
        return getattr(self, name)

    # --- subnets -------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> Subnet:
        """Uniform per choice: depth, embed_dim, then every layer's genes (not uniform over subnets)."""
        return evolve.sample(self, rng)

    def largest(self) -> Subnet:
        return evolve.largest(self)

    def smallest(self) -> Subnet:
        return evolve.smallest(self)

    def mutate(self, subnet: Subnet, rng: random.Random, prob: float) -> Subnet:
        return evolve.mutate(self, subnet, rng, prob)

    def crossover(self, a: Subnet, b: Subnet, rng: random.Random) -> Subnet:
        return evolve.crossover(self, a, b, rng)

    def validate_subnet(self, subnet: Subnet, source: str = "subnet") -> None:
        validate_subnet(self, subnet, source)

    def contains(self, subnet: Subnet) -> bool:
        try:
            validate_subnet(self, subnet)
        except SpaceError:
            return False
        return True

    def num_subnets(self) -> int:
        return _describe.num_subnets(self)

    def describe(self) -> str:
        return _describe.describe(self)

    # --- files ---------------------------------------------------------------------------
    def to_yaml(self) -> str:
        from fairseq_nas.space.loader import space_to_yaml

        return space_to_yaml(self)

    def save(self, path: Union[str, Path]) -> None:
        from fairseq_nas.space.loader import save_space

        save_space(self, path)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> SearchSpace:
        from fairseq_nas.space.loader import parse_space

        return parse_space(text, source)

    # --- pruning -------------------------------------------------------------------------
    def fix(self, assignments: Mapping[str, Any]) -> SearchSpace:
        """A narrower space with each named feature group fixed to one value.

        Keys are group names (`feature_groups`): "enc.embed_dim", "dec.layers", "dec.ffn_dim", ...
        Categorical values may be names or the codes `encode` uses. In a ratio space "x.ffn_dim"
        takes a ratio, or an FFN dim that maps to one ratio given the (fixed) embed_dim choices.
        Fixing "enc.layers" drops the decoder's enc_attn_layers choices deeper than it.
        """
        valid = group_names()
        order = {g: i for i, g in enumerate(valid)}
        for key in assignments:
            if key not in order:
                raise SpaceError(self.source, str(key), f"unknown feature group; valid: {fmt(valid)}")
        stacks = {"encoder": self.encoder, "decoder": self.decoder}
        by_prefix = {p: s for s, p in PREFIXES.items()}
        applied = []
        for key in sorted(assignments, key=order.__getitem__):  # embed_dim before ffn_dim
            prefix, dim = key.split(".", 1)
            name = by_prefix[prefix]
            st = stacks[name]
            new_value = _fixed_choices(st, dim, assignments[key], self.source, key)
            stacks[name] = replace(st, **new_value)
            if key == "enc.layers":
                dec = stacks["decoder"]
                fits = tuple(k for k in dec.enc_attn_layers or () if k <= new_value["layers"][0])
                if fits:
                    stacks["decoder"] = replace(dec, enc_attn_layers=fits)
            applied.append(f"{key}={_show(assignments[key])}")
        description = self.description.rstrip()
        if applied:
            description = (description + "\n" if description else "") + "fixed: " + ", ".join(applied)
        return replace(self, description=description, **stacks)


def _show(value: Any) -> str:
    return str(value.item() if hasattr(value, "item") else value)


def _as_number(value: Any, source: str, key: str) -> Union[int, float]:
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpaceError(source, key, f"expected a number, got {value!r}")
    return int(value) if float(value).is_integer() else value


def _fixed_choices(st: StackSpace, dim: str, value: Any, source: str, key: str) -> dict[str, tuple]:
    """The replacement field(s) of `st` that fix `dim` to `value`."""
    assert dim in GROUP_DIMS
    if dim in CATEGORICAL:
        names = CATEGORICAL[dim]
        if not isinstance(value, str):
            code = _as_number(value, source, key)
            if not isinstance(code, int) or not 0 <= code < len(names):
                top = len(names) - 1
                raise SpaceError(source, key, f"{value!r} is neither a {dim} name nor a code 0..{top}")
            value = names[code]
        if value not in getattr(st, dim):
            raise SpaceError(source, key, f"{value!r} is not among the choices {fmt(getattr(st, dim))}")
        return {dim: (value,)}
    number = _as_number(value, source, key)
    if dim == "ffn_dim" and st.ffn_ratio is not None:
        ratios = [r for r in st.ffn_ratio if r == number]
        if not ratios:
            ratios = sorted({r for r in st.ffn_ratio for e in st.embed_dim if ratio_times(r, e) == number},
                            key=st.ffn_ratio.index)
        if len(ratios) == 1:
            return {"ffn_ratio": (ratios[0],)}
        dims = sorted({d for e in st.embed_dim for d in st.ffn_choices(e)})
        if ratios:
            which = " or ".join(map(str, ratios))
            raise SpaceError(source, key, f"ffn_dim {number} is ratio {which} depending on embed_dim; "
                                          "fix embed_dim too or give the ratio")
        raise SpaceError(source, key, f"{number!r} is neither an ffn_ratio ({fmt(st.ffn_ratio)}) "
                                      f"nor an ffn_dim of the space ({fmt(dims)})")
    if dim == "ffn_dim":
        choices = st.ffn_dim or ()
    else:
        choices = getattr(st, dim) or ()
    if number not in choices:
        raise SpaceError(source, key, f"{number!r} is not among the choices {fmt(choices)}")
    return {dim: (int(number),)}
