"""Permutation importance per feature group (RankNAS eq. 7) and search-space pruning.

I(group) = L_group / L_total, with L a ranking error on a set of architectures: L_total with the
features as they are, L_group after permuting the group's columns jointly across rows (one row
permutation applied to all its columns, averaged over ``n_repeats`` permutations). I ~ 1: the
ranker does not use the group; I > theta (RankNAS: 1.15 hardware-aware, 1.25 high-accuracy):
important. Groups with I < theta are fixed to one value in the pruned space.

Zero error guard: I = (L_group + eps) / (L_total + eps), eps = 1e-6. If the ranker orders the
set perfectly (L_total = 0, e.g. measured on its own training rows), a group that changes
nothing still gets I = 1 (unimportant) and one that adds any error gets a very large I.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from fairseq_nas.ranking.base import PathLike, Ranker, atomic_write_bytes, check_X, check_y
from fairseq_nas.ranking.metrics import kendall_tau, pairwise_misorder_rate

if TYPE_CHECKING:  # only for annotations: no import of the space package at run time here
    from fairseq_nas.space import SearchSpace, Subnet

__all__ = [
    "permutation_importance",
    "prune_groups",
    "prune_space",
    "default_fix_value",
    "group_values",
    "importance_table",
    "plot_importance",
    "EPS",
]

EPS = 1e-6

ErrorFn = Callable[[np.ndarray, np.ndarray], float]


def _error_fn(metric: Union[str, ErrorFn]) -> ErrorFn:
    if callable(metric):
        return metric
    if metric == "kendall":
        return lambda y, s: 1.0 - kendall_tau(y, s)
    if metric == "misorder":
        return pairwise_misorder_rate
    raise ValueError(f"metric: expected 'kendall', 'misorder' or a callable error(y_true, scores), "
                     f"got {metric!r}")


def permutation_importance(
    ranker: Ranker,
    X: Any,
    y: Any,
    groups: Optional[Mapping[str, Sequence[int]]] = None,
    n_repeats: int = 5,
    seed: int = 0,
    metric: Union[str, ErrorFn] = "kendall",
    eps: float = EPS,
    depth: Optional[Mapping[str, Sequence[int]]] = None,
) -> dict[str, float]:
    """Importance I = (L_group + eps) / (L_total + eps) of each feature group for a fitted ranker.

    ``groups`` maps a name to its column indices (e.g. ``feature_groups(space)``); default: one
    group per column, named by the ranker's feature names. ``metric``: ``"kendall"`` (L = 1 -
    Kendall tau, default), ``"misorder"`` (share of wrongly ordered pairs) or a callable
    ``error(y_true, scores)``. Returns a dict in the order of ``groups``.

    ``depth`` maps a depth group (``"dec.layers"``) to the per-layer columns of its stack, whose
    NaNs (absent layers) also encode the depth. Without it, permuting a per-layer group such as
    ``dec.operator`` permutes which layers exist, so the depth's effect is credited to that group
    and the depth group itself looks unimportant (and pruning fixes it). With it, a per-layer
    group's values are permuted while every row keeps the layers it has, and permuting a depth
    group moves the presence of the layer slots with it (a slot a row gains takes the donor's
    values), so the depth's effect is credited to the depth.
    """
    Xa = check_X(X, ranker.n_features_in_)
    ya = check_y(y, Xa.shape[0])
    if groups is None:
        names = getattr(ranker, "feature_names_", None) or [f"f{i}" for i in range(Xa.shape[1])]
        groups = {str(n): [i] for i, n in enumerate(names)}
    err = _error_fn(metric)
    rng = np.random.default_rng(seed)
    base = float(err(ya, ranker.predict(Xa)))
    out: dict[str, float] = {}
    for name, cols in groups.items():
        cols = np.asarray(list(cols), dtype=np.intp)
        if cols.size and (cols.min() < 0 or cols.max() >= Xa.shape[1]):
            raise ValueError(f"groups[{name!r}]: column index out of range 0..{Xa.shape[1] - 1}")
        losses = []
        for _ in range(max(1, int(n_repeats))):
            perm = rng.permutation(Xa.shape[0])
            Xp = _permuted(Xa, cols, perm, depth, str(name))
            losses.append(float(err(ya, ranker.predict(Xp))))
        out[str(name)] = (float(np.mean(losses)) + eps) / (base + eps)
    return out


def _permuted(Xa: np.ndarray, cols: np.ndarray, perm: np.ndarray,
              depth: Optional[Mapping[str, Sequence[int]]], name: str) -> np.ndarray:
    """A copy of Xa with the group's columns permuted across rows (see `permutation_importance`)."""
    Xp = Xa.copy()
    src = Xa[perm]
    Xp[:, cols] = src[:, cols]
    if depth is None:
        return Xp
    if name in depth:  # the row takes the donor's depth, and with it which layer slots exist
        lc = np.asarray(list(depth[name]), dtype=np.intp)
        own, donor = Xa[:, lc], src[:, lc]
        block = np.where(np.isnan(donor), np.nan, np.where(np.isnan(own), donor, own))
        Xp[:, lc] = block
    elif np.isnan(Xa[:, cols]).any():  # a per-layer group: new values, the row's own layers
        own, donor = Xa[:, cols], src[:, cols]
        Xp[:, cols] = np.where(np.isnan(own), np.nan, np.where(np.isnan(donor), own, donor))
    return Xp


