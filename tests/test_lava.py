"""Lava side: the compatibility fix (always), and with lava-nc installed: bit-exact spikes and
voltages of Lava (fixed_pt) vs the engine, clear errors, time-outs that stop the runtime."""
import multiprocessing

import pytest
import torch

from neuroplast.chip.hardware import load_chip
from neuroplast.chip.quantize import quantize
from neuroplast.errors import SpecError
from neuroplast.lava.compat import patch_source, patch_start_method
from neuroplast.snn import build_network

VAR_MODEL = '''from __future__ import annotations
@dataclass
class LoihiNeuroVarModel:
    x: ByteEncoder = ByteEncoder()
    y:ByteEncoder = ByteEncoder()
    other: int = 0
'''


def test_compat_rewrites_only_the_mutable_defaults_and_keeps_line_numbers():
    out = patch_source(VAR_MODEL)
    assert out.count('field(default_factory=ByteEncoder)') == 2 and "other: int = 0" in out
    assert out.splitlines()[0] == "from __future__ import annotations"
    assert len(out.splitlines()) == len(VAR_MODEL.splitlines())
    compile(out, "var_model.py", "exec")
    assert patch_start_method("if x:\n    mp.set_start_method('fork')\n") == \
        "if x:\n    mp.set_start_method('fork', force=True)\n"


