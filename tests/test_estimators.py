"""Spike-gradient estimators: LocalZO's Monte-Carlo mean, surrogate FD checks, ASGL's learnable
width, bad options, and training on digits against a readout-only control."""
import json

import pytest
import torch

from neuroplast.cli import main
from neuroplast.errors import SpecError
from neuroplast.snn import ESTIMATORS, make_estimator
from neuroplast.snn.localzo import ABS_SAMPLERS, LocalZO, expected_derivative


@pytest.mark.parametrize("dist", sorted(ABS_SAMPLERS))
def test_localzo_monte_carlo_mean_matches_closed_form(dist):
    """Mean of many fresh draws of g(x) == the closed-form expectation within 2% (relative L1)."""
    est = LocalZO(m=20000, delta=0.5, dist=dist)
    est.generator = torch.Generator().manual_seed(0)
    x = torch.linspace(-4.0, 4.0, 801, dtype=torch.float64)
    mean = torch.stack([est.sample_derivative(x) for _ in range(5)]).mean(0)
    exact = expected_derivative(x, 0.5, dist)
    rel_l1 = float((mean - exact).abs().sum() / exact.abs().sum())
    assert rel_l1 < 0.02, rel_l1
    # the closed forms are densities in x: they integrate to 1 (so E[g] is a proper surrogate)
    assert float(torch.trapezoid(exact, x)) == pytest.approx(1.0, abs=0.01)


def test_localzo_uniform_sparse_path_is_exact_outside_support():
    est = LocalZO(m=4000, delta=0.1, dist="uniform")  # support |x| < 0.173: most of the grid is outside
    est.generator = torch.Generator().manual_seed(1)
    x = torch.linspace(-2.0, 2.0, 2001, dtype=torch.float64)
    g = est.sample_derivative(x)
    assert (g[x.abs() >= 3 ** 0.5 * 0.1] == 0).all() and (g[x.abs() < 0.15] > 0).all()
    inside = x.abs() < 0.15
    torch.testing.assert_close(g[inside], expected_derivative(x[inside], 0.1, "uniform"), rtol=0.1, atol=0.0)
    assert 0 < est.gradient_stats()["nonzero_grad_fraction"] < 0.1


def test_localzo_draws_fresh_every_backward_and_reproducibly_with_a_generator():
    def grads(seed):
        est = make_estimator("localzo:m=1,delta=0.5")
        est.generator = torch.Generator().manual_seed(seed)
        x = torch.linspace(-1, 1, 200, requires_grad=True)
        out = []
        for _ in range(2):
            (g,) = torch.autograd.grad(est(x).sum(), x)
            out.append(g)
        return out
    a1, a2 = grads(0)
    b1, _ = grads(0)
    assert not torch.equal(a1, a2) and torch.equal(a1, b1)
    assert set(torch.unique(a1 > 0).tolist()) == {True, False}  # sparse: some neurons get exactly 0


@pytest.mark.parametrize("spec,match", [
    ("sigmoid:k=0", "k > 0"), ("fast_sigmoid:k=-1", "k > 0"), ("triangle:w=0", "w > 0"),
    ("arctan:alpha=0", "alpha > 0"), ("rectangular:w=-2", "w > 0"), ("gaussian:sigma=0", "sigma > 0"),
    ("localzo:m=0", "m >= 1"), ("localzo:m=1.5", "m >= 1"), ("localzo:delta=0", "delta > 0"),
    ("localzo:dist=cauchy", "valid: normal, uniform, laplace"),
    ("asgl:alpha=0", "alpha > 0"), ("asgl:p=1.5", r"p in \[0, 1\]"),
])
def test_bad_estimator_options_name_the_valid_range(spec, match):
    with pytest.raises(SpecError, match=match):
        make_estimator(spec)


def test_asgl_alpha_gets_gradients_and_moves_in_training(capsys):
    est = make_estimator("asgl:alpha=0.25,p=0.5")
    est.generator = torch.Generator().manual_seed(0)
    x = torch.randn(1000, requires_grad=True)
    est(x).pow(2).sum().backward()
    assert est.log_alpha.grad is not None and est.log_alpha.grad.abs() > 0
    code = main(["train", "--estimator", "asgl:alpha=0.25,p=0.5", "--epochs", "3", "--batch-size", "32",
                 "--json", "--no-progress"])
    s = json.loads(capsys.readouterr().out)
    assert code == 0 and abs(s["estimator_stats"]["dense1"]["alpha"] - 0.25) > 1e-3  # Adam: ≤ lr per step in log α


def _digits_acc(capsys, estimator, trainable, seed):
    code = main(["train", "--net", "64-256-10", "--epochs", "20", "--batch-size", "32", "--lr", "2e-3",
                 "--estimator", estimator, "--trainable", trainable, "--seed", str(seed), "--json", "--no-progress"])
    assert code == 0
    return json.loads(capsys.readouterr().out)["test_acc"]


@pytest.fixture(scope="module")
def readout_only_control():
    """Same network and initialisation with the hidden layer frozen (3-seed mean)."""
    import contextlib
    import io

    import _pytest.capture  # noqa: F401  (module fixture cannot use capsys; parse stdout directly)
    accs = []
    for seed in range(3):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(["train", "--net", "64-256-10", "--epochs", "20", "--batch-size", "32", "--lr", "2e-3",
                  "--trainable", "readout", "--seed", str(seed), "--json", "--no-progress"])
        accs.append(json.loads(buf.getvalue())["test_acc"])
    return sum(accs) / 3


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_estimator_trains_digits_and_beats_readout_only(capsys, estimator, readout_only_control):
    mean = sum(_digits_acc(capsys, estimator, "all", seed) for seed in range(3)) / 3
    assert mean >= 0.95, mean
    assert mean >= readout_only_control + 0.10, (mean, readout_only_control)
