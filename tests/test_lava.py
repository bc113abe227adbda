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
    assert [layer["dense"] for layer in built["layers"]] == [[24, 64], [10, 24]] and built["steps_per_sample"] == 5
    assert main(["lava", "run", str(run), "--samples", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bit_exact"] and len(res["samples"]) == 2
    assert all(s["first_mismatch"] is None for s in res["samples"])
    assert not multiprocessing.active_children()
