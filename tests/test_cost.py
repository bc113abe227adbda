"""Cost model: fan-out and SynOps counted on hand-built networks, Table-5 formulas against counted
figures, BP's stored activations growing with T, core mapping."""
import json

import pytest
import torch

from neuroplast.chip.cost import cost_model, run_cost
from neuroplast.chip.hardware import load_chip
from neuroplast.cli import main
from neuroplast.snn import build_network


def test_fan_out_and_synops_on_a_hand_built_conv_net():
    """1x4x4 input -> 2C3 (padding 1) -> AP2 -> FC(3): an input corner pixel reaches 4 positions x 2
    channels, an edge pixel 6 x 2, an interior one 9 x 2; every conv neuron reaches 3 outputs."""
    net = build_network("1x4x4-2C3-AP2-FC3", input_shape=(1, 4, 4), num_classes=3)
    fin = net.fan_out("input")[0]
    assert fin[0, 0] == 8 and fin[0, 1] == 12 and fin[1, 1] == 18
    assert float(fin.sum()) == sum(1 for c in range(2) for i in range(4) for j in range(4)
                                   for di in (-1, 0, 1) for dj in (-1, 0, 1) if 0 <= i + di < 4 and 0 <= j + dj < 4)
    assert torch.equal(net.fan_out("conv1"), torch.full((2, 4, 4), 3.0))
    counts = torch.zeros(2, 2, 4, 4)          # [B, C, H, W] spikes summed over T
    counts[0, 0, 0, 0], counts[1, 1, 2, 3] = 5, 2
    x_seq = torch.zeros(3, 2, 1, 4, 4)
    x_seq[:, 0, 0, 0, 0] = 0.5                # a corner pixel on for 3 steps in sample 0
    x_seq[1, 1, 0, 1, 1] = 1.0                # an interior pixel once in sample 1
    syn = net.count_synops(x_seq, {"conv1": counts.sum(0)})   # counts summed over the batch too
    assert syn == {"conv1": (5 + 2) * 3.0, "input": 3 * 8.0 + 1 * 18.0}


def test_fan_out_of_a_gpu_network_is_counted_on_the_cpu():
    """Fan-outs read only the weights' shapes: a network on a GPU (here fake CUDA tensors, no GPU
    needed) gives the CPU's numbers instead of mixing devices in the count (the first batch of every
    --device cuda training run records its synaptic events through this)."""
    fake = pytest.importorskip("torch._subclasses.fake_tensor")
    net = build_network("1x8x8-4C3-AP2-16-10", input_shape=(1, 8, 8), num_classes=10)
    layers = ["input", *net.spiking_layers()]
    want = {k: net.fan_out(k) for k in layers}
    with fake.FakeTensorMode(allow_non_fake_inputs=True):
        for m in net.modules():
            for k, p in m._parameters.items():
                if p is not None:
                    m._parameters[k] = torch.nn.Parameter(torch.empty(p.shape, device="cuda"))
    assert net.layers["conv1"].op.weight.device.type == "cuda"
    got = {k: net.fan_out(k) for k in layers}
    assert all(got[k].device.type == "cpu" and torch.equal(got[k], want[k]) for k in layers)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root, out = tmp_path_factory.mktemp("cost"), {}
    for method, T in (("bptt", 2), ("bptt", 4), ("dfa", 4), ("opzo", 4), ("opzo+ll", 4), ("zo", 4),
                      ("opzo:site=before", 4)):
        path = root / f"{method}_{T}"
        assert main(["train", "--method", method, "--net", "64-32-16-10", "--time-steps", str(T), "--epochs", "1",
                     "--save", str(path), "--no-progress"]) == 0
        out[(method, T)] = path
    return out


def _summary(path):
    return json.loads((path / "summary.json").read_text())


