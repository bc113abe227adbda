"""Learned optimizer: beats tuned SGD and Adam on a noisy quadratic, meta-gradients, checkpoints."""
import math

import pytest
import torch

from neuroplast.errors import DataError
from neuroplast.optim import CoordinateLSTM, LearnedOptimizer, MetaConfig, meta_train, run_trajectory
from neuroplast.optim.learned import load_checkpoint, save_checkpoint
from neuroplast.optim.meta import ProblemSampler, learned_stepper, torch_stepper
from neuroplast.optim.problems import NoisyQuadratic

QUAD = dict(problem="quadratic", dim=10, noise=1.0, unroll=20, horizon=100, eval_every=100, eval_seeds=8,
            init_lr=1e-2, scale_lr=3e-2, meta_lr=3e-3)


def _mean_loss(sampler, make_stepper, seeds, steps=100):
    return sum(run_trajectory(sampler(s), make_stepper(sampler(s).n), steps)[steps] for s in seeds) / len(seeds)


def test_meta_trained_lstm_beats_tuned_sgd_and_adam_on_a_noisy_quadratic(tmp_path):
    """Andrychowicz et al. 2016, Sec. 3.1 made small: after 100 steps on unseen noisy quadratics
    the learned optimizer's loss is below SGD's and Adam's at their best learning rates."""
    cfg = MetaConfig(**QUAD, meta_iters=1000)
    summary = meta_train(cfg, tmp_path / "meta", progress=False)
    assert summary["restores"] == 0 and (tmp_path / "meta" / "best.pt").is_file()
    model, _ = load_checkpoint(tmp_path / "meta" / "best.pt")
    sampler, seeds = ProblemSampler(cfg), [2_000_000 + i for i in range(20)]
    learned = _mean_loss(sampler, lambda n: learned_stepper(model, n), seeds)
    grid = [0.01 * 2 ** (k / 2) for k in range(13)]  # 0.01 .. 0.64, steps of √2
    best = {name: min(_mean_loss(sampler, lambda n, lr=lr: torch_stepper(lambda ps: make(ps, lr=lr), n), seeds)
                      for lr in grid)
            for name, make in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam))}
    assert learned < min(best.values()), (learned, best)


def test_meta_gradients_are_finite_and_non_zero():
    """Through a 5-step unroll every LSTM weight gets a finite, non-zero meta-gradient (the head
    starts at zero, so the cells see gradient from the second meta-step on)."""
    model = CoordinateLSTM("adam", init_lr=1e-2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        problem = NoisyQuadratic(dim=6, seed=0)
        theta, state, loss = problem.init().requires_grad_(True), model.init_state(6), 0.0
        for t in range(5):
            g = problem.grad(theta, problem.loss(theta, t), t)
            upd, state = model.step(g, state)
            theta = theta + upd
            loss = loss + problem.loss(theta, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(float(g.abs().sum()) > 0 for g in grads.values()), [n for n, g in grads.items() if not g.abs().sum()]


@pytest.mark.parametrize("variant", ["adam", "l2l"])
def test_saved_optimizer_reloads_and_gives_identical_steps(variant, tmp_path):
    torch.manual_seed(0)
    model = CoordinateLSTM(variant)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_checkpoint(tmp_path / "opt.pt", model)
    runs = []
    for opt_factory in (lambda ps: LearnedOptimizer(ps, model), lambda ps: LearnedOptimizer.load(tmp_path / "opt.pt", ps)):
        w = torch.nn.Parameter(torch.linspace(-1, 1, 12).view(3, 4))
        opt, g = opt_factory([w]), torch.Generator().manual_seed(1)
        for _ in range(6):
            opt.zero_grad()
            (w ** 2).sum().backward()
            w.grad += 0.1 * torch.randn(w.shape, generator=g)
            opt.step()
        runs.append(w.detach().clone())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], torch.linspace(-1, 1, 12).view(3, 4))


