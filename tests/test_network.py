"""Network strings, shapes, simulation modes and recorded spikes."""
import pytest
import torch

from neuroplast.errors import SpecError
from neuroplast.snn import build_network, detach_state


def _build(arch, shape=(1, 28, 28), classes=10, seed=0):
    return build_network(arch, input_shape=shape, num_classes=classes, generator=torch.Generator().manual_seed(seed))


def test_fc_and_conv_strings_build_expected_layers():
    net = _build("784-800-800-10")
    assert [type(m).__name__ for m in net.layers.values()] == ["Flatten", "SpikingLayer", "SpikingLayer", "Readout"]
    assert net.layers["dense1"].op.weight.shape == (800, 784)
    conv = _build("1x28x28-32C3-AP2-64C3-MP2-D0.2-128-FC")
    names = list(conv.layers)
    assert names == ["conv1", "pool1", "conv2", "pool2", "dropout1", "flatten1", "dense1", "readout"]
    assert conv.layers["dense1"].op.weight.shape == (128, 64 * 7 * 7)
    assert conv.spiking_layers() == ["conv1", "conv2", "dense1"]


@pytest.mark.parametrize("arch,match", [
    ("784-800-12", "12 outputs but the data has 10 classes"),
    ("100-800-10", "declares input 100"),
    ("784-80x-10", r"layer 2 \('80x'\): cannot parse"),
    ("32C3-AP2", "must end with a readout"),
    ("32C3-FC-10", "readout FC must be the last"),
    ("32C3-AP64-FC", r"layer 2 \('AP64'\)"),
    ("784--10", "empty layer token"),
    ("784-D1.5-10", "cannot parse|dropout rate"),
    ("784-0-10", r"layer 2 \('0'\): the width must be >= 1, got 0"),
    ("784-800-00-10", r"layer 3 \('00'\): the width must be >= 1"),
    ("1x28x28-0C3-FC", r"layer 2 \('0C3'\): the channels must be >= 1, got 0"),
    ("1x28x28-4C0-FC", r"layer 2 \('4C0'\): the kernel size must be >= 1, got 0"),
    ("1x28x28-4C3S0-FC", r"layer 2 \('4C3S0'\): the stride must be >= 1, got 0"),
    ("1x28x28-4C3-AP0-FC", r"layer 3 \('AP0'\): the pooling size must be >= 1, got 0"),
    ("1x28x28-4C3-MP0-FC", r"layer 3 \('MP0'\): the pooling size must be >= 1"),
])
def test_bad_network_strings_name_the_layer(arch, match):
    with pytest.raises(SpecError, match=match):
        _build(arch)


def test_conv_on_flat_input_is_rejected():
    with pytest.raises(SpecError, match="conv needs a CxHxW input"):
        _build("64-8C3-FC", shape=(64,))


def test_simulate_and_step_agree_and_record_spikes():
    torch.manual_seed(0)
    net = _build("1x8x8-4C3-AP2-20-FC", shape=(1, 8, 8)).double()
    x_seq = torch.rand(5, 3, 1, 8, 8, dtype=torch.float64) * 3
    out = net.simulate(x_seq)
    assert out.outputs.shape == (5, 3, 10) and out.logits.shape == (3, 10)
    assert set(out.spikes) == {"conv1", "dense1"} and out.spikes["conv1"].shape == (5, 3, 4, 8, 8)
    assert 0 < out.firing_rates()["conv1"] < 1
    state, outs = net.init_state(), []
    for t in range(5):
        o, state, spikes = net.step(x_seq[t], state)
        state = detach_state(state)
        assert torch.equal(spikes["dense1"], out.spikes["dense1"][t])
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs), out.outputs)


def test_constant_input_is_computed_once_but_equals_full_input():
    net = _build("64-30-10", shape=(64,))
    x = torch.rand(4, 64) * 2
    a = net.simulate(x.unsqueeze(0).expand(6, 4, 64)).outputs
    b = net.simulate(x.unsqueeze(0).repeat(6, 1, 1)).outputs
    torch.testing.assert_close(a, b)


def test_dropout_mask_is_shared_over_time_and_off_in_eval():
    net = _build("64-D0.5-64-10", shape=(64,))
    drop = net.layers["dropout1"]
    drop.generator = torch.Generator().manual_seed(1)
    x = torch.ones(7, 2, 64)
    y = drop.forward_seq(x)
    assert torch.equal(y[0], y[6]) and set(y.unique().tolist()) == {0.0, 2.0}
    net.eval()
    assert torch.equal(drop.forward_seq(x), x)


def test_wrong_input_shape_is_a_clear_error():
    net = _build("64-30-10", shape=(64,))
    with pytest.raises(SpecError, match="expects input"):
        net.simulate(torch.zeros(4, 2, 63))
