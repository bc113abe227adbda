"""Three-factor rules (DFA, OPZO): feedback estimates, alignment with backprop, stability, errors,
and training on digits against the readout-only control."""
import json

import pytest
import torch

from neuroplast.cli import main
from neuroplast.errors import SpecError
from neuroplast.learn import CEMSELoss, make_rule
from neuroplast.learn.online import rademacher
from neuroplast.learn.opzo import momentum_feedback_update
from neuroplast.snn import build_network


@pytest.mark.parametrize("scale_by_sigma", [True, False])
def test_opzo_feedback_converges_to_expected_jacobian_of_a_linear_layer(scale_by_sigma):
    """Lemma 4.1: with o = W(a + σz) + b, the momentum estimate of E[o zᵀ] (/σ) tends to ∂o/∂a = W
    (σ·W without the 1/σ factor); relative error < 5%."""
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(5, 20, generator=g), torch.randn(5, generator=g)
    M, sigma = torch.zeros(5, 20), 0.3
    for _ in range(6000):
        a = torch.rand(64, 20, generator=g)
        z = torch.randn(64, 20, generator=g)
        o = (a + sigma * z) @ W.t() + b
        M = momentum_feedback_update(M, o, sigma * z, beta=0.995, sigma=sigma, scale_by_sigma=scale_by_sigma)
    target = W if scale_by_sigma else sigma * W
    assert float((M - target).norm() / target.norm()) < 0.05


def test_default_feedback_stays_bounded_as_sigma_decays_but_one_over_sigma_blows_up():
    g = torch.Generator().manual_seed(1)
    norms = {}
    for scale in (False, True):
        M = torch.zeros(3, 10)
        for i in range(2000):
            sigma = 0.5 * (1 - i / 2000) + 1e-3
            z = torch.randn(32, 10, generator=g)
            o = torch.randn(32, 3, generator=g) + sigma * z[:, :3]  # output dominated by its clean part
            M = momentum_feedback_update(M, o, sigma * z, beta=0.99, sigma=sigma, scale_by_sigma=scale)
        norms[scale] = float(M.norm())
    assert norms[False] < 1.0 < 20 * norms[False] < norms[True]


