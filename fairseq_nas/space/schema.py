"""The per-stack part of a search space (`StackSpace`) and its parsing from YAML data.

Parsing checks types and names (unknown key, unknown operator, empty list, ...);
`fairseq_nas.space.validate` checks the rules that relate values to each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any, Optional, Union

from fairseq_nas.errors import SpaceError
from fairseq_nas.space.subnet import ACTIVATIONS, NORMS, OPERATORS

STACKS = ("encoder", "decoder")
STACK_KEYS = ("layers", "embed_dim", "ffn_dim", "ffn_ratio", "heads", "operator", "activation", "rpr_len",
              "norm", "kernel_size", "qkv_dim", "enc_attn_layers")
# The genes chosen independently in every layer, in the order they are sampled.
LAYER_GENES = ("ffn_dim", "heads", "operator", "activation", "rpr_len", "norm", "enc_attn_layers")
CATEGORICAL = {"operator": OPERATORS, "activation": ACTIVATIONS, "norm": NORMS}
DEFAULTS = {"rpr_len": (0,), "norm": ("post",), "activation": ("relu",), "operator": ("self_attention",)}
# Feature groups (the columns of `encode` and the keys of `SearchSpace.fix`): "<prefix>.<dim>".
PREFIXES = {"encoder": "enc", "decoder": "dec"}
GROUP_DIMS = ("embed_dim", "layers") + LAYER_GENES


def group_names() -> list[str]:
    """All feature-group names, encoder first; stack-level dims before per-layer genes."""
    return [f"{PREFIXES[s]}.{d}" for s in STACKS for d in GROUP_DIMS
            if not (s == "encoder" and d == "enc_attn_layers")]


LITE_KERNELS = (3, 7, 15, 31, 31, 31)  # Lite Transformer's per-layer kernel sizes

Number = Union[int, float]


def default_kernel_sizes(max_layers: int) -> tuple[int, ...]:
    """Lite Transformer's kernel sizes, padded with 31 (or cut) to `max_layers` slots."""
    return (LITE_KERNELS + (31,) * max(0, max_layers - len(LITE_KERNELS)))[:max_layers]


def ratio_times(ratio: Number, embed_dim: int) -> Fraction:
    """Exact ratio x embed_dim (1.5 is read as 3/2, never as a binary float)."""
    return Fraction(str(ratio)) * embed_dim


@dataclass(frozen=True)
class StackSpace:
    """The choices of one stack. Tuples keep the order of the YAML file (it matters for
    `largest()`/`smallest()` of the categorical dims, which take the first choice)."""

    layers: tuple[int, ...]
    embed_dim: tuple[int, ...]
    ffn_dim: Optional[tuple[int, ...]] = None
    ffn_ratio: Optional[tuple[Number, ...]] = None
    heads: tuple[int, ...] = (1,)
    operator: tuple[str, ...] = DEFAULTS["operator"]
    activation: tuple[str, ...] = DEFAULTS["activation"]
    rpr_len: tuple[int, ...] = DEFAULTS["rpr_len"]
    norm: tuple[str, ...] = DEFAULTS["norm"]
    enc_attn_layers: Optional[tuple[int, ...]] = None  # decoder only
    kernel_size: tuple[int, ...] = ()  # empty: default_kernel_sizes(max_layers)
    qkv_dim: Optional[int] = None  # None: the attention width equals embed_dim

    def __post_init__(self) -> None:
        if not self.kernel_size:
            object.__setattr__(self, "kernel_size", default_kernel_sizes(max(self.layers, default=0)))

    @property
    def max_layers(self) -> int:
        return max(self.layers)

    @property
    def max_embed_dim(self) -> int:
        return max(self.embed_dim)

    @property
    def max_ffn_dim(self) -> int:
        return max(max(self.ffn_choices(e)) for e in self.embed_dim)

    @property
    def max_heads(self) -> int:
        return max(self.heads)

    @property
    def max_rpr_len(self) -> int:
        return max(self.rpr_len)

    @property
    def max_qkv_dim(self) -> int:
        return self.qkv_dim if self.qkv_dim is not None else self.max_embed_dim

    @cached_property
    def _ffn_table(self) -> dict[int, tuple[int, ...]]:
        return {e: self._compute_ffn(e) for e in self.embed_dim}

    def _compute_ffn(self, embed_dim: int) -> tuple[int, ...]:
        if self.ffn_dim is not None:
            return tuple(self.ffn_dim)
        products = (ratio_times(r, embed_dim) for r in self.ffn_ratio or ())
        return tuple(int(p) for p in products if p.denominator == 1)

    def ffn_choices(self, embed_dim: int) -> tuple[int, ...]:
        """The FFN dims allowed with `embed_dim` (in ratio spaces: ratio x embed_dim, ratio order)."""
        table = self._ffn_table
        return table[embed_dim] if embed_dim in table else self._compute_ffn(embed_dim)

    def allowed_enc_attn(self, encoder_depth: int) -> tuple[int, ...]:
        """The enc_attn_layers choices usable with an encoder of `encoder_depth` layers."""
        return tuple(k for k in self.enc_attn_layers or () if k <= encoder_depth)

    def choices(self, gene: str) -> tuple:
        """Choices of a stack-level dim or a layer gene other than ffn_dim (which depends on embed)."""
        return getattr(self, gene)


