"""Runs trained on normalised images, on a chip and in exported files: the normalisation is undone exactly
(``InputNorm.intensities``), folded exactly into the first synaptic layer (``snn.fold_input``), and every
command that quantises or exports a run takes the folded network on intensities (``runs.chip_view``)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuroplast.cli import main
from neuroplast.data import InputNorm, load_dataset
from neuroplast.errors import DataError, SpecError
from neuroplast.snn import LIFParams, build_network
from neuroplast.snn.fold_input import fold_input_norm
from neuroplast.snn.gemm import Dense
from neuroplast.snn.synapse import NeuronBiasConv2d

MNIST_NORM = InputNorm(0.1307, 0.3081, levels=255)


def _net(arch, shape, leak=0.75):
    net = build_network(arch, input_shape=shape, num_classes=10, lif=LIFParams(leak=leak, threshold=0.5),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0).add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return net.eval()


def _images(shape, n=40, seed=2):
    """Intensities on the 1/255 grid and their normalised images, computed as the MNIST loader does."""
    pixels = torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed)).float()
    return pixels / 255, (pixels - 0.1307 * 255) / (0.3081 * 255)


def _first_op(net):
    return next(layer.op for layer in net.layers.values() if hasattr(layer, "op"))


@pytest.mark.parametrize("arch,shape,op_type", [
    ("1x8x8-32-10", (1, 8, 8), Dense),                           # dense: one bias per neuron
    ("1x8x8-FC", (1, 8, 8), Dense),                              # the readout is the first synapse
    ("1x8x8-6C3-16-10", (1, 8, 8), NeuronBiasConv2d),            # padded conv: W·1 differs at the borders
    ("1x9x9-6C3S2-FC", (1, 9, 9), NeuronBiasConv2d),             # strided, padded
    ("1x8x8-6C1-FC", (1, 8, 8), torch.nn.Conv2d),                # no padding: the bias stays per channel
    ("1x8x8-AP2-6C3-16-10", (1, 8, 8), NeuronBiasConv2d),        # average pooling before the first synapse
    ("1x9x9-MP2-6C3-FC", (1, 9, 9), NeuronBiasConv2d),           # max pooling (s > 0), an odd map size
    ("1x8x8-AP2-16-10", (1, 8, 8), Dense),                       # pooling, flatten, dense
])
def test_folded_network_on_intensities_gives_the_trained_logits(arch, shape, op_type):
    net = _net(arch, shape)
    v, x = _images(shape)
    folded = fold_input_norm(net, MNIST_NORM)
    assert type(_first_op(folded)) is op_type and folded.arch == net.arch
    with torch.no_grad():
        for T in (1, 5):
            a = net.simulate(x.unsqueeze(0).expand(T, *x.shape))
            b = folded.simulate(v.unsqueeze(0).expand(T, *v.shape))
            assert torch.allclose(a.logits, b.logits, atol=1e-5, rtol=1e-5), float((a.logits - b.logits).abs().max())
            for k in a.spikes:
                assert torch.equal(a.spikes[k], b.spikes[k]), k
        # the first layer's current itself, before any threshold
        op, op_f = _first_op(net), _first_op(folded)
        h, h_f = x, v
        for layer, layer_f in zip(net.layers.values(), folded.layers.values()):
            if hasattr(layer, "op"):
                break
            h, h_f = layer.forward(h), layer_f.forward(h_f)
        assert torch.allclose(op(h), op_f(h_f), atol=1e-5, rtol=1e-6)
    # the trained network is not changed, and the identity folds to the network itself
    assert torch.equal(_first_op(net).weight, _net(arch, shape).layers[next(
        k for k, m in net.layers.items() if hasattr(m, "op"))].op.weight)
    assert fold_input_norm(net, InputNorm()) is net


@pytest.mark.parametrize("arch,shape,op_type", [("1x8x8-AP2-6C3-16-10", (1, 8, 8), NeuronBiasConv2d),
                                                 ("1x8x8-6C1-FC", (1, 8, 8), torch.nn.Conv2d),
                                                 ("1x8x8-32-10", (1, 8, 8), Dense)])
def test_fold_computes_w_times_one_on_the_weights_device(arch, shape, op_type):
    """W·1 is taken on the weights' device: a 'meta' (or CUDA) network folds without a device mismatch
    (on 'meta', with no values, a conv's bias is per channel exactly where nothing is padded)."""
    folded = fold_input_norm(_net(arch, shape).to("meta"), MNIST_NORM)
    op = _first_op(folded)
    assert type(op) is op_type and op.weight.is_meta and op.bias.is_meta


def test_per_neuron_conv_bias_is_the_folded_border_and_runs_the_step_path():
    net = _net("1x6x6-4C3-FC", (1, 6, 6))
    folded = fold_input_norm(net, MNIST_NORM)
    op, b = _first_op(folded), _first_op(net).bias.detach().double()
    w = _first_op(net).weight.detach().double()
    ones = F.conv2d(torch.ones(1, 1, 6, 6, dtype=torch.float64), w, padding=1)[0]
    assert torch.allclose(op.bias.double(), b[:, None, None] - 0.1307 / 0.3081 * ones, atol=1e-6)
    assert not torch.allclose(op.bias[:, 0, 0], op.bias[:, 2, 2])      # a corner sums 4 of 9 taps
    v, x = _images((1, 6, 6), n=5)
    with torch.no_grad():   # the step path (online rules) gives the same current as forward
        assert torch.allclose(folded.step(v, folded.init_state())[0], folded.simulate(v[None]).outputs[0], atol=1e-6)


@pytest.fixture
def fake_mnist(monkeypatch):
    """The digits as 28x28 8-bit images (each pixel a 3x3 block, grey level x15, a 2-pixel border) behind
    the real MNIST loader, which normalises them for float runs on direct input, as it does MNIST."""
    from neuroplast.data import datasets, idx
    d = load_dataset("digits", val_fraction=0.0)

    def images(split):
        g = (split.x[:, 0] * 16).round().to(torch.uint8) * 15
        g = g.repeat_interleave(3, 1).repeat_interleave(3, 2)
        return F.pad(g, (2, 2, 2, 2)).numpy(), split.y.numpy()
    arrays = {"train": images(d.train), "test": images(d.test)}
    monkeypatch.setattr(datasets, "_mnist_folder", lambda name, data_dir, subdirs: Path("."))
    monkeypatch.setattr(idx, "read_mnist_folder", lambda folder: arrays)
    return arrays


def test_intensities_undo_the_loaders_normalisation_exactly(fake_mnist):
    normed, raw = load_dataset("mnist"), load_dataset("mnist", normalize=False)
    assert raw.norm.identity and not normed.norm.identity and normed.norm.levels == 255
    assert float(normed.train.x.mean()) == pytest.approx(0, abs=1e-5)
    back = normed.intensities()
    for s in ("train", "test"):
        assert torch.equal(getattr(back, s).x, getattr(raw, s).x)
    assert back.norm.identity and raw.intensities() is raw
    assert torch.allclose(normed.norm.normalize(raw.test.x), normed.test.x, atol=1e-5)


def _train(tmp_path, name, net, epochs=4):
    run = tmp_path / name
    assert main(["train", "--task", "mnist", "--net", net, "--epochs", str(epochs), "--time-steps", "4",
                 "--lr", "0.003", "--no-progress", "--save", str(run)]) == 0
    return run


@pytest.mark.parametrize("net", ["784-64-10", "1x28x28-4C3-AP2-32-10"])
def test_chip_eval_of_a_normalised_run_agrees_with_its_float_network(fake_mnist, tmp_path, net):
    """The chip is sent intensities and runs the folded network: it predicts as the float network does on
    (nearly) every sample. Before, the normalised images were clamped to [0, 1] as payloads (most of
    each image's contrast lost: the MNIST BPTT run fell from 97.9% to 95.1% on Loihi 2)."""
    from neuroplast.chip.evaluate import chip_eval
    run = _train(tmp_path, "run", net)
    res = chip_eval(run, "loihi2")
    assert res["float_acc"] > 0.8
    assert res["agreement"] >= 0.97 and abs(res["gap"]) <= 0.02, res
    assert res["input_norm_folded"] == {"mean": pytest.approx(fake_mnist["train"][0].mean() / 255, rel=1e-6),
                                        "std": pytest.approx(fake_mnist["train"][0].std() / 255, rel=1e-6)}


def test_exports_of_a_normalised_run_take_intensities(fake_mnist, tmp_path, capsys):
    """NIR: the folded float network, which `import --task` feeds intensities (the trained accuracy); netx:
    the chip's integers, which `import --task` feeds the chip's payloads of intensities (chip eval's accuracy
    with Lava's timing, within netx's coarser weight exponents)."""
    from neuroplast.chip.evaluate import chip_eval
    from neuroplast.export.nir_graph import read_nir
    run = _train(tmp_path, "run", "1x28x28-4C3-AP2-32-10")
    float_acc = json.loads((run / "summary.json").read_text())["test_acc"]
    assert main(["export", str(run), str(tmp_path / "net.nir")]) == 0
    net, settings = read_nir(tmp_path / "net.nir")
    assert settings["normalized_input"] is False and isinstance(_first_op(net), NeuronBiasConv2d)
    assert settings["input_norm"]["std"] == pytest.approx(fake_mnist["train"][0].std() / 255, rel=1e-6)
    import nir
    graph = nir.read(str(tmp_path / "net.nir"))   # the padded conv's normalisation as a node, v_leak = 0
    assert "input_norm" in graph.nodes and all((np.asarray(n.v_leak) == 0).all() for n in _lifs(graph))
    capsys.readouterr()
    assert main(["import", str(tmp_path / "net.nir"), "--task", "mnist", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == pytest.approx(float_acc, abs=0.004)
    assert main(["export", str(run), str(tmp_path / "net.net")]) == 0
    capsys.readouterr()
    assert main(["import", str(tmp_path / "net.net"), "--task", "mnist", "--json"]) == 0
    netx_acc = json.loads(capsys.readouterr().out)["test_acc"]
    assert netx_acc == pytest.approx(chip_eval(run, "loihi2", timing="lava")["fixed_acc"], abs=0.02)


def test_input_synops_count_the_intensities_a_chip_is_sent(fake_mnist, tmp_path):
    """A normalised image has no zeros (background = −m/s): its input events are counted where the
    intensity is not 0, as the chip's graded payloads; runs recorded before are recounted."""
    from neuroplast.chip.cost import run_cost
    run = _train(tmp_path, "run", "784-64-10", epochs=1)
    summary = json.loads((run / "summary.json").read_text())
    raw = load_dataset("mnist", normalize=False)
    expected = float((raw.train.x != 0).sum()) * 64 * 4   # fan-out 64, T = 4, one epoch
    assert summary["activity"]["train_synops"]["input"] == pytest.approx(expected)
    assert run_cost(run, "loihi1")["per_layer"]["dense1"]["synops_in"] == pytest.approx(expected / len(raw.train))
    act = summary["activity"]   # as recorded before: every pixel an event, no marker
    act.pop("input_events")
    act["train_synops"]["input"] = 784 * 64 * 4 * len(raw.train)
    (run / "summary.json").write_text(json.dumps(summary))
    res = run_cost(run, "loihi1")
    assert res["per_layer"]["dense1"]["synops_in"] == pytest.approx(expected / len(raw.train))
    assert "recounted" in res["activity_source"]


def test_the_chip_refuses_direct_input_outside_0_1():
    from neuroplast.chip.hardware import load_chip
    from neuroplast.chip.quantize import quantize
    fixed = quantize(_net("1x8x8-16-10", (1, 8, 8)), load_chip("loihi2"), time_steps=2)
    v, x = _images((1, 8, 8), n=3)
    fixed.simulate(v.unsqueeze(0).expand(2, *v.shape))
    with pytest.raises(DataError, match=r"intensities in \[0, 1\].*chip_view"):
        fixed.simulate(x.unsqueeze(0).expand(2, *x.shape))


def test_quantised_folded_conv_keeps_its_per_neuron_bias():
    from neuroplast.chip.hardware import load_chip
    from neuroplast.chip.quantize import quantize
    folded = fold_input_norm(_net("1x8x8-6C3-16-10", (1, 8, 8)), MNIST_NORM)
    fixed = quantize(folded, load_chip("loihi2"), time_steps=4)
    layer = fixed.layers[0]
    mant, exp = (torch.as_tensor(t).double() for t in (layer.lif.bias_mant, layer.lif.bias_exp))
    b = mant * 2.0 ** exp / layer.synapse.v_scale
    assert b.shape == (6 * 8 * 8,) and len(torch.unique(b)) > 6           # per neuron, not per channel
    half_step = 2.0 ** float(exp.max()) / 2 / layer.synapse.v_scale
    assert torch.allclose(b, _first_op(folded).bias.detach().double().reshape(-1), rtol=0, atol=half_step * 1.001)


def _lifs(graph):
    return [node for node in graph.nodes.values() if type(node).__name__ == "LIF"]


@pytest.mark.parametrize("arch,shape,leak", [("1x8x8-6C3-AP2-16-10", (1, 8, 8), 0.75),
                                             ("1x8x8-AP2-6C3-16-10", (1, 8, 8), 0.75),   # pooling before the conv
                                             ("1x8x8-6C3-AP2-16-10", (1, 8, 8), 1.0)])   # no leak (τ = ∞)
def test_nir_holds_the_normalisation_of_a_padded_conv_as_a_node(arch, shape, leak, tmp_path):
    """A padded first conv of a normalised run would need a per-neuron bias: the graph holds x = (v − m)/s as
    a 1×1 Conv2d ``input_norm`` before the trained conv (W, b per channel, zero padding of x as in training),
    every LIF with v_leak = 0; it imports as a network on intensities with the trained network's outputs."""
    nir = pytest.importorskip("nir")
    from neuroplast.export.nir_graph import NORM_NODE, export_nir, from_nir, read_nir, to_nir
    net = _net(arch, shape, leak=leak)
    g = to_nir(net, input_norm=MNIST_NORM, input_values="intensities")
    nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=g.metadata)   # nir's type inference and checks
    path = export_nir(net, tmp_path / "net.nir", time_steps=4, encoding="direct", input_values="intensities",
                      input_norm=MNIST_NORM)
    g = nir.read(str(path))
    assert all((np.asarray(node.v_leak) == 0).all() for node in _lifs(g)) and len(_lifs(g)) == 2
    norm = g.nodes[NORM_NODE]
    assert type(norm).__name__ == "Conv2d" and ("input", NORM_NODE) in g.edges
    np.testing.assert_allclose(norm.weight.reshape(-1), [1 / 0.3081], rtol=1e-7)
    np.testing.assert_allclose(norm.bias, [-0.1307 / 0.3081], rtol=1e-7)
    conv = g.nodes["conv1_syn"]   # the trained conv itself: its weights and per-channel bias
    np.testing.assert_array_equal(conv.weight, net.layers["conv1"].op.weight.detach().numpy())
    np.testing.assert_array_equal(conv.bias, net.layers["conv1"].op.bias.detach().numpy())
    assert g.metadata["input_norm_mean"] == pytest.approx(0.1307) and g.metadata["input_norm_std"] == pytest.approx(0.3081)
    back, settings = read_nir(path)
    assert settings == {"time_steps": 4, "encoding": "direct", "normalized_input": False,
                        "input_norm": {"mean": pytest.approx(0.1307, rel=1e-6), "std": pytest.approx(0.3081, rel=1e-6)}}
    assert isinstance(_first_op(back), NeuronBiasConv2d)               # the node folded in: it takes intensities
    trained = from_nir(g, fold_input=False)                           # or left out: the trained network itself
    assert type(_first_op(trained)) is torch.nn.Conv2d
    v, x = _images(shape)
    with torch.no_grad():
        a = net.simulate(x.unsqueeze(0).expand(4, *x.shape))
        b = back.simulate(v.unsqueeze(0).expand(4, *v.shape))
        c = trained.simulate(x.unsqueeze(0).expand(4, *x.shape))
    assert torch.allclose(a.logits, b.logits, atol=1e-5), float((a.logits - b.logits).abs().max())
    assert all(float(s.sum()) > 0 for s in a.spikes.values())
    assert all(torch.equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    assert torch.equal(a.logits, c.logits) and all(torch.equal(a.spikes[k], c.spikes[k]) for k in a.spikes)


def test_nir_folds_a_normalisation_that_keeps_a_bias_per_output(tmp_path):
    """Dense and unpadded conv first layers: the folded synapse (W/s, b − (m/s)·W·1), no extra node."""
    nir = pytest.importorskip("nir")
    from neuroplast.export.nir_graph import NORM_NODE, read_nir, to_nir
    for arch in ("1x8x8-32-10", "1x8x8-6C1-FC"):
        net = _net(arch, (1, 8, 8))
        g = to_nir(net, input_norm=MNIST_NORM, input_values="intensities")
        assert NORM_NODE not in g.nodes and "input_norm_mean" not in g.metadata
        assert all((np.asarray(node.v_leak) == 0).all() for node in _lifs(g))
        nir.write(str(tmp_path / "n.nir"), g)
        back, settings = read_nir(tmp_path / "n.nir")
        assert "input_norm" not in settings and settings["normalized_input"] is False
        v, x = _images((1, 8, 8))
        with torch.no_grad():
            a = net.simulate(x.unsqueeze(0).expand(4, *x.shape)).logits
            b = back.simulate(v.unsqueeze(0).expand(4, *v.shape)).logits
        assert torch.allclose(a, b, atol=1e-5)


def test_nir_refuses_a_per_neuron_conv_bias_and_reads_the_earlier_v_leak_scheme(tmp_path):
    """A network already folded (``NeuronBiasConv2d``) has no NIR form: export it unfolded with its
    normalisation. Graphs of the earlier scheme (Conv2d bias of the map's centre, the rest as the LIF's
    v_leak = R·c) still import to the folded network."""
    from neuroplast.export.nir_graph import export_nir, from_nir, read_nir, to_nir
    net = _net("1x8x8-6C3-AP2-16-10", (1, 8, 8))
    folded = fold_input_norm(net, MNIST_NORM)
    with pytest.raises(SpecError, match=r"conv1: its bias is per neuron.*input_norm"):
        export_nir(folded, tmp_path / "x.nir")
    assert not (tmp_path / "x.nir").exists()
    old = to_nir(net)                                  # rewritten as the earlier exporter wrote the folded network
    op = _first_op(folded)
    full = op.bias.detach().double()
    centre = full[:, 4, 4]
    old.nodes["conv1_syn"].weight = op.weight.detach().numpy()
    old.nodes["conv1_syn"].bias = centre.float().numpy()
    old.nodes["conv1"].v_leak = ((full - centre[:, None, None]) * 4).float().numpy()   # R = τ/dt = 4 (λ = 0.75)
    back = from_nir(old)
    assert torch.allclose(_first_op(back).bias, op.bias, atol=1e-6)
    v, _ = _images((1, 8, 8))
    with torch.no_grad():
        a = folded.simulate(v.unsqueeze(0).expand(4, *v.shape)).logits
        b = back.simulate(v.unsqueeze(0).expand(4, *v.shape)).logits
    assert torch.allclose(a, b, atol=1e-5)
    # a graph exported before the metadata said what it takes: the trained network, normalised if it trained so
    legacy = export_nir(_net("1x8x8-16-10", (1, 8, 8)), tmp_path / "old.nir", time_steps=4, encoding="direct")
    assert read_nir(legacy)[1]["normalized_input"] is True
    assert read_nir(export_nir(_net("1x8x8-16-10", (1, 8, 8)), tmp_path / "p.nir", encoding="poisson")
                    )[1]["normalized_input"] is False


def test_netx_holds_a_per_neuron_conv_bias_bit_exactly(tmp_path):
    import h5py

    from neuroplast.export.netx import export_netx, import_netx, netx_fixed
    # average pooling before the first conv: folded into it (kernel 6, stride 2), its per-neuron bias kept
    folded = fold_input_norm(_net("1x8x8-AP2-4C3-8C3-16-10", (1, 8, 8)), MNIST_NORM)
    fixed = netx_fixed(folded, time_steps=6)
    path = export_netx(fixed, tmp_path / "net.net")
    with h5py.File(path, "r") as f:
        assert f["layer/1/bias"].shape == (4, 4, 4)       # (W, H, C), as lava-dl's conv block takes it
        assert f["layer/2/bias"].shape == (8,)            # the second conv's bias is per channel
    back = import_netx(path)
    v, _ = _images((1, 8, 8), n=16)
    x = v.unsqueeze(0).expand(6, *v.shape)
    a, b = fixed.simulate(x, record=True), back.simulate(x, record=True)
    assert torch.equal(a["v_out"], b["v_out"])
    for layer, rec in a["steps"].items():
        for q in ("u", "v", "s"):
            assert torch.equal(rec[q], b["steps"][layer][q]), (layer, q)
    np.testing.assert_array_equal(torch.as_tensor(back.layers[0].lif.bias_mant).numpy(),
                                  torch.as_tensor(fixed.layers[0].lif.bias_mant).expand(4 * 4 * 4).numpy())


def test_lava_commands_run_a_normalised_run_on_intensities(fake_mnist, tmp_path, capsys):
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    import multiprocessing
    run = _train(tmp_path, "run", "784-32-10", epochs=2)
    capsys.readouterr()
    assert main(["lava", "run", str(run), "--samples", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bit_exact"] and all(s["lava_pred"] == s["float_pred"] for s in res["samples"]), res
    assert main(["lava", "run", str(run), "--float", "--samples", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["match"]
    # --learn: the trained, unfolded weights on intensities (the learner has no biases): it says so, and runs
    assert main(["lava", "run", str(run), "--learn", "--samples", "1", "--steps", "2", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["bit_exact"] and "warning: lava run --learn" in out.err and "unfolded" in out.err
    assert not multiprocessing.active_children()


def test_lava_learn_warns_that_a_normalised_run_starts_from_unfolded_weights(monkeypatch, capsys):
    """``lava run --learn`` is the one command that runs a normalised run's trained weights on intensities
    (``runs.chip_view``'s exception): it warns on stderr and goes on; a run on intensities gets no warning."""
    import types

    from neuroplast import cli_lava
    data = types.SimpleNamespace(norm=MNIST_NORM)
    monkeypatch.setattr(cli_lava, "_setup", lambda args: (None, (None, data), None, None, 4, None))
    monkeypatch.setattr(cli_lava, "_learn", lambda *a: {"ok": True})
    assert cli_lava.cmd_lava(types.SimpleNamespace(learn=True)) == {"ok": True}
    err = capsys.readouterr().err
    assert err.startswith("neuroplast: warning: lava run --learn") and "(v - 0.1307)/0.3081" in err
    assert "unfolded weights" in err and "intensities" in err
    data.norm = InputNorm()
    assert cli_lava.cmd_lava(types.SimpleNamespace(learn=True)) == {"ok": True}
    assert capsys.readouterr().err == ""
