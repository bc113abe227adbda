"""BPTT and OTTT gradients: finite differences, T=1 equivalence, trace-based weight gradients."""
import pytest
import torch

from neuroplast.learn import ce_mse_loss, make_rule
from neuroplast.snn import LIFParams, SurrogateEstimator, build_network


def _net(arch="12-9-7-4", reset="hard", seed=0, dtype=torch.float64, shape=(12,), classes=4, estimator="sigmoid:k=4"):
    g = torch.Generator().manual_seed(seed)
    net = build_network(arch, input_shape=shape, num_classes=classes, generator=g, estimator=estimator,
                        lif=LIFParams(leak=0.7, threshold=0.6, reset=reset))
    with torch.no_grad():  # a 3x larger init: every layer spikes on these tiny nets
        for p in net.parameters():
            p.mul_(3.0)
    return net.to(dtype)


def _relax(net):
    for m in net.modules():
        if isinstance(m, SurrogateEstimator):
            m.relaxed = True


def _loss(net, x_seq, y):
    return ce_mse_loss(net.simulate(x_seq).logits, y)


SMOOTH = ["sigmoid:k=4", "fast_sigmoid:k=4", "triangle:w=1", "arctan:alpha=2", "rectangular:w=1",
          "gaussian:sigma=0.5"]


@pytest.mark.parametrize("reset,estimator", [("soft", "sigmoid:k=4")] + [("hard", e) for e in SMOOTH])
def test_bptt_matches_finite_differences_of_smooth_network(reset, estimator):
    """BPTT with the hand-written surrogate derivative h' == numerical gradient of the network
    whose H is replaced by the surrogate's primitive h (2 spiking layers, T=5, through resets)."""
    torch.manual_seed(1)
    net = _net(reset=reset, estimator=estimator)
    _relax(net)
    x_seq = torch.randn(5, 3, 12, dtype=torch.float64) * 1.5
    y = torch.tensor([0, 2, 3])
    net.zero_grad()
    make_rule("bptt").compute_grads(net, x_seq, y, ce_mse_loss)
    eps = 1e-6
    for name, p in net.named_parameters():
        num = torch.zeros_like(p)
        flat, nflat = p.data.view(-1), num.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            lp = _loss(net, x_seq, y).item()
            flat[i] = old - eps
            lm = _loss(net, x_seq, y).item()
            flat[i] = old
            nflat[i] = (lp - lm) / (2 * eps)
        assert p.grad.abs().max() > 1e-6, name
        torch.testing.assert_close(p.grad, num, rtol=1e-5, atol=1e-8, msg=name)


@pytest.mark.parametrize("arch,shape", [("12-9-7-4", (12,)), ("3C3-AP2-D0.0-5-FC", (2, 6, 6))])
def test_ottt_equals_bptt_at_one_time_step(arch, shape):
    torch.manual_seed(2)
    x_seq = torch.randn(1, 5, *shape, dtype=torch.float64) * 4
    y = torch.tensor([0, 1, 2, 3, 1])
    grads = {}
    for method in ("bptt", "ottt"):
        net = _net(arch, shape=shape, seed=1)
        res = make_rule(method).compute_grads(net, x_seq, y, ce_mse_loss)
        grads[method] = ({k: p.grad.clone() for k, p in net.named_parameters()}, res)
    (gb, rb), (go, ro) = grads["bptt"], grads["ottt"]
    assert rb.loss == pytest.approx(ro.loss, rel=1e-12)
    torch.testing.assert_close(rb.logits, ro.logits)
    for k in gb:
        assert gb[k].abs().max() > 0, k
        torch.testing.assert_close(gb[k], go[k], msg=k)


def test_ottt_weight_gradient_uses_presynaptic_trace():
    """OTTT's dense gradient at a 1-hidden-layer net equals Σ_t δ_o[t]ᵀ s[t] for the readout
    (no memory) and Σ_t δ_h[t]ᵀ x̂[t] with x̂ = λ x̂ + x for the hidden layer."""
    torch.manual_seed(3)
    net = _net("6-5-3", shape=(6,), classes=3)
    T, lam = 4, 0.7
    x_seq = torch.randn(T, 2, 6, dtype=torch.float64)
    y = torch.tensor([0, 2])
    net.zero_grad()
    make_rule("ottt").compute_grads(net, x_seq, y, ce_mse_loss)
    # reference: per step, gradient wrt the current I[t] with the state detached, times trace
    hidden, readout = net.layers["dense1"], net.layers["readout"]
    u = s = torch.zeros(2, 5, dtype=torch.float64)
    trace = torch.zeros(2, 6, dtype=torch.float64)
    gw_h = torch.zeros_like(hidden.op.weight)
    gw_o = torch.zeros_like(readout.op.weight)
    for t in range(T):
        trace = lam * trace + x_seq[t]
        cur = hidden.op(x_seq[t]).detach().requires_grad_(True)
        from neuroplast.snn import lif_step
        u2, s2 = lif_step(u, s, cur, hidden.lif, hidden.spike)
        s_leaf = s2.detach().requires_grad_(True)
        o = readout.op(s_leaf)
        loss = ce_mse_loss(o, y) / T
        g_o, g_s = torch.autograd.grad(loss, [o, s_leaf], retain_graph=True)
        (g_cur,) = torch.autograd.grad(s2, cur, grad_outputs=g_s)
        gw_o += g_o.t() @ s2.detach()
        gw_h += g_cur.t() @ trace
        u, s = u2.detach(), s2.detach()
    torch.testing.assert_close(readout.op.weight.grad, gw_o)
    torch.testing.assert_close(hidden.op.weight.grad, gw_h)