# --------------------------------------------------------------------------------------------
# Parsing of one stack mapping (types, names, emptiness; no cross-field rules).


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _as_list(raw: Any, source: str, where: str) -> list:
    if isinstance(raw, (list, tuple)):
        values = list(raw)
    elif raw is None or isinstance(raw, dict):
        raise SpaceError(source, where, f"expected a list of choices, got {raw!r}")
    else:
        values = [raw]  # a single scalar is a one-choice list
    if not values:
        raise SpaceError(source, where, "empty choice list; give at least one choice")
    return values


def _no_duplicates(values: list, source: str, where: str) -> None:
    seen = []
    for v in values:
        if v in seen:
            raise SpaceError(source, where, f"choice {v!r} is listed twice; list each choice once")
        seen.append(v)


def _int_choices(raw: Any, source: str, where: str, minimum: int = 1) -> tuple[int, ...]:
    values = _as_list(raw, source, where)
    for v in values:
        if not _is_int(v) or v < minimum:
            kind = "positive integer" if minimum >= 1 else "non-negative integer"
            raise SpaceError(source, where, f"{v!r} is not a {kind}; expected a list of {kind}s")
    _no_duplicates(values, source, where)
    return tuple(values)


def _ratio_choices(raw: Any, source: str, where: str) -> tuple[Number, ...]:
    values = _as_list(raw, source, where)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v != v or v == float("inf"):
            raise SpaceError(source, where, f"{v!r} is not a positive number; expected ratios like 1, 1.5, 2")
    _no_duplicates(values, source, where)
    return tuple(values)


def _name_choices(raw: Any, valid: tuple[str, ...], source: str, where: str) -> tuple[str, ...]:
    values = _as_list(raw, source, where)
    for v in values:
        if v not in valid:
            kind = where.rsplit(".", 1)[-1]
            raise SpaceError(source, where, f"unknown {kind} {v!r}; valid: {', '.join(valid)}")
    _no_duplicates(values, source, where)
    return tuple(values)


def _kernel_sizes(raw: Any, source: str, where: str) -> tuple[int, ...]:
    if not isinstance(raw, (list, tuple)) or not raw:
        raise SpaceError(source, where, f"expected a non-empty list with one odd kernel size per layer slot, "
                                        f"got {raw!r}")
    for i, k in enumerate(raw):
        if not _is_int(k) or k < 1:
            raise SpaceError(source, f"{where}[{i}]", f"{k!r} is not a positive odd integer")
    return tuple(raw)