def _net(arch, n_in, seed, gain):
    net = build_network(arch, input_shape=(n_in,), num_classes=4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(gain)
        for layer in net.layers.values():
            if getattr(layer, "op", None) is not None and layer.op.bias is not None:
                layer.op.bias.uniform_(-0.2, 0.4, generator=torch.Generator().manual_seed(seed + 1))
    return net


@pytest.mark.parametrize("arch", ["24-20-4", "24-20-16-4"])
def test_lava_fixed_pt_matches_the_engine_bit_for_bit_over_50_steps(arch):
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    from neuroplast.lava.equivalence import compare_sample
    net = _net(arch, 24, 0, 3.0)
    fixed = quantize(net, load_chip("loihi2"), time_steps=50, timing="lava")
    x = torch.rand(50, 2, 24, generator=torch.Generator().manual_seed(3))
    x_int = fixed.encode_input(x)
    for i in range(2):
        mismatch, lava = compare_sample(fixed, x_int[:, i], i)
        assert mismatch is None, str(mismatch)
        assert all(int(rec["s"].sum()) > 20 for name, rec in lava.items() if name != "readout")  # real activity
    assert not multiprocessing.active_children()  # the runtime was shut down


def test_layers_lava_cannot_take_are_named():
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    from neuroplast.lava.network import build_graph
    net = build_network("1x6x6-4C3-MP2-FC", input_shape=(1, 6, 6), num_classes=3)
    fixed = quantize(net, load_chip("loihi2"), time_steps=4, timing="lava")
    with pytest.raises(SpecError, match="layer conv1 .*convolution"):
        build_graph(fixed, torch.zeros(4, 36, dtype=torch.int64).numpy())


def test_a_hanging_run_is_stopped_and_the_runtime_shut_down():
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    from neuroplast.lava.network import LavaTimeout, build_graph, run_graph
    fixed = quantize(_net("24-20-4", 24, 0, 3.0), load_chip("loihi2"), time_steps=3000, timing="lava")
    x_int = fixed.encode_input(torch.rand(3000, 1, 24))[:, 0]
    with pytest.raises(LavaTimeout):
        run_graph(build_graph(fixed, x_int.numpy()), timeout=0.5)
    assert not multiprocessing.active_children()


def test_lava_build_and_run_commands_on_a_trained_run(tmp_path, capsys):
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    import json

    from neuroplast.cli import main
    run = tmp_path / "run"
    assert main(["train", "--net", "64-24-10", "--epochs", "3", "--save", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["lava", "build", str(run), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert [layer["dense"] for layer in built["layers"]] == [[24, 64], [10, 24]] and built["steps_per_sample"] == 4 + 2
    assert main(["lava", "run", str(run), "--samples", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bit_exact"] and len(res["samples"]) == 2
    assert all(s["first_mismatch"] is None for s in res["samples"])
    assert not multiprocessing.active_children()


def _learner(method, arch, seed=1, **kw):
    from neuroplast.chip.onchip import OnChipLearner
    net = build_network(arch, input_shape=(64,), num_classes=10, generator=torch.Generator().manual_seed(0))
    return OnChipLearner(net, load_chip("loihi2"), method, lr=0.3, time_steps=4, seed=seed, **kw)


def _digits(k):
    from neuroplast.data import encode, load_dataset
    data = load_dataset("digits", time_steps=4)
    return encode("direct", data.train.x[:k], 4), data.train.y[:k]


def test_lava_opzo_learning_on_20_digits_samples_matches_the_engine_step_by_step():
    """The issue's check: a Lava OPZO run of 20 digits samples moves the weights as the engine does.
    Our learning ProcessModels run the engine's integer arithmetic with counter-based random bits, so
    the match is exact: spikes, u, v at every step, weights and feedback after every sample."""
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    import numpy as np

    from neuroplast.lava.learning import (
        build_learning_graph,
        engine_learning,
        first_mismatch,
        run_learning,
    )
    learner = _learner("opzo", "64-64-10")
    x, y = _digits(20)
    engine, _ = engine_learning(learner, x, y)
    lava = run_learning(build_learning_graph(learner, learner.encode(x), y))
    assert first_mismatch(engine, lava) is None, str(first_mismatch(engine, lava))
    for k, ly in enumerate(learner.layers):
        start = ly["m"].numpy()
        moved = engine["m"][k][-1] != start
        assert moved.sum() > 50   # learning happened in every layer
        assert np.array_equal(np.sign(lava["m"][k][-1] - start), np.sign(engine["m"][k][-1] - start))
    assert np.abs(lava["fb"][0][-1]).sum() > 0 and int(lava["steps"]["hidden1"]["s"].sum()) > 0
    np.testing.assert_array_equal(lava["loss"], engine["loss"])
    assert not multiprocessing.active_children()


def test_lava_learning_after_multithreaded_torch_in_the_parent_does_not_hang():
    """GNU OpenMP is not fork-safe: once the parent has run a parallel torch op, torch ops in Lava's
    forked workers hang unless the child drops to one thread (network._child does)."""
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    from neuroplast.lava.learning import build_learning_graph, run_learning
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.randn(512, 512) @ torch.randn(512, 512)      # starts the parent's thread pool
        learner = _learner("dfa", "64-16-10")
        x, y = _digits(1)
        out = run_learning(build_learning_graph(learner, learner.encode(x), y), timeout=60)
        assert out["m"][0].shape == (1, 16, 64)
    finally:
        torch.set_num_threads(threads)


def test_lava_dfa_learning_matches_the_engine_with_two_hidden_layers():
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    from neuroplast.lava.learning import (
        build_learning_graph,
        engine_learning,
        first_mismatch,
        run_learning,
    )
    learner = _learner("dfa", "64-32-24-10", seed=4)
    x, y = _digits(6)
    engine, trained = engine_learning(learner, x, y)
    lava = run_learning(build_learning_graph(learner, learner.encode(x), y))
    assert first_mismatch(engine, lava) is None, str(first_mismatch(engine, lava))
    assert all((engine["m"][k][-1] != ly["m"].numpy()).any() for k, ly in enumerate(learner.layers))
    # the engine's trained copy continues where the Lava run ended
    assert trained.samples_seen == 6 and all(torch.equal(torch.from_numpy(lava["m"][k][-1]), ly["m"])
                                             for k, ly in enumerate(trained.layers))


def test_lava_opzo_with_gaussian_noise_units_before_the_neuron_matches_the_engine():
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    from neuroplast.lava.learning import build_learning_graph, engine_learning, first_mismatch, run_learning
    learner = _learner("opzo", "64-48-10", seed=2, noise="gaussian", site="before")
    x, y = _digits(5)
    engine, _ = engine_learning(learner, x, y)
    lava = run_learning(build_learning_graph(learner, learner.encode(x), y))
    assert first_mismatch(engine, lava) is None, str(first_mismatch(engine, lava))
    assert (engine["m"][0][-1] != learner.layers[0]["m"].numpy()).sum() > 20


@pytest.mark.parametrize("method,arch,kw", [("opzo", "64-32-10", {}), ("dfa", "64-24-16-10", {}),
                                            ("opzo", "64-32-10", {"noise": "gaussian", "site": "before"})])
def test_lava_floating_pt_learning_models_match_the_exact_engine(method, arch, kw):
    """The floating_pt twin of every learning process (no rounding, no saturation) against
    OnChipLearner(exact=True): the same spikes, and u, v, weights, feedback to 1e-9."""
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    import numpy as np

    from neuroplast.lava.learning import build_learning_graph, engine_learning, first_mismatch, run_learning
    learner = _learner(method, arch, seed=3, exact=True, **kw)
    x, y = _digits(4)
    engine, _ = engine_learning(learner, x, y)
    graph = build_learning_graph(learner, learner.encode(x), y)
    assert graph.tag == "floating_pt"
    lava = run_learning(graph)
    assert first_mismatch(engine, lava, rtol=1e-9) is None, str(first_mismatch(engine, lava, rtol=1e-9))
    w = lava["m"][0][-1]
    assert w.dtype == np.float64 and not np.array_equal(w, np.round(w))    # float weights, not mantissas
    assert (np.abs(w - learner.layers[0]["m"].numpy()) > 1e-6).sum() > 50  # and they learned
    assert int(lava["steps"]["hidden1"]["s"].sum()) > 0
    assert not multiprocessing.active_children()


def test_first_mismatch_names_layer_step_neuron_and_both_values():
    pytest.importorskip("lava", reason="lava-nc is not installed")
    import numpy as np

    from neuroplast.lava.learning import first_mismatch
    rec = {"steps": {"hidden1": {q: np.zeros((8, 5), dtype=np.int64) for q in "usv"}},
           "m": [np.zeros((2, 3, 4), dtype=np.int64)], "fb": []}
    other = {"steps": {"hidden1": {q: a.copy() for q, a in rec["steps"]["hidden1"].items()}},
             "m": [rec["m"][0].copy()], "fb": []}
    assert first_mismatch(rec, other) is None
    other["m"][0][1, 2, 3] = 7
    mm = first_mismatch(rec, other)
    assert (mm.sample, mm.layer, mm.neuron, mm.engine, mm.lava) == (1, "layer1", 11, 0, 7)
    other["steps"]["hidden1"]["v"][6, 2] = -3
    mm = first_mismatch(rec, other)
    assert (mm.layer, mm.quantity, mm.step, mm.neuron, mm.engine, mm.lava) == ("hidden1", "v", 6, 2, 0, -3)


def test_lava_run_learn_command(tmp_path, capsys):
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    import json

    from neuroplast.cli import main
    run = tmp_path / "run"
    assert main(["train", "--net", "64-32-10", "--epochs", "1", "--save", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["lava", "run", str(run), "--learn", "--samples", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bit_exact"] and res["samples"] == 5 and len(res["loss_per_sample"]) == 5
    assert all(layer["same_direction"] == 1.0 for layer in res["layers"])
    assert main(["lava", "run", str(run), "--float", "--samples", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["match"] and res["tag"] == "floating_pt" and len(res["samples"]) == 2
    assert main(["lava", "run", str(run), "--learn", "--float", "--samples", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["match"] and res["tag"] == "floating_pt" and not res["bit_exact"]
    assert all(0 < c <= 1 for c in res["chip_vs_float_cosine"])   # the chip's rounding keeps the direction
    assert main(["lava", "run", str(run), "--learn", "--method", "zo"]) == 2
    assert "opzo or dfa" in capsys.readouterr().err
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("arch", ["24-20-4", "24-20-16-4"])
def test_lava_floating_pt_matches_the_float_engine_over_50_steps(arch):
    """Lava's own Dense and LIF with their floating_pt models against the engine's float lif_step."""
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    from neuroplast.lava.equivalence import compare_float_sample
    net = _net(arch, 24, 0, 3.0)
    x = torch.rand(50, 24, generator=torch.Generator().manual_seed(3))
    mismatch, lava = compare_float_sample(net, x)
    assert mismatch is None, str(mismatch)
    assert all(rec["s"].sum() > 20 for name, rec in lava.items() if name != "readout")
    assert not multiprocessing.active_children()


def test_float_graph_refuses_soft_reset_and_conv_by_layer_name():
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    from neuroplast.lava.network import build_float_graph
    from neuroplast.snn.neurons import LIFParams
    soft = build_network("24-20-4", input_shape=(24,), num_classes=4, lif=LIFParams(reset="soft"))
    with pytest.raises(SpecError, match="layer .* resets by subtraction"):
        build_float_graph(soft, torch.zeros(4, 24).numpy())
    conv = build_network("1x6x6-4C3-FC", input_shape=(1, 6, 6), num_classes=3)
    with pytest.raises(SpecError, match="layer conv1"):
        build_float_graph(conv, torch.zeros(4, 36).numpy())


@pytest.mark.parametrize("arch", ["24-4", "24-20-16-4"])
def test_lava_runs_until_the_last_input_step_reaches_the_readout(arch):
    """Every Dense delays by one step, so Lava needs T + n_syn steps for the input of step T − 1 to reach
    the readout. Input at the last step only, no biases: Lava (fixed_pt, bit-exact with the engine, and
    floating_pt, equal to float_reference) keeps the readout at 0 until that input arrives at the last step."""
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    from neuroplast.lava.equivalence import compare_float_sample, compare_sample
    net = _net(arch, 24, 0, 3.0)
    with torch.no_grad():
        for layer in net.layers.values():
            layer.op.bias.zero_()
    T, n_syn = 5, arch.count("-")
    x = torch.zeros(T, 24)
    x[-1] = 1.0
    fixed = quantize(net, load_chip("loihi2"), time_steps=T, timing="lava")
    mismatch, lava = compare_sample(fixed, fixed.encode_input(x.unsqueeze(1))[:, 0])
    assert mismatch is None, str(mismatch)
    mismatch, lava_float = compare_float_sample(net, x)
    assert mismatch is None, str(mismatch)
    for rec in (lava, lava_float):
        v = rec["readout"]["v"]
        assert v.shape[0] == T + n_syn and not v[:-1].any() and v[-1].any()
    assert not multiprocessing.active_children()
