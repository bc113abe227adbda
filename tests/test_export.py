"""NIR export/import: round trips, nir's own validation, refusals that name the layer, bad files."""
import json

import pytest
import torch

from neuroplast.cli import main
from neuroplast.errors import DataError, SpecError
from neuroplast.export.nir_graph import export_nir, import_nir, to_nir
from neuroplast.snn import LIFParams, build_network

nir = pytest.importorskip("nir")


def _net(arch, shape, **lif):
    net = build_network(arch, input_shape=shape, num_classes=10, lif=LIFParams(**lif) if lif else None,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return net


@pytest.mark.parametrize("arch,shape", [("64-32-16-10", (64,)), ("1x8x8-4C3-AP2-16-FC", (1, 8, 8))])
def test_round_trip_gives_the_same_outputs_and_passes_nir_validation(arch, shape, tmp_path):
    net = _net(arch, shape, leak=0.75, threshold=0.8)
    g = to_nir(net)
    nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata=g.metadata)  # nir's type inference and checks
    back = import_nir(export_nir(net, tmp_path / "net.nir"))
    x = torch.rand(6, 8, *shape, generator=torch.Generator().manual_seed(2)) * 2
    with torch.no_grad():
        a, b = net.simulate(x), back.simulate(x)
    assert torch.allclose(a.logits, b.logits, atol=1e-6)
    assert all(torch.equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
    assert back.layers[back.spiking_layers()[0]].lif.leak == pytest.approx(0.75)


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
    run = tmp_path / "run"
    assert main(["train", "--net", "64-32-10", "--epochs", "3", "--save", str(run), "--no-progress", "--json"]) == 0
    acc = json.loads(capsys.readouterr().out)["test_acc"]
    assert main(["export", str(run), str(tmp_path / "n.nir"), "--json"]) == 0
    capsys.readouterr()
    assert main(["import", str(tmp_path / "n.nir"), "--task", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == pytest.approx(acc)
