"""Chip files, quantisation and float-vs-fixed accuracy of trained networks."""
import json

import pytest
import torch

from neuroplast.chip.hardware import available_chips, load_chip
from neuroplast.chip.quantize import quantize
from neuroplast.cli import main
from neuroplast.errors import SpecError
from neuroplast.snn import build_network


def test_builtin_chips_load_with_sources_and_flag_estimates():
    assert {"ideal", "loihi1", "loihi2"} <= set(available_chips())
    l1, l2 = load_chip("loihi1"), load_chip("loihi2")
    assert l1.energy_pj["synaptic_op"] == 23.6 and l1.energy_pj["neuron_update"] == 52.0
    assert l1.energy_pj["neuron_update_active"] == 81.0 and l1.energy_pj["spike_within_tile"] == 1.7
    assert (l1.energy_pj["hop_east_west"], l1.energy_pj["hop_north_south"]) == (3.0, 4.0)
    assert l1.neurons_per_chip == 131072 and l2.neurons_per_chip == 1048576
    assert l2.is_estimated("energy.synaptic_op") and not l2.is_estimated("numerics.voltage_bits")
    assert all(c.sources for c in (l1, l2)) and l1.numerics["voltage_bits"] == 24


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("voltage_bits = 24", ""), r"missing field \[numerics\] voltage_bits"),
    (lambda t: t.replace("decay_bits = 12", "decay_bits = 0"), r"\[numerics\] decay_bits = 0 is impossible"),
    (lambda t: t.replace("synaptic_op = 23.6", 'synaptic_op = "cheap"'), r"\[energy\] synaptic_op must be a number"),
    (lambda t: t.replace("[capacity]", "[capacit]"), r"missing table \[capacity\]"),
    (lambda t: t + "\n[[broken", "not valid TOML"),
    (lambda t: t.replace("synaptic_op = 23.6", "synaptic_op = nan"), r"\[energy\] synaptic_op must be a finite number"),
    (lambda t: t.replace("synaptic_op = 23.6", "synaptic_op = inf"), r"\[energy\] synaptic_op must be a finite number"),
    (lambda t: t.replace("synaptic_op = 23.6", "synaptic_op = -inf"), r"\[energy\] synaptic_op must be a finite number"),
])
def test_bad_chip_files_name_the_field(tmp_path, edit, message):
    text = load_chip("loihi1").path
    path = tmp_path / "mine.toml"
    path.write_text(edit(open(text).read()))
    with pytest.raises(SpecError, match=message):
        load_chip(path)