@pytest.mark.parametrize("learn_beta1", [False, True])
def test_adam_variant_starts_as_adam(learn_beta1):
    """Zero-initialised head: the untrained default variant takes Adam's steps (lr = init_lr), with
    or without a learnable β₁ (it starts at Adam's 0.9)."""
    model = CoordinateLSTM("adam", init_lr=0.05, learn_beta1=learn_beta1)
    a, b = torch.nn.Parameter(torch.ones(5)), torch.nn.Parameter(torch.ones(5))
    opts = [LearnedOptimizer([a], model), torch.optim.Adam([b], lr=0.05, eps=1e-8)]
    for t in range(5):
        for p, opt in zip((a, b), opts):
            opt.zero_grad()
            ((p - torch.arange(5.0)) ** 2).sum().backward()
            opt.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_bad_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="truncated"):
        load_checkpoint(tmp_path / "corrupt.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="not a neuroplast learned-optimizer"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "ok.pt", CoordinateLSTM())
    blob = torch.load(tmp_path / "ok.pt")
    torch.save({**blob, "version": 0}, tmp_path / "old.pt")
    with pytest.raises(DataError, match="version 0"):
        load_checkpoint(tmp_path / "old.pt")
    blob["config"]["hidden"] = 7
    torch.save(blob, tmp_path / "other.pt")
    with pytest.raises(DataError, match="does not match"):
        load_checkpoint(tmp_path / "other.pt")


def test_nan_meta_loss_restores_the_last_good_lstm(tmp_path, monkeypatch):
    """A diverging optimizee (NaN loss) makes the trainer restore the last good LSTM and go on."""
    calls = {"n": 0}
    orig = NoisyQuadratic.loss

    def flaky(self, theta, t):
        out = orig(self, theta, t)
        if theta.grad_fn is None:   # held-out evaluations (and segment starts) stay finite
            return out
        calls["n"] += 1
        return out * math.nan if calls["n"] == 30 else out
    monkeypatch.setattr(NoisyQuadratic, "loss", flaky)
    summary = meta_train(MetaConfig(**{**QUAD, "meta_iters": 6, "eval_every": 3}), tmp_path / "m", progress=False)
    assert summary["restores"] == 1 and summary["iterations"] == 6



def test_every_nan_restore_goes_back_to_the_last_good_adam_state(tmp_path, monkeypatch):
    """Each optimizee diverges on its second segment, so every meta-step is followed by a restore. Each
    restore must give back the Adam state of the last evaluation (iteration 3: one Adam step), not the
    one that a previous restore's Adam went on stepping in place: at the end (iteration 6, after a
    restore at 5 and one step) Adam has taken 2 steps."""
    orig = NoisyQuadratic.loss
    monkeypatch.setattr(NoisyQuadratic, "loss", lambda self, theta, t: orig(self, theta, t) * (
        math.nan if t == 25 and theta.grad_fn is not None else 1.0))
    summary = meta_train(MetaConfig(**{**QUAD, "meta_iters": 6, "eval_every": 3, "eval_seeds": 1}), tmp_path / "m",
                         progress=False)
    assert summary["restores"] == 5
    steps = {float(s["step"]) for s in torch.load(tmp_path / "m" / "last.pt", weights_only=True)["opt"]["state"].values()}
    assert steps == {2.0}

def test_meta_training_resumes(tmp_path):
    cfg = MetaConfig(**{**QUAD, "meta_iters": 4, "eval_every": 2, "eval_seeds": 2})
    meta_train(cfg, tmp_path / "m", progress=False)
    with pytest.raises(Exception, match="--resume"):
        meta_train(cfg, tmp_path / "m", progress=False)
    cfg.meta_iters = 6
    summary = meta_train(cfg, tmp_path / "m", resume=True, progress=False)
    assert summary["iterations"] == 6 and [h["iteration"] for h in summary["history"]] == [0, 2, 4, 6]


def _interrupt_at(monkeypatch, k):
    """Make meta-training stop as a killed process does: right after it has written last.pt at iteration k."""
    from pathlib import Path

    from neuroplast.optim import meta
    real = meta.save_checkpoint

    def save(path, model, meta=None, **extra):
        written = real(path, model, meta, **extra)
        if Path(path).name == "last.pt" and extra.get("iteration") == k:
            raise KeyboardInterrupt
        return written
    monkeypatch.setattr(meta, "save_checkpoint", save)


def _final_state(out):
    """(LSTM state dict, Adam state, history without wall times, last.pt's counters) of a finished run."""
    blob = torch.load(out / "last.pt", weights_only=True)
    history = [{k: v for k, v in r.items() if k != "wall_s"} for r in blob["history"]]
    return blob["state_dict"], blob["opt"], history, {k: blob[k] for k in ("iteration", "best_score", "restores",
                                                                            "next_seed")}


def _assert_same_run(a, b):
    sd_a, opt_a, hist_a, count_a = a
    sd_b, opt_b, hist_b, count_b = b
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a), \
        {k: float((sd_a[k] - sd_b[k]).abs().max()) for k in sd_a}
    assert all(torch.equal(x, opt_b["state"][i][k]) for i, s in opt_a["state"].items() for k, x in s.items())
    assert hist_a == hist_b and count_a == count_b


