"""NIR export/import: round trips, nir's own validation, refusals that name the layer, bad files."""
import json

import pytest
import torch

from neuroplast.cli import main
from neuroplast.errors import DataError, SpecError
from neuroplast.export.nir_graph import export_nir, from_nir, import_nir, to_nir
from neuroplast.snn import LIFParams, build_network

nir = pytest.importorskip("nir")


def _net(arch, shape, **lif):
    net = build_network(arch, input_shape=shape, num_classes=10, lif=LIFParams(**lif) if lif else None,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return net


@pytest.mark.parametrize("arch,shape,leak", [("64-32-16-10", (64,), 0.75), ("1x8x8-4C3-AP2-16-FC", (1, 8, 8), 0.75),
                                             ("1x8x8-4C3S2-AP2-16-FC", (1, 8, 8), 0.75),   # strided conv
                                             ("64-32-16-10", (64,), 1.0)])                  # no leak: τ = ∞
def test_round_trip_gives_the_same_outputs_and_passes_nir_validation(arch, shape, leak, tmp_path):
    net = _net(arch, shape, leak=leak, threshold=0.8)
    g = to_nir(net)
    nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=g.metadata)  # nir's type inference and checks
    back = import_nir(export_nir(net, tmp_path / "net.nir"))
    x = torch.rand(6, 8, *shape, generator=torch.Generator().manual_seed(2)) * 2
    with torch.no_grad():
        a, b = net.simulate(x), back.simulate(x)
    assert torch.allclose(a.logits, b.logits, atol=1e-6)
    assert all(torch.equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    assert all(float(s.sum()) > 0 for s in a.spikes.values())     # every layer spikes: the comparison means something
    assert back.shapes == net.shapes and back.layers[back.spiking_layers()[0]].lif.leak == pytest.approx(leak)


def test_foreign_gain_r_is_folded_into_the_weights():
    net = _net("64-16-10", (64,), leak=0.75)
    g = to_nir(net)
    g.nodes["dense1"].r *= 2                                          # R = 2τ/dt: twice the input current
    back = from_nir(g)
    assert torch.allclose(back.layers["dense1"].op.weight, 2 * net.layers["dense1"].op.weight)
    assert torch.allclose(back.layers["readout"].op.weight, net.layers["readout"].op.weight)


def test_v_leak_is_a_constant_current_that_joins_the_bias():
    """τ·du/dt = v_leak − u + R·I: a resting potential v_leak is the constant current c = v_leak·dt/τ
    (stepped: u ← λ·u + (1 − λ)·v_leak + I), per neuron (``to_nir`` writes a per-neuron conv bias so)."""
    net = _net("64-16-10", (64,), leak=0.75)
    g = to_nir(net)
    g.nodes["dense1"].v_leak[:] = torch.linspace(-1, 1, 16).numpy()
    back = from_nir(g)
    c = torch.linspace(-1, 1, 16) * (1 - 0.75)
    assert torch.allclose(back.layers["dense1"].op.bias, net.layers["dense1"].op.bias + c, atol=1e-6)


def _set(node, **values) -> None:
    for key, v in values.items():
        getattr(node, key).fill(v)


def _only(g, names):
    """The chain of g's nodes ``names``, then an Output of the last one's shape."""
    nodes = {n: g.nodes[n] for n in names} | {"output": nir.Output(output_type=g.nodes[names[-1]].output_type["output"])}
    return nir.NIRGraph(nodes=nodes, edges=list(zip([*names], [*names[1:], "output"])), metadata=g.metadata)


@pytest.mark.parametrize("arch,shape,change,message", [
    ("64-16-10", (64,), lambda g: g.nodes["dense1"].v_threshold.__setitem__(1, 5.0),
     r"dense1: v_threshold must be one number for all neurons, got \[0.5, 5\]"),
    ("64-16-10", (64,), lambda g: g.nodes["dense1"].tau.__setitem__(3, 3.0), r"dense1: tau must be one number"),
    ("64-16-10", (64,), lambda g: _set(g.nodes["dense1"], v_leak=0.5, tau=float("inf"), r=float("inf")),
     r"dense1: v_leak ≠ 0 with τ = ∞ \(no leak\) reaches no neuron"),
    ("64-16-10", (64,), lambda g: g.nodes["dense1"].v_reset.fill(-1), r"dense1: v_reset = -1; "),
    ("64-16-10", (64,), lambda g: _only(g, ["input", "dense1_syn", "dense1"]),
     r"ends with dense1 \(LIF\) before its Output; .*non-spiking Affine readout"),
    ("64-16-10", (64,), lambda g: _only(g, ["input"]), r"ends with its Input before its Output"),
    ("1x8x8-4C3-16-FC", (1, 8, 8), lambda g: setattr(g.nodes["conv1_syn"], "padding", (0, 0)),
     r"conv1_syn: Conv2d with stride \(1, 1\), padding \(0, 0\), .* padding k//2 = 1"),
    # a first conv followed by another neuron model is a synapse (named as such), not the input_norm node
    ("1x8x8-4C3-16-FC", (1, 8, 8), lambda g: g.nodes.__setitem__("conv1", nir.IF(
        r=g.nodes["conv1"].r, v_threshold=g.nodes["conv1"].v_threshold)), r"conv1_syn \(Conv2d\) is followed by conv1 \(IF\)"),
])
def test_graphs_the_importer_cannot_represent_are_refused(arch, shape, change, message, tmp_path, capsys):
    g = to_nir(_net(arch, shape, threshold=0.5))
    g = change(g) or g
    with pytest.raises(DataError, match=message):
        from_nir(g)
    nir.write(str(tmp_path / "f.nir"), g)
    assert main(["import", str(tmp_path / "f.nir")]) == 2                # the CLI: a clear message, no traceback
    assert capsys.readouterr().err.startswith("neuroplast: error: ")


@pytest.mark.parametrize("arch,shape,lif,message", [
    ("1x8x8-4C3-MP2-FC", (1, 8, 8), {}, "layer pool1: max pooling has no NIR node"),
    ("64-16-10", (64,), {"reset": "soft"}, "layer dense1: .*soft reset"),
])
def test_unrepresentable_layers_are_named(arch, shape, lif, message, tmp_path):
    with pytest.raises(SpecError, match=message):
        export_nir(_net(arch, shape, **lif), tmp_path / "x.nir")
    assert not (tmp_path / "x.nir").exists()


def test_bad_files_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="not found"):
        import_nir(tmp_path / "none.nir")
    path = export_nir(_net("64-16-10", (64,)), tmp_path / "ok.nir")
    (tmp_path / "cut.nir").write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="not a readable NIR file"):
        import_nir(tmp_path / "cut.nir")


