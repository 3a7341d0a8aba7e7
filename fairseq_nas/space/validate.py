"""Rules that relate the values of a space to each other, and the check of a subnet against a space."""
from __future__ import annotations

from math import gcd
from typing import TYPE_CHECKING, Iterable, Optional

from fairseq_nas.errors import SpaceError
from fairseq_nas.space.schema import CATEGORICAL, STACKS, StackSpace, ratio_times
from fairseq_nas.space.subnet import StackConfig, Subnet

if TYPE_CHECKING:
    from fairseq_nas.space.searchspace import SearchSpace

LSRA_OPERATORS = ("lsra_lightweight", "lsra_dynamic")
PLAIN_CONV_OPERATORS = ("lightweight_conv", "dynamic_conv")


def fmt(values: Iterable) -> str:
    return ", ".join(str(v) for v in values)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _check_heads(st: StackSpace, widths: list[int], why: str, source: str, name: str) -> None:
    for h in st.heads:
        for w in widths:
            if w % h:
                g = 0
                for x in widths:
                    g = gcd(g, x)
                valid = [d for d in _divisors(g) if d <= 64]
                raise SpaceError(source, f"{name}.heads", f"{h} does not divide {w} ({why}); "
                                                          f"heads dividing every width: {fmt(valid)}")


