"""The native CPU convolution kernels (modules/conv_kernels.cpp) against the pure-PyTorch paths
and fairseq's modules, at channel counts that reach each of their code paths: 64-, 16- and
8-channel blocks with a 16-wide head pattern (H divides 16), a 64-wide one (H = 32), a pattern
over all channels (H divides neither), and leftover channels after the last block."""
from __future__ import annotations

import shutil

import pytest
import torch
from fairseq.modules import DynamicConv1dTBC, LightweightConv1dTBC

from fairseq_nas.modules import ElasticDynamicConv, ElasticLightweightConv, native

# (channels, heads): 16-wide pattern, a 64 block + a 16 block; 64 + 3 x 16 + 8 blocks; 64-wide
# pattern; pattern over all channels + 38 one by one; an 8 block + 4 one by one
SHAPES = [(80, 4), (120, 8), (128, 32), (102, 3), (12, 4)]
KERNELS = [1, 3, 31]
LENGTHS = [1, 7, 40]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def ops():
    built = native.conv_ops()
    if built is None:
        pytest.skip("native kernels unavailable (no C++ compiler or switched off)")
    return built


def test_native_kernels_build_where_a_compiler_exists():
    if shutil.which("c++") is None or not native.enabled():
        pytest.skip("no C++ compiler here, or FAIRSEQ_NAS_NATIVE_CONV=0")
    assert native.conv_ops() is not None


def test_a_built_module_is_imported_by_the_next_process_without_building(ops):
    """Once built (the stamp beside the .so), another process imports the module directly: no
    build, no ninja run (processes whose environments differ rebuilt over each other before). Here
    the next process has neither a compiler nor ninja on its PATH, so only a direct import works."""
    import os
    import subprocess
    import sys

    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout); "
            "from fairseq_nas.modules.native import conv_ops; print('module', conv_ops().__file__)")
    env = dict(os.environ, PATH="/nonexistent")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"module {ops.__file__}" in proc.stdout
    assert "building the native convolution kernels" not in proc.stdout + proc.stderr


def test_switching_the_kernels_off_takes_the_pytorch_path(monkeypatch, ops):
    conv = ElasticLightweightConv(4, 3, causal=False)
    x = torch.randn(5, 2, 8)
    assert conv._native_full_sequence(x, None) is ops
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.conv_ops() is None
    assert conv._native_full_sequence(x, None) is None
    # decoding steps and half precision never take the native kernels
    monkeypatch.delenv(native.ENV_SWITCH)
    assert conv._native_full_sequence(x, {}) is None
    assert conv._native_full_sequence(x.to(torch.bfloat16), None) is None


def _build(kind: str, c: int, heads: int, k: int, causal: bool, weight_dropout: float):
    if kind == "lightweight":
        conv = ElasticLightweightConv(max_heads=heads, kernel_size=k, causal=causal, weight_dropout=weight_dropout)
        return conv, lambda: conv.weight.grad
    conv = ElasticDynamicConv(embed_max=c, max_heads=heads, kernel_size=k, causal=causal,
                              weight_dropout=weight_dropout)
    return conv, lambda: conv.weight_linear.weight.grad


def _run(conv, weight_grad, x, g, heads: int):
    conv.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(7)  # one weight-dropout mask for both paths
    out = conv(x, heads)
    out.backward(g)
    return out.detach(), x.grad, weight_grad().clone()


def _cases():
    """Every shape, kernel, length and side in float32; float64 on two shapes (the dispatch of the
    other scalar type, at the 8-block and the all-channel pattern)."""
    for kind in ("lightweight", "dynamic"):
        for c, heads in SHAPES:
            for causal in (False, True):
                for k in KERNELS:
                    for t in LENGTHS:
                        dtypes = [torch.float32]
                        if (c, heads) in ((120, 8), (102, 3)) and k > 1 and t > 1:
                            dtypes.append(torch.float64)
                        for dtype in dtypes:
                            side = "decoder" if causal else "encoder"
                            name = f"{kind}-C{c}-H{heads}-{side}-K{k}-T{t}-{str(dtype).split('.')[-1]}"
                            yield pytest.param(kind, c, heads, causal, k, t, dtype, id=name)