def prune_groups(importance: Mapping[str, float], theta: float) -> list[str]:
    """The groups to drop (fix): those with importance I < theta, in the order of ``importance``."""
    return [g for g, v in importance.items() if v < theta]


# ---------------------------------------------------------------------------------------------
# Pruning a search space
# ---------------------------------------------------------------------------------------------
_CATEGORICAL_DIMS = ("operator", "activation", "norm")
_STACKS = {"enc": "encoder", "dec": "decoder"}


def _split_group(group: str) -> tuple[str, str]:
    prefix, _, dim = group.partition(".")
    if prefix not in _STACKS or not dim:
        raise ValueError(f"{group!r}: expected a feature group '<enc|dec>.<dim>' such as 'dec.ffn_dim'")
    return _STACKS[prefix], dim


def default_fix_value(space: SearchSpace, group: str) -> Any:
    """The value a dropped group is fixed to when none is given.

    Numeric dims: the largest choice (for ``ffn_dim`` in a ratio space: the largest ratio).
    Categorical dims (operator, activation, norm): the first choice listed in the space.
    """
    stack_name, dim = _split_group(group)
    st = space.stack(stack_name)
    if dim in _CATEGORICAL_DIMS:
        return getattr(st, dim)[0]
    if dim == "ffn_dim" and getattr(st, "ffn_ratio", None) is not None:
        return max(st.ffn_ratio)
    if dim == "ffn_dim":
        return max(st.ffn_dim)
    choices = getattr(st, dim)
    if not choices:
        raise ValueError(f"{group!r}: the space has no choices for it")
    return max(choices)


def group_values(subnet: Subnet, space: SearchSpace) -> dict[str, Any]:
    """Each feature group's value in one subnet, in the form ``space.fix`` accepts.

    Stack-level dims (embed_dim, layers) are the subnet's; a per-layer gene takes its most
    common value over the subnet's layers (ties: the one seen first, from the bottom layer).
    In a ratio space ``ffn_dim`` becomes the ratio ffn_dim / embed_dim.
    """
    out: dict[str, Any] = {}
    for prefix, stack_name in _STACKS.items():
        sub = subnet.stack(stack_name)
        st = space.stack(stack_name)
        out[f"{prefix}.embed_dim"] = sub.embed_dim
        out[f"{prefix}.layers"] = len(sub.layers)
        genes = ["ffn_dim", "heads", "operator", "activation", "rpr_len", "norm"]
        if stack_name == "decoder":
            genes.append("enc_attn_layers")
        for gene in genes:
            vals = [getattr(layer, gene) for layer in sub.layers]
            if gene == "ffn_dim" and getattr(st, "ffn_ratio", None) is not None:
                ratios = []
                for v in vals:
                    match = [r for r in st.ffn_ratio if math.isclose(r * sub.embed_dim, v)]
                    ratios.append(match[0] if match else v / sub.embed_dim)
                vals = ratios
            counts = Counter(vals)
            best = max(counts.values())
            out[f"{prefix}.{gene}"] = next(v for v in vals if counts[v] == best)
    return out