def test_export_and_import_commands(tmp_path, capsys):
    """The NIR file carries the run's T (here 2, not the default 4), so the imported network scores what
    the run scored."""
    run = tmp_path / "run"
    assert main(["train", "--net", "64-32-10", "--epochs", "3", "--time-steps", "2", "--save", str(run),
                 "--no-progress", "--json"]) == 0
    acc = json.loads(capsys.readouterr().out)["test_acc"]
    assert main(["export", str(run), str(tmp_path / "n.nir"), "--json"]) == 0
    capsys.readouterr()
    assert main(["import", str(tmp_path / "n.nir"), "--task", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == pytest.approx(acc)
    assert main(["import", str(tmp_path / "n.nir"), "--task", "digits", "--time-steps", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] != pytest.approx(acc)   # T matters: the file's is used
    for dt in ("0", "-1", "nan"):                                       # τ = dt/(1 − λ) needs dt > 0
        assert main(["export", str(run), str(tmp_path / "bad.nir"), "--dt", dt]) == 2
        assert "dt = " in capsys.readouterr().err and not (tmp_path / "bad.nir").exists()
    assert main(["export", str(run), str(tmp_path / "bad.nir"), "--hw", "loihi1"]) == 2   # NIR is the float net
    assert "--hw quantises a netx export" in capsys.readouterr().err and not (tmp_path / "bad.nir").exists()


def test_import_refuses_a_folder_and_metadata_that_contradicts_the_graph(tmp_path, capsys):
    assert main(["import", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder; give an NIR (.nir) or netx (.net) file" in capsys.readouterr().err
    g = to_nir(_net("64-16-10", (64,)))
    g.metadata["num_classes"] = -3
    nir.write(str(tmp_path / "f.nir"), g)
    assert main(["import", str(tmp_path / "f.nir")]) == 2
    assert "metadata num_classes = -3, but the readout has 10 outputs" in capsys.readouterr().err