def parse_stack(raw: Any, name: str, source: str) -> StackSpace:
    """A StackSpace from the YAML mapping of stack `name`; defaults filled in."""
    if raw is None:
        raise SpaceError(source, name, f"missing stack; a space needs both {' and '.join(STACKS)}")
    if not isinstance(raw, dict):
        got = type(raw).__name__
        raise SpaceError(source, name, f"expected a mapping of dimension -> choices, got {got}")
    valid_keys = STACK_KEYS if name == "decoder" else tuple(k for k in STACK_KEYS if k != "enc_attn_layers")
    for key in raw:
        if key not in valid_keys:
            if key == "enc_attn_layers":
                raise SpaceError(source, f"{name}.{key}", "only the decoder attends to encoder layers; "
                                                          "move it under decoder")
            raise SpaceError(source, f"{name}.{key}", f"unknown key; valid keys: {', '.join(valid_keys)}")
    for key in ("layers", "embed_dim", "heads"):
        if key not in raw:
            raise SpaceError(source, f"{name}.{key}", "missing; this dimension has no default")
    has_dim, has_ratio = "ffn_dim" in raw, "ffn_ratio" in raw
    if has_dim == has_ratio:
        problem = "both given" if has_dim else "neither given"
        raise SpaceError(source, f"{name}.ffn_dim", f"{problem}; give exactly one of ffn_dim (absolute dims) "
                                                    "or ffn_ratio (multiples of embed_dim)")

    def where(key: str) -> str:
        return f"{name}.{key}"

    layers = _int_choices(raw["layers"], source, where("layers"))
    kw: dict[str, Any] = {
        "layers": layers,
        "embed_dim": _int_choices(raw["embed_dim"], source, where("embed_dim")),
        "heads": _int_choices(raw["heads"], source, where("heads")),
        "rpr_len": _int_choices(raw.get("rpr_len", DEFAULTS["rpr_len"]), source, where("rpr_len"), minimum=0),
    }
    if has_dim:
        kw["ffn_dim"] = _int_choices(raw["ffn_dim"], source, where("ffn_dim"))
    else:
        kw["ffn_ratio"] = _ratio_choices(raw["ffn_ratio"], source, where("ffn_ratio"))
    for key, valid in CATEGORICAL.items():
        kw[key] = _name_choices(raw.get(key, DEFAULTS[key]), valid, source, where(key))
    if name == "decoder":
        attn = raw.get("enc_attn_layers", (1,))  # default: attend to the last encoder layer only
        kw["enc_attn_layers"] = _int_choices(attn, source, where("enc_attn_layers"))
    if raw.get("kernel_size") is not None:
        kw["kernel_size"] = _kernel_sizes(raw["kernel_size"], source, where("kernel_size"))
    qkv = raw.get("qkv_dim")
    if qkv is not None and (not _is_int(qkv) or qkv < 1):
        raise SpaceError(source, where("qkv_dim"), f"{qkv!r} is not a positive integer; use null for "
                                                   "'equal to embed_dim' or an int such as 512")
    kw["qkv_dim"] = qkv
    return StackSpace(**kw)


def stack_to_dict(st: StackSpace, name: str) -> dict[str, Any]:
    """The YAML mapping of a stack, every key explicit (so a saved space reloads equal)."""
    d: dict[str, Any] = {"layers": list(st.layers), "embed_dim": list(st.embed_dim)}
    if st.ffn_dim is not None:
        d["ffn_dim"] = list(st.ffn_dim)
    else:
        d["ffn_ratio"] = list(st.ffn_ratio or ())
    for key in ("heads", "operator", "activation", "rpr_len", "norm"):
        d[key] = list(getattr(st, key))
    if name == "decoder":
        d["enc_attn_layers"] = list(st.enc_attn_layers or ())
    d["kernel_size"] = list(st.kernel_size)
    d["qkv_dim"] = st.qkv_dim
    return d
