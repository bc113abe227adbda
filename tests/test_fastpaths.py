"""Every fast path equals the straightforward time loop: same outputs, same gradients (1e-6), and the
same draws for stochastic estimators with the same seed."""
import pytest
import torch
import torch.nn.functional as F

from neuroplast.data import encode
from neuroplast.learn import CEMSELoss, batched, ce_mse_loss, make_rule
from neuroplast.learn.loss import step_losses, step_losses_and_errors
from neuroplast.snn import (
    LIFParams,
    build_network,
    detach_state,
    make_estimator,
    native_lib,
)
from neuroplast.snn.lif_scan import scan_forward
from neuroplast.snn.lif_sequence import lif_sequence
from neuroplast.snn.neurons import lif_reference
from neuroplast.snn.pooling import avg_pool

TOL = {"rtol": 1e-6, "atol": 1e-6}


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lif_scan_matches_timelif_reference(reset, dtype):
    params = LIFParams(leak=0.7, threshold=0.9, reset=reset)
    est = make_estimator("sigmoid:k=4")
    g = torch.Generator().manual_seed(0)
    current = (torch.randn(6, 4, 3, 5, 5, generator=g, dtype=dtype) * 0.9 + 0.3).requires_grad_(True)
    w = torch.randn(current.shape, generator=g, dtype=dtype)
    ref = lif_reference(current, params, est)
    fast = lif_sequence(current, params, est.pointwise_derivative())
    assert torch.equal(ref, fast) and 0 < ref.mean() < 1
    (g_ref,) = torch.autograd.grad((ref * w).sum(), current)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), current)
    torch.testing.assert_close(g_fast, g_ref, **TOL)


def test_lif_scan_localzo_draws_as_the_step_by_step_adjoint():
    params = LIFParams()
    current = (torch.randn(5, 8, 30, dtype=torch.float64) + 0.5).requires_grad_(True)
    grads = []
    for stepwise in (True, False):
        est = make_estimator("localzo:m=2")
        est.generator = torch.Generator().manual_seed(7)
        out = lif_sequence(current, params, est.pointwise_derivative(), stepwise=stepwise)
        grads.append(torch.autograd.grad(out.sum(), current)[0])
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("estimator", ["localzo:m=2", "asgl:p=0.5"])
def test_bptt_of_a_deep_net_draws_as_the_step_loop_with_a_stream_per_layer(estimator, native, monkeypatch):
    """LocalZO draws in the backward pass, ASGL and dropout in the forward pass: layer by layer over all
    T in ``simulate``, interleaved over layers and steps in the step loop. ``seed_draws`` gives each
    layer its own stream, so both orders draw the same numbers for every layer; with the C draws
    (``snn.counter_rng``) and with their torch twin."""
    if not native:
        monkeypatch.setattr(native_lib, "usable", lambda *t, **k: False)
    grads = []
    for fast in (True, False):
        net = build_network("20-16-D0.3-12-3", input_shape=(20,), num_classes=3, estimator=estimator,
                            generator=torch.Generator().manual_seed(0)).double()
        net.train()
        net.seed_draws(5)
        x = encode("direct", torch.rand(4, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2, 5)
        y = torch.tensor([0, 1, 2, 1])
        if fast:
            o = net.simulate(x).logits
        else:
            state, outs = net.init_state(), []
            for t in range(5):
                out, state, _ = net.step(x[t], state)
                outs.append(out)
            o = torch.stack(outs).mean(0)
        CEMSELoss()(o, y).backward()
        grads.append({k: p.grad for k, p in net.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) and grads[0]["layers.dense1.op.weight"].abs().sum() > 0
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-10, atol=1e-12)


def test_lif_scan_carries_state_across_windows():
    params = LIFParams(leak=0.6)
    current = torch.randn(9, 4, 7) + 0.6
    U, S, _ = scan_forward(current, params)
    U1, S1, _ = scan_forward(current[:4], params)
    U2, S2, _ = scan_forward(current[4:], params, (U1[-1], S1[-1]))
    assert torch.equal(torch.cat([U1, U2]), U) and torch.equal(torch.cat([S1, S2]), S)


@pytest.mark.parametrize("shape,k", [((3, 4, 8, 8), 2), ((2, 3, 7, 9), 2), ((2, 2, 9, 9), 3), ((2, 3, 8, 12), 4)])
def test_avg_pool_matches_torch(shape, k):
    """Bit-identical to F.avg_pool2d on spikes and spike counts (exact sums), to rounding on any float;
    the backward bit-identical."""
    g = torch.Generator().manual_seed(k)
    for x in [(torch.rand(shape, generator=g) < 0.3).float(), torch.randint(0, 7, shape, generator=g).float()]:
        assert torch.equal(F.avg_pool2d(x, k), avg_pool(x, k))
        xt = x.transpose(-1, -2)   # a non-contiguous input
        assert torch.equal(F.avg_pool2d(xt, k), avg_pool(xt, k))
    x = (torch.randn(shape, generator=g) * 3).requires_grad_(True)
    ref, fast = F.avg_pool2d(x, k), avg_pool(x, k)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-6)
    gy = torch.randn(ref.shape, generator=g)
    assert torch.equal(torch.autograd.grad(ref, x, gy)[0], torch.autograd.grad(fast, x, gy)[0])


