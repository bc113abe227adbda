"""neuroplast report: a markdown report with valid PNG figures from tiny digits runs."""
import json
import re
import shutil

import matplotlib.image as mpimg
import pytest
from conftest import DATA_ROOT

from neuroplast.cli import main


def test_report_from_tiny_digits_runs(tmp_path, capsys):
    runs = []
    for method, seed in (("bptt", 0), ("bptt", 1), ("dfa", 0)):
        path = tmp_path / f"{method}_{seed}"
        assert main(["train", "--net", "64-32-10", "--method", method, "--epochs", "2", "--seed", str(seed),
                     "--save", str(path), "--no-progress"]) == 0
        runs.append(str(path))
    capsys.readouterr()
    assert main(["report", *runs, "--out", str(tmp_path / "rep"), "--name", "tiny", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    table = {t["method"]: t for t in res["table"]}
    assert table["bptt"]["runs"] == 2 and table["dfa"]["runs"] == 1
    summaries = [json.loads((tmp_path / f"bptt_{s}" / "summary.json").read_text())["test_acc"] for s in (0, 1)]
    assert abs(table["bptt"]["test_acc_mean"] - sum(summaries) / 2) < 1e-12
    assert set(res["costs"]) == {"bptt", "dfa"} and res["costs"]["dfa"]["learning_memory"] == 10 * 32
    md = (tmp_path / "rep" / "tiny.md").read_text()
    assert "| `bptt` | 2 |" in md and "tiny_curves.png" in md
    grads = {(g["method"], g["layer"]): g for g in res["gradients"]}
    assert set(grads) == {(m, k) for m in ("bptt", "dfa") for k in ("dense1", "readout")}
    assert grads["bptt", "dense1"]["runs"] == 2 and grads["bptt", "dense1"]["batches"] == 8
    assert grads["bptt", "dense1"]["cosine"] > 0.99          # BPTT's own gradient against the BPTT reference
    assert grads["dfa", "dense1"]["cosine"] < 0.99 and all(g["variance"] > 0 for g in grads.values())
    assert "| `dfa` | dense1 |" in md
    raster = json.loads((tmp_path / "rep" / "tiny.json").read_text())["raster"]
    assert raster["neurons"] == {"dense1": 32} and len(raster["layers"]["dense1"]) > 0
    assert all(0 <= t < 4 and 0 <= n < 32 for t, n in raster["layers"]["dense1"])
    for png in ("tiny_curves.png", "tiny_rates.png", "tiny_costs.png", "tiny_gradients.png", "tiny_raster.png"):
        assert png in md
        data = (tmp_path / "rep" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(tmp_path / "rep" / png)
        assert img.shape[0] > 100 and img.shape[1] > 100
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--net", "64-16-10", "--epochs", "1", "--save", str(run), "--no-progress"]) == 0
    return run


def _report_fails(capsys, *argv, match):
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, (code, err)
    assert re.search(match, err), err


@pytest.mark.parametrize("file,text,match", [
    ("summary.json", "{}", r"summary.json lacks net, method, epochs, test_acc, wall_s"),
    ("summary.json", "[1]", r"summary.json is not a run summary"),
    ("summary.json", '{"net": "64-16-10", "method": "bptt", "epochs": 1, "test_acc": "high", "wall_s": 1}',
     r"summary.json: test_acc of the wrong type"),
    ("metrics.jsonl", '{"epoch": 1}\n', r"metrics.jsonl: line 1 is not an epoch record"),
    ("metrics.jsonl", "[1]\n", r"metrics.jsonl: line 1 is not an epoch record"),
    ("summary.json", "{", r"a run file is corrupt"),
])
def test_report_on_broken_run_files_is_one_line(tiny_run, tmp_path, capsys, file, text, match):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / file).write_text(text)
    _report_fails(capsys, str(run), "--out", str(tmp_path / "rep"), "--hw", "", "--grad-batches", "0", match=match)
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("argv,match", [
    (["--hw", "nosuch"], r"unknown chip 'nosuch'"),
    (["--hw", "{tmp}/chip.toml"], r"chip file .*chip.toml does not exist"),
    (["--grad-batches", "-1"], r"--grad-batches must be >= 0"),
    (["--name", ""], r"--name '': give a plain file name"),
    (["--name", ".hidden"], r"--name '.hidden'"),
    (["--name", "sub/report"], r"--name 'sub/report'"),
])
def test_report_bad_options_are_errors(tiny_run, tmp_path, capsys, argv, match):
    argv = [a.format(tmp=tmp_path) for a in argv]
    _report_fails(capsys, str(tiny_run), "--out", str(tmp_path / "rep"), *argv, match=match)
    assert not (tmp_path / "rep").exists()


def test_report_rerun_into_the_same_folder_leaves_no_stale_figures(tiny_run, tmp_path, capsys):
    rep = tmp_path / "rep"
    assert main(["report", str(tiny_run), "--out", str(rep), "--grad-batches", "1"]) == 0
    assert {"report_costs.png", "report_gradients.png"} <= {p.name for p in rep.iterdir()}
    capsys.readouterr()
    _report_fails(capsys, str(tiny_run), "--out", str(rep), match=r"report .*report\.md exists; pass --overwrite")
    assert main(["report", str(tiny_run), "--out", str(rep), "--hw", "", "--grad-batches", "0", "--overwrite"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in rep.iterdir()) == ["report.json", "report.md", "report_curves.png",
                                                     "report_raster.png", "report_rates.png"]
    assert "costs.png" not in (rep / "report.md").read_text()


def test_a_run_without_recorded_activity_gets_a_cost_note(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    summary = json.loads((run / "summary.json").read_text())
    summary.pop("activity")
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--grad-batches", "0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["costs"] == {} and "no recorded training activity" in (tmp_path / "rep" / "report.md").read_text()


def test_runs_of_different_estimators_are_not_pooled(tmp_path, capsys):
    from neuroplast.report import build_report
    dirs = []
    for est in ("sigmoid", "fast_sigmoid"):
        d = tmp_path / est
        assert main(["train", "--net", "64-16-10", "--epochs", "1", "--estimator", est, "--save", str(d),
                     "--no-progress"]) == 0
        dirs.append(d)
    capsys.readouterr()
    res = build_report(dirs, hw=None, grad_batches=0)
    assert sorted(t["method"] for t in res["table"]) == ["bptt · fast_sigmoid", "bptt · sigmoid"]
    assert all(t["runs"] == 1 for t in res["table"])


def test_report_command_names_the_folder_glob_only_for_the_whole_folder(tiny_run, tmp_path, monkeypatch, capsys):
    """A report on every run of a folder writes ``FOLDER/*`` as its command; on some of them, their names."""
    folder = tmp_path / "runs"
    runs = [str(folder / name) for name in ("a", "b")]
    for run in runs:
        shutil.copytree(tiny_run, run)
    for given, expect in ((runs, f"{folder}/*"), (runs[:1], runs[0])):
        argv = ["report", *given, "--out", str(tmp_path / "rep"), "--grad-batches", "0", "--hw", "", "--overwrite"]
        monkeypatch.setattr("sys.argv", ["neuroplast", *argv])
        assert main(argv) == 0
        command = re.search(r"Command: `(.*)`", (tmp_path / "rep" / "report.md").read_text()).group(1)
        assert command == "neuroplast " + " ".join(argv).replace(" ".join(given), expect), command
    capsys.readouterr()


@pytest.mark.skipif(not (DATA_ROOT / "nmnist-small").is_dir(), reason="N-MNIST subset not found")
def test_report_takes_a_data_dir_for_runs_that_recorded_none(tmp_path, capsys, monkeypatch):
    """A run saved without a data folder (NEUROPLAST_DATA, or data since moved) is reported with --data-dir."""
    monkeypatch.delenv("NEUROPLAST_DATA", raising=False)
    run = tmp_path / "run"
    assert main(["train", "--task", "nmnist", "--data-dir", str(DATA_ROOT), "--net", "2x34x34-16-10", "--time-steps",
                 "4", "--epochs", "1", "--save", str(run), "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "data_dir": None}))
    capsys.readouterr()
    argv = ["report", str(run), "--out", str(tmp_path / "rep"), "--grad-batches", "1", "--hw", ""]
    _report_fails(capsys, *argv[1:], match=r"pass --data-dir DIR or set NEUROPLAST_DATA")
    assert main([*argv, "--data-dir", str(DATA_ROOT)]) == 0
    assert (tmp_path / "rep" / "report_raster.png").is_file()
