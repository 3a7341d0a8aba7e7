"""Counting the subnets of a space and the human-readable table of `fairseq-nas space show`."""
from __future__ import annotations

from typing import TYPE_CHECKING

from fairseq_nas.space.schema import StackSpace
from fairseq_nas.space.subnet import CONV_OPERATORS
from fairseq_nas.space.validate import fmt

if TYPE_CHECKING:
    from fairseq_nas.space.searchspace import SearchSpace


def _stack_count(st: StackSpace, depths: tuple[int, ...], n_attn: int = 1) -> int:
    """Distinct stacks with a depth in `depths`; `n_attn`: enc_attn_layers choices that fit (decoder)."""
    per_gene = len(st.heads) * len(st.operator) * len(st.activation) * len(st.rpr_len) * len(st.norm) * n_attn
    return sum((len(st.ffn_choices(e)) * per_gene) ** d for d in depths for e in st.embed_dim)


def num_subnets(space: SearchSpace) -> int:
    """Exact count; the decoder's enc_attn_layers choices depend on the encoder depth."""
    enc, dec = space.encoder, space.decoder
    return sum(_stack_count(enc, (d,)) * _stack_count(dec, dec.layers, len(dec.allowed_enc_attn(d)))
               for d in enc.layers)


def format_count(n: int) -> str:
    return f"{n:,}" if n < 10**7 else f"{n:.3g}".replace("e+", "e")


def _rows(st: StackSpace, name: str) -> list[tuple[str, str, str]]:
    rows = [("layers", "per stack", fmt(st.layers)), ("embed_dim", "per stack", fmt(st.embed_dim))]
    if st.ffn_dim is not None:
        rows.append(("ffn_dim", "per layer", fmt(st.ffn_dim)))
    else:
        rows.append(("ffn_ratio", "per layer", f"{fmt(st.ffn_ratio or ())}  (ffn_dim = ratio x embed_dim)"))
    for key in ("heads", "operator", "activation", "rpr_len", "norm"):
        rows.append((key, "per layer", fmt(getattr(st, key))))
    if name == "decoder":
        attn = fmt(st.enc_attn_layers or ())
        rows.append(("enc_attn_layers", "per layer", f"{attn}  (last k encoder layers)"))
    if set(st.operator) & set(CONV_OPERATORS):
        rows.append(("kernel_size", "fixed", f"{fmt(st.kernel_size[:st.max_layers])}  (per layer slot)"))
    rows.append(("qkv_dim", "fixed", str(st.qkv_dim) if st.qkv_dim is not None else "= embed_dim"))
    return rows


def describe(space: SearchSpace) -> str:
    lines = [f"search space {space.name}  ({space.source})"]
    if space.description:
        lines.append(space.description.strip())
    for name in ("encoder", "decoder"):
        rows = [("dimension", "chosen", "choices")] + _rows(getattr(space, name), name)
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines.append("")
        lines.append(name)
        lines.extend(f"  {a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)
    n = num_subnets(space)
    lines.append("")
    lines.append(f"subnets: {format_count(n)}" + (f"  ({n})" if n >= 10**7 else ""))
    return "\n".join(lines)
