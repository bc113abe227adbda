"""netx (lava-dl network exchange, HDF5) export/import: bit-exact round trips through the integer
engine, the layout lava-dl reads, refusals that name the layer, bad files, the CLI, and (with
lava-nc and lava-dl installed) the same spikes from lava-dl's own netx loader running in Lava."""
import importlib
import json
import re
import sys
import types

import h5py
import numpy as np
import pytest
import torch

from neuroplast.chip.fixed import VTH_MAX
from neuroplast.cli import main
from neuroplast.errors import DataError, SpecError
from neuroplast.export.fold import fold_avg_pool
from neuroplast.export.netx import VERSION, export_netx, import_netx, netx_fixed
from neuroplast.snn import LIFParams, build_network
from neuroplast.snn.layers import Pool

CASES = [("64-32-16-10", (64,)), ("1x8x8-4C3-8C3S2-16-FC", (1, 8, 8)), ("1x8x8-4C3-AP2-8C3-AP2-16-FC", (1, 8, 8))]


def _net(arch, shape, num_classes=10, scale=1.0, **lif):
    net = build_network(arch, input_shape=shape, num_classes=num_classes,
                        lif=LIFParams(**{"leak": 0.75, "threshold": 0.5, **lif}),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale).add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return net


@pytest.mark.parametrize("arch,shape", CASES)
def test_round_trip_is_bit_exact_and_spiking(arch, shape, tmp_path):
    fixed = netx_fixed(_net(arch, shape, scale=3.0), time_steps=8)
    back = import_netx(export_netx(fixed, tmp_path / "net.net"))
    x = torch.rand(8, 16, *shape, generator=torch.Generator().manual_seed(2))
    a, b = fixed.simulate(x, record=True), back.simulate(x, record=True)
    assert torch.equal(a["v_out"], b["v_out"])
    for layer, rec in a["steps"].items():
        for q in ("u", "v", "s"):
            assert torch.equal(rec[q], b["steps"][layer][q]), (layer, q)
    assert sum(int(c.sum()) for c in a["spikes"].values()) > 100   # real activity, not an all-silent net
    assert a["v_out"].abs().max() > 0


def test_file_has_the_layout_lava_dl_reads(tmp_path):
    fixed = netx_fixed(_net(*CASES[1]), time_steps=4)
    with h5py.File(export_netx(fixed, tmp_path / "c.net"), "r") as f:
        assert f.attrs["version"] == VERSION
        types_ = [f["layer"][str(i)]["type"][()].decode() for i in range(len(f["layer"]))]
        assert types_ == ["input", "conv", "conv", "flatten", "dense", "dense"]
        assert list(f["layer/0/shape"][()]) == [1, 8, 8]
        conv, syn = f["layer/2"], fixed.layers[1]
        assert list(conv["shape"][()]) == [8, 4, 4] and list(conv["stride"][()]) == [2, 2]
        assert syn.synapse.weight_exp == 0
        assert np.array_equal(conv["weight"][()], 2 * syn.synapse.m.numpy())   # effective weights, exponent 0
        first = fixed.layers[0].synapse
        assert first.weight_exp == -1 and np.array_equal(f["layer/1/weight"][()], first.m.numpy())  # W = m at −1
        assert conv["bias"].shape == (8,)                                      # per channel
        assert np.array_equal(conv["bias"][()] * 64, syn.lif.effective_bias().view(8, -1)[:, 0].numpy())
        n = conv["neuron"]
        assert n["type"][()] == b"CUBA" and n["iDecay"][()] == syn.lif.du + 1 and n["vDecay"][()] == syn.lif.dv
        assert n["vThMant"][()] == syn.lif.vth
        ro = f["layer/5/neuron"]
        assert ro["vDecay"][()] == 0 and ro["vThMant"][()] == VTH_MAX
        assert f.attrs["input_message_bits"] == 8                              # graded direct input
    for encoding, bits in (("frames", 8), ("poisson", 0)):   # frame counts stay graded; lava-dl binarises 0-bit input
        fixed = netx_fixed(_net(*CASES[1]), time_steps=4, encoding=encoding)
        with h5py.File(export_netx(fixed, tmp_path / f"{encoding}.net"), "r") as f:
            assert f.attrs["input_message_bits"] == bits and f.attrs["encoding"] == encoding