def check_stack(st: StackSpace, name: str, source: str) -> None:
    """The rules of one stack that parsing alone cannot see (also run on spaces built in code)."""
    where = f"{name}."
    for key in ("layers", "embed_dim", "heads", "operator", "activation", "rpr_len", "norm", "kernel_size"):
        if not getattr(st, key):
            raise SpaceError(source, where + key, "empty choice list; give at least one choice")
    for key, valid in CATEGORICAL.items():
        for v in getattr(st, key):
            if v not in valid:
                raise SpaceError(source, where + key, f"unknown {key} {v!r}; valid: {fmt(valid)}")
    for key in ("layers", "embed_dim", "heads", "ffn_dim", "rpr_len", "enc_attn_layers"):
        for v in getattr(st, key) or ():
            low, kind = (0, "non-negative") if key == "rpr_len" else (1, "positive")
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise SpaceError(source, where + key, f"{v!r} is not a {kind} integer")
    for key in ("layers", "embed_dim", "ffn_dim", "ffn_ratio", "heads", "operator", "activation", "rpr_len",
                "norm", "enc_attn_layers"):
        values = list(getattr(st, key) or ())
        if len(set(values)) != len(values):
            raise SpaceError(source, where + key, f"a choice is listed twice in {fmt(values)}; "
                                                  "list each once")
    if (st.ffn_dim is None) == (st.ffn_ratio is None):
        raise SpaceError(source, where + "ffn_dim", "give exactly one of ffn_dim or ffn_ratio")
    for r in st.ffn_ratio or ():
        for e in st.embed_dim:
            p = ratio_times(r, e)
            if p.denominator != 1:
                raise SpaceError(source, where + "ffn_ratio",
                                 f"{r} x embed_dim {e} = {float(p):g} is not an integer; use ratios "
                                 f"that give whole FFN dims for every embed_dim ({fmt(st.embed_dim)}) "
                                 "or list ffn_dim")
    if name == "encoder" and st.enc_attn_layers is not None:
        raise SpaceError(source, where + "enc_attn_layers", "only the decoder attends to encoder layers")
    if name == "decoder" and not st.enc_attn_layers:
        raise SpaceError(source, where + "enc_attn_layers", "empty choice list; give at least one choice")
    ops = set(st.operator)
    if "self_attention" in ops:
        if st.qkv_dim is not None:
            _check_heads(st, [st.qkv_dim], "qkv_dim, the attention width", source, name)
        else:
            _check_heads(st, list(st.embed_dim), "embed_dim, the attention width", source, name)
    if ops & set(PLAIN_CONV_OPERATORS):
        _check_heads(st, list(st.embed_dim), "embed_dim, the convolution width", source, name)
    if ops & set(LSRA_OPERATORS):
        for e in st.embed_dim:
            if e % 2:
                raise SpaceError(source, where + "embed_dim",
                                 f"{e} is odd but LSRA splits embed_dim in half between attention and "
                                 "convolution; use even dims")
        _check_heads(st, [e // 2 for e in st.embed_dim], "embed_dim/2, the LSRA branch width", source, name)
    if len(st.kernel_size) < st.max_layers:
        raise SpaceError(source, where + "kernel_size", f"{len(st.kernel_size)} kernel sizes for up to "
                                                        f"{st.max_layers} layers; give one per layer slot")
    for i, k in enumerate(st.kernel_size):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k % 2 == 0:
            raise SpaceError(source, f"{where}kernel_size[{i}]", f"{k!r} is not a positive odd integer "
                                                                "(convolutions pad symmetrically)")
    if st.qkv_dim is not None and (not isinstance(st.qkv_dim, int) or st.qkv_dim < 1):
        raise SpaceError(source, where + "qkv_dim", f"{st.qkv_dim!r} is not a positive integer or null")


def check_space(space: SearchSpace) -> None:
    """Every rule of a space; raises SpaceError naming `space.source` and the field."""
    source = space.source
    if not isinstance(space.name, str) or not space.name:
        raise SpaceError(source, "name", f"expected a non-empty string, got {space.name!r}")
    for name in STACKS:
        st = getattr(space, name)
        if not isinstance(st, StackSpace):
            raise SpaceError(source, name, f"missing stack; a space needs both {' and '.join(STACKS)}")
        check_stack(st, name, source)
    enc_max, enc_min = space.encoder.max_layers, min(space.encoder.layers)
    attn = space.decoder.enc_attn_layers or ()
    if max(attn) > enc_max:
        raise SpaceError(source, "decoder.enc_attn_layers",
                         f"{max(attn)} exceeds the deepest encoder ({enc_max} layers); valid: 1 to {enc_max}")
    if min(attn) > enc_min:
        raise SpaceError(source, "decoder.enc_attn_layers",
                         f"no choice fits the shallowest encoder ({enc_min} layers); "
                         f"include a choice of at most {enc_min}")


# --------------------------------------------------------------------------------------------
# Subnet against a space.


def _outside(source: str, field: str, what: str, value: object, choices: Iterable,
             space_name: str) -> SpaceError:
    return SpaceError(source, field, f"{what} {value!r} is not in space {space_name}; valid: {fmt(choices)}")


def _check_stack_subnet(st: StackSpace, sc: StackConfig, name: str, source: str, space_name: str,
                        encoder_depth: Optional[int]) -> None:
    if not isinstance(sc, StackConfig):
        raise SpaceError(source, name, f"expected a StackConfig, got {type(sc).__name__}")
    if sc.depth not in st.layers:
        raise _outside(source, f"{name}.layers", "depth", sc.depth, st.layers, space_name)
    if sc.embed_dim not in st.embed_dim:
        raise _outside(source, f"{name}.embed_dim", "embed_dim", sc.embed_dim, st.embed_dim, space_name)
    ffn_ok = st.ffn_choices(sc.embed_dim)
    allowed_attn = st.allowed_enc_attn(encoder_depth) if encoder_depth is not None else ()
    for i, lay in enumerate(sc.layers):
        where = f"{name}.layers[{i}]"
        if lay.ffn_dim not in ffn_ok:
            raise SpaceError(source, f"{where}.ffn_dim",
                             f"ffn_dim {lay.ffn_dim!r} is not allowed with embed_dim {sc.embed_dim} "
                             f"in space {space_name}; valid: {fmt(ffn_ok)}")
        for gene in ("heads", "operator", "activation", "rpr_len", "norm"):
            value = getattr(lay, gene)
            if value not in getattr(st, gene):
                raise _outside(source, f"{where}.{gene}", gene, value, getattr(st, gene), space_name)
        if encoder_depth is None:
            if lay.enc_attn_layers is not None:
                raise SpaceError(source, f"{where}.enc_attn_layers", "only decoder layers have this field")
        elif lay.enc_attn_layers not in allowed_attn:
            if lay.enc_attn_layers in (st.enc_attn_layers or ()):
                raise SpaceError(source, f"{where}.enc_attn_layers",
                                 f"{lay.enc_attn_layers} exceeds the encoder depth {encoder_depth}; "
                                 f"valid: {fmt(allowed_attn)}")
            raise _outside(source, f"{where}.enc_attn_layers", "enc_attn_layers", lay.enc_attn_layers,
                           allowed_attn, space_name)


def validate_subnet(space: SearchSpace, subnet: Subnet, source: str = "subnet") -> None:
    """Raise SpaceError (naming `source` and the field) unless `subnet` is in `space`."""
    if not isinstance(subnet, Subnet):
        raise SpaceError(source, "<subnet>", f"expected a Subnet, got {type(subnet).__name__}")
    _check_stack_subnet(space.encoder, subnet.encoder, "encoder", source, space.name, None)
    _check_stack_subnet(space.decoder, subnet.decoder, "decoder", source, space.name, subnet.encoder.depth)
