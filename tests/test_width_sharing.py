"""Weight sharing means the same thing at every width (DESIGN.md section 5).

For every operator that has a channel-to-head or channel-to-branch map (lightweight and
dynamic convolution, alone and inside LSRA) and for every pair of widths and every head
count that a shipped space allows, the module at the narrow width equals the front slice
of the same module at the wide width: full sequences and incremental decoding alike.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch import nn

from fairseq_nas.modules import ElasticDynamicConv, ElasticLightweightConv, MixerMax, build_mixer
from fairseq_nas.modules.mixers import lsra_merge, lsra_split
from fairseq_nas.space import list_builtin_spaces, load_space

TOL = 1e-6
T, B, K = 6, 2, 5
DEMO_SPACE = Path(__file__).resolve().parents[1] / "scripts" / "demo-space.yaml"
CONV_OPS = ("lightweight_conv", "dynamic_conv", "lsra_lightweight", "lsra_dynamic")


def _conv_cases() -> list[tuple[str, str, int, int, int]]:
    """(space, op, heads, narrow width, wide width) for each conv a shipped space can build.
    An LSRA's convolution runs on half the embed dim."""
    cases = set()
    for name in [*list_builtin_spaces(), str(DEMO_SPACE)]:
        space = load_space(name)
        for stack in (space.encoder, space.decoder):
            for op in set(stack.operator) & set(CONV_OPS):
                widths = sorted({e // 2 if op.startswith("lsra") else e for e in stack.embed_dim})
                kind = "dynamic" if op.endswith("dynamic") or op == "dynamic_conv" else "lightweight"
                for h in stack.heads:
                    for narrow, wide in itertools.combinations(widths, 2):
                        cases.add((Path(name).stem, kind, h, narrow, wide))
    return sorted(cases)


CASES = _conv_cases()


def test_the_shipped_spaces_give_width_pairs_to_check():
    assert len(CASES) >= 10, CASES
    assert {c[1] for c in CASES} == {"lightweight", "dynamic"}
    # the pairs the old c // heads map got wrong: same heads, different channels per head
    assert any(n // h != w // h for _, _, h, n, w in CASES)


def _randomize(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.5)
    return module.eval()


def _incremental(conv, x: torch.Tensor, heads: int) -> torch.Tensor:
    state: dict = {}
    return torch.cat([conv(x[t:t + 1], heads, incremental_state=state) for t in range(x.size(0))])


@pytest.mark.parametrize("space,kind,heads,narrow,wide", CASES)
@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "decoder"])
def test_narrow_conv_is_the_front_slice_of_the_wide_conv(space, kind, heads, narrow, wide, causal):
    torch.manual_seed(1)
    if kind == "lightweight":
        conv = _randomize(ElasticLightweightConv(max_heads=heads, kernel_size=K, causal=causal))
        x = torch.randn(T, B, wide)
    else:
        # In float64: the kernel predictor's matmul sums over `wide` inputs (zeros included), and
        # float32 BLAS blocking then differs from the narrow sum by a few 1e-6.
        conv = _randomize(ElasticDynamicConv(embed_max=wide, max_heads=heads, kernel_size=K, causal=causal)).double()
        # the kernels are predicted from the input: the wide input is zero beyond the narrow width
        x = torch.cat([torch.randn(T, B, narrow), torch.zeros(T, B, wide - narrow)], dim=-1).double()
    with torch.no_grad():
        torch.testing.assert_close(conv(x[..., :narrow], heads), conv(x, heads)[..., :narrow], atol=TOL, rtol=0)
        if causal:
            torch.testing.assert_close(_incremental(conv, x[..., :narrow], heads),
                                       _incremental(conv, x, heads)[..., :narrow], atol=TOL, rtol=0)


@pytest.mark.parametrize("narrow,wide", [(160, 240), (160, 320), (240, 320), (64, 96), (512, 640)])
def test_lsra_sends_every_channel_to_the_same_branch_at_every_width(narrow, wide):
    x = torch.randn(T, B, wide)
    attn_wide, conv_wide = lsra_split(x)
    attn_narrow, conv_narrow = lsra_split(x[..., :narrow])
    assert attn_narrow.size(-1) == conv_narrow.size(-1) == narrow // 2
    torch.testing.assert_close(attn_narrow, attn_wide[..., :narrow // 2], atol=0, rtol=0)
    torch.testing.assert_close(conv_narrow, conv_wide[..., :narrow // 2], atol=0, rtol=0)
    merged = lsra_merge(attn_wide, conv_wide)
    torch.testing.assert_close(merged, x, atol=0, rtol=0)
    torch.testing.assert_close(lsra_merge(attn_narrow, conv_narrow), merged[..., :narrow], atol=0, rtol=0)


@pytest.mark.parametrize("op", ["lsra_lightweight", "lsra_dynamic"])
@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
def test_real_lsra_module_feeds_its_branches_front_slices(op, incremental):
    """Inside the LSRA module: the inputs its attention and convolution branches receive at the
    narrow width are the front slices of those at the wide width (demo-space widths)."""
    narrow, wide, heads = 64, 96, 4
    m = MixerMax(embed=wide, qkv=wide, heads=heads, head_dim=wide // 2, rpr_len=0, kernel_size=K)
    mixer = _randomize(build_mixer(op, m, causal=True))
    seen: dict[str, list[torch.Tensor]] = {"attn": [], "conv": []}
    hooks = [getattr(mixer, name).register_forward_pre_hook(
        lambda mod, args, name=name: seen[name].append(args[0])) for name in seen]
    x = torch.randn(T, B, wide)
    mask = torch.triu(torch.full((T, T), float("-inf")), 1)
    with torch.no_grad():
        for width in (wide, narrow):
            if incremental:
                state: dict = {}
                for t in range(T):
                    mixer(x[t:t + 1, :, :width], heads=heads, qkv_dim=0, rpr_len=0, padding_mask=None,
                          attn_mask=None, incremental_state=state)
            else:
                mixer(x[..., :width], heads=heads, qkv_dim=0, rpr_len=0, padding_mask=None, attn_mask=mask,
                      incremental_state=None)
    for h in hooks:
        h.remove()
    for name, inputs in seen.items():
        half = len(inputs) // 2
        wide_in, narrow_in = torch.cat(inputs[:half]), torch.cat(inputs[half:])
        assert narrow_in.size(-1) == narrow // 2, name
        torch.testing.assert_close(narrow_in, wide_in[..., :narrow // 2], atol=0, rtol=0, msg=name)