@pytest.mark.parametrize("shape,k", [((3, 4, 8, 8), 2), ((2, 3, 7, 9), 2), ((2, 2, 9, 9), 3), ((5, 3, 11, 12), 4)])
def test_avg_pool_c_kernels_equal_the_eager_passes_bit_for_bit(shape, k, monkeypatch):
    """native/pool.c (default where built) against the strided adds and the 0/1-matrix product, on
    arbitrary floats (where the order of the adds matters), dropped rows and columns included."""
    from neuroplast.snn import native_lib, pooling
    if native_lib.library() is None:
        pytest.skip(f"no C kernels: {native_lib.reason()}")
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(k)) * 3).requires_grad_(True)
    y = avg_pool(x, k)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(9))
    (gx,) = torch.autograd.grad(y, x, gy)
    monkeypatch.setattr(pooling, "_native", lambda *a: None)
    y0 = avg_pool(x, k)
    assert torch.equal(y, y0) and torch.equal(gx, torch.autograd.grad(y0, x, gy)[0])
    assert gx[..., shape[-2] // k * k:, :].abs().sum() == 0 == gx[..., shape[-1] // k * k:].abs().sum()



@pytest.mark.parametrize("shape,k", [((4, 3, 2, 8, 8), 2), ((3, 2, 3, 7, 9), 2), ((2, 2, 2, 9, 9), 3)])
def test_noisy_avg_pool_is_the_pooling_of_the_eager_sum_bit_for_bit(shape, k):
    """OPZO's spikes + signed noise pooled in one C pass equal pooling the eager h + n (h − n where the
    sign is −1), with each sum rounded before the pooling's adds."""
    from neuroplast.snn import native_lib, pooling
    if native_lib.library() is None:
        pytest.skip(f"no C kernels: {native_lib.reason()}")
    g = torch.Generator().manual_seed(k)
    h = (torch.rand(shape, generator=g) < 0.3).float()
    noise = [torch.randn(shape[1:], generator=g) * 0.37 for _ in range(shape[0])]
    signs = [1.0 if t % 2 == 0 else -1.0 for t in range(shape[0])]
    fused = pooling.noisy_avg_pool(h, noise, signs, k)
    ref = torch.stack([avg_pool(h[t] + n if s > 0 else h[t] - n, k) for t, (n, s) in enumerate(zip(noise, signs))])
    assert ref.abs().sum() > 0 and torch.equal(fused, ref)
    assert torch.equal(pooling.noisy_avg_pool(h, noise, None, k), torch.stack([avg_pool(h[t] + n, k) for t, n in enumerate(noise)]))
    assert pooling.noisy_avg_pool(h, noise[:-1], signs, k) is None   # a step without noise: not this path

def test_bptt_simulate_matches_steplif_reference():
    net = build_network("1x8x8-4C3-AP2-12-FC", input_shape=(1, 8, 8), num_classes=10,
                        generator=torch.Generator().manual_seed(0)).double()
    x = encode("direct", torch.rand(3, 1, 8, 8, dtype=torch.float64) * 3, 5)
    y = torch.tensor([1, 2, 3])
    loss = CEMSELoss()
    loss(net.simulate(x).logits, y).backward()
    fast = {k: p.grad.clone() for k, p in net.named_parameters()}
    net.zero_grad()
    state, outs = net.init_state(), []
    for t in range(5):
        o, state, _ = net.step(x[t], state)
        outs.append(o)
    loss(torch.stack(outs).mean(0), y).backward()
    for k, p in net.named_parameters():
        torch.testing.assert_close(fast[k], p.grad, **TOL)


def _rule_run(arch, shape, method, fold, *, encoding="direct", T=7, readout_only=False):
    net = build_network(arch, input_shape=shape, num_classes=10, generator=torch.Generator().manual_seed(0)).double()
    if readout_only:
        for name, layer in net.layers.items():
            if name != "readout":
                layer.requires_grad_(False)
    rule = make_rule(method)
    rule.generator = torch.Generator().manual_seed(3)
    rule.fold_time = fold
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    x_seq = encode(encoding, x, T, generator=torch.Generator().manual_seed(2)).double()
    y = torch.tensor([0, 3, 5, 9])
    results = [rule.compute_grads(net, x_seq, y, CEMSELoss()) for _ in range(2)]  # OPZO's feedback evolves
    grads = {k: p.grad for k, p in net.named_parameters() if p.grad is not None}
    return results, grads, rule


@pytest.mark.parametrize("method,window", [("ottt", 3), ("fa", 3), ("dfa", 3), ("opzo", 3), ("opzo", 8),
                                           ("opzo:noise=rademacher,antithetic=0,beta=0.5", 3)])
@pytest.mark.parametrize("arch,shape", [("16-12-10-10", (16,)), ("1x8x8-4C3-AP2-12-FC", (1, 8, 8)),
                                        ("1x4x4-AP2-F-12-10", (1, 4, 4))])   # pooling and flatten before the first synapse
def test_online_rules_with_time_folded_match_the_steplif_reference(method, window, arch, shape, monkeypatch):
    """T = 7 in windows of 3 (or one of 8): the last window is a single step, where a constant input must
    stay constant (stride 0) through the layers before the first synapse, or its trace restarts."""
    monkeypatch.setattr(batched, "WINDOW", window)
    assert batched.supported(build_network(arch, input_shape=shape, num_classes=10))
    for encoding in ("direct", "poisson"):
        ref, g_ref, r_ref = _rule_run(arch, shape, method, False, encoding=encoding)
        fast, g_fast, r_fast = _rule_run(arch, shape, method, True, encoding=encoding)
        assert set(g_ref) == set(g_fast)
        for k in g_ref:
            torch.testing.assert_close(g_fast[k], g_ref[k], **TOL)
        for a, b in zip(ref, fast):   # one GEMM over K·B rows may round differently from K GEMMs of B rows
            assert a.loss == pytest.approx(b.loss, rel=1e-6) and a.noise_draws == b.noise_draws
            torch.testing.assert_close(a.logits, b.logits, **TOL)
            assert all(torch.equal(a.spike_counts[k], b.spike_counts[k]) for k in a.spike_counts)
        for k in getattr(r_ref, "feedback", {}):
            torch.testing.assert_close(r_fast.feedback[k], r_ref.feedback[k], **TOL)


@pytest.mark.parametrize("method", ["dfa", "opzo"])
@pytest.mark.parametrize("arch,shape", [("16-12-10-10", (16,)), ("1x8x8-4C3-AP2-12-FC", (1, 8, 8))])
def test_top_down_gate_step_by_step_matches_the_step_loop(method, arch, shape, monkeypatch):
    """The top-down signals e·M of a large layer go through the gates one step at a time (a constant-input
    first layer summing its weight and bias gradients as it goes): the step loop's gradients and feedback
    (the other fast-path tests run these small layers whole-window, batched.WHOLE)."""
    ref, g_ref, r_ref = _rule_run(arch, shape, method, False)
    monkeypatch.setattr(batched, "WHOLE", 0)   # these small layers would go whole-window
    calls = []
    for name in ("_stepwise", "_stepwise_constant"):
        monkeypatch.setattr(batched, name, lambda *a, f=getattr(batched, name), n=name: calls.append(n) or f(*a))
    fast, g_fast, r_fast = _rule_run(arch, shape, method, True)
    assert set(calls) == {"_stepwise", "_stepwise_constant"}   # both paths ran
    assert set(g_ref) == set(g_fast)
    for k in g_ref:
        torch.testing.assert_close(g_fast[k], g_ref[k], **TOL)
    for k in getattr(r_ref, "feedback", {}):
        torch.testing.assert_close(r_fast.feedback[k], r_ref.feedback[k], **TOL)


@pytest.mark.parametrize("method", ["dfa", "opzo:sigma_end=0", "ottt"])
def test_a_window_holds_nothing_of_the_window_before(method, monkeypatch):
    """When a window starts, the simulator holds no current or potential of the previous one (memory
    of one window, not two); opzo at σ = 0 takes the fallback with no feedback matrices."""
    held, window = [], batched.CutSimulator.window

    def spy(self, *args, **kwargs):
        held.append(len(self.last))
        return window(self, *args, **kwargs)
    monkeypatch.setattr(batched.CutSimulator, "window", spy)
    monkeypatch.setattr(batched, "WINDOW", 2)
    net = build_network("1x8x8-4C3-AP2-12-FC", input_shape=(1, 8, 8), num_classes=10,
                        generator=torch.Generator().manual_seed(0))
    rule = make_rule(method)
    rule.generator = torch.Generator().manual_seed(3)
    if method.startswith("opzo"):
        rule.set_progress(1.0)   # σ = sigma_end = 0: no noise
    x = encode("poisson", torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), 6,
               generator=torch.Generator().manual_seed(2))
    rule.compute_grads(net, x, torch.tensor([0, 3, 5, 9]), CEMSELoss())
    assert held == [0, 0, 0]