@pytest.mark.parametrize("kind,c,heads,causal,k,t,dtype", list(_cases()))
def test_native_equals_pytorch_paths_forward_and_backward(monkeypatch, ops, kind, c, heads, causal, k, t, dtype):
    """Output, input gradient and parameter gradient, in training mode with weight dropout."""
    conv, weight_grad = _build(kind, c, heads, k, causal, weight_dropout=0.2)
    conv = conv.to(dtype).train()
    x, g = torch.randn(t, 3, c, dtype=dtype), torch.randn(t, 3, c, dtype=dtype)
    assert conv._native_full_sequence(x, None) is ops
    native_result = _run(conv, weight_grad, x, g, heads)
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert conv._native_full_sequence(x, None) is None
    pytorch_result = _run(conv, weight_grad, x, g, heads)
    atol = 1e-5 if dtype == torch.float32 else 1e-10
    for name, a, b in zip(("output", "input grad", "weight grad"), native_result, pytorch_result):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-5 if dtype == torch.float32 else 1e-9, msg=name)


@pytest.mark.parametrize("k", [3, 7, 15, 31])
@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "decoder"])
@pytest.mark.parametrize("kind", ["lightweight", "dynamic"])
def test_native_equals_fairseq_at_a_full_block_width(ops, kind, causal, k):
    """80 channels in 4 heads (one whole block and a leftover) against fairseq's module, forward and
    backward, in fairseq's channel order (its head j owns a block of C / H channels)."""
    c, heads, t = 80, 4, 20
    pad = k - 1 if causal else k // 2
    order = torch.arange(c).view(c // heads, heads).t().reshape(-1)
    conv, weight_grad = _build(kind, c, heads, k, causal, weight_dropout=0.0)
    if kind == "lightweight":
        ref = LightweightConv1dTBC(c, kernel_size=k, padding_l=pad, num_heads=heads, weight_softmax=True)
        ref.weight.data.copy_(conv.weight.detach().unsqueeze(1))

        def ref_weight_grad():
            return ref.weight.grad.squeeze(1)
    else:
        ref = DynamicConv1dTBC(c, kernel_size=k, padding_l=pad, num_heads=heads, weight_softmax=True)
        ref.weight_linear.weight.data.copy_(conv.weight_linear.weight.detach()[:, order])

        def ref_weight_grad():
            grad = torch.empty_like(ref.weight_linear.weight.grad)
            grad[:, order] = ref.weight_linear.weight.grad
            return grad
    conv.eval(), ref.eval()
    x, g = torch.randn(t, 2, c), torch.randn(t, 2, c)
    out, gx, gw = _run(conv, weight_grad, x, g, heads)
    xr = x[..., order].clone().requires_grad_()
    ref_out = ref(xr)
    ref_out.backward(g[..., order])
    torch.testing.assert_close(out[..., order], ref_out.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(gx[..., order], xr.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(gw, ref_weight_grad(), atol=1e-5, rtol=1e-5)


def test_native_kernels_use_both_threads_alike(ops):
    """Workers split sentences (and, for the lightweight kernel gradient, sum per-worker partials):
    one thread and two give the same results."""
    x, g = torch.randn(9, 5, 120, dtype=torch.float64), torch.randn(9, 5, 120, dtype=torch.float64)
    w = torch.randn(4, 7, dtype=torch.float64)
    wd = torch.randn(9, 5, 4, 7, dtype=torch.float64)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append((ops.lightweight_forward(x, w, 3), ops.lightweight_weight_grad(x, g, 4, 7, 3),
                            ops.dynamic_forward(x, wd, 6), *ops.dynamic_backward(x, wd, g, 6, True, True)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_native_kernels_reject_bad_shapes_with_a_message(ops):
    with pytest.raises(RuntimeError, match="cannot be split over 3 heads"):
        ops.lightweight_forward(torch.randn(4, 2, 8), torch.randn(3, 5), 2)
    with pytest.raises(RuntimeError, match="T x B x H x K"):
        ops.dynamic_forward(torch.randn(4, 2, 8), torch.randn(5, 2, 4, 3), 1)
