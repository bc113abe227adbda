"""The gradient-quality probe: definitions checked on known cases, files written, CLI errors."""
import json

import pytest
import torch

from neuroplast.cli import main
from neuroplast.probe import probe_gradients
from neuroplast.spec import TrainConfig


def _cfg(**kw):
    return TrainConfig(**{"net": "64-32-10", "batch_size": 64, **kw})


def test_reference_against_itself_has_cosine_one_and_matches_manual_variance():
    res = probe_gradients(_cfg(), ["sigmoid:k=4"], max_batches=4)
    rows = {r["layer"]: r for r in res["rows"]}
    assert set(rows) == {"dense1", "readout"}
    for r in rows.values():
        assert r["cosine"] == pytest.approx(1.0, abs=1e-6) and r["batches"] == 4
        assert r["variance"] > 0 and r["mean"] > 0


def test_reference_against_itself_with_dropout_draws_the_same_masks():
    res = probe_gradients(_cfg(net="64-32-D0.5-10"), ["sigmoid:k=4"], max_batches=3)
    for r in res["rows"]:
        assert r["cosine"] == pytest.approx(1.0, abs=1e-6), r


def test_stochastic_estimator_has_more_variance_and_lower_cosine_with_fewer_samples():
    res = probe_gradients(_cfg(), ["localzo:m=1", "localzo:m=8"], max_batches=6)
    hid = {r["estimator"]: r for r in res["rows"] if r["layer"] == "dense1"}
    assert hid["localzo:m=1"]["variance"] > hid["localzo:m=8"]["variance"]
    assert hid["localzo:m=1"]["cosine"] < hid["localzo:m=8"]["cosine"] < 1.0


def test_variance_definition_on_a_hand_made_case(monkeypatch):
    """variance = (1/(N·D)) Σ_n ‖g_n − ḡ‖²: checked against torch.var on the collected gradients."""
    import neuroplast.probe as probe
    seen = []
    orig = probe._layer_grads

    def spy(net):
        out = orig(net)
        seen.append(out)
        return out
    monkeypatch.setattr(probe, "_layer_grads", spy)
    res = probe_gradients(_cfg(), ["triangle:w=1"], max_batches=3)
    G = torch.stack([seen[i]["dense1"] for i in range(1, len(seen), 2)])  # probed net after the reference
    expected = float(G.var(0, unbiased=False).mean())
    row = next(r for r in res["rows"] if r["layer"] == "dense1")
    assert row["variance"] == pytest.approx(expected, rel=1e-5)


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
    code = main(["probe-gradients", "--net", "64-32-10", "--estimators", "sigmoid", "localzo:m=2,delta=0.5",
                 "--batches", "3", "--out", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and {r["estimator"] for r in out["rows"]} == {"sigmoid", "localzo:m=2,delta=0.5"}
    assert (tmp_path / "gradients.png").read_bytes()[:4] == b"\x89PNG"
    assert "| `localzo:m=2,delta=0.5` | dense1 |" in (tmp_path / "gradients.md").read_text()


def test_cli_probe_from_saved_run_and_bad_inputs(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--net", "64-32-10", "--epochs", "1", "--save", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["probe-gradients", "--from-run", str(run), "--estimators", "sigmoid", "--batches", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["net"] == "64-32-10"
    assert main(["probe-gradients", "--from-run", str(tmp_path / "nope")]) == 2
    (run / "weights.pt").write_bytes(b"garbage")
    assert main(["probe-gradients", "--from-run", str(run), "--estimators", "sigmoid"]) == 2
    assert "not a neuroplast weights file" in capsys.readouterr().err
    assert main(["probe-gradients", "--estimators", "wiggle"]) == 2
    assert main(["probe-gradients", "--batches", "0"]) == 2