def prune_space(
    space: SearchSpace,
    importance: Mapping[str, float],
    theta: float,
    values: Optional[Union[Mapping[str, Any], Subnet]] = None,
) -> tuple[SearchSpace, dict[str, Any]]:
    """Fix every group with I < theta; returns ``(pruned_space, fixed)`` (group -> value).

    Value of a dropped group: ``values[group]`` when given (a mapping, or a Subnet such as the
    best-ranked training architecture, read with :func:`group_values`), else
    :func:`default_fix_value` (largest numeric choice, first categorical choice), taken in the
    space as narrowed by the groups fixed before it (so e.g. ``dec.enc_attn_layers`` never
    exceeds a fixed ``enc.layers``). Groups whose only choice is already one value are fixed too
    (a no-op). The result comes from one ``space.fix(fixed)`` call, which validates it.
    """
    drop = prune_groups(importance, theta)
    if values is not None and not isinstance(values, Mapping):
        values = group_values(values, space)
    order = {g: i for i, g in enumerate(_group_order(space))}
    drop.sort(key=lambda g: order.get(g, len(order)))
    fixed: dict[str, Any] = {}
    current = space
    for g in drop:
        v = values[g] if values is not None and g in values else default_fix_value(current, g)
        if hasattr(v, "item"):
            v = v.item()
        fixed[g] = v
        current = current.fix({g: v})
    pruned = space.fix(fixed) if fixed else space
    return pruned, fixed


def _group_order(space: SearchSpace) -> list[str]:
    from fairseq_nas.space.encode import feature_groups  # lazy: space is only needed for pruning

    return list(feature_groups(space))


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------
def importance_table(importance: Mapping[str, float], theta: Optional[float] = None, width: int = 30) -> str:
    """A plain-text table, most important first: group, I, a bar, and keep/fix when ``theta`` is given."""
    if not importance:
        return "(no feature groups)"
    items = sorted(importance.items(), key=lambda kv: (-kv[1], kv[0]))
    name_w = max(len("group"), *(len(k) for k in importance))
    top = max(max(v for _, v in items), theta or 0.0, 1e-12)
    header = f"{'group':<{name_w}}  {'I':>8}  {'':<{width}}" + ("  action" if theta is not None else "")
    lines = [header.rstrip(), "-" * len(header.rstrip())]
    for k, v in items:
        bar = "#" * int(round(width * min(max(v, 0.0) / top, 1.0)))
        line = f"{k:<{name_w}}  {v:8.3f}  {bar:<{width}}"
        if theta is not None:
            line += "  " + ("keep" if v >= theta else "fix")
        lines.append(line.rstrip())
    if theta is not None:
        lines.append(f"theta = {theta:g}: groups with I < theta are fixed")
    return "\n".join(lines)


def plot_importance(importance: Mapping[str, float], path: PathLike, theta: Optional[float] = None,
                    title: str = "Permutation importance (RankNAS eq. 7)") -> None:
    """Horizontal bar chart of the importances (PNG, written atomically); a line marks ``theta``."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy; Agg, no pyplot state
    from matplotlib.figure import Figure

    items = sorted(importance.items(), key=lambda kv: (kv[1], kv[0]))
    fig = Figure(figsize=(7, 0.35 * max(len(items), 3) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    names = [k for k, _ in items]
    vals = [v for _, v in items]
    colors = ["tab:blue" if theta is None or v >= theta else "tab:gray" for v in vals]
    ax.barh(names, vals, color=colors)
    ax.axvline(1.0, color="black", lw=0.8, ls=":")
    if theta is not None:
        ax.axvline(theta, color="tab:red", lw=1.2, ls="--", label=f"theta = {theta:g}")
        ax.legend(loc="lower right")
    ax.set_xlabel("I = L_group / L_total")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())
