"""Chip files, quantisation and float-vs-fixed accuracy of trained networks."""
import dataclasses
import json

import pytest
import torch

from neuroplast.chip.hardware import available_chips, load_chip
from neuroplast.chip.quantize import quantize, threshold_scale
from neuroplast.cli import main
from neuroplast.errors import DataError, SpecError
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
    import neuroplast.chip.fixed_network as q
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


def _biased(arch, bias, gain, leak=0.9, layer="dense1"):
    from neuroplast.snn import LIFParams
    net = build_network(arch, input_shape=(16,), num_classes=4, lif=LIFParams(leak=leak),
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(gain)
        net.layers[layer].op.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return net


def test_a_large_bias_lowers_the_scale_and_is_never_clipped():
    """A hidden bias of 1.5θ at λ = 0.9: at the weights' own scale b·S would pass the chip's bias range
    (4095·2^7); S is lowered so that it fits, the integer bias is b·S, and at zero input the chip
    fires at every step as the float network does."""
    net = _biased("16-8-4", 1.5, 0.1)
    fixed = quantize(net, load_chip("loihi2"), time_steps=8)
    layer = fixed.layers[0]
    bias, s = layer.lif.effective_bias(), layer.synapse.v_scale
    assert (bias.double() - 1.5 * s).abs().max() <= 2.0 ** int(layer.lif.bias_exp.max()) / 2
    x = torch.zeros(8, 2, 16)
    want = net.simulate(x).spikes["dense1"].sum(0)
    assert int(want.min()) == 8
    assert torch.equal(fixed.simulate(x)["spikes"]["dense1"], want.long())


def test_a_large_readout_bias_fits_and_keeps_the_float_outputs():
    """Readout biases [0, 1, 2, 3] with small weights: S is capped so that the largest bias fits the chip's
    bias, and v_out/S is the float readout's sum over T steps (argmax included)."""
    net = _biased("16-8-4", [0.0, 1.0, 2.0, 3.0], 0.01, layer="readout")
    fixed = quantize(net, load_chip("loihi2"), time_steps=4)
    x = torch.rand(4, 5, 16, generator=torch.Generator().manual_seed(1))
    want = 4 * net.simulate(x).logits.double()
    got = fixed.simulate(x)["v_out"].double() / fixed.synapses()["readout"].v_scale
    assert (got - want).abs().max() < 1e-3 * want.abs().max()
    assert torch.equal(fixed.classify(x), want.argmax(1))


def test_a_bias_no_scale_can_hold_is_a_data_error():
    with pytest.raises(DataError, match="layer dense1: a bias of 100000 .*does not fit the chip's bias"):
        quantize(_biased("16-8-4", 1e5, 0.1), load_chip("loihi2"), time_steps=8)
    with pytest.raises(DataError, match="layer readout: its biases .* too large next to its weights"):
        quantize(_biased("16-8-4", [0.0, 1e9, 0.0, 0.0], 1e-6, layer="readout"), load_chip("loihi2"), time_steps=8)


def test_a_strong_drive_lowers_the_threshold_so_that_u_cannot_wrap():
    """dense1 fires at every step into 200 weights of 0.1θ: a current of 20θ, whose a << 6 at the default
    scale wraps past 24 bits and silences dense2. vth is lowered until the largest current fits: the chip
    fires as the float network does, u = a << 6 unwrapped, and the mantissas still use all 8 bits."""
    net = build_network("16-200-8-4", input_shape=(16,), num_classes=4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, w in (("dense1", 0.3), ("dense2", 0.1)):
            net.layers[name].op.weight.fill_(w)
            net.layers[name].op.bias.zero_()
    x = torch.ones(8, 2, 16)
    want = net.simulate(x).spikes["dense2"].sum(0)
    fixed = quantize(net, load_chip("loihi2"), time_steps=8)
    out = fixed.simulate(x, record=True)
    assert int(want.min()) > 0 and torch.equal(out["spikes"]["dense2"], want.long())
    syn = fixed.synapses()["dense2"]
    a = int(syn.current(torch.ones(1, 200, dtype=torch.int64)).max())
    assert int(out["steps"]["dense2"]["u"].min()) == a << 6 > 0
    assert int(syn.m.abs().max()) == 127


@pytest.mark.parametrize("arch,shape", [("64-300-300-10", (64,)), ("1x8x8-16C3-AP2-40-FC", (1, 8, 8))])
def test_no_input_can_wrap_u_in_any_layer(arch, shape):
    """Every synaptic layer's largest current over all inputs (each at 0 or its largest payload X, where
    it adds to the sum) keeps u = a << 6 inside 24 bits, for positive-heavy weights with wide fan-in."""
    net = build_network(arch, input_shape=shape, num_classes=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in net.parameters():
            p.abs_().mul_(2.0)
    fixed = quantize(net, load_chip("loihi2"), time_steps=6)
    for name, syn in fixed.synapses().items():
        m = syn.m.flatten(1)
        worst = torch.maximum(m.clamp_min(0).sum(1), (-m).clamp_min(0).sum(1)).max()
        assert 2 * int(worst) * syn.x_scale * 2.0 ** syn.weight_exp * 64 < 2 ** 23, name
        # precision kept: all 8 bits (the readout, whose S is set by T steps of input: at least 7)
        assert int(syn.m.abs().max()) >= (64 if name == "readout" else 127), name


def test_weights_too_large_for_every_scale_are_a_data_error_not_clipped():
    """Weights above 127·θ·X·2^(hi+1) clip even at the largest exponent and vth = 1 (netx's exponents
    [−1, 0]: 254θ for spike input); a current past 2^17·θ wraps u even at vth = 1. Both are refused."""
    assert threshold_scale(1.0, 1, 2.0, -8, 7) == (7, 128)
    with pytest.raises(DataError, match="do not fit the chip's 8-bit mantissas"):
        threshold_scale(1.0, 1, 3.0, -1, 0)
    base = load_chip("loihi2")
    netx_like = dataclasses.replace(base, numerics={**base.numerics, "weight_exp_min": -1, "weight_exp_max": 0})
    net = _biased("16-8-8-4", 0.0, 1.0)
    for w, m in ((250.0, 125), (300.0, None)):
        with torch.no_grad():
            net.layers["dense2"].op.weight.fill_(w)
        if m is not None:   # fits at vth = 1: 250/254 of the mantissa range
            fixed = quantize(net, netx_like, encoding="poisson", time_steps=4)
            assert int(fixed.synapses()["dense2"].m.max()) == m and fixed.layers[1].lif.vth == 1
        else:               # the old fallback took exponent −1 and clipped every mantissa at 127
            with pytest.raises(DataError, match=r"layer dense2: weights up to 300 .*they reach 254"):
                quantize(net, netx_like, encoding="poisson", time_steps=4)
    with torch.no_grad():
        net.layers["dense1"].op.weight.fill_(1e4)   # Σ W = 1.6e5·θ at full input
    with pytest.raises(DataError, match=r"layer dense1: its input current reaches 160000·θ"):
        quantize(net, base, time_steps=4)


@pytest.mark.parametrize("field,value", [("weight_mantissa_bits", 4), ("threshold_mantissa_bits", 8),
                                         ("voltage_bits", 12), ("bias_mantissa_bits", 4)])
def test_a_chip_file_with_other_widths_is_refused_by_the_integer_model(tmp_path, field, value):
    """The fixed-point engine is Lava's Loihi with its widths built in: a chip file asking for other
    widths is refused (naming the field) by quantize and the on-chip learner instead of being run at
    Loihi's widths (|m| = 127, a 17-bit vth) as if it had been honoured."""
    import re

    from neuroplast.chip.onchip import OnChipLearner
    text = open(load_chip("loihi2").path).read()
    path = tmp_path / "narrow.toml"
    path.write_text(re.sub(rf"(?m)^{field} = \d+", f"{field} = {value}", text).replace('"loihi2"', '"narrow"'))
    chip = load_chip(path)
    assert chip.numerics[field] == value
    net = build_network("16-8-4", input_shape=(16,), num_classes=4, generator=torch.Generator().manual_seed(0))
    for make in (lambda: quantize(net, chip, time_steps=4), lambda: OnChipLearner(net, chip, "dfa", lr=0.1, time_steps=4)):
        with pytest.raises(DataError, match=rf"chip narrow .*\[numerics\] {field} = {value} \(the model implements"):
            make()
    assert quantize(net, load_chip("loihi1"), encoding="poisson", time_steps=4).layers[0].lif.vth > 255


def test_spike_counts_are_refused_on_a_chip_with_binary_spikes():
    """loihi1 sends 1-bit spikes: event-frame input with counts above 1 is a DataError (as floats and as
    integer payloads), 0/1 frames run, and loihi2 (graded spikes) takes the counts."""
    net = build_network("16-8-4", input_shape=(16,), num_classes=4, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 6, (4, 2, 16), generator=torch.Generator().manual_seed(1)).float()
    binary = quantize(net, load_chip("loihi1"), encoding="frames", time_steps=4)
    for run in (lambda: binary.simulate(x), lambda: binary.simulate(x.long(), integer_input=True)):
        with pytest.raises(DataError, match=r"payloads in \[0, 5\] .*binary spikes only"):
            run()
    assert binary.simulate((x > 0).float())["v_out"].shape == (2, 4)
    graded = quantize(net, load_chip("loihi2"), encoding="frames", time_steps=4)
    assert torch.equal(graded.encode_input(x), x.long())
    assert not torch.equal(graded.simulate(x)["v_out"], graded.simulate((x > 0).float())["v_out"])


@pytest.mark.parametrize("arch", ["16-FC4", "16-8-4", "16-8-8-4"])
def test_lava_timing_runs_until_the_last_input_step_reaches_the_readout(arch):
    """Each of the n synapses delays by one step, so input at step T − 1 reaches the readout at step
    T − 1 + n: the run takes T + n steps. Without biases the Lava-timed run is the sync run of the same
    integers delayed by n steps (readout v zero for the first n); input at the last step alone moves v_out."""
    from neuroplast.chip.fixed_network import FixedNetwork
    net = build_network(arch, input_shape=(16,), num_classes=4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.mul_(0.0 if name.endswith("bias") else 3.0)
    T, n = 5, arch.count("-")
    lava = quantize(net, load_chip("loihi2"), time_steps=T, timing="lava")
    sync = FixedNetwork(lava.layers, lava.input_shape, lava.num_classes, lava.encoding, "sync")
    x = torch.rand(T, 3, 16, generator=torch.Generator().manual_seed(1))
    a, b = lava.simulate(x, record=True), sync.simulate(x, record=True)
    v = a["steps"]["readout"]["v"]
    assert len(v) == T + n and not v[:n].any() and torch.equal(v[n:], b["steps"]["readout"]["v"])
    assert torch.equal(a["v_out"], b["v_out"]) and all(torch.equal(a["spikes"][k], b["spikes"][k]) for k in b["spikes"])
    last = torch.zeros(T, 1, 16)
    last[-1] = 1.0
    assert not lava.simulate(last)["v_out"].eq(0).all()