def test_time_folded_rules_train_a_first_conv_with_per_neuron_bias():
    """A first conv with one bias per neuron (``NeuronBiasConv2d``, a folded input normalisation) on a
    constant input: its bias gradient keeps the bias's [C, H, W] shape and equals the step loop's."""
    from neuroplast.data.norm import InputNorm
    from neuroplast.snn.fold_input import fold_input_norm
    from neuroplast.snn.synapse import NeuronBiasConv2d
    grads = []
    for fold in (False, True):
        net = build_network("1x8x8-4C3-AP2-12-FC", input_shape=(1, 8, 8), num_classes=10,
                            generator=torch.Generator().manual_seed(0)).double()
        net = fold_input_norm(net, InputNorm(0.13, 0.31))
        first = net.layers[next(iter(net.layers))].op
        assert isinstance(first, NeuronBiasConv2d)
        rule = make_rule("dfa")
        rule.generator, rule.fold_time = torch.Generator().manual_seed(3), fold
        x = encode("direct", torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 5)
        rule.compute_grads(net, x, torch.tensor([0, 3, 5, 9]), CEMSELoss())
        assert first.bias.grad.shape == first.bias.shape
        grads.append({k: p.grad for k, p in net.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], **TOL)


def test_readout_only_control_with_time_folded():
    _, g_ref, _ = _rule_run("16-12-10", (16,), "dfa", False, readout_only=True)
    _, g_fast, _ = _rule_run("16-12-10", (16,), "dfa", True, readout_only=True)
    assert set(g_fast) == set(g_ref) == {"layers.readout.op.weight", "layers.readout.op.bias"}
    for k in g_ref:
        torch.testing.assert_close(g_fast[k], g_ref[k], **TOL)


