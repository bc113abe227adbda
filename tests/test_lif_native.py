"""The C LIF scans (``lif_native``): forward bit-identical to the eager scan, adjoint and gates equal to it
to float rounding for every surrogate with a closed form, the same numbers on any thread count, and a
clean fallback to the eager scans where no compiler builds the library."""
import os
import subprocess
import sys

import pytest
import torch

from neuroplast.snn import LIFParams, lif_native, lif_scan, make_estimator
from neuroplast.snn.lif_sequence import lif_sequence
from neuroplast.snn.neurons import lif_reference
from neuroplast.snn.spikefn import gate

needs_native = pytest.mark.skipif(not lif_native.available(), reason=f"no C LIF scans: {lif_native.reason()}")
SURROGATES = ["sigmoid:k=4", "fast_sigmoid:k=3", "triangle:w=0.8", "arctan:alpha=2", "rectangular:w=2",
              "gaussian:sigma=0.5"]
#: one block and a tail, several blocks and a tail (lif.c: BLOCK = 512 neurons)
SHAPES = [(6, 3, 7, 5), (5, 4, 1537)]


def _eager_forward(current, params, state=None, **keep):
    """lif_scan.scan_forward with the C scan switched off."""
    real = lif_native.forward
    lif_native.forward = lambda *a, **k: None
    try:
        return lif_scan.scan_forward(current, params, state, **keep)
    finally:
        lif_native.forward = real


def _current(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.9 + 0.4


@needs_native
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_forward_is_the_eager_scan_bit_for_bit(shape, reset):
    params = LIFParams(leak=0.7, threshold=0.9, reset=reset)
    current = _current(shape)
    U, S = lif_native.forward(current, params)
    U0, S0, _ = _eager_forward(current, params)
    assert torch.equal(U, U0) and torch.equal(S, S0) and 0.05 < S.mean() < 0.95
    # from a carried state (the online rules' windows), and with u not kept (inference)
    state = (U0[-1] * 1.1, S0[-1])
    U1, S1 = lif_native.forward(current, params, state)
    U2, S2, _ = _eager_forward(current, params, state)
    assert torch.equal(U1, U2) and torch.equal(S1, S2)
    none, S3 = lif_native.forward(current, params, keep_u=False)
    assert none is None and torch.equal(S3, S0)
    # a current constant in time (stride 0 over T) is read in place
    const = current[0].unsqueeze(0).expand(current.shape)
    assert torch.equal(lif_native.forward(const, params)[1], _eager_forward(const.contiguous(), params)[1])


@needs_native
@pytest.mark.parametrize("estimator", SURROGATES)
@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("summed", [False, True])
def test_adjoint_equals_the_eager_adjoint(estimator, reset, summed):
    params = LIFParams(leak=0.6, threshold=1.0, reset=reset)
    derivative = make_estimator(estimator).pointwise_derivative()
    current = _current(SHAPES[1], 1)
    U, S, K = _eager_forward(current, params)
    grad = torch.randn(current.shape, generator=torch.Generator().manual_seed(2))
    ref = lif_scan.scan_backward(grad, U, K, params, derivative, summed=summed)
    out = lif_native.adjoint(grad, U, params, derivative, summed=summed)
    assert out.shape == ref.shape and ref.abs().max() > 0.1
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@needs_native
@pytest.mark.parametrize("estimator", SURROGATES)
def test_gate_equals_the_eager_gate(estimator):
    derivative = make_estimator(estimator).pointwise_derivative()
    u = torch.linspace(-30, 30, 20001)     # both tails, where exp underflows, and every width's window
    grad = torch.randn(u.shape, generator=torch.Generator().manual_seed(3))
    ref = gate(derivative, grad, u, 0.5, torch.empty_like(u), torch.empty_like(u))
    out = lif_native.gate(derivative, grad, u, 0.5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-7)
    assert lif_native.gate(derivative, grad, u, 0.5, grad) is grad and torch.equal(grad, out)   # in place


@needs_native
def test_lif_sequence_uses_the_c_scans_and_matches_the_reference():
    """Through autograd: spikes exactly, gradients to 1e-6, default and --compile (the C adjoint)."""
    params = LIFParams(leak=0.7, threshold=0.9)
    est = make_estimator("sigmoid:k=4")
    current = _current(SHAPES[0]).requires_grad_(True)
    w = torch.randn(current.shape, generator=torch.Generator().manual_seed(4))
    ref = lif_reference(current, params, est)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), current)
    for compiled in (False, True):
        out = lif_sequence(current, params, est.pointwise_derivative(), compiled=compiled)
        assert torch.equal(out, ref)
        torch.testing.assert_close(torch.autograd.grad((out * w).sum(), current)[0], g_ref, rtol=1e-6, atol=1e-6)