def _scaled(arch, n_in, seed=0):
    """A 3-class FC net with weights 3x the default init (so that the hidden layers spike)."""
    net = build_network(arch, input_shape=(n_in,), num_classes=3, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    return net


def _tiny(seed=0):
    return _scaled("10-16-3", 10, seed)


def _grads(net, rule, x_seq, y):
    net.zero_grad(set_to_none=True)
    rule.compute_grads(net, x_seq, y, CEMSELoss())
    return {k: net.layers[k].op.weight.grad.clone() for k in net.spiking_layers()}


def _hidden_grad(net, rule, x_seq, y):
    return _grads(net, rule, x_seq, y)["dense1"].flatten()


@pytest.mark.parametrize("spec", ["opzo:sigma=0.3,beta=0.99", "opzo:sigma=0.3,beta=0.99,subtract_clean=1"])
def test_opzo_direction_aligns_with_backprop_once_feedback_has_converged(spec):
    torch.manual_seed(0)
    net = _tiny()
    x_seq, y = torch.rand(4, 64, 10) * 2, torch.randint(0, 3, (64,))
    opzo = make_rule(spec)
    opzo.generator = torch.Generator().manual_seed(2)
    for _ in range(300):  # weights fixed: only the feedback connections learn
        _hidden_grad(net, opzo, x_seq, y)
    g_opzo = _hidden_grad(net, opzo, x_seq, y)
    g_bp = _hidden_grad(net, make_rule("ottt"), x_seq, y)
    cos = float(torch.nn.functional.cosine_similarity(g_opzo, g_bp, dim=0))
    assert cos > 0.8, cos
    assert float(g_opzo @ g_bp) > 0


def test_dfa_uses_fixed_feedback_and_only_local_gradients():
    net = _tiny()
    x_seq, y = torch.rand(3, 8, 10) * 2, torch.randint(0, 3, (8,))
    dfa = make_rule("dfa")
    dfa.generator = torch.Generator().manual_seed(0)
    g1 = _hidden_grad(net, dfa, x_seq, y)
    B = dfa.feedback["dense1"].clone()
    g2 = _hidden_grad(net, dfa, x_seq, y)
    assert torch.equal(B, dfa.feedback["dense1"]) and torch.equal(g1, g2) and g1.abs().max() > 0


@pytest.mark.parametrize("spec,match", [
    ("opzo:sigma=0", "sigma > 0"), ("opzo:beta=1", r"beta in \[0, 1\)"), ("opzo:beta=-0.1", r"beta in \[0, 1\)"),
    ("opzo:noise=cauchy", "valid: gaussian, rademacher"), ("opzo:sigma=0.1,sigma_end=0.5", "sigma_end"),
    ("opzo:site=middle", "valid: after, before"), ("zo:baseline=none", "valid: clean, running, antithetic"),
    ("zo:sigma=-1", "sigma > 0"), ("dfa:ll_scale=0", "ll_scale must be > 0"),
])
def test_bad_rule_options(spec, match):
    with pytest.raises(SpecError, match=match):
        make_rule(spec)


@pytest.mark.parametrize("method", ["dfa", "opzo", "zo"])
def test_rules_need_a_hidden_layer(method, capsys):
    assert main(["train", "--method", method, "--net", "64-10", "--epochs", "1", "--no-progress"]) == 2
    assert "hidden spiking layer" in capsys.readouterr().err


@pytest.mark.parametrize("method,floor,margin", [("dfa", 0.95, 0.10), ("opzo", 0.95, 0.10), ("zo", 0.85, 0.0)])
def test_three_factor_rules_train_digits_well_above_readout_only(method, floor, margin, capsys):
    accs = {}
    for trainable in ("all", "readout"):
        runs = []
        for seed in range(3):
            assert main(["train", "--method", method, "--net", "64-256-10", "--epochs", "20", "--batch-size", "32",
                         "--lr", "2e-3", "--trainable", trainable, "--seed", str(seed), "--json",
                         "--no-progress"]) == 0
            runs.append(json.loads(capsys.readouterr().out)["test_acc"])
        accs[trainable] = sum(runs) / 3
    assert accs["all"] >= floor and accs["all"] >= accs["readout"] + margin, accs


@pytest.mark.parametrize("arch,shape", [("1x6x6-4C3-AP2-12-FC", (1, 6, 6)), ("36-20-FC", (36,))])
@pytest.mark.parametrize("method", sorted(__import__("neuroplast.learn", fromlist=["RULES"]).RULES))
def test_rule_contract(method, arch, shape):
    """Every registered rule, on FC and conv nets: finite, non-zero gradients for every weight,
    logits [B, C], spike counts per spiking layer, and no gradient left on frozen parameters."""
    net = build_network(arch, input_shape=shape, num_classes=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    rule = make_rule(method)
    rule.generator = torch.Generator().manual_seed(0)
    x_seq, y = torch.rand(4, 16, *shape) * 2, torch.randint(0, 3, (16,))
    res = rule.compute_grads(net, x_seq, y, CEMSELoss())
    assert res.logits.shape == (16, 3) and torch.isfinite(torch.tensor(res.loss))
    assert set(res.spike_counts) == set(net.spiking_layers())
    for name, p in net.named_parameters():
        if name.endswith("weight"):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            if method != "opzo" or "readout" in name:  # OPZO's feedback starts at 0: hidden grads come later
                assert p.grad.abs().max() > 0, name


def test_feedback_alignment_with_b_equal_w_is_online_backprop_and_differs_otherwise():
    net = build_network("10-12-8-3", input_shape=(10,), num_classes=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    x_seq, y = torch.rand(3, 16, 10) * 2, torch.randint(0, 3, (16,))
    g_bp = _grads_all(net, make_rule("ottt"), x_seq, y)
    fa = make_rule("fa")
    fa.generator = torch.Generator().manual_seed(1)
    g_fa = _grads_all(net, fa, x_seq, y)
    assert torch.equal(g_fa["readout"], g_bp["readout"]) and not torch.allclose(g_fa["dense1"], g_bp["dense1"])
    fa.feedback = {k: layer.op.weight.detach().clone() for k, layer in net.layers.items() if hasattr(layer, "op")}
    g_same = _grads_all(net, fa, x_seq, y)
    for k in g_bp:
        torch.testing.assert_close(g_same[k], g_bp[k])


def _grads_all(net, rule, x_seq, y):
    net.zero_grad(set_to_none=True)
    rule.compute_grads(net, x_seq, y, CEMSELoss())
    return {k: layer.op.weight.grad.clone() for k, layer in net.layers.items() if hasattr(layer, "op")}


def test_compare_writes_report_with_control_and_probe(tmp_path, capsys):
    code = main(["compare", "--methods", "bptt,dfa", "opzo:sigma=0.5", "--seeds", "2", "--epochs", "1",
                 "--net", "64-32-10", "--probe-batches", "3", "--out", str(tmp_path), "--runs-dir",
                 str(tmp_path / "runs"), "--json", "--no-progress"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [r["method"] for r in res["table"]] == ["bptt", "dfa", "opzo:sigma=0.5", "readout-only"]
    assert all(r["seeds"] == 2 and 0 <= r["test_acc_mean"] <= 1 for r in res["table"])
    assert {r["method"] for r in res["probe"]["rows"]} == {"bptt", "dfa", "opzo:sigma=0.5"}
    md = (tmp_path / "compare_digits.md").read_text()
    assert "| `readout-only` | 2 |" in md and "cosine to BP" in md
    for png in ("compare_digits_curves.png", "compare_digits_gradients.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", "--methods", "backprop"]) == 2
    # an earlier comparison is kept unless --overwrite: its report, then its runs
    before = md
    for out in (tmp_path, tmp_path / "elsewhere"):
        assert main(["compare", "--methods", "bptt", "--seeds", "1", "--epochs", "1", "--net", "64-32-10",
                     "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "compare_digits.md exists; pass --overwrite" in err and "earlier comparison's runs" in err, err
    assert (tmp_path / "compare_digits.md").read_text() == before


def test_local_learning_adds_a_local_signal():
    """opzo+ll == opzo:ll=1; with the global feedback still zero (first batch of OPZO), the hidden
    layer learns from the local readout alone; ll is refused by rules without it."""
    net = _tiny()
    x_seq, y = torch.rand(1, 16, 10) * 2, torch.randint(0, 3, (16,))  # one step: M is still 0 when used
    plain = make_rule("opzo")
    local = make_rule("opzo+ll:sigma=0.5")
    assert local.local and local.sigma0 == 0.5 and not plain.local
    for r in (plain, local):
        r.generator = torch.Generator().manual_seed(0)
    assert _hidden_grad(net, plain, x_seq, y).abs().max() == 0
    assert _hidden_grad(net, local, x_seq, y).abs().max() > 0
    assert make_rule("dfa+ll").local
    with pytest.raises(SpecError, match="no option"):
        make_rule("ottt+ll")


def test_summary_records_what_the_cost_model_needs(capsys):
    """Updates, noise draws (antithetic OPZO draws every other step), feedback sizes, spikes."""
    assert main(["train", "--method", "opzo", "--net", "64-16-10", "--epochs", "1", "--batch-size", "100",
                 "--time-steps", "4", "--json", "--no-progress"]) == 0
    act = json.loads(capsys.readouterr().out)["activity"]
    n_train = 1797 - 360 - 180
    assert act["updates"] == -(-n_train // 100)
    assert act["noise_draws"] == n_train * 16 * 2  # 4 steps, fresh noise at steps 0 and 2
    assert act["feedback_entries"] == {"dense1": 10 * 16} and act["train_spikes"]["dense1"] > 0


@pytest.mark.parametrize("spec", ["opzo:site=before", "zo:site=before"])
def test_noise_before_the_neuron_trains_the_hidden_layer(spec):
    """Noise in the input current: the signal lands on the membrane (no ψ'), weights still learn."""
    net = _tiny()
    x_seq, y = torch.rand(4, 32, 10) * 2, torch.randint(0, 3, (32,))
    rule = make_rule(spec)
    rule.generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        g = _hidden_grad(net, rule, x_seq, y)
    assert torch.isfinite(g).all() and g.abs().max() > 0


def test_gradient_variance_ordering_zo_much_above_opzo_close_to_bp():
    """OPZO Fig. 2 on digits: (scale-free) variance of ZO ≫ OPZO ≈ BP on the hidden layer; OPZO's
    direction is the closest to BP among the zeroth-order / random-feedback rules."""
    from neuroplast.probe import probe_gradients
    from neuroplast.spec import TrainConfig
    res = probe_gradients(TrainConfig(net="64-256-10", batch_size=64), methods=["bptt", "dfa", "zo", "opzo"],
                          max_batches=20)
    hid = {r["method"]: r for r in res["rows"] if r["layer"] == "dense1"}
    assert hid["zo"]["rel_variance"] > 5 * hid["opzo"]["rel_variance"]
    assert hid["opzo"]["rel_variance"] < 3 * hid["bptt"]["rel_variance"]
    assert hid["opzo"]["cosine"] > max(hid["zo"]["cosine"], hid["dfa"]["cosine"]) + 0.3


def _deep(seed=0):
    return _scaled("12-16-16-16-3", 12, seed)


@pytest.mark.parametrize("igl", [0, 2])
def test_igl_lower_layers_take_their_error_from_the_middle_readout(igl):
    """IGL (OPZO App. C.1): with igl=2 the layer before the 2nd hidden layer learns from that layer's
    readout, so changing the network's output weights leaves its update unchanged; layers from the
    middle on still follow the output error (and without IGL every layer does)."""
    net, g = _deep(), torch.Generator().manual_seed(3)
    x_seq, y = torch.rand(5, 32, 12, generator=g) * 2, torch.randint(0, 3, (32,), generator=g)
    rule = make_rule(f"dfa:igl={igl}")
    rule.generator = torch.Generator().manual_seed(0)
    before = _grads(net, rule, x_seq, y)
    with torch.no_grad():
        net.layers["readout"].op.weight.normal_(generator=g)
    after = _grads(net, rule, x_seq, y)
    assert before["dense1"].abs().sum() > 0
    assert torch.equal(before["dense1"], after["dense1"]) == bool(igl)
    assert not torch.equal(before["dense2"], after["dense2"]) and not torch.equal(before["dense3"], after["dense3"])
    assert rule.readout_sizes() == ({"igl_dense2": 16 * 3 + 3} if igl else {})


def test_trained_local_readouts_converge_to_the_best_linear_readout_and_fixed_ones_do_not_learn():
    """A trained local readout minimises its own loss: through the rule it reaches the loss of a
    linear readout fitted directly to the same layer's spikes; fixed readouts have no parameters."""
    net, g = _deep(), torch.Generator().manual_seed(4)
    x_seq = torch.rand(5, 64, 12, generator=g) * 2
    y = x_seq.mean(0)[:, :3].argmax(1)
    fixed = make_rule("opzo+ll")
    fixed.setup(net)
    assert fixed.parameters() == [] and set(fixed.readout_sizes()) == {"ll_dense1", "ll_dense2", "ll_dense3"}
    rule = make_rule("dfa+ll:ll=trained")
    rule.generator = torch.Generator().manual_seed(0)
    rule.setup(net)
    params = rule.parameters()
    assert len(params) == 6
    with torch.no_grad():
        spikes = net.simulate(x_seq).spikes["dense1"]

    def loss_of(readout):
        return sum(CEMSELoss()(readout(s), y) for s in spikes) / len(spikes)
    readout = rule.readouts["ll_dense1"]
    start = float(loss_of(readout).detach())
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        rule.compute_grads(net, x_seq, y, CEMSELoss())
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        opt.step()
    direct = torch.nn.Linear(16, 3)
    opt = torch.optim.Adam(direct.parameters(), lr=0.05)
    for _ in range(500):
        opt.zero_grad()
        loss_of(direct).backward()
        opt.step()
    best, reached = float(loss_of(direct).detach()), float(loss_of(readout).detach())
    assert reached < start - 0.05 and reached <= best + 0.01, (start, reached, best)


@pytest.mark.parametrize("spec,message", [("dfa:igl=1", "after the first"), ("opzo:igl=9", "2..3"),
                                          ("opzo:igl=readout", "hidden spiking layer"), ("zo:ll=maybe", "ll must be")])
def test_bad_local_learning_options(spec, message):
    with pytest.raises(SpecError, match=message):
        rule = make_rule(spec)
        rule.compute_grads(_deep(), torch.rand(2, 4, 12), torch.zeros(4, dtype=torch.long), CEMSELoss())


def test_igl_with_trained_local_readouts_rescues_opzo_on_a_deep_conv_net(capsys):
    """OPZO Sec. 5.4 / App. C.1 made small: on a 5-hidden-layer conv SNN (digits, 10 epochs) plain
    OPZO's top-down signal barely reaches the first layers; IGL at conv3 with trained local
    readouts trains it (seed 0 here: ~67% -> ~88%, `reports/deep_conv_digits`)."""
    accs = {}
    for method in ("opzo", "opzo:igl=3,ll=trained"):
        assert main(["train", "--method", method, "--net", "1x8x8-16C3-16C3-AP2-32C3-32C3-64-10", "--epochs", "10",
                     "--batch-size", "32", "--lr", "2e-3", "--json", "--no-progress"]) == 0
        accs[method] = json.loads(capsys.readouterr().out)["test_acc"]
    # +0.12: plain OPZO reaches ~0.67-0.69 here since the counter-based draws (~0.49-0.54 before), IGL + LL ~0.88
    assert accs["opzo:igl=3,ll=trained"] >= 0.85 and accs["opzo:igl=3,ll=trained"] >= accs["opzo"] + 0.12, accs


def test_rademacher_noise_is_balanced_independent_and_seeded():
    """32 signs per 32-bit word: exactly ±σ; every bit position of the word balanced (a stuck or
    repeated byte would show); no correlation between neighbours or 32 apart; same seed, same draw."""
    n = 32 * 20000
    x = rademacher((n,), torch.Generator().manual_seed(3), "cpu", 0.25)
    assert set(x.unique().tolist()) == {-0.25, 0.25}
    s = x / 0.25
    bound = 5 / (n / 32) ** 0.5
    assert float(s.view(-1, 32).mean(0).abs().max()) < bound  # per bit position
    for lag in (1, 8, 31, 32):
        assert abs(float((s[lag:] * s[:-lag]).mean())) < 5 / n ** 0.5
    assert torch.equal(rademacher((7, 9), torch.Generator().manual_seed(5), "cpu"),
                       rademacher((7, 9), torch.Generator().manual_seed(5), "cpu"))


@pytest.mark.parametrize("estimator", ["sigmoid", "asgl:p=0.5"])
def test_reruns_see_the_steps_dropout_mask_and_spike_noise_and_change_no_later_draw(estimator):
    """ZO's clean/antithetic reruns and OPZO's subtract_clean rerun the step from its previous state: the
    rerun must draw the step's own dropout mask (drawn at t = 0) and ASGL spike noise, or the "clean"
    pass is another network, and must leave the generators where the step left them."""
    from neuroplast.data import encode

    def run(baseline):
        net = build_network("20-D0.5-16-3", input_shape=(20,), num_classes=3, estimator=estimator,
                            generator=torch.Generator().manual_seed(0))
        net.train()
        g = torch.Generator().manual_seed(1)
        for m in net.modules():
            if hasattr(m, "generator"):
                m.generator = g
        rule = make_rule(f"zo:sigma=0.5,baseline={baseline}")
        rule.generator = g
        same, signals = [], rule.hidden_signals

        def spy(net, info):   # rerunning the step's own perturbation must give the step's output
            same.append(torch.equal(info.rerun({k: rule.sigma * z for k, z in rule._z.items()}), info.o))
            return signals(net, info)
        rule.hidden_signals = spy
        x = torch.rand(5, 20, generator=torch.Generator().manual_seed(2)) * 2
        rule.compute_grads(net, encode("direct", x, 4), torch.tensor([0, 1, 2, 0, 1]), CEMSELoss())
        return same, rule._z
    same, z_clean = run("clean")
    assert len(same) == 4 and all(same)
    _, z_running = run("running")   # no reruns of its own: the same later draws
    assert all(torch.equal(z_clean[k], z_running[k]) for k in z_clean)


@pytest.mark.parametrize("spec,build", [("opzo:sigma=abc", "rule"), ("zo:sigma=x", "rule"),
                                        ("localzo:m=abc", "estimator"), ("sigmoid:k=abc", "estimator")])
def test_a_non_numeric_option_value_is_a_spec_error_naming_it(spec, build):
    """Before, the text reached the constructor: a ValueError/TypeError traceback and exit code 1."""
    from neuroplast.snn import make_estimator
    with pytest.raises(SpecError, match=f"option {spec.split(':')[1].split('=')[0]}=.* must be a number"):
        (make_rule if build == "rule" else make_estimator)(spec)
    # options that take words still do
    assert make_rule("opzo:ll=trained,noise=rademacher").noise_kind == "rademacher"
    assert make_estimator("localzo:dist=uniform").dist == "uniform"


def test_on_chip_training_refuses_a_non_numeric_sigma(capsys):
    """On-chip learning parses its own options: a word for sigma is a one-line error (exit 2), no traceback."""
    assert main(["train", "--task", "digits", "--precision", "loihi2", "--method", "opzo:sigma=abc", "--epochs", "1",
                 "--no-progress"]) == 2
    assert "option sigma='abc' must be a number" in capsys.readouterr().err