def test_time_folding_falls_back_where_it_would_change_results():
    net = build_network("16-12-10", input_shape=(16,), num_classes=10, estimator="localzo:m=2")
    assert not batched.supported(net)  # LocalZO draws in backward order
    drop = build_network("16-D0.2-12-10", input_shape=(16,), num_classes=10)
    assert not batched.supported(drop)
    drop.eval()
    assert batched.supported(drop)
    assert not make_rule("opzo:subtract_clean=1").can_fold_time()
    assert not make_rule("opzo+ll").can_fold_time() and not make_rule("zo").can_fold_time()


def test_step_state_after_fold_equalslif_reference():
    """The window simulator's carried state is the step loop's state (windows chain exactly)."""
    net = build_network("16-12-10", input_shape=(16,), num_classes=10,
                        generator=torch.Generator().manual_seed(0)).double()
    x = torch.rand(6, 3, 16, dtype=torch.float64) * 2
    sim = batched.CutSimulator(net)
    outs = [sim.window(x[:2])[0], sim.window(x[2:])[0]]
    state, ref = net.init_state(), []
    for t in range(6):
        o, state, _ = net.step(x[t], state, traces=True)
        state = detach_state(state)
        ref.append(o)
    assert torch.equal(torch.cat(outs).detach(), torch.stack(ref).detach())