@pytest.mark.parametrize("make,message", [
    (lambda p: p.mkdir(), r"chip file .*mine.toml is a folder"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00binary\x89PNG"), r"chip file .*mine.toml is not a text file"),
])
def test_unreadable_chip_files_are_spec_errors(tmp_path, make, message):
    path = tmp_path / "mine.toml"
    make(path)
    with pytest.raises(SpecError, match=message):
        load_chip(path)


def test_a_user_chip_file_loads_and_unknown_names_list_the_builtins(tmp_path):
    path = tmp_path / "mychip.toml"
    path.write_text(open(load_chip("loihi2").path).read().replace('name = "loihi2"', 'name = "mychip"'))
    assert load_chip(path).name == "mychip"
    with pytest.raises(SpecError, match="built-in chips: .*loihi1"):
        load_chip("loihi9")


@pytest.mark.parametrize("arch,shape", [("64-40-10", (64,)), ("1x8x8-6C3-AP2-FC", (1, 8, 8)),
                                        ("1x8x8-6C3-MP2-20-FC", (1, 8, 8))])
@pytest.mark.parametrize("stochastic", [False, True])
def test_quantisation_round_trip_within_half_an_lsb(arch, shape, stochastic):
    """float -> 8-bit mantissa -> float: every weight within half an LSB (round to nearest), within
    one LSB with stochastic rounding; biases on the 13-bit grid."""
    net = build_network(arch, input_shape=shape, num_classes=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    fixed = quantize(net, load_chip("loihi2"), time_steps=4, stochastic=stochastic,
                     generator=torch.Generator().manual_seed(2))
    for name, syn in fixed.synapses().items():
        w = net.layers[name].op.weight.detach().to(torch.float64)
        err = (w - syn.dequantized()).abs().max() / syn.lsb()
        assert err <= (1.0 if stochastic else 0.5) + 1e-9, (name, float(err))
        assert int(syn.m.max()) <= 127 and int(syn.m.min()) >= -128


@pytest.mark.parametrize("arch,shape", [("64-40-10", (64,)), ("1x8x8-6C3-AP2-FC", (1, 8, 8))])
def test_fixed_simulation_of_a_constant_input_equals_the_stepped_input(arch, shape):
    """Direct input (one stride-0 step repeated) is multiplied once; the integers equal those of the
    same input materialised step by step: voltages, spike counts and every recorded state."""
    net = build_network(arch, input_shape=shape, num_classes=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    fixed = quantize(net, load_chip("loihi2"), time_steps=5)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(1))
    const = x.unsqueeze(0).expand(5, *x.shape)
    a, b = fixed.simulate(const, record=True), fixed.simulate(const.contiguous(), record=True)
    assert torch.equal(a["v_out"], b["v_out"])
    assert all(torch.equal(a["spikes"][k], b["spikes"][k]) for k in b["spikes"])
    assert any(int(v.sum()) > 0 for v in b["spikes"].values())
    for k, rec in b["steps"].items():
        assert all(torch.equal(a["steps"][k][q], rec[q]) for q in rec)


@pytest.mark.parametrize("timing", ["sync", "lava"])
def test_fixed_simulation_in_windows_of_steps_equals_one_window(monkeypatch, timing):
    """Windows of a few steps (state and Lava's held product carried over) give the integers of one
    window over all steps, the drain steps of Lava timing included."""
    import neuroplast.chip.quantize as q
    net = build_network("1x8x8-6C3-AP2-12-FC", input_shape=(1, 8, 8), num_classes=10,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    fixed = quantize(net, load_chip("loihi2"), time_steps=9, timing=timing)
    x = torch.rand(9, 3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = fixed.simulate(x, record=True)
    monkeypatch.setattr(q, "WINDOW_ROWS", 7)   # windows of 2 steps at batch 3
    parts = fixed.simulate(x, record=True)
    assert torch.equal(whole["v_out"], parts["v_out"])
    assert all(torch.equal(whole["spikes"][k], parts["spikes"][k]) for k in whole["spikes"])
    assert any(int(v.sum()) > 0 for v in whole["spikes"].values())
    for k, rec in whole["steps"].items():
        assert all(torch.equal(parts["steps"][k][f], rec[f]) for f in rec)


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, net, extra in (("fc", "64-128-10", []), ("conv", "1x8x8-8C3-AP2-FC", [])):
        assert main(["train", "--net", net, "--epochs", "15", "--batch-size", "32", "--lr", "2e-3", *extra,
                     "--save", str(root / name), "--no-progress"]) == 0
        runs[name] = root / name
    return runs


@pytest.mark.parametrize("run", ["fc", "conv"])
@pytest.mark.parametrize("timing", ["sync", "lava"])
def test_trained_digits_network_keeps_its_accuracy_in_loihi2_fixed_point(digits_runs, run, timing, capsys):
    assert main(["chip", "eval", str(digits_runs[run]), "--hw", "loihi2", "--timing", timing, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["float_acc"] > 0.8 and abs(res["gap"]) <= 0.01 and res["agreement"] >= 0.97, res
    assert all(layer["max_weight_error"] <= 0.5 * layer["lsb"] + 1e-9 for layer in res["layers"])


def test_chip_eval_errors(digits_runs, tmp_path, capsys):
    assert main(["chip", "eval", str(digits_runs["fc"]), "--hw", "loihi1"]) == 2
    assert "binary spikes only" in capsys.readouterr().err
    assert main(["chip", "eval", str(tmp_path / "nothing"), "--hw", "loihi2"]) == 2
    assert "config.json not found" in capsys.readouterr().err
    assert main(["chip", "eval", str(digits_runs["fc"]), "--hw", "loihi7"]) == 2
    assert "unknown chip" in capsys.readouterr().err
