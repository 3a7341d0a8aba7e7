"""Subnets as feature vectors for rankers and latency models (RankNAS: one feature per gene).

Columns, per stack ("enc", then "dec"): `embed_dim`, `layers`, then for every per-layer gene
one column per layer slot (`enc.ffn_dim.0` .. `enc.ffn_dim.<max_layers-1>`). A layer the
subnet does not have is NaN (LightGBM treats it as missing). Numeric genes are their value;
operator / activation / norm are the index into the package-wide lists `OPERATORS`,
`ACTIVATIONS`, `NORMS`, so a code means the same in a space and in any `fix()`ed part of it.
"""
from __future__ import annotations

from functools import lru_cache
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


def encode_many(subnets: Iterable[Subnet], space: SearchSpace) -> np.ndarray:
    """Feature matrix (float64, one row per subnet). Checks shape only, not membership in `space`."""
    names, _, perm = _layout(space)
    op, act, norm = CODES["operator"], CODES["activation"], CODES["norm"]
    nan = float("nan")
    max_enc, max_dec = space.encoder.max_layers, space.decoder.max_layers
    pad_enc = [[nan] * (len(_genes("encoder")) * k) for k in range(max_enc + 1)]
    pad_dec = [[nan] * (len(_genes("decoder")) * k) for k in range(max_dec + 1)]
    rows = []
    try:
        for s in subnets:
            e, d = s.encoder, s.decoder
            el, dl = e.layers, d.layers
            if len(el) > max_enc or len(dl) > max_dec:
                which, depth, top = ("encoder", len(el), max_enc) if len(el) > max_enc else \
                    ("decoder", len(dl), max_dec)
                raise SpaceError("encode", f"{which}.layers", f"depth {depth} exceeds the space's "
                                                              f"{top} layer slots")
            row = [e.embed_dim, len(el)]
            for x in el:
                row += (x.ffn_dim, x.heads, op[x.operator], act[x.activation], x.rpr_len, norm[x.norm])
            row += pad_enc[max_enc - len(el)]
            row += (d.embed_dim, len(dl))
            for x in dl:
                row += (x.ffn_dim, x.heads, op[x.operator], act[x.activation], x.rpr_len, norm[x.norm],
                        x.enc_attn_layers)
            row += pad_dec[max_dec - len(dl)]
            rows.append(row)
    except KeyError as err:
        valid = ", ".join(n for v in CATEGORICAL.values() for n in v)
        bad = err.args[0]
        raise SpaceError("encode", "layers", f"unknown categorical value {bad!r}; valid: {valid}") from None
    except AttributeError as err:
        raise SpaceError("encode", "<subnet>", f"expected Subnet objects ({err})") from None
    if not rows:
        return np.empty((0, len(names)), dtype=np.float64)
    return np.array(rows, dtype=np.float64)[:, perm]


def encode(subnet: Subnet, space: SearchSpace) -> np.ndarray:
    """One subnet's feature vector (float64, 1-D)."""
    return encode_many([subnet], space)[0]