@pytest.mark.parametrize("meta_grad,nan_at", [("bptt", None), ("pes", None), ("bptt", 45)])
def test_interrupted_meta_training_resumes_exactly(tmp_path, monkeypatch, meta_grad, nan_at):
    """Killed after the checkpoint of iteration 3 (mid-trajectory, between evaluations: last.pt is written
    every iteration here) and resumed, meta-training ends with the same LSTM, Adam state and history,
    bit for bit, as the run that was never interrupted: the optimizee in progress, its LSTM state, the
    PES particles and their accumulated perturbations, every generator and the last good LSTM and Adam
    state are in last.pt. With ``nan_at`` every optimizee diverges on its third segment: restores at
    iterations 2 and 4, around the interruption, both back to the evaluation at 0."""
    if nan_at is not None:   # every optimizee diverges at step nan_at: the trainer restores the last good LSTM
        orig = NoisyQuadratic.loss
        monkeypatch.setattr(NoisyQuadratic, "loss", lambda self, theta, t: orig(self, theta, t) * (
            math.nan if t == nan_at and theta.grad_fn is not None else 1.0))
    cfg = MetaConfig(**{**QUAD, "meta_iters": 9, "eval_every": 5, "eval_seeds": 2, "horizon_start": 40,
                        "save_every_s": 1e-9, "meta_grad": meta_grad, "pes_particles": 4})
    meta_train(cfg, tmp_path / "whole", progress=False)
    whole = _final_state(tmp_path / "whole")
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        with pytest.raises(KeyboardInterrupt):
            meta_train(cfg, tmp_path / "split", progress=False)
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["iteration"] == 3
    meta_train(cfg, tmp_path / "split", resume=True, progress=False)
    _assert_same_run(_final_state(tmp_path / "split"), whole)
    assert (whole[3]["restores"] > 1) == (nan_at is not None)


def test_meta_train_cli_resume_continues_exactly(tmp_path, monkeypatch, capsys):
    """The CLI path: an SNN optimizee whose gradient estimate is OPZO's (a rule with momentum feedback
    and noise of its own), PES meta-gradients, a curriculum; interrupted (Ctrl-C) after the checkpoint
    at the evaluation of iteration 2, mid-trajectory, `meta-train --resume` ends where the
    uninterrupted run ends."""
    from neuroplast.cli import main
    argv = ["--nets", "64-16-10", "--method", "opzo", "--meta-grad", "pes", "--pes-particles", "2", "--unroll", "5",
            "--horizon", "20", "--horizon-start", "10", "--meta-iters", "5", "--eval-every", "2", "--eval-seeds",
            "1", "--batch-size", "16", "--no-progress"]
    assert main(["meta-train", *argv, "--out", str(tmp_path / "whole")]) == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, 2)
        assert main(["meta-train", *argv, "--out", str(tmp_path / "split")]) == 1
    assert "interrupted" in capsys.readouterr().err
    assert main(["meta-train", *argv, "--out", str(tmp_path / "split"), "--resume"]) == 0
    _assert_same_run(_final_state(tmp_path / "split"), _final_state(tmp_path / "whole"))