@needs_native
def test_the_same_numbers_on_any_thread_count():
    params = LIFParams()
    derivative = make_estimator("sigmoid:k=4").pointwise_derivative()
    current = _current((4, 8, 3000), 5)
    grad = torch.randn(current.shape, generator=torch.Generator().manual_seed(6))
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            U, S = lif_native.forward(current, params)
            runs.append((U, S, lif_native.adjoint(grad, U, params, derivative)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_float64_and_estimators_without_a_closed_form_take_the_eager_scans():
    params = LIFParams()
    current = _current(SHAPES[0]).double()
    assert lif_native.forward(current, params) is None
    localzo = make_estimator("localzo:m=2").pointwise_derivative()
    x = torch.zeros(3, 4)
    assert lif_native.gate(localzo, x, x, 1.0) is None and lif_native.adjoint(x, x, params, localzo) is None


@pytest.mark.parametrize("env", [{"NEUROPLAST_NATIVE": "0"}, {"CC": "/nonexistent/cc"}])
def test_without_a_compiler_the_eager_scans_run(env, tmp_path):
    """No library (switched off, or no compiler): ``reason()`` says why, and training runs on the eager scans
    with the same spikes."""
    code = ("import torch; from neuroplast.snn import lif_native, LIFParams, make_estimator\n"
            "from neuroplast.snn.lif_sequence import lif_sequence\n"
            "c = (torch.randn(5, 4, 9, generator=torch.Generator().manual_seed(0)) + 0.5).requires_grad_(True)\n"
            "s = lif_sequence(c, LIFParams(), make_estimator('sigmoid').pointwise_derivative())\n"
            "s.sum().backward()\n"
            "print(lif_native.available(), lif_native.reason(), int(s.sum()), bool(c.grad.abs().sum() > 0), sep=' | ')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NEUROPLAST_CACHE": str(tmp_path), **env})
    assert out.returncode == 0, out.stderr
    available, why, spikes, has_grad = out.stdout.strip().split(" | ")
    assert available == "False" and has_grad == "True"
    assert ("NEUROPLAST_NATIVE=0" in why) if "NEUROPLAST_NATIVE" in env else ("/nonexistent/cc" in why)
    c = torch.randn(5, 4, 9, generator=torch.Generator().manual_seed(0)) + 0.5
    assert int(spikes) == int(lif_reference(c, LIFParams(), make_estimator("sigmoid")).sum())


@needs_native
def test_a_corrupt_cached_library_is_built_again(tmp_path):
    code = "from neuroplast.snn import lif_native; print(lif_native.available(), lif_native.reason())"
    env = {**os.environ, "NEUROPLAST_CACHE": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    (lib,) = (tmp_path / "native").glob("kernels-*.so")
    lib.write_bytes(b"not a shared object")
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert first.stdout.split()[0] == again.stdout.split()[0] == "True", again.stderr
    assert lib.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.parametrize("k", [4.0, 3.7])
@pytest.mark.parametrize("n", [1, 17, 12545, 300_000])
def test_sigmoid_gate_c_passes_equal_the_eager_passes_bit_for_bit(k, n, monkeypatch):
    """The default sigmoid gate (native/sigmoid_gate.c around torch's sigmoid) gives the six eager passes'
    numbers to the bit, in place (out = tmp, out = grad) included; the vectorised loops and their tails."""
    from neuroplast.snn import native_lib, surrogates
    if native_lib.library() is None:
        pytest.skip(f"no C kernels: {native_lib.reason()}")
    est = make_estimator(f"sigmoid:k={k}")
    g = torch.Generator().manual_seed(n)
    u, grad = torch.randn(n, generator=g) * 2 + 0.5, torch.randn(n, generator=g)
    same = torch.empty(n)
    fast = [est.fused_gate(grad, u, 0.8, torch.empty(n), torch.empty(n)),
            est.fused_gate(grad, u, 0.8, same, same)]
    g2 = grad.clone()
    fast.append(est.fused_gate(g2, u, 0.8, g2, torch.empty(n)))
    monkeypatch.setattr(surrogates, "_native_passes", lambda *t: False)
    ref = est.fused_gate(grad, u, 0.8, torch.empty(n), torch.empty(n))
    assert ref.abs().max() > 0 and all(torch.equal(f, ref) for f in fast)


@needs_native
@pytest.mark.parametrize("method", ["bptt", "ottt", "dfa", "opzo"])
@pytest.mark.parametrize("whole", [True, False])
def test_default_training_gives_the_same_numbers_with_and_without_the_c_kernels(method, whole, monkeypatch):
    """The C kernels of the default path (LIF forward, pooling, sigmoid gate passes, transposes) change
    no number: losses, outputs, spike counts and gradients to the bit, float32, conv and dense layers;
    ``whole=False`` sends every layer's top-down signals step by step (``batched._stepwise*``)."""
    from neuroplast.data import encode
    from neuroplast.learn import CEMSELoss, batched, make_rule
    from neuroplast.snn import build_network, native_lib
    if not whole:
        monkeypatch.setattr(batched, "WHOLE", 0)
    runs = []
    for library in (native_lib.library, lambda: None):
        monkeypatch.setattr(native_lib, "library", library)
        net = build_network("1x12x12-6C3-AP2-40-FC", input_shape=(1, 12, 12), num_classes=10,
                            generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            net.layers["dense1"].op.weight.mul_(3)   # the dense layer fires (a fifth of its neurons a step)
        rule = make_rule(method)
        rule.generator = torch.Generator().manual_seed(3)
        x = encode("direct", torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(1)) * 3, 6)
        y = torch.arange(8) % 10
        res = [rule.compute_grads(net, x, y, CEMSELoss()) for _ in range(2)]
        runs.append((res, {k: p.grad for k, p in net.named_parameters() if p.grad is not None}))
    (c_res, c_grads), (t_res, t_grads) = runs
    for a, b in zip(c_res, t_res):
        assert a.loss == b.loss and torch.equal(a.logits, b.logits)
        assert all(torch.equal(a.spike_counts[k], b.spike_counts[k]) for k in a.spike_counts)
    assert set(c_grads) == set(t_grads) and all(g.abs().sum() > 0 for g in c_grads.values())
    for k in c_grads:
        assert torch.equal(c_grads[k], t_grads[k]), k


@needs_native
@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("summed", [False, True])
@pytest.mark.parametrize("T", [1, 2, 6])
def test_sigmoid_adjoint_is_the_eager_adjoint_bit_for_bit(reset, summed, T, monkeypatch):
    """The default BPTT adjoint of the sigmoid surrogate in C passes around torch's sigmoid gives the eager
    scan's numbers to the bit (k not a power of two: the multiply-adds must round as torch's do)."""
    params = LIFParams(leak=0.63, threshold=0.9, reset=reset)
    derivative = make_estimator("sigmoid:k=3.7").pointwise_derivative()
    current = _current((T, 4, 1537), 7)
    U, _, K = _eager_forward(current, params)
    grad = torch.randn(current.shape, generator=torch.Generator().manual_seed(8))
    fast = lif_scan.scan_backward(grad, U, None, params, derivative, summed=summed)
    monkeypatch.setattr(lif_native, "sigmoid_adjoint", lambda *a, **k: None)
    ref = lif_scan.scan_backward(grad, U, K, params, derivative, summed=summed)
    assert ref.abs().max() > 0.1 and torch.equal(fast, ref)


@needs_native
@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_forward_outputs_past_the_caches_are_streamed_bit_for_bit(reset):
    """Outputs over 16 MB go out by streaming stores (native/stream.h): an odd N puts the rows off the
    vector alignment, so the aligned part, its scalar head and its tail all run."""
    params = LIFParams(leak=0.8, threshold=0.7, reset=reset)
    current = _current((2, 2_100_001), 11)          # 16.8 MB per output
    U, S = lif_native.forward(current, params)
    U0, S0, _ = _eager_forward(current, params)
    assert torch.equal(U, U0) and torch.equal(S, S0)