def test_malloc_keeps_freed_memory_on_glibc_and_can_be_left_alone():
    import platform
    import subprocess
    import sys
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt tuning applies to glibc only")
    from neuroplast.allocator import reuse_freed_memory
    assert reuse_freed_memory() is True      # done at import; idempotent
    code = "import neuroplast.allocator as a; print(a.reuse_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "NEUROPLAST_MALLOC": "default"}, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("method", ["dfa", "opzo", "bptt"])
def test_compiled_lif_scans_give_the_eager_spikes_and_gradients(method):
    """--compile: the fused scans (lif_fused) give the eager path's spikes and losses exactly and its
    gradients to float rounding (skips where torch.compile cannot build kernels)."""
    from neuroplast.snn import lif_fused
    runs = []
    for compiled in (False, True):
        net = build_network("1x8x8-4C3-AP2-12-FC", input_shape=(1, 8, 8), num_classes=10, compiled=compiled,
                            generator=torch.Generator().manual_seed(0))
        rule = make_rule(method)
        rule.generator = torch.Generator().manual_seed(3)
        x = encode("direct", torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 3, 6)
        res = [rule.compute_grads(net, x, torch.tensor([0, 3, 5, 9]), CEMSELoss()) for _ in range(2)]
        runs.append((res, {k: p.grad for k, p in net.named_parameters() if p.grad is not None}))
    if not lif_fused.available():
        pytest.skip("torch.compile cannot build kernels here")
    (ref, g_ref), (comp, g_comp) = runs
    for a, b in zip(ref, comp):
        assert a.loss == b.loss and torch.equal(a.logits, b.logits)
        assert all(torch.equal(a.spike_counts[k], b.spike_counts[k]) for k in a.spike_counts)
    for k in g_ref:
        torch.testing.assert_close(g_comp[k], g_ref[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss_fn", [CEMSELoss(), CEMSELoss(0.0), ce_mse_loss,
                                     lambda o, y: torch.nn.functional.nll_loss(o, y, reduction="sum")])
def test_step_losses_of_a_window_equal_one_call_per_step(loss_fn):
    g = torch.Generator().manual_seed(0)
    o, y = torch.randn(5, 7, 10, generator=g, dtype=torch.float64), torch.randint(0, 10, (7,), generator=g)
    ref = torch.stack([loss_fn(o[k], y) for k in range(5)])
    assert torch.equal(step_losses(loss_fn, o, y), ref)  # bit-identical: the folded rules report these


@pytest.mark.parametrize("loss_fn", [CEMSELoss(), CEMSELoss(0.0), CEMSELoss(0.5), ce_mse_loss,
                                     lambda o, y: torch.nn.functional.nll_loss(o, y, reduction="sum")])
def test_window_errors_equal_autograd(loss_fn):
    """E = ∂(Σ_k L(o[k], y)/T)/∂o written out for the CE + MSE mix equals autograd's; the losses are
    step_losses/T to the bit."""
    g = torch.Generator().manual_seed(1)
    o = torch.randn(4, 6, 10, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.randint(0, 10, (6,), generator=g)
    ref_losses = torch.stack([loss_fn(o[k], y) / 9 for k in range(4)])
    (ref_E,) = torch.autograd.grad(ref_losses.sum(), o)
    losses, E = step_losses_and_errors(loss_fn, o, y, 9)
    assert torch.equal(losses, ref_losses.detach()) and not E.requires_grad
    torch.testing.assert_close(E, ref_E, rtol=1e-12, atol=1e-15)
