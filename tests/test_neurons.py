"""LIF step and spike functions: hand-worked values and the estimator contract."""
import pytest
import torch

from neuroplast.errors import SpecError
from neuroplast.snn import ESTIMATORS, LIFParams, lif_step, make_estimator
from neuroplast.snn.spikefn import heaviside


def test_lif_hard_reset_by_hand():
    p = LIFParams(leak=0.5, threshold=1.0, reset="hard")
    u = s = torch.zeros(3)
    spikes = []
    for cur in ([0.6, 1.2, 0.0], [0.6, 0.5, 2.0], [0.6, 0.9, 0.0]):
        u, s = lif_step(u, s, torch.tensor(cur), p, heaviside)
        spikes.append(s.tolist())
    # neuron 0: 0.6 -> 0.9 -> 1.05 (spike); neuron 1: 1.2 spike -> 0·0.5+0.5=0.5 -> 0.25+0.9=1.15 spike
    # neuron 2: 0 -> 2.0 spike -> reset: 0 + 0 = 0
    assert spikes == [[0, 1, 0], [0, 0, 1], [1, 1, 0]]
    torch.testing.assert_close(u, torch.tensor([1.05, 1.15, 0.0]))


def test_lif_soft_reset_subtracts_threshold():
    p = LIFParams(leak=1.0, threshold=1.0, reset="soft")
    u = s = torch.zeros(1)
    seq = []
    for _ in range(4):
        u, s = lif_step(u, s, torch.tensor([0.7]), p, heaviside)
        seq.append(round(float(u), 6))
    assert seq == [0.7, 1.4, 1.1, 0.8]  # 1.4 spikes; next: 1.4 − 1 + 0.7 = 1.1 spikes; 1.1 − 1 + 0.7 = 0.8


@pytest.mark.parametrize("kwargs", [{"leak": 0.0}, {"leak": 1.5}, {"threshold": 0.0}, {"reset": "none"}])
def test_lif_params_validate(kwargs):
    with pytest.raises(SpecError):
        LIFParams(**kwargs)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_estimator_contract(name):
    """Every registered estimator: in evaluation its forward is exactly H; in training its backward
    is finite, non-negative and not all zero; its spec string round-trips; surrogates' hand-written
    derivative equals autograd of their smooth primitive."""
    est = make_estimator(name)
    x = torch.linspace(-3, 3, 600, dtype=torch.float64, requires_grad=True)  # no point on a kink
    assert torch.equal(est.eval()(x).detach(), heaviside(x.detach()))
    est.train()
    s = est(x)
    if name != "asgl":  # ASGL mixes in the smooth relaxation while training, by design
        assert torch.equal(s.detach(), heaviside(x.detach()))
    (g,) = torch.autograd.grad(s.sum(), x)
    assert torch.isfinite(g).all() and (g >= 0).all() and g.max() > 0
    assert make_estimator(est.describe()).describe() == est.describe()
    if hasattr(est, "primitive"):
        (g_ref,) = torch.autograd.grad(est.primitive(x).sum(), x)
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("k", [4.0, 2.0])
def test_sigmoid_derivative_and_fused_gate_are_accurate_in_float32(k):
    """Sigmoid's h' stays within 1e-6 relative of the float64 k·σ(kx)(1 − σ(kx)) wherever h' > 1e-3
    (σ − σ² in float32 is off by 3e-4 there, from cancellation); its fused eager gate (σ(−|z|), then
    torch's sigmoid_backward) within 5e-8·k absolute per unit of grad (σ − σ² reaches 3.6e-7 at k = 4)."""
    est = make_estimator(f"sigmoid:k={k}")
    x = torch.linspace(-6, 6, 20001)
    s = torch.sigmoid(k * x.double())
    truth = k * s * (1 - s)
    where = truth > 1e-3
    rel = ((est.derivative(x.clone()).double() - truth).abs() / truth)[where]
    assert rel.max() < 1e-6
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) + 3.0   # no zeros
    out = est.pointwise_derivative().gate(grad, x, 0.0, torch.empty_like(x), torch.empty_like(x))
    err_gate = (out.double() - grad.double() * truth).abs() / grad.double().abs()
    assert err_gate.max() < 5e-8 * k


def test_sigmoid_width_option_and_errors():
    est = make_estimator("sigmoid:k=2")
    assert est.k == 2.0
    x = torch.zeros(1, requires_grad=True)
    est(x).sum().backward()
    assert float(x.grad) == pytest.approx(0.5)  # k·σ(0)(1−σ(0)) = 2·0.25
    with pytest.raises(SpecError, match="valid estimators: .*sigmoid"):
        make_estimator("nope")
    with pytest.raises(SpecError, match="no option"):
        make_estimator("sigmoid:width=3")
    with pytest.raises(SpecError, match="cannot parse"):
        make_estimator("sigmoid:k")