def test_resuming_a_last_pt_without_resume_state_warns_and_goes_on(tmp_path):
    """A last.pt of an older neuroplast (LSTM, Adam and counters only) still resumes, with a warning that
    the continuation is not exact and how to get an exact run; resume state of another version is refused."""
    from neuroplast.errors import UserError
    cfg = MetaConfig(**{**QUAD, "meta_iters": 2, "eval_every": 2, "eval_seeds": 1})
    meta_train(cfg, tmp_path / "m", progress=False)
    blob = torch.load(tmp_path / "m" / "last.pt", weights_only=True)
    torch.save({**blob, "resume": {**blob["resume"], "version": 99}}, tmp_path / "m" / "last.pt")
    cfg.meta_iters = 4
    with pytest.raises(UserError, match=r"resume state of version 99.*--overwrite"):
        meta_train(cfg, tmp_path / "m", resume=True, progress=False)
    del blob["resume"]
    torch.save(blob, tmp_path / "m" / "last.pt")
    with pytest.warns(UserWarning, match=r"older neuroplast .* iteration 2 .* not be identical .* --overwrite"):
        summary = meta_train(cfg, tmp_path / "m", resume=True, progress=False)
    assert summary["iterations"] == 4 and [h["iteration"] for h in summary["history"]] == [0, 2, 4]

