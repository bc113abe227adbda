"""The fused LIF recursion equals autograd through the reference ``lif_step``."""
import pytest
import torch

from neuroplast.snn import LIFParams, make_estimator
from neuroplast.snn.lif_sequence import lif_sequence
from neuroplast.snn.neurons import lif_reference


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("estimator", ["sigmoid:k=4", "triangle:w=1", "gaussian:sigma=0.3"])
def test_fused_lif_matches_autogradlif_reference(reset, estimator):
    torch.manual_seed(0)
    params = LIFParams(leak=0.8, threshold=0.7, reset=reset)
    est = make_estimator(estimator)
    current = (torch.randn(7, 5, 11, dtype=torch.float64) * 0.8).requires_grad_(True)
    weights = torch.randn(7, 5, 11, dtype=torch.float64)
    ref = lif_reference(current, params, est)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), current)
    fused = lif_sequence(current, params, est.pointwise_derivative())
    (g_fused,) = torch.autograd.grad((fused * weights).sum(), current)
    assert torch.equal(ref, fused) and 0 < ref.mean() < 1
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-12, atol=1e-12)


def test_fused_lif_accepts_constant_input_view():
    params = LIFParams()
    est = make_estimator("sigmoid")
    x = torch.rand(4, 6, dtype=torch.float64).requires_grad_(True)
    cur = (x * 2).unsqueeze(0).expand(5, 4, 6)  # stride-0 in time, as direct encoding gives
    (g,) = torch.autograd.grad(lif_sequence(cur, params, est.pointwise_derivative()).sum(), x, retain_graph=True)
    (g_ref,) = torch.autograd.grad(lif_reference(cur, params, est).sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_compiled_kernels_match_eager():
    """torch.compile'd forward/adjoint steps give the same spikes and gradients (skips without a compiler)."""
    params = LIFParams(leak=0.6, threshold=0.8, reset="hard")
    est = make_estimator("sigmoid")
    torch.manual_seed(1)
    current = (torch.randn(5, 3, 4, 6, 6)).requires_grad_(True)
    weights = torch.randn(5, 3, 4, 6, 6)
    eager = lif_sequence(current, params, est.pointwise_derivative())
    (g_eager,) = torch.autograd.grad((eager * weights).sum(), current)
    try:
        comp = lif_sequence(current, params, est.pointwise_derivative(), compiled=True)
        (g_comp,) = torch.autograd.grad((comp * weights).sum(), current)
    except Exception as exc:  # no C++ toolchain for inductor on this machine
        pytest.skip(f"torch.compile unavailable: {type(exc).__name__}")
    assert torch.equal(eager, comp)
    torch.testing.assert_close(g_comp, g_eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("estimator", ["sigmoid:k=4", "localzo:m=2"])
def test_constant_current_gradient_is_summed_in_the_scan(reset, estimator):
    """steps=T (a [B, ...] current seen T times) gives the spikes and the gradient Σ_t ∂L/∂I[t] of the
    expanded [T, B, ...] current through the reference loop (LocalZO: the same draws)."""
    params = LIFParams(leak=0.7, threshold=0.6, reset=reset)
    torch.manual_seed(2)
    c = (torch.randn(4, 9, dtype=torch.float64) * 0.6 + 0.4).requires_grad_(True)
    w = torch.randn(6, 4, 9, dtype=torch.float64)
    grads, outs = [], []
    for fast in (True, False):
        est = make_estimator(estimator)
        est.generator = torch.Generator().manual_seed(5)
        if fast:
            out = lif_sequence(c, params, est.pointwise_derivative(), steps=6)
        else:
            out = lif_reference(c.unsqueeze(0).expand(6, 4, 9), params, est)
        outs.append(out)
        grads.append(torch.autograd.grad((out * w).sum(), c)[0])
    assert torch.equal(outs[0], outs[1]) and 0 < outs[0].mean() < 1
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_inference_scan_keeps_only_spikes(reset):
    """Without a backward pass the scan keeps two steps of u and k, and gives the same spikes."""
    params = LIFParams(leak=0.7, threshold=0.6, reset=reset)
    current = torch.randn(7, 5, 11) * 0.8 + 0.3
    est = make_estimator("sigmoid")
    with torch.no_grad():
        fast = lif_sequence(current, params, est.pointwise_derivative())
        const = lif_sequence(current[0], params, est.pointwise_derivative(), steps=7)
    assert torch.equal(fast, lif_reference(current, params, est)) and 0 < fast.mean() < 1
    assert torch.equal(const, lif_reference(current[0].expand(7, 5, 11), params, est))


def test_out_of_memory_in_a_compiled_scan_is_raised_and_keeps_compiling_on(monkeypatch):
    """Running out of memory is not a compiler failure: it reaches the caller, and later calls still compile
    (a fallback would only run out again, and would switch compiling off for the whole process)."""
    from neuroplast.snn import lif_fused

    def oom(*args):
        raise torch.OutOfMemoryError("out of memory (simulated)")
    monkeypatch.setattr(lif_fused, "_kernels", lambda: (oom, oom, oom))
    monkeypatch.setattr(lif_fused, "_failed", [])
    x = torch.zeros(2, 3, 4)
    with pytest.raises(torch.OutOfMemoryError):   # a derivative with no C form: the compiled adjoint
        lif_fused.scan_backward(x, x, None, LIFParams(), lambda v: torch.ones_like(v))
    assert lif_fused.available()
