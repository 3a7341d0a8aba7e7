"""Subnets as feature vectors for rankers and latency models (RankNAS: one feature per gene).

Columns, per stack ("enc", then "dec"): `embed_dim`, `layers`, then for every per-layer gene
one column per layer slot (`enc.ffn_dim.0` .. `enc.ffn_dim.<max_layers-1>`). A layer the
subnet does not have is NaN (LightGBM treats it as missing). Numeric genes are their value;
operator / activation / norm are the index into the package-wide lists `OPERATORS`,
`ACTIVATIONS`, `NORMS`, so a code means the same in a space and in any `fix()`ed part of it.
"""
from __future__ import annotations

from functools import lru_cache
from operator import attrgetter
from typing import TYPE_CHECKING, Iterable

import numpy as np

from fairseq_nas.errors import SpaceError
from fairseq_nas.space.schema import CATEGORICAL, GROUP_DIMS, LAYER_GENES, PREFIXES, STACKS
from fairseq_nas.space.subnet import Subnet

if TYPE_CHECKING:
    from fairseq_nas.space.searchspace import SearchSpace

CODES = {dim: {name: float(i) for i, name in enumerate(names)} for dim, names in CATEGORICAL.items()}


def _genes(stack: str) -> tuple[str, ...]:
    return LAYER_GENES if stack == "decoder" else tuple(g for g in LAYER_GENES if g != "enc_attn_layers")


@lru_cache(maxsize=64)
def _layout(space: SearchSpace) -> tuple[list[str], dict[str, list[int]], np.ndarray]:
    """(names, groups, perm): `perm` maps the layer-major row `encode_many` builds to the
    group-major column order of `names`."""
    names: list[str] = []
    groups: dict[str, list[int]] = {}
    row_names: list[str] = []  # layer-major: embed, layers, layer 0 genes, layer 1 genes, ...
    for stack in STACKS:
        p = PREFIXES[stack]
        genes = _genes(stack)
        n = getattr(space, stack).max_layers
        for dim in GROUP_DIMS:
            if dim in ("embed_dim", "layers"):
                cols = [f"{p}.{dim}"]
            elif dim in genes:
                cols = [f"{p}.{dim}.{i}" for i in range(n)]
            else:
                continue
            groups[f"{p}.{dim}"] = list(range(len(names), len(names) + len(cols)))
            names.extend(cols)
        row_names += [f"{p}.embed_dim", f"{p}.layers"] + [f"{p}.{g}.{i}" for i in range(n) for g in genes]
    index = {nm: i for i, nm in enumerate(row_names)}
    perm = np.array([index[nm] for nm in names], dtype=np.intp)
    return names, groups, perm


def feature_names(space: SearchSpace) -> list[str]:
    return list(_layout(space)[0])


def feature_groups(space: SearchSpace) -> dict[str, list[int]]:
    """Group name ("dec.ffn_dim") -> its column indices; the groups are the keys of `space.fix`."""
    return {k: list(v) for k, v in _layout(space)[1].items()}


class _LayerIds(dict):
    """Raw gene tuple -> layer id (1, 2, ...: in order of first appearance; 0 = no layer)."""

    def __missing__(self, raw: tuple) -> int:
        self[raw] = i = len(self) + 1
        return i


def _layer_table(ids: dict[tuple, int], genes: tuple[str, ...]) -> np.ndarray:
    """Feature rows of the distinct layers in `ids` (raw gene tuple -> row); row 0 is the
    all-NaN row of an absent layer."""
    table = np.full((len(ids) + 1, len(genes)), np.nan)
    codes = [CODES.get(g) for g in genes]
    for raw, i in ids.items():
        for j, (value, code) in enumerate(zip(raw, codes)):
            if code is not None:
                try:
                    value = code[value]
                except (KeyError, TypeError):
                    valid = ", ".join(code)
                    raise SpaceError("encode", f"layers.{genes[j]}", f"unknown value {value!r}; valid: {valid}") \
                        from None
            table[i, j] = np.nan if value is None else value
    return table


def encode_many(subnets: Iterable[Subnet], space: SearchSpace) -> np.ndarray:
    """Feature matrix (float64, one row per subnet). Checks shape only, not membership in `space`.

    Fast path for search: each layer becomes the id of its distinct gene tuple (spaces have
    few distinct layers), and one numpy gather turns the ids into feature columns."""
    names, _, perm = _layout(space)
    max_enc, max_dec = space.encoder.max_layers, space.decoder.max_layers
    genes_enc, genes_dec = _genes("encoder"), _genes("decoder")
    get_enc, get_dec = attrgetter(*genes_enc), attrgetter(*genes_dec)
    ids_enc, ids_dec = _LayerIds(), _LayerIds()
    enc_id, dec_id = ids_enc.__getitem__, ids_dec.__getitem__
    pad_enc = [[0] * k for k in range(max_enc + 1)]
    pad_dec = [[0] * k for k in range(max_dec + 1)]
    stack_dims, rows = [], []  # (enc embed, enc depth, dec embed, dec depth) per subnet
    try:
        for s in subnets:
            e, d = s.encoder, s.decoder
            el, dl = e.layers, d.layers
            if len(el) > max_enc or len(dl) > max_dec:
                which, depth, top = ("encoder", len(el), max_enc) if len(el) > max_enc else \
                    ("decoder", len(dl), max_dec)
                raise SpaceError("encode", f"{which}.layers", f"depth {depth} exceeds the space's "
                                                              f"{top} layer slots")
            # map() over C callables: no Python bytecode per layer
            rows.append([*map(enc_id, map(get_enc, el)), *pad_enc[max_enc - len(el)],
                         *map(dec_id, map(get_dec, dl)), *pad_dec[max_dec - len(dl)]])
            stack_dims.append((e.embed_dim, len(el), d.embed_dim, len(dl)))
    except AttributeError as err:
        raise SpaceError("encode", "<subnet>", f"expected Subnet objects ({err})") from None
    except TypeError as err:  # an unhashable gene value
        raise SpaceError("encode", "layers", f"gene values must be numbers or names ({err})") from None
    if not rows:
        return np.empty((0, len(names)), dtype=np.float64)
    ids = np.array(rows, dtype=np.intp)
    top = np.array(stack_dims, dtype=np.float64)
    enc = _layer_table(ids_enc, genes_enc)[ids[:, :max_enc]].reshape(len(rows), -1)
    dec = _layer_table(ids_dec, genes_dec)[ids[:, max_enc:]].reshape(len(rows), -1)
    X = np.concatenate([top[:, :2], enc, top[:, 2:], dec], axis=1)  # the layer-major row of _layout
    return X[:, perm]


def encode(subnet: Subnet, space: SearchSpace) -> np.ndarray:
    """One subnet's feature vector (float64, 1-D)."""
    return encode_many([subnet], space)[0]