def test_netx_quantisation_stays_within_one_weight_step_of_the_float_net():
    net = _net("64-32-10", (64,), scale=2.0)
    fixed = netx_fixed(net, time_steps=4)
    for layer, syn in zip(("dense1", "readout"), fixed.synapses().values(), strict=True):
        w = net.layers[layer].op.weight.detach().double()
        assert syn.weight_exp in (-1, 0)
        assert (syn.dequantized() - w).abs().max() <= 0.5 * syn.lsb() + 1e-9


@pytest.mark.parametrize("arch,shape", [
    ("1x8x8-4C3-AP2-8C3-AP2-16-FC", (1, 8, 8)),   # conv and dense after pooling
    ("1x7x7-4C3-AP2-16-FC", (1, 7, 7)),           # odd map: the dropped row and column get weight 0
    ("1x7x7-4C3-AP2-8C1-FC", (1, 7, 7)),          # odd map, unpadded conv: its windows never reach them
    ("1x8x8-4C3-AP2-8C3S2-FC", (1, 8, 8)),        # strided conv after pooling
    ("1x9x9-4C3-AP3-8C3-FC", (1, 9, 9)),          # k = 3
    ("1x8x8-AP2-4C3-D0.5-AP2-F-D0.2-FC", (1, 8, 8)),  # pooling the input; pools around dropout and flatten
])
def test_average_pooling_folds_exactly_into_the_next_layer(arch, shape):
    net = _net(arch, shape, scale=3.0).eval()
    folded = fold_avg_pool(net)
    assert not any(isinstance(m, Pool) for m in folded.layers.values())
    assert all(torch.equal(p, q) for p, q in zip(net.state_dict().values(), _net(arch, shape, scale=3.0).state_dict().values()))
    x = torch.rand(6, 32, *shape, generator=torch.Generator().manual_seed(2))
    a, b = net.simulate(x), folded.simulate(x)
    assert torch.allclose(a.outputs, b.outputs, atol=1e-5, rtol=0)
    for name, s in a.spikes.items():
        assert torch.equal(s, b.spikes[name]), name
    assert sum(float(s.sum()) for s in a.spikes.values()) > 100
    shape = net.input_shape                                          # shapes stay right for the cost models
    for name, layer in folded.layers.items():
        assert tuple(layer.step(torch.zeros(1, *shape), None)[0].shape[1:]) == folded.shapes[name], name
        shape = folded.shapes[name]


def test_folded_pooling_quantises_to_the_chip_engines_integers():
    """netx's folded network runs bit for bit like the unfolded one (pool layer summing spike counts)
    quantised under the same limits: the fold moves no rounding."""
    import dataclasses

    from neuroplast.chip.hardware import load_chip
    from neuroplast.chip.quantize import quantize
    net = _net("1x8x8-4C3-AP2-8C3-AP2-16-FC", (1, 8, 8), scale=3.0)
    base = load_chip("loihi2")
    chip = dataclasses.replace(base, numerics={**base.numerics, "weight_exp_min": -1, "weight_exp_max": 0})
    pooled = quantize(net, chip, time_steps=8, timing="lava")
    folded = quantize(fold_avg_pool(net), chip, time_steps=8, timing="lava")
    assert [layer.kind for layer in pooled.layers].count("pool") == 2 and "pool" not in [
        layer.kind for layer in folded.layers]
    x = torch.rand(8, 16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    a, b = pooled.simulate(x), folded.simulate(x)
    assert torch.equal(a["v_out"], b["v_out"]) and a["v_out"].abs().max() > 0
    assert all(torch.equal(a["spikes"][k], b["spikes"][k]) for k in b["spikes"])


@pytest.mark.parametrize("arch,shape,lif,message", [
    ("1x8x8-4C3-MP2-FC", (1, 8, 8), {}, "layer pool1: netx .* no max pooling layer; use average pooling"),
    ("1x7x7-4C3-AP2-8C3-FC", (1, 7, 7), {}, "layer pool1 .* before layer conv2: a 7x7 map is not a multiple"),
    ("64-16-10", (64,), {"reset": "soft"}, "layer dense1: .*'soft' reset"),
])
def test_unrepresentable_layers_are_named(arch, shape, lif, message, tmp_path):
    with pytest.raises(SpecError, match=message):
        netx_fixed(_net(arch, shape, **lif), time_steps=4)


def test_bad_files_fail_clearly(tmp_path):
    with pytest.raises(DataError, match="not found"):
        import_netx(tmp_path / "none.net")
    path = export_netx(netx_fixed(_net("64-16-10", (64,)), time_steps=4), tmp_path / "ok.net")
    (tmp_path / "cut.net").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="not a readable netx HDF5 file.*export it again"):
        import_netx(tmp_path / "cut.net")
    with h5py.File(path, "a") as f:
        f.attrs["version"] = VERSION + 1
    with pytest.raises(DataError, match=f"format version {VERSION + 1}; this neuroplast reads version {VERSION}"):
        import_netx(path)
    with h5py.File(path, "a") as f:
        f.attrs["version"] = VERSION
        del f["layer/1/neuron/vThMant"]
    with pytest.raises(DataError, match="not a valid netx file"):
        import_netx(path)
    assert not list(tmp_path.glob(".*tmp"))   # atomic writes leave no temporary files