def test_counted_figures_match_the_table5_formulas(runs):
    C, T, hidden = 10, 4, 32 + 16
    for method in ("dfa", "opzo", "opzo+ll", "zo"):
        res, s = run_cost(runs[(method, T)], "loihi1"), _summary(runs[(method, T)])
        act = s["activity"]
        fb = sum(act["feedback_entries"].values())
        if method in ("dfa", "opzo"):
            assert res["memory_entries"]["learning_state"] == fb == C * hidden
        if method == "opzo+ll":
            readout_weights = sum(n - C for n in act["readout_entries"].values())
            assert res["memory_entries"]["learning_state"] == fb + readout_weights == 2 * C * hidden
        per = res["per_sample"]
        assert per["feedback_ops"] == {"dfa": T * C * hidden, "opzo": 2 * T * C * hidden,
                                       "opzo+ll": 4 * T * C * hidden, "zo": T * hidden}[method]
        if method == "zo":
            assert per["noise_draws"] == T * hidden
        if method.startswith("opzo"):
            assert per["noise_draws"] == T * hidden / 2  # antithetic pairs: fresh noise every other step
        assert 0 < res["per_layer"]["dense1"]["firing_rate"] < 1
        if method == "dfa":
            continue
        # noise after the neuron: every hidden neuron sends s + σz every step, so each synapse after a
        # hidden layer carries T events (not spike-sparse); the input layer stays event-driven
        assert res["per_layer"]["dense2"]["synops_in"] == T * 32 * 16
        assert res["per_layer"]["readout"]["synops_in"] == T * 16 * 10
        assert res["per_layer"]["dense1"]["messages"] == T * 32 and per["messages"] == T * hidden
        assert res["per_layer"]["dense1"]["synops_in"] == pytest.approx(act["train_synops"]["input"] / act["samples"])
        assert per["spikes"] < per["messages"]
    for method in ("dfa", "opzo:site=before"):   # spikes alone leave the neurons: Σ spikes × fan-out
        res, act = run_cost(runs[(method, T)], "loihi1"), _summary(runs[(method, T)])["activity"]
        spikes = {k: v / act["samples"] for k, v in act["train_spikes"].items()}
        assert res["per_layer"]["dense2"]["synops_in"] == pytest.approx(spikes["dense1"] * 16)
        assert res["per_layer"]["readout"]["synops_in"] == pytest.approx(spikes["dense2"] * 10)
        assert res["per_sample"]["messages"] == res["per_sample"]["spikes"]


def test_bp_memory_grows_with_time_steps_and_online_rules_do_not(runs):
    bp2, bp4 = run_cost(runs[("bptt", 2)], "loihi1"), run_cost(runs[("bptt", 4)], "loihi1")
    neurons = 32 + 16 + 10
    assert bp4["memory_entries"]["learning_state"] - bp2["memory_entries"]["learning_state"] == 2 * 2 * neurons
    dfa = run_cost(runs[("dfa", 4)], "loihi1")
    assert dfa["memory_entries"]["learning_state"] < bp4["memory_entries"]["learning_state"]
    assert bp4["energy_uj_per_sample_total"] > 0 and bp4["per_sample"]["ann_macs_forward"] == 64 * 32 + 32 * 16 + 16 * 10


def test_core_mapping_says_by_how_much_a_network_does_not_fit(runs, tmp_path, capsys):
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(open(load_chip("loihi1").path).read().replace("cores_per_chip = 128", "cores_per_chip = 2")
                    .replace("neurons_per_core = 1024", "neurons_per_core = 16"))
    assert main(["cost", str(runs[("dfa", 4)]), "--hw", str(tiny), "--json"]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)["runs"][0]
    assert res["mapping"]["cores_per_layer"]["dense1"] == 2 and res["mapping"]["over_by_cores"] == res["mapping"]["cores"] - 2
    assert f"needs {res['mapping']['cores']} cores, {res['mapping']['over_by_cores']} more than one" in captured.err


def test_cost_needs_recorded_activity(runs, tmp_path):
    s = _summary(runs[("dfa", 4)])
    s["activity"].pop("train_synops")
    net = build_network("64-32-16-10", input_shape=(64,), num_classes=10)
    with pytest.raises(Exception, match="no recorded training activity"):
        cost_model(s, net, load_chip("loihi1"), time_steps=4, method="dfa")


def test_older_fc_runs_get_their_synops_reconstructed_exactly(runs, tmp_path):
    """Runs saved before SynOps were recorded: spike totals x uniform fan-out give the same figures."""
    import shutil
    src = runs[("dfa", 4)]
    old = tmp_path / "old"
    shutil.copytree(src, old)
    s = _summary(old)
    for key in ("train_synops", "samples"):
        s["activity"].pop(key)
    (old / "summary.json").write_text(json.dumps(s))
    new, rebuilt = run_cost(src, "loihi1"), run_cost(old, "loihi1")
    assert rebuilt["activity_source"].startswith("reconstructed") and new["activity_source"] == "recorded"
    for key in ("synops_forward", "feedback_ops", "neuron_updates", "spikes"):
        assert rebuilt["per_sample"][key] == pytest.approx(new["per_sample"][key], rel=1e-9), key
