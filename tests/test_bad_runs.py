"""Commands that read a run directory (chip eval, cost, export, report, probe-gradients --from-run) on broken
runs: one line naming the file, exit 2, and nothing written."""
import json
import re
import shutil

import pytest
import torch

from neuroplast.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--net", "64-16-10", "--epochs", "1", "--save", str(run), "--no-progress"]) == 0
    return run


def _fails(capsys, argv, match, code=2):
    got = main(argv)
    out, err = capsys.readouterr()
    assert got == code and "Traceback" not in err and len(err.strip().splitlines()) == 1, (got, err)
    assert re.search(match, err), err
    return err


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _commands(run, out):
    """Every command that reads a run, each writing under ``out``."""
    return {"chip eval": ["chip", "eval", str(run)],
            "export netx": ["export", str(run), str(out / "x.net")],
            "export nir": ["export", str(run), str(out / "x.nir")],
            "cost": ["cost", str(run)],
            "report": ["report", str(run), "--out", str(out / "rep"), "--grad-batches", "1"],
            "probe": ["probe-gradients", "--from-run", str(run), "--out", str(out / "probe"), "--batches", "1",
                      "--no-progress"]}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("command", ["chip eval", "export netx", "export nir", "cost", "report", "probe"])
def test_non_finite_weights_are_refused_and_nothing_is_written(tiny_run, tmp_path, capsys, value, command):
    run = _copy(tiny_run, tmp_path)
    blob = torch.load(run / "weights.pt", weights_only=True)
    blob["state_dict"]["layers.dense1.op.weight"][0, :3] = value
    torch.save(blob, run / "weights.pt")
    out = tmp_path / "out"
    where = re.escape(str(run / "weights.pt")) + ": "
    _fails(capsys, _commands(run, out)[command], where + r"layers\.dense1\.op\.weight holds 3 NaN/Inf values; "
           r"the run diverged: retrain it \(lower --lr\)")
    assert not out.exists()


@pytest.mark.parametrize("edit,match", [
    (lambda s: [1], r"summary\.json is not a run summary \(a JSON object"),
    (lambda s: {**s, "test_acc": "high"}, r"summary\.json: test_acc of the wrong type"),
    (lambda s: {**s, "activity": {**s["activity"], "samples": "x"}}, r"summary\.json: activity\.samples of the wrong type"),
    (lambda s: {**s, "activity": {**s["activity"], "train_synops": [1]}}, r"summary\.json: activity\.train_synops of"),
    (b"\xff\xfe{", r"summary\.json: a run file is corrupt \('utf-8' codec"),
    ("folder", r"summary\.json cannot be read \(Is a directory\)"),
])
@pytest.mark.parametrize("command", ["cost", "report"])
def test_malformed_summary_is_one_line_naming_it(tiny_run, tmp_path, capsys, edit, match, command):
    run = _copy(tiny_run, tmp_path)
    path = run / "summary.json"
    if edit == "folder":
        path.unlink()
        path.mkdir()
    elif isinstance(edit, bytes):
        path.write_bytes(edit)
    else:
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    err = _fails(capsys, _commands(run, tmp_path / "out")[command], match)
    assert str(path) in err and not (tmp_path / "out").exists()


def test_cost_of_an_old_run_without_spikes_of_a_layer_is_an_error(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["activity"] = {"train_spikes": {"other": 5}}   # no train_synops: reconstructed from spike totals
    (run / "summary.json").write_text(json.dumps(summary))
    _fails(capsys, ["cost", str(run)], r"no spike total of layer dense1 of network '64-16-10'")


@pytest.fixture(scope="module")
def meta_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("meta") / "meta"
    assert main(["meta-train", "--problem", "quadratic", "--meta-iters", "1", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.parametrize("command", ["chip eval", "export netx", "cost", "report", "probe"])
def test_a_meta_training_folder_is_named_as_such(meta_folder, tmp_path, capsys, command):
    err = _fails(capsys, _commands(meta_folder, tmp_path / "out")[command],
                 re.escape(f"{meta_folder} is a meta-training folder (learned optimizer), not a training run: "
                           "pass a folder written by `neuroplast train --save`"))
    assert "unknown key" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("key,value,match", [
    ("leak", float("nan"), r"leak must be a finite number, got nan"),
    ("optimizer", "nosuch", r"unknown optimizer 'nosuch'"),
    ("method", "nosuch", r"unknown method 'nosuch'"),
    ("encoding", "nosuch", r"unknown encoding 'nosuch'"),
    ("dataset", "nosuch", r"unknown data set 'nosuch'"),
    ("reset", "nosuch", r"unknown reset 'nosuch'"),
    ("net", "64-x-10", r"network '64-x-10', layer 2 \('x'\): cannot parse"),
])
@pytest.mark.parametrize("command", ["chip eval", "cost", "report"])
def test_bad_config_values_name_the_config_file(tiny_run, tmp_path, capsys, key, value, match, command):
    run = _copy(tiny_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, key: value}))
    _fails(capsys, _commands(run, tmp_path / "out")[command], re.escape(f"error: {run / 'config.json'}: ") + match)


def _fail_writing_the_last_figure(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_report_writes_all_its_files_or_none(tiny_run, tmp_path, capsys, monkeypatch):
    rep = tmp_path / "rep"
    report = lambda out, *more: ["report", str(tiny_run), "--out", str(out), "--hw", "", *more]  # noqa: E731
    assert main(report(rep, "--grad-batches", "0")) == 0
    before = {p.name: p.read_bytes() for p in rep.iterdir()}
    monkeypatch.setattr("neuroplast.report._plot_raster", _fail_writing_the_last_figure)
    capsys.readouterr()
    _fails(capsys, report(rep, "--grad-batches", "1", "--overwrite"), r"No space left on device", code=1)
    assert {p.name: p.read_bytes() for p in rep.iterdir()} == before   # the earlier report, untouched
    _fails(capsys, report(tmp_path / "new" / "rep", "--grad-batches", "0"), r"No space left on device", code=1)
    assert not (tmp_path / "new").exists()


def test_probe_writes_all_its_files_or_none(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("neuroplast.probe._plot", _fail_writing_the_last_figure)
    assert main(["probe-gradients", "--net", "64-16-10", "--estimators", "sigmoid", "--batches", "1",
                 "--out", str(tmp_path / "probe"), "--no-progress"]) == 1
    err = capsys.readouterr().err   # its table, then the failure
    assert err.strip().splitlines()[-1] == "neuroplast: failed: [Errno 28] No space left on device", err
    assert not (tmp_path / "probe").exists()