def del_group(f, key):
    del f[key]


def _replace(f, key, data):
    del f[key]
    f.create_dataset(key, data=data)


@pytest.mark.parametrize("arch,shape,change,message", [
    ("64-16-10", (64,), lambda f: f.attrs.__setitem__("version", "x"),
     r"format version 'x'; this neuroplast reads version 1: export it again"),
    ("64-16-10", (64,), lambda f: _replace(f, "layer/1/bias", np.zeros(5, np.int64)),
     r"layer 1 \(dense\): bias has 5 values; a layer of shape \(16,\) takes one of \[1, 16\]"),
    ("64-16-10", (64,), lambda f: _replace(f, "layer/1/weight", np.zeros((8, 60), np.int64)),
     r"layer 1 \(dense\): weight of shape \(8, 60\) does not fit its 64 inputs"),
    ("64-16-10", (64,), lambda f: _replace(f, "layer/1/weight", f["layer/1/weight"][()] + 0.5),
     r"layer 1 \(dense\) weight holds float64 values that are not whole numbers"),
    ("64-16-10", (64,), lambda f: _replace(f, "layer/2/shape", np.array([12])),
     r"layer 2 \(dense\): its shape \(12,\) is not the \(10,\) its weight gives"),
    ("64-16-10", (64,), lambda f: _replace(f, "layer/1/neuron/vThMant", np.float64(80.5)),
     r"layer 1 \(dense\) neuron vThMant holds float64 values that are not whole numbers"),
    ("1x8x8-4C3-8C3S2-16-FC", (1, 8, 8), lambda f: _replace(f, "layer/2/stride", np.array([1, 1])),
     r"layer 2 \(conv\): its shape \(8, 4, 4\) is not the \(8, 8, 8\) its weight gives"),
    ("1x8x8-4C3-8C3S2-16-FC", (1, 8, 8), lambda f: _replace(f, "layer/2/weight", np.zeros((8, 3, 3, 3), np.int64)),
     r"layer 2 \(conv\): a conv of weight \(8, 3, 3, 3\) .* does not fit its input of shape \(4, 8, 8\)"),
    ("64-16-10", (64,), lambda f: f.attrs.__setitem__("num_classes", 0),
     r"attribute num_classes = 0, but the readout has 10 outputs"),
    ("64-16-10", (64,), lambda f: f.attrs.__setitem__("input_shape", np.array([1, 9, 9])),
     r"attribute input_shape = \[1, 9, 9\], but layer 0 has shape \[64\]"),
    ("64-16-10", (64,), lambda f: f.attrs.__setitem__("input_scale", 0),
     r"attribute input_scale = 0; the input payload scale must be >= 1"),
    ("64-16-10", (64,), lambda f: f["layer/1"].attrs.__setitem__("v_scale", np.nan),
     r"layer 1 \(dense\): x_scale = \d+, v_scale = nan; need x_scale >= 1 and a finite v_scale > 0"),
    ("64-16-10", (64,), lambda f: del_group(f, "layer"), r"no 'layer' group: not a netx file"),
])
def test_corrupt_files_are_refused_clearly(arch, shape, change, message, tmp_path, capsys):
    path = export_netx(netx_fixed(_net(arch, shape), time_steps=4), tmp_path / "c.net")
    with h5py.File(path, "a") as f:
        change(f)
    with pytest.raises(DataError, match=message):
        import_netx(path)
    assert main(["import", str(path)]) == 2                       # the CLI: exit 2, the message, no traceback
    assert re.search(message, capsys.readouterr().err)


