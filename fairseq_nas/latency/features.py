"""Cost features of encoded subnets that latency is close to linear in (numpy only).

Computed from the feature matrix of `fairseq_nas.space.encode` and its column names (so a
latency model that only ever sees that matrix, as the search gives it, can use them). Per
stack ("enc", "dec"; E = the stack's embed_dim, over the layers the subnet has):

- `E` (embeddings, positions, the decoder's output projection: E x vocabulary per step),
  `layers`, `E*layers` (norms, residuals);
- per operator: the number of layers with it, and E^2 times that number (its projections);
- `ffn*E` (the FFN's two linears) and `ffn` (its activation), `heads` (per-head work);
- decoder only: `E^2*layers` (encoder-decoder attention's query and output projections),
  `enc_attn` (sum over layers of the encoder layers attended to: keys per step) and
  `enc_attn*Eenc*E` (projecting those keys and values once).

Every feature is non-negative and grows with the cost it stands for, so a non-negative linear
combination of them is a latency model that extrapolates the way latency does.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from fairseq_nas.space.subnet import OPERATORS

_TOP = re.compile(r"^(enc|dec)\.(embed_dim|layers)$")
_SLOT = re.compile(r"^(enc|dec)\.([a-z_]+)\.(\d+)$")


def _columns(names: Sequence[str]) -> Optional[dict]:
    """{stack: {"embed_dim": col, gene: [col per slot]}}, or None when the names are not encode's."""
    cols: dict = {"enc": {}, "dec": {}}
    for j, name in enumerate(names):
        if m := _TOP.match(name):
            cols[m.group(1)][m.group(2)] = j
        elif m := _SLOT.match(name):
            slots = cols[m.group(1)].setdefault(m.group(2), {})
            slots[int(m.group(3))] = j
    for stack in cols.values():
        if "embed_dim" not in stack or "ffn_dim" not in stack or "operator" not in stack:
            return None
        for gene, slots in list(stack.items()):
            if isinstance(slots, dict):
                stack[gene] = [slots[i] for i in sorted(slots)]
    return cols


def cost_feature_names(names: Sequence[str]) -> list[str]:
    """Names of `cost_features`' columns for a matrix with these column names."""
    cols = _columns(names)
    if cols is None:
        return [f"x:{n}" for n in names]
    out = []
    for p in ("enc", "dec"):
        out += [f"{p}.E", f"{p}.layers", f"{p}.E*layers"]
        out += [f"{p}.n[{op}]" for op in OPERATORS] + [f"{p}.E2[{op}]" for op in OPERATORS]
        out += [f"{p}.ffn*E", f"{p}.ffn", f"{p}.heads"]
        if p == "dec":
            out += ["dec.E2*layers", "dec.enc_attn", "dec.enc_attn*Eenc*E"]
    return out


def cost_features(X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The cost features (rows of X; see the module docstring). For column names that are not
    `encode`'s, the columns themselves with NaN as 0."""
    X = np.asarray(X, dtype=np.float64)
    cols = _columns(names)
    if cols is None:
        return np.nan_to_num(X, nan=0.0)
    feats = []
    e_enc = X[:, cols["enc"]["embed_dim"]]
    for p in ("enc", "dec"):
        c = cols[p]
        e = X[:, c["embed_dim"]]
        ops = X[:, c["operator"]]
        present = ~np.isnan(ops)
        layers = present.sum(axis=1).astype(np.float64)
        feats += [e, layers, e * layers]
        counts = [np.sum(ops == float(i), axis=1).astype(np.float64) for i in range(len(OPERATORS))]
        feats += counts + [e * e * n for n in counts]
        ffn = np.nansum(X[:, c["ffn_dim"]], axis=1)
        feats += [ffn * e, ffn]
        feats.append(np.nansum(X[:, c["heads"]], axis=1) if "heads" in c else np.zeros(len(X)))
        if p == "dec":
            if "enc_attn_layers" in c:  # unset in a layer that has it: the last encoder layer only
                v = X[:, c["enc_attn_layers"]]
                attn = np.nansum(np.where(present & np.isnan(v), 1.0, v), axis=1)
            else:
                attn = layers
            feats += [e * e * layers, attn, attn * e_enc * e]
    return np.stack(feats, axis=1)