def test_meta_train_cli_and_a_learned_optimizer_drives_opzo_training(tmp_path, capsys):
    """meta-train (OPZO gradient estimates on a tiny digits SNN) -> checkpoint -> train --optimizer
    learned:PATH with OPZO: the ZO-type estimate in .grad is what the LSTM turns into steps."""
    import json

    from neuroplast.cli import main
    out = tmp_path / "meta"
    assert main(["meta-train", "--nets", "64-16-10", "--method", "opzo", "--meta-iters", "4", "--eval-every", "2",
                 "--eval-seeds", "1", "--horizon", "20", "--out", str(out), "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["iterations"] == 4 and len(summary["history"]) == 3 and (out / "best.pt").is_file()
    assert main(["meta-train", "--nets", "64-16-10", "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--net", "64-16-10", "--method", "opzo", "--optimizer", f"learned:{out / 'best.pt'}",
                 "--epochs", "3", "--batch-size", "32", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] > 0.4  # chance: 0.1
    assert main(["meta-train", "--weights", "cubic", "--out", str(tmp_path / "x")]) == 2
    assert "unknown meta-loss weights" in capsys.readouterr().err


def test_meta_bench_meta_trains_when_needed_and_writes_a_report(tmp_path, capsys):
    import json

    from neuroplast.cli import main
    task = tmp_path / "tiny.toml"
    task.write_text(f"""
[meta]
dataset = "digits"
nets = ["64-16-10"]
meta_iters = 2
eval_every = 2
eval_seeds = 1
horizon = 10

[bench]
dataset = "digits"
net = "64-16-10"
horizon = 6
long = 2
seeds = 2
test_samples = 100
eval_points = 2
learned = {{ learned = "{tmp_path / 'run' / 'best.pt'}" }}
[bench.sweep]
sgd = [0.1, 1.0]
adam_cosine = [0.01]
""")
    assert main(["meta-bench", "--task", str(task), "--out", str(tmp_path / "rep"), "--cache", str(tmp_path / "cache"),
                 "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (tmp_path / "run" / "best.pt").is_file()
    assert [r["optimizer"] for r in res["table"]] == ["sgd", "adam_cosine@6", "adam_cosine@12", "learned"]
    assert res["tuned_lr"]["sgd"] in (0.1, 1.0)
    learned = res["table"][-1]
    assert learned["loss@6"][0] > 0 and len(learned["acc@12"]) == 2
    md = (tmp_path / "rep" / "meta_tiny.md").read_text()
    assert "| `learned` |" in md and (tmp_path / "rep" / "meta_tiny.png").stat().st_size > 1000
    info = res["learned"]["learned"]          # how the learned row was meta-trained, from its checkpoint
    assert info["meta_config"]["nets"] == ["64-16-10"] and [r["iteration"] for r in info["history"]] == [0, 2]
    assert "the checkpoint of meta-iteration" in md and "| 2 | " in md
    cached = sorted((tmp_path / "cache").iterdir())                # a second bench reads every curve back
    assert main(["meta-bench", "--task", str(task), "--out", str(tmp_path / "rep"), "--cache", str(tmp_path / "cache"),
                 "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["table"] == res["table"]
    assert sorted((tmp_path / "cache").iterdir()) == cached
    assert main(["meta-bench", "--task", str(task), "--out", str(tmp_path / "rep"), "--cache", str(tmp_path / "cache"),
                 "--json", "--no-progress", "--learned-only"]) == 0                 # the learned rows alone, read back
    assert json.loads(capsys.readouterr().out)["table"] == res["table"][-1:]
    assert (tmp_path / "rep" / "meta_tiny_learned.md").is_file()
    assert main(["meta-bench", "--task", str(task), "--baselines-only", "--learned-only", "--no-progress"]) == 2
    task.write_text('[bench]\nnet = "64-16-10"\nlearned = { x = "/nonexistent/best.pt" }\n')
    assert main(["meta-bench", "--task", str(task), "--cache", "", "--no-progress"]) == 2
    assert "no [meta] table" in capsys.readouterr().err


def test_relative_variant_keeps_geometric_mean_step_and_steps_all_parameters_as_one_vector():
    """``relative``: log-multipliers centred over the coordinates (geometric mean 1, no global shrink);
    LearnedOptimizer then steps a group's parameters as one vector, as meta-training does."""
    from neuroplast.optim.learned import LearnedOptimizer
    from neuroplast.optim.lstm import CoordinateLSTM
    torch.manual_seed(0)
    model = CoordinateLSTM("adam", init_lr=0.01, relative=True)
    with torch.no_grad():
        model.head.weight.normal_(0, 30.0)
    g = torch.randn(50)
    plain = CoordinateLSTM("adam", init_lr=0.01)
    upd, _ = model.step(g, model.init_state(50))
    adam, _ = plain.step(g, plain.init_state(50))
    ratio = (upd / adam).detach()                     # the multipliers exp(b), b centred
    assert abs(float(ratio.log().mean())) < 1e-5 and float(ratio.log().std()) > 0.01
    a, b = torch.nn.Parameter(torch.zeros(30)), torch.nn.Parameter(torch.zeros(4, 5))
    opt = LearnedOptimizer([a, b], model)
    a.grad, b.grad = g[:30].clone(), g[30:].view(4, 5).clone()
    opt.step()
    assert torch.allclose(torch.cat([a.detach(), b.detach().reshape(-1)]), upd, atol=1e-7)


def test_pes_meta_gradient_matches_backprop_on_the_first_segment():
    """PES (persistent evolution strategies) is unbiased for the whole trajectory; on its first segment
    the start does not depend on the LSTM, so it estimates the gradient that backprop through the
    unroll computes (noise-free quadratic: the same trajectory for both)."""
    from neuroplast.optim.meta import _segment_loss, pes_segment
    cfg = MetaConfig(**{**QUAD, "noise": 0.0, "unroll": 10, "meta_grad": "pes", "pes_particles": 1024,
                        "pes_sigma": 1e-3})
    torch.manual_seed(0)
    model = CoordinateLSTM("adam", init_lr=1e-2)
    with torch.no_grad():                      # a non-trivial LSTM (the head starts at zero)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    problem = NoisyQuadratic(dim=10, noise=0.0, seed=3)
    theta = problem.init().requires_grad_(True)
    loss, _, _, _ = _segment_loss(model, problem, theta, model.init_state(10), 0, None, cfg.horizon,
                                  MetaConfig(**{**QUAD, "noise": 0.0, "unroll": 10}))
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])
    n = exact.numel()
    particles = [{"theta": problem.init(), "state": model.init_state(10), "l0": None, "xi": torch.zeros(n)}
                 for _ in range(cfg.pes_particles)]
    mean, est = pes_segment(model, problem, particles, 0, cfg.horizon, cfg, torch.Generator().manual_seed(1))
    assert math.isfinite(mean) and abs(mean - float(loss.detach())) < 1e-2 * abs(float(loss.detach()))
    # N antithetic particles in d dimensions: cos(ĝ, ∇) ≈ √(N/(N + d)) for a correct estimator (0.4 here),
    # ≈ ±1/√d (0.01) for an unrelated direction
    expected = math.sqrt(cfg.pes_particles / (cfg.pes_particles + n))
    cos = float(est @ exact / (est.norm() * exact.norm()))
    assert cos > 0.6 * expected > 10 / math.sqrt(n), (cos, expected, n)
    assert all(p.requires_grad for p in model.parameters())          # restored after the particles ran


def test_pes_meta_training_improves_the_held_out_score():
    cfg = MetaConfig(**{**QUAD, "meta_iters": 150, "eval_every": 150, "meta_grad": "pes", "pes_particles": 8,
                        "pes_sigma": 0.01})
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        summary = meta_train(cfg, d, progress=False)
    first, last = summary["history"][0]["score"], summary["history"][-1]["score"]
    assert summary["restores"] == 0 and last < first, (first, last)
    with pytest.raises(Exception, match="pes needs"):
        MetaConfig(**{**QUAD, "meta_grad": "pes", "pes_particles": 3}).validate()


def test_learnable_beta1_gets_a_meta_gradient_and_survives_a_checkpoint(tmp_path):
    from neuroplast.optim.meta import _meta_optimizer, _segment_loss
    cfg = MetaConfig(**{**QUAD, "learn_beta1": True})
    model = CoordinateLSTM("adam", init_lr=1e-2, learn_beta1=True)
    problem = NoisyQuadratic(dim=10, noise=1.0, seed=2)
    loss, *_ = _segment_loss(model, problem, problem.init().requires_grad_(True), model.init_state(10), 0, None,
                             cfg.horizon, cfg)
    loss.backward()
    g = model.beta1_logit.grad
    assert g is not None and torch.isfinite(g) and float(g) != 0.0
    groups = _meta_optimizer(model, cfg).param_groups        # β₁ is meta-trained at the scalars' rate
    assert any(p is model.beta1_logit for p in groups[1]["params"]) and groups[1]["lr"] == cfg.scale_lr
    with torch.no_grad():
        model.beta1_logit.fill_(0.3)
    save_checkpoint(tmp_path / "b.pt", model)
    again, _ = load_checkpoint(tmp_path / "b.pt")
    assert again.learn_beta1 and again.beta1_value() == pytest.approx(float(torch.sigmoid(torch.tensor(0.3))))


@pytest.mark.parametrize("method", ["bptt", "opzo", "dfa"])
def test_pes_particles_replay_the_same_batches_and_estimator_noise(method):
    """Common random numbers: with (almost) no perturbation every PES particle follows the same
    trajectory, although each segment draws mini-batches and LocalZO (bptt) or OPZO noise. With a
    rule each particle keeps its own rule state: OPZO's momentum feedback shared by the particles
    would move on with every particle's step, DFA's matrices drawn by the first only would shift the
    others' draws."""
    from neuroplast.optim.meta import pes_segment
    cfg = MetaConfig(problem="snn", dataset="digits", nets=["64-32-10"], batch_size=16, unroll=3,
                     meta_grad="pes", pes_particles=4, pes_sigma=1e-9, init_lr=0.03, method=method)
    problem = ProblemSampler(cfg)(5)
    model = CoordinateLSTM("adam", init_lr=0.03)
    n_phi = sum(p.numel() for p in model.parameters())
    particles = [{"theta": problem.init(), "state": model.init_state(problem.n), "l0": None,
                  "xi": torch.zeros(n_phi)} for _ in range(cfg.pes_particles)]
    for t in (0, 3):
        pes_segment(model, problem, particles, t, cfg.horizon, cfg, torch.Generator().manual_seed(t))
    moved = particles[0]["theta"] - problem.init()
    assert moved.abs().max() > 1e-3
    for p in particles[1:]:
        assert torch.allclose(p["theta"], particles[0]["theta"], atol=1e-6)


def test_chunked_no_grad_lstm_step_equals_the_autograd_cells():
    """Without autograd the LSTM runs cache-sized chunks of coordinates with per-gate GEMMs; it must
    give the steps and states of nn.LSTMCell (more coordinates than one chunk, a trained-looking LSTM)."""
    from neuroplast.optim import lstm
    torch.manual_seed(0)
    model = CoordinateLSTM("adam", init_lr=1e-2, learn_beta1=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    n = lstm.CHUNK * 2 + 37
    a, b = model.init_state(n), model.init_state(n)
    for t in range(4):
        g = torch.randn(n) * 10.0 ** (-t)
        ua, a = model.step(g, a)                      # autograd cells (parameters require grad)
        with torch.no_grad():
            ub, b = model.step(g, b)                  # chunked
        assert torch.allclose(ua, ub, rtol=1e-5, atol=1e-9)
        for key in ("h", "c"):
            for x, y in zip(a[key], b[key]):
                assert torch.allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch,estimator", [("64-D0.5-32-10", "localzo:m=2"), ("64-32-10", "asgl:p=0.5"),
                                            ("64-32-10", "sigmoid")])
def test_snn_problem_evaluates_as_a_trained_network_runs(arch, estimator):
    """Accuracy and held-out loss of θ in eval mode (no dropout, ASGL's pure spikes), poisson input from
    their own generator: the same at every call, and the training draws untouched."""
    from neuroplast.data import load_dataset
    from neuroplast.optim.problems import SNNProblem
    data = load_dataset("digits")
    prob = SNNProblem(data, arch, estimator=estimator, encoding="poisson", batch_size=16, eval_samples=64)
    theta = prob.theta0.clone()
    state = prob.g.get_state()
    accs = [prob.accuracy(theta, limit=200) for _ in range(3)]
    losses = [prob.eval_loss(theta) for _ in range(2)]
    assert len(set(accs)) == 1 and losses[0] == losses[1] and torch.equal(prob.g.get_state(), state)
    assert prob.net.training   # back in training mode for the trajectory


def _meta_bad_input(capsys, argv, match):
    import re

    from neuroplast.cli import main
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, (code, err)
    assert re.search(match, err), err


@pytest.mark.parametrize("meta,match", [
    ('unroll = "x"', r"\[meta\]: unroll must be an integer, got 'x'"),
    ("horizon = true", r"\[meta\]: horizon must be an integer, got True"),
    ('nets = "64-16-10"', r"\[meta\]: nets must be a list of strings, got '64-16-10'"),
    ('meta_lr = "fast"', r"\[meta\]: meta_lr must be a number"),
    ("meta_lr = inf", r"meta_lr, clip and init_lr must be finite"),
    ("init_gains = [nan]", r"init_gains must be finite numbers > 0"),
    ("eval_horizons = [0]", r"eval_horizons must be >= 1"),
    ("hidden = 0", r"meta hidden must be >= 1"),
])
def test_meta_task_values_are_type_and_range_checked(tmp_path, capsys, meta, match):
    task = tmp_path / "m.toml"
    task.write_text(f"[meta]\n{meta}\n")
    _meta_bad_input(capsys, ["meta-train", "--task", str(task), "--out", str(tmp_path / "out"), "--no-progress"], match)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bench,match", [
    ('horizon = "x"', r"\[bench\]: horizon must be an integer, got 'x'"),
    ("seeds = 1.5", r"\[bench\]: seeds must be an integer"),
    ("sweep = { sgd = [-0.1] }", r"\[bench.sweep\] sgd = \[-0.1\]: learning rates must be finite numbers > 0"),
    ("sweep = { sgd = [nan] }", r"\[bench.sweep\] sgd = \[nan\]"),
    ("sweep = { sgd = [inf] }", r"\[bench.sweep\] sgd = \[inf\]"),
    ("sweep = { sgd = [] }", r"\[bench.sweep\] sgd is empty"),
    ('sweep = { sgd = ["x"] }', r"\[bench\]: sweep must be a table of lists of numbers"),
    ("batch_size = 0", r"\[bench\] batch_size must be >= 1, got 0"),
    ("test_samples = 0", r"\[bench\] test_samples must be >= 1, got 0"),
    ("eval_points = 0", r"\[bench\] eval_points must be >= 1, got 0"),
    ("time_steps = -1", r"\[bench\] time_steps must be >= 1"),
    ("val_fraction = 1.0", r"\[bench\] val_fraction must be in \[0, 1\)"),
    ("learned = { x = 1 }", r"\[bench\]: learned must be a table of strings"),
])
def test_bench_values_are_type_and_range_checked(tmp_path, capsys, bench, match):
    task = tmp_path / "b.toml"
    task.write_text(f'[bench]\ndataset = "digits"\nnet = "64-16-10"\n{bench}\n')
    only = "--learned-only" if bench.startswith("learned") else "--baselines-only"   # no work should start
    _meta_bad_input(capsys, ["meta-bench", "--task", str(task), "--out", str(tmp_path / "rep"), "--cache", "",
                             only, "--no-progress"], match)
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("text,match", [("bench = 5\n", r"bench must be a table"),
                                        ('meta = "x"\n', r"meta must be a table")])
def test_meta_task_tables_must_be_tables(tmp_path, capsys, text, match):
    task = tmp_path / "t.toml"
    task.write_text(text)
    _meta_bad_input(capsys, ["meta-bench", "--task", str(task), "--no-progress"], match)


@pytest.mark.parametrize("change,match", [
    ({"variant": "l2l"}, r"--resume: .* was meta-trained with variant = 'adam'; this run asks for variant = 'l2l'"),
    ({"hidden": 8}, r"hidden = 20; this run asks for hidden = 8"),
    ({"unroll": 10, "init_lr": 0.1}, r"init_lr = 0.01, unroll = 20; this run asks for init_lr = 0.1, unroll = 10"),
])
def test_resume_refuses_settings_that_differ_from_the_checkpoint(tmp_path, change, match):
    import dataclasses
    import json

    from neuroplast.errors import UserError
    cfg = MetaConfig(**{**QUAD, "meta_iters": 2, "eval_every": 2, "eval_seeds": 1})
    meta_train(cfg, tmp_path / "m", progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    with pytest.raises(UserError, match=match):
        meta_train(dataclasses.replace(cfg, meta_iters=4, **change), tmp_path / "m", resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before     # config.json not rewritten
    assert json.loads((tmp_path / "m" / "config.json").read_text())["variant"] == "adam"


@pytest.mark.parametrize("argv,match", [
    (["--nets", "10-10"], r"network '10-10', layer 1 \('10'\): declares input 10"),
    (["--nets", "64-0-10"], r"the width must be >= 1"),
    (["--nets", "64-16-10", "--method", "nosuch"], r"unknown method 'nosuch'"),
])
def test_a_failed_meta_train_start_writes_nothing(tmp_path, capsys, argv, match):
    _meta_bad_input(capsys, ["meta-train", *argv, "--out", str(tmp_path / "out"), "--no-progress"], match)
    assert not (tmp_path / "out").exists()


def test_bench_table_counts_diverged_seeds_instead_of_crashing_or_dropping_them():
    from neuroplast.optim.bench import table_cells
    ok = {"loss": [1.0] * 20, "test_acc": {"10": 0.5, "20": 0.7}}
    ok2 = {"loss": [3.0] * 20, "test_acc": {"10": 0.3, "20": 0.5}}
    bad = {"loss": [1.0] * 12 + [math.nan] + [math.inf] * 7, "test_acc": {"10": 0.4}}   # diverged at step 13
    cells = table_cells([ok, ok2, bad], (10, 20))
    assert cells["diverged@10"] == 0 and cells["loss@10"][0] == pytest.approx((1 + 3 + 1) / 3)
    assert cells["acc@10"][0] == pytest.approx(0.4)
    assert cells["diverged@20"] == 1 and cells["loss@20"] == [2.0, pytest.approx(math.sqrt(2))]
    assert cells["acc@20"][0] == pytest.approx(0.6)
    assert table_cells([bad], (20,)) == {"loss@20": None, "acc@20": None, "diverged@20": 1}


def test_meta_training_that_keeps_diverging_stops_instead_of_restoring_forever(tmp_path, monkeypatch):
    """Every meta-step non-finite: after MAX_RESTORE_STREAK restores in a row it stops (exit code 1)."""
    import neuroplast.optim.meta as meta
    from neuroplast.errors import TrainingDiverged

    def diverging(model, problem, theta, state, t, l0, horizon, cfg, graph=True):
        return torch.tensor(float("inf"), requires_grad=True), theta, state, l0
    monkeypatch.setattr(meta, "_segment_loss", diverging)
    with pytest.raises(TrainingDiverged, match="lower --meta-lr or --scale-lr"):
        meta_train(MetaConfig(**{**QUAD, "meta_iters": 4, "eval_every": 2, "eval_seeds": 1}), tmp_path / "m",
                   progress=False)


def test_a_diverged_evaluation_is_no_good_state_and_history_is_strict_json(tmp_path):
    """A step size of 1e9 blows the held-out loss up: that LSTM must not become the state a NaN restores
    (the run went on restoring it forever), and history.jsonl holds null, not the non-standard Infinity."""
    import json
    cfg = MetaConfig(**{**QUAD, "meta_iters": 4, "eval_every": 2, "eval_seeds": 1, "scale_lr": 1e9})
    summary = meta_train(cfg, tmp_path / "m", progress=False)
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
            for line in (tmp_path / "m" / "history.jsonl").read_text().splitlines()]
    assert rows[0]["score"] is not None and math.isfinite(summary["best_score"])
    json.loads((tmp_path / "m" / "summary.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"non-standard JSON {c} in summary.json"))