def test_whole_number_float_weights_import_exactly(tmp_path):
    """lava-dl writes its quantised weights as floats: whole numbers are read as the integers they are."""
    fixed = netx_fixed(_net("64-16-10", (64,), scale=3.0), time_steps=4)
    path = export_netx(fixed, tmp_path / "f.net")
    with h5py.File(path, "a") as f:
        _replace(f, "layer/1/weight", f["layer/1/weight"][()].astype(np.float32))
    x = torch.rand(4, 8, 64, generator=torch.Generator().manual_seed(2))
    a, b = fixed.simulate(x), import_netx(path).simulate(x)
    assert torch.equal(a["v_out"], b["v_out"]) and a["v_out"].abs().max() > 0


def test_import_command_refuses_a_bad_time_steps_attribute(tmp_path, capsys):
    path = export_netx(netx_fixed(_net("64-16-10", (64,)), time_steps=4), tmp_path / "t.net", meta={"time_steps": "x"})
    assert main(["import", str(path)]) == 2
    assert "attribute time_steps = 'x' is not a number of steps; pass --time-steps" in capsys.readouterr().err
    assert main(["import", str(path), "--time-steps", "4"]) == 0


def test_export_and_import_commands(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--net", "64-32-10", "--epochs", "3", "--save", str(run), "--no-progress", "--json"]) == 0
    acc = json.loads(capsys.readouterr().out)["test_acc"]
    assert main(["export", str(run), str(tmp_path / "n.net"), "--format", "netx", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "netx"
    with h5py.File(tmp_path / "n.net", "r") as f:
        assert f.attrs["input_scale"] == 16            # digits' 17 grey levels: exact 16·x payloads
    assert main(["import", str(tmp_path / "n.net"), "--task", "digits", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "netx" and res["arch"] == "64-32-10"
    assert res["test_acc"] > acc - 0.05          # fixed point keeps the float network's accuracy
    if importlib.util.find_spec("nir") is not None:
        assert main(["export", str(run), str(tmp_path / "n.nir"), "--json"]) == 0   # extension -> nir
        capsys.readouterr()
        assert main(["import", str(tmp_path / "n.nir"), "--json"]) == 0            # content -> nir
        assert json.loads(capsys.readouterr().out)["format"] == "nir"
    assert main(["export", str(run), str(tmp_path / "bad.net"), "--hw", "nochip"]) == 2
    assert not (tmp_path / "bad.net").exists()


class _Stub(types.ModuleType):
    """Stands in for cv2/torchvision, which lava-dl's netx imports but does not use."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return None


@pytest.fixture
def lava_netx():
    pytest.importorskip("neuroplast.lava.network", reason="lava-nc is not installed")
    try:
        found = importlib.util.find_spec("lava.lib.dl") is not None
    except ModuleNotFoundError:      # lava.lib itself is absent
        found = False
    if not found:
        pytest.skip("lava-dl is not installed (pip install --no-deps lava-dl==0.6.0)")
    names = ("cv2", "torchvision", "torchvision.transforms")
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        try:
            importlib.import_module(n)
        except ImportError:
            sys.modules[n] = _Stub(n)
    try:
        yield importlib.import_module("lava.lib.dl.netx")
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod


@pytest.mark.parametrize("arch,shape", [("24-20-16-4", (24,)), ("1x6x6-3C3-4C3S2-8-FC4", (1, 6, 6)),
                                        ("1x8x8-16C3-AP2-32C3-FC4", (1, 8, 8)),
                                        ("1x8x8-3C3-AP2-4C3-AP2-8-FC4", (1, 8, 8))])
def test_lava_dl_runs_the_file_with_the_engines_spikes(lava_netx, arch, shape, tmp_path):
    from neuroplast.lava.equivalence import compare_sample
    fixed = netx_fixed(_net(arch, shape, num_classes=4, scale=3.0), time_steps=20)
    path = export_netx(fixed, tmp_path / "net.net")
    back = import_netx(path)
    x_int = back.encode_input(torch.rand(20, 1, *shape, generator=torch.Generator().manual_seed(2)))[:, 0]
    mismatch, lava = compare_sample(back, x_int, 0, timeout=120, netx_file=path)
    assert mismatch is None, str(mismatch)
    assert all(int(rec["s"].sum()) > 20 for name, rec in lava.items() if name != "readout")
    assert np.abs(lava["readout"]["v"]).max() > 0


def test_lava_dl_takes_a_per_neuron_conv_bias_in_its_w_h_c_order(lava_netx, tmp_path):
    """The first conv of a run trained on normalised images, folded to take intensities, has one bias per
    neuron (zero padding: the borders differ); the file holds it in netx's (W, H, C) order."""
    from neuroplast.data import InputNorm
    from neuroplast.lava.equivalence import compare_sample
    from neuroplast.snn.fold_input import fold_input_norm
    net = fold_input_norm(_net("1x6x6-3C3-4C3S2-8-FC4", (1, 6, 6), num_classes=4, scale=3.0),
                          InputNorm(0.13, 0.31, levels=255))
    fixed = netx_fixed(net, time_steps=20)
    path = export_netx(fixed, tmp_path / "net.net")
    with h5py.File(path, "r") as f:
        assert f["layer/1/bias"].shape == (6, 6, 3)
    back = import_netx(path)
    x_int = back.encode_input(torch.rand(20, 1, 1, 6, 6, generator=torch.Generator().manual_seed(2)))[:, 0]
    mismatch, lava = compare_sample(back, x_int, 0, timeout=120, netx_file=path)
    assert mismatch is None, str(mismatch)
    assert int(lava["conv1"]["s"].sum()) > 20


def test_input_on_a_coarse_grid_gives_the_first_layer_full_weight_mantissas(tmp_path):
    """Direct input on a grid of 1/16 (digits' 17 grey levels) goes as exact payloads 16·x: the first
    layer's mantissas use all 8 bits instead of the few that 255·x leaves under netx's threshold."""
    from neuroplast.chip.quantize import input_grid
    x = torch.randint(0, 17, (4, 64), generator=torch.Generator().manual_seed(0)) / 16
    assert input_grid(x) == 16 and input_grid(torch.rand(100)) == 255 and input_grid(torch.tensor([0.0, 1.0])) == 1
    net = _net("64-32-10", (64,), scale=0.3, threshold=1.0)           # small weights against θ
    coarse, fine = netx_fixed(net, time_steps=4), netx_fixed(net, time_steps=4, input_scale=16)
    def first(f):
        return next(iter(f.synapses().values())).m
    assert int(first(fine).abs().max()) == 127 > 2 * int(first(coarse).abs().max())
    back = import_netx(export_netx(fine, tmp_path / "g.net"))
    assert back.input_scale == 16
    xs = x.expand(4, 4, 64)
    assert torch.equal(back.encode_input(xs), (xs * 16).round().long())
    assert torch.equal(back.simulate(xs)["v_out"], fine.simulate(xs)["v_out"])
    w = net.layers["dense1"].op.weight.detach().double()                # the dequantised weights are 16x finer
    err = [(f.synapses()["dense1"].dequantized() - w).abs().max() for f in (fine, coarse)]
    assert err[0] < err[1] / 4


def test_constant_input_layer_takes_a_larger_threshold_without_wrapping_u():
    """Under netx's exponents the first layer of a direct-input net wants vth above VTH_CAP; it gets
    more (its constant drive makes v saturation harmless) only as far as u = a << 6 cannot wrap for
    any input in [0, 1] and the biases fit."""
    from neuroplast.chip.fixed import UV_MAX
    from neuroplast.chip.quantize import VTH_CAP
    net = _net("64-32-10", (64,), scale=0.3, threshold=1.0)
    fixed = netx_fixed(net, time_steps=4)
    layer = next(f for f in fixed.layers if f.synapse is not None)
    assert VTH_CAP < layer.lif.vth
    m = layer.synapse.m
    worst = torch.maximum(m.clamp_min(0).sum(1), (-m).clamp_min(0).sum(1)).max()      # Σ m·x at x = 1 where it adds
    assert 2 * worst * 255 * 2.0 ** layer.synapse.weight_exp * 64 < UV_MAX
    x = (m > 0).to(torch.float64).unsqueeze(0).expand(3, -1, -1)                       # every neuron's worst input
    out = fixed.simulate(x, record=True)["steps"][layer.name]
    assert int(out["u"].max()) == int((2 * m.clamp_min(0).sum(1) * 255 // 2).max()) << 6   # no wrap: u = a << 6
