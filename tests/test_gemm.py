"""The synapses' dense products (``neuroplast.snn.gemm``): oneDNN where it applies, torch's own
otherwise, the same values and gradients either way."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuroplast.snn import build_network, gemm

onednn = pytest.mark.skipif(not gemm._onednn_available(), reason="this torch has no oneDNN linear")


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@onednn
@pytest.mark.parametrize("lead", [(96,), (6, 16)])
def test_linear_gives_f_linear_values_and_gradients(lead):
    x, w, b = _rand(*lead, 300, seed=1), _rand(200, 300, seed=2), _rand(200, seed=3)
    assert gemm._use_onednn(x.reshape(-1, 300), w, 96, 300, 200)    # the oneDNN path is what is tested
    g = _rand(*lead, 200, seed=4)
    out = []
    for fn in (F.linear, gemm.linear):
        xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, w, b))
        y = fn(xs, ws, bs)
        y.backward(g)
        out.append((y.detach(), xs.grad, ws.grad, bs.grad))
    for ref, got in zip(*out):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(gemm.linear(x, w, b), out[0][0], rtol=1e-5, atol=1e-4)


@onednn
def test_strided_expanded_or_broadcast_biases_are_added_as_f_linear_adds_them():
    x, w = _rand(96, 300, seed=1), _rand(200, 300, seed=2)
    for b in (_rand(400, seed=3)[::2], _rand(1, seed=3).expand(200), _rand(1, seed=3)):
        torch.testing.assert_close(gemm.linear(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-4)


@onednn
def test_second_order_gradients_through_linear_and_mm():
    """A backward with create_graph=True records torch's own products: the second derivative is F.linear's."""
    x, w, b = (t.requires_grad_(True) for t in (_rand(96, 300, seed=1), _rand(200, 300, seed=2), _rand(200, seed=3)))
    out = []
    for fn in (F.linear, gemm.linear):
        (gx,) = torch.autograd.grad(fn(x, w, b).pow(2).sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.pow(2).sum(), w)
        out.append(gw)
    assert out[0].abs().max() > 0
    assert (out[1] - out[0]).norm() < 1e-4 * out[0].norm()   # float32 sums of large terms: a norm-wise check


@onednn
def test_autocast_and_tracing_keep_torchs_product():
    x, w = _rand(96, 300, seed=1), _rand(200, 300, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gemm.linear(x, w).dtype == F.linear(x, w).dtype == torch.bfloat16
    traced = torch.jit.trace(gemm.Dense(300, 200), x)
    assert traced(x).shape == (96, 200)


@onednn
def test_mm_of_transposed_views():
    a, b = _rand(400, 300, seed=5), _rand(400, 200, seed=6)
    torch.testing.assert_close(gemm.mm(a.t(), b), a.t() @ b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gemm.mm(b.t().contiguous(), a), b.t() @ a, rtol=1e-5, atol=1e-4)


@onednn
def test_a_transposed_operand_is_copied_by_the_c_transpose_bit_for_bit(monkeypatch):
    """gᵀ·x (the weight gradient) hands oneDNN a contiguous gᵀ: the C tiled transpose where it is built,
    torch's copy otherwise, the same product to the bit (odd sizes: partial tiles)."""
    from neuroplast.snn import native_lib
    if native_lib.library() is None:
        pytest.skip(f"no C kernels: {native_lib.reason()}")
    g, x = _rand(301, 97, seed=7), _rand(301, 45, seed=8)   # 1.3 M MACs: oneDNN
    assert torch.equal(gemm._contiguous(g.t()), g.t().contiguous())
    fast = gemm.mm(g.t(), x)
    monkeypatch.setattr(native_lib, "usable", lambda *t: False)
    assert gemm._contiguous(g.t()).is_contiguous() is False     # left to oneDNN's own copy
    assert torch.equal(gemm.mm(g.t(), x), fast)


def test_small_float64_and_non_cpu_products_are_torchs_own():
    x, w = _rand(4, 16, seed=1), _rand(12, 16, seed=2)
    assert torch.equal(gemm.linear(x, w), F.linear(x, w))            # below MIN_MACS
    xd, wd = _rand(96, 300, seed=1, dtype=torch.float64), _rand(200, 300, seed=2, dtype=torch.float64)
    assert torch.equal(gemm.linear(xd, wd), F.linear(xd, wd))
    assert torch.equal(gemm.mm(xd, wd.t()), xd @ wd.t())
    assert not gemm._use_onednn(torch.empty(0, device="meta"), torch.empty(0, device="meta"), 1 << 20, 1, 1)


@onednn
def test_torchs_mkldnn_switch_is_respected():
    x, w = _rand(96, 300, seed=1), _rand(200, 300, seed=2)
    assert gemm._use_onednn(x, w, 96, 300, 200)
    with torch.backends.mkldnn.flags(enabled=False):
        assert not gemm._use_onednn(x, w, 96, 300, 200)
        assert torch.equal(gemm.linear(x, w), F.linear(x, w))


def test_dense_is_a_linear_with_the_same_state_dict():
    net = build_network("16-12-10", input_shape=(16,), num_classes=10, generator=torch.Generator().manual_seed(0))
    ops = [layer.op for layer in net.layers.values()]
    assert all(isinstance(op, gemm.Dense) and isinstance(op, nn.Linear) for op in ops)
    plain = nn.Linear(16, 12)
    plain.load_state_dict(ops[0].state_dict())
    x = _rand(5, 16)
    assert torch.equal(plain(x), ops[0](x))


def test_the_environment_can_keep_torchs_gemm():
    code = "from neuroplast.snn import gemm; print(gemm._onednn_available())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "NEUROPLAST_GEMM": "default"})
    assert out.stdout.strip() == "False"
