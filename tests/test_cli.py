"""Command line: the demo's accuracy, JSON output, run directories, exit codes, bad input."""
import json
import re

import pytest
from conftest import DATA_ROOT, ROOT

from neuroplast.cli import main
from neuroplast.errors import SpecError, TrainingDiverged
from neuroplast.experiment import train
from neuroplast.spec import TrainConfig

NMNIST = DATA_ROOT / "nmnist-small"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_reaches_95_percent_and_prints_json(capsys):
    code, out, err = _run(capsys, "demo", "--json", "--no-progress")
    assert code == 0
    summary = json.loads(out)
    for key in ("task", "net", "method", "epochs", "test_acc", "train_loss", "firing_rates", "wall_s"):
        assert key in summary
    assert summary["test_acc"] >= 0.95, summary
    assert 0 < summary["firing_rates"]["dense1"] < 1
    assert "test accuracy" in err


def test_train_saves_run_dir_and_refuses_to_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--task", "digits", "--net", "64-32-10", "--epochs", "2", "--save", str(run), "--no-progress"]
    assert _run(capsys, *args)[0] == 0
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.jsonl", "summary.json", "weights.pt"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "val_acc" in rows[0]
    assert json.loads((run / "config.json").read_text())["net"] == "64-32-10"
    code, _, err = _run(capsys, *args)
    assert code == 2 and "--overwrite" in err
    assert _run(capsys, *args, "--overwrite")[0] == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_seed_makes_runs_repeatable(capsys):
    args = ["train", "--net", "64-32-10", "--epochs", "1", "--json", "--no-progress", "--seed", "3"]
    a = json.loads(_run(capsys, *args)[1])
    b = json.loads(_run(capsys, *args)[1])
    assert a["test_acc"] == b["test_acc"] and a["train_loss"] == b["train_loss"]


@pytest.mark.parametrize("argv,match", [
    (["train", "--method", "backprop"], "valid methods: bptt, dfa, fa, opzo, ottt, zo"),
    (["train", "--estimator", "magic"], "valid estimators"),
    (["train", "--task", "cifar"], "valid: data sets digits"),
    (["train", "--net", "64-10x-10"], r"layer 2 \('10x'\)"),
    (["train", "--net", "64-0-10"], r"layer 2 \('0'\): the width must be >= 1"),
    (["train", "--net", "1x8x8-0C3-FC"], r"the channels must be >= 1"),
    (["train", "--net", "1x8x8-4C0-FC"], r"the kernel size must be >= 1"),
    (["train", "--net", "1x8x8-4C3-AP0-FC"], r"the pooling size must be >= 1"),
    (["train", "--optimizer", "lbfgs"], "valid optimizers"),
    (["train", "--encoding", "morse"], "valid"),
    (["train", "--device", "cuda:7"], "cuda|CUDA|device"),
    (["train", "--task", "mnist", "--data-dir", "/nonexistent/dir"], "/nonexistent/dir"),
])
def test_bad_input_exits_2_with_a_message(capsys, argv, match):
    code, out, err = _run(capsys, *argv, "--epochs", "1", "--no-progress")
    assert code == 2 and out == ""
    assert re.search(match, err), err


def test_a_cuda_device_beyond_the_machine_is_bad_input(monkeypatch):
    """On a machine with one GPU (simulated here), cuda:7 is a clear UserError (exit 2), cuda:0 a device."""
    import torch

    from neuroplast.errors import UserError
    from neuroplast.experiment import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"1 CUDA device\(s\): use cuda:0"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda", 0) and resolve_device("cuda").type == "cuda"


def test_task_file_and_flags_override(tmp_path, capsys):
    task = tmp_path / "mine.toml"
    task.write_text('[data]\ndataset = "digits"\ntime_steps = 2\n[net]\nnet = "64-16-10"\n[train]\nepochs = 3\n')
    code, out, _ = _run(capsys, "train", "--task", str(task), "--epochs", "1", "--json", "--no-progress")
    s = json.loads(out)
    assert code == 0 and s["task"] == "mine" and s["net"] == "64-16-10" and s["epochs"] == 1 and s["time_steps"] == 2
    task.write_text('[train]\nepoch = 3\n')
    code, _, err = _run(capsys, "train", "--task", str(task))
    assert code == 2 and "unknown key(s) ['epoch']" in err


def test_shipped_task_files_parse(capsys):
    from neuroplast.cli_meta import load_task
    from neuroplast.optim import MetaConfig
    from neuroplast.optim.bench import BenchConfig
    from neuroplast.spec import load_task_file
    for path in (ROOT / "tasks").glob("*.toml"):
        if path.stem.startswith("meta_"):
            task = load_task(path)
            MetaConfig.from_dict(task["meta"])
            BenchConfig.from_dict(task["bench"])
            with pytest.raises(SpecError, match="meta-bench"):
                load_task_file(path)
        else:
            TrainConfig(**load_task_file(path)).resolved()


def test_nan_loss_stops_with_epoch_step_and_lr(tmp_path):
    cfg = TrainConfig(net="64-32-10", epochs=2, optimizer="sgd", lr=1e30, momentum=0.0, schedule="none")
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+ \(learning rate 1e\+30\)"):
        train(cfg, save=tmp_path / "run", progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_nan_loss_exit_code_is_1(capsys):
    code, _, err = _run(capsys, "train", "--net", "64-32-10", "--optimizer", "sgd", "--lr", "1e30",
                        "--schedule", "none", "--epochs", "1", "--no-progress")
    assert code == 1 and "learning rate" in err


def test_ottt_trains_digits(capsys):
    code, out, _ = _run(capsys, "train", "--method", "ottt", "--net", "64-128-10", "--epochs", "8",
                        "--batch-size", "32", "--lr", "2e-3", "--json", "--no-progress")
    assert code == 0 and json.loads(out)["test_acc"] >= 0.90


def test_conv_net_trains_digits(capsys):
    code, out, _ = _run(capsys, "train", "--net", "1x8x8-16C3-AP2-FC", "--epochs", "4", "--batch-size", "32",
                        "--lr", "2e-3", "--json", "--no-progress")
    s = json.loads(out)
    assert code == 0 and s["test_acc"] >= 0.85 and set(s["firing_rates"]) == {"conv1"}


@pytest.mark.skipif(not NMNIST.is_dir(), reason="N-MNIST subset not found")
def test_nmnist_events_train_end_to_end(capsys):
    code, out, _ = _run(capsys, "train", "--task", "nmnist", "--data-dir", str(NMNIST.parent), "--net",
                        "2x34x34-64-10", "--time-steps", "10", "--epochs", "3", "--batch-size", "32",
                        "--json", "--no-progress")
    s = json.loads(out)
    assert code == 0 and s["test_acc"] >= 0.5, s  # 100 test samples; chance is 0.1


def test_sigterm_leaves_no_half_written_run_dir(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    proc = subprocess.Popen([sys.executable, "-m", "neuroplast", "train", "--net", "64-256-10", "--epochs", "200",
                             "--save", str(tmp_path / "run"), "--no-progress"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(tmp_path.iterdir()):
        time.sleep(0.1)  # wait until training has started (the temporary run folder exists)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "interrupted" in err, (proc.returncode, err[-2000:])
    assert list(tmp_path.iterdir()) == []


def test_written_files_have_normal_permissions(tmp_path, capsys):
    import os
    import stat
    run = tmp_path / "run"
    assert main(["train", "--net", "64-16-10", "--epochs", "1", "--save", str(run), "--no-progress"]) == 0
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(run.stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((run / "config.json").stat().st_mode) == 0o666 & ~mask


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A saved 1-epoch digits run (64-16-10) that tests copy and break."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--net", "64-16-10", "--epochs", "1", "--save", str(run), "--no-progress"]) == 0
    return run


def _copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def _bad_input(capsys, *argv, match):
    """Exit code 2, nothing on stdout, one line on stderr that matches ``match``."""
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == "", (code, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    return err


@pytest.mark.parametrize("toml,match", [
    ('[train]\nepochs = "x"\n', r"epochs must be an integer, got 'x'"),
    ('[train]\nlr = "fast"\n', r"lr must be a number"),
    ('[train]\nbatch_size = 2.5\n', r"batch_size must be an integer, got 2.5"),
    ('[train]\nepochs = true\n', r"epochs must be an integer, got True"),
    ('net = 64\n', r"net must be a string"),
    ('[data]\ndataset = ["digits"]\n', r"dataset must be a string"),
    ('compiled = 1\n', r"compiled must be true or false"),
    ('[train]\nmomentum = -1\n', r"momentum must be in \[0, 1\)"),
    ('[train]\nmomentum = nan\n', r"momentum must be a finite number"),
    ('[train]\nweight_decay = -0.5\n', r"weight_decay must be >= 0"),
    ('[train]\nlr = inf\n', r"lr must be a finite number"),
])
def test_task_file_values_are_type_and_range_checked(tmp_path, capsys, toml, match):
    task = tmp_path / "t.toml"
    task.write_text(toml)
    _bad_input(capsys, "train", "--task", str(task), "--epochs", "1", "--no-progress", match=match)


@pytest.mark.parametrize("flags,match", [
    (["--weight-decay", "-1"], r"weight_decay must be >= 0, got -1"),
    (["--weight-decay", "nan"], r"weight_decay must be a finite number"),
    (["--weight-decay", "inf"], r"weight_decay must be a finite number"),
    (["--lr", "inf"], r"lr must be a finite number"),
    (["--lr", "nan"], r"lr must be a finite number"),
    (["--lr", "-1"], r"lr must be > 0"),
])
def test_optimizer_numbers_are_checked_before_training(capsys, flags, match):
    _bad_input(capsys, "train", "--net", "64-16-10", "--optimizer", "sgd", "--epochs", "1", "--no-progress", *flags,
               match=match)


@pytest.mark.parametrize("config,match", [
    ("[1, 2]", r"config.json is not a run configuration .* list"),
    ('"digits"', r"config.json is not a run configuration .* str"),
    (None, r"config.json: epochs must be an integer, got 'x'"),
    ("{not json", r"config.json: a run file is corrupt"),
])
@pytest.mark.parametrize("command", [["probe-gradients", "--batches", "1", "--from-run"], ["chip", "eval"], ["cost"],
                                     ["report", "--grad-batches", "0", "--hw", ""]])
def test_a_broken_run_config_is_bad_input_for_every_command(tiny_run, tmp_path, capsys, config, match, command):
    run = _copy_run(tiny_run, tmp_path / "run")
    if config is None:
        values = json.loads((run / "config.json").read_text())
        config = json.dumps({**values, "epochs": "x"})
    (run / "config.json").write_text(config)
    _bad_input(capsys, *command, str(run), "--no-progress", match=match)


BINARY = b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01binary"


@pytest.mark.parametrize("make,match", [
    (lambda p: p.mkdir(), r"task file .*t.toml is a folder"),
    (lambda p: p.write_bytes(BINARY), r"task file .*t.toml is not a text file"),
])
@pytest.mark.parametrize("command", [["train"], ["meta-train", "--out", "never"], ["meta-bench"]])
def test_unreadable_task_files_are_bad_input(tmp_path, capsys, make, match, command):
    make(tmp_path / "t.toml")
    _bad_input(capsys, *command, "--task", str(tmp_path / "t.toml"), "--no-progress", match=match)


@pytest.mark.parametrize("make,match", [
    (lambda p: p.mkdir(), r"chip file .*chip.toml is a folder"),
    (lambda p: p.write_bytes(BINARY), r"chip file .*chip.toml is not a text file"),
    (lambda p: p.write_text(open(ROOT / "hardware_models" / "loihi1.toml").read().replace(
        "synaptic_op = 23.6", "synaptic_op = nan")), r"\[energy\] synaptic_op must be a finite number, got nan"),
])
def test_cost_with_an_unusable_chip_file_is_bad_input(tiny_run, tmp_path, capsys, make, match):
    make(tmp_path / "chip.toml")
    _bad_input(capsys, "cost", str(tiny_run), "--hw", str(tmp_path / "chip.toml"), "--json", match=match)


@pytest.mark.parametrize("net,match", [
    ("64-100-10", r"parameter layers.dense1.op.weight has shape \[16, 64\] in the weights but \[100, 64\]"),
    ("64-16-16-10", r"the weights have no layers.dense2.op.weight"),
])
def test_probe_from_run_with_another_network_is_one_line(tiny_run, capsys, net, match):
    _bad_input(capsys, "probe-gradients", "--from-run", str(tiny_run), "--net", net, "--batches", "1",
               "--no-progress", match=match)


@pytest.mark.parametrize("command", [["chip", "eval"], ["cost"], ["report", "--hw", "", "--grad-batches", "0"]])
def test_weights_that_do_not_fit_the_config_are_one_line(tiny_run, tmp_path, capsys, command):
    run = _copy_run(tiny_run, tmp_path / "run")
    values = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**values, "net": "64-100-10"}))
    _bad_input(capsys, *command, str(run), match=r"weights.pt does not fit the network '64-100-10' of its config: "
               r"parameter layers.dense1.op.weight has shape \[16, 64\] in the weights but \[100, 64\]")


TINY_BENCH = '[bench]\ndataset = "digits"\nnet = "64-16-10"\nhorizon = 2\nlong = 1\nseeds = 1\ntest_samples = 10\n' \
             'eval_points = 1\n[bench.sweep]\nsgd = [0.1]\n'


@pytest.mark.parametrize("argv,match", [
    (["probe-gradients", "--batches", "1", "--out", "{file}"], r"--out .*FILE: .*FILE is a file, not a folder"),
    (["compare", "--methods", "bptt", "--seeds", "1", "--net", "64-16-10", "--epochs", "1", "--out", "{file}"],
     r"--out .*FILE is a file"),
    (["compare", "--methods", "bptt", "--seeds", "1", "--net", "64-16-10", "--epochs", "1", "--runs-dir", "{file}"],
     r"--runs-dir .*FILE is a file"),
    (["meta-bench", "--task", "{task}", "--baselines-only", "--out", "{file}"], r"--out .*FILE is a file"),
    (["meta-bench", "--task", "{task}", "--baselines-only", "--cache", "{file}/cache"], r"--cache .*FILE is a file"),
    (["report", "{run}", "--hw", "", "--grad-batches", "0", "--out", "{file}"], r"--out .*FILE is a file"),
    (["meta-train", "--nets", "64-16-10", "--meta-iters", "1", "--out", "{file}"], r"FILE is a file, not a folder"),
    (["train", "--net", "64-16-10", "--epochs", "1", "--save", "{file}/sub"], r"run directory .*FILE/sub: .*FILE is a file"),
    (["export", "{run}", "{dir}"], r"output file .*existing is a folder; give a file name"),
    (["export", "{run}", "{file}/x.nir"], r"output file .*FILE/x.nir: .*FILE is a file, not a folder"),
])
def test_unusable_output_paths_fail_before_any_work(tiny_run, tmp_path, capsys, argv, match):
    file, task, folder = tmp_path / "FILE", tmp_path / "tiny.toml", tmp_path / "existing"
    file.write_text("keep me")
    task.write_text(TINY_BENCH)
    folder.mkdir()
    argv = [a.format(file=file, task=task, run=tiny_run, dir=folder) for a in argv]
    _bad_input(capsys, *argv, "--no-progress", match=match)
    assert file.read_text() == "keep me" and list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "existing", "tiny.toml"]


@pytest.mark.parametrize("name", ["net.nir", "net.net"])
def test_export_makes_missing_folders_and_replaces_a_file_only_with_overwrite(tiny_run, tmp_path, capsys, name):
    out = tmp_path / "new" / "deeper" / name
    assert _run(capsys, "export", str(tiny_run), str(out), "--json")[0] == 0 and out.stat().st_size > 0
    out.write_bytes(b"older")
    _bad_input(capsys, "export", str(tiny_run), str(out), match=r"exists; pass --overwrite")
    assert out.read_bytes() == b"older"
    assert _run(capsys, "export", str(tiny_run), str(out), "--overwrite")[0] == 0
    assert out.read_bytes() != b"older" and sorted(p.name for p in out.parent.iterdir()) == [name]


def test_a_file_system_failure_is_one_line_and_exit_1(tiny_run, tmp_path, capsys, monkeypatch):
    import errno

    import neuroplast.report

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(neuroplast.report, "write_report", full)
    code, out, err = _run(capsys, "report", str(tiny_run), "--hw", "", "--grad-batches", "0",
                          "--out", str(tmp_path / "rep"))
    assert code == 1 and out == "" and err.strip() == "neuroplast: failed: [Errno 28] No space left on device"


def test_save_dot_with_overwrite_replaces_the_run_in_the_current_folder(tiny_run, tmp_path, capsys, monkeypatch):
    run = _copy_run(tiny_run, tmp_path / "run")
    monkeypatch.chdir(run)
    code, out, err = _run(capsys, "train", "--net", "64-16-10", "--epochs", "1", "--seed", "5", "--save", ".",
                          "--overwrite", "--no-progress")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]      # no .run.old or temp folder left


def test_overwrite_replaces_run_directories_and_empty_folders_only(tmp_path, capsys):
    train = ["train", "--net", "64-16-10", "--epochs", "1", "--no-progress", "--save"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    _bad_input(capsys, *train, str(precious), "--overwrite", match=r"precious is not a neuroplast run directory "
               r"\(no config.json\)")
    assert (precious / "thesis.txt").read_text() == "years of work"
    file = tmp_path / "notes"
    file.write_text("mine")
    for extra in ([], ["--overwrite"]):
        _bad_input(capsys, *train, str(file), *extra, match=r"notes is a file, not a run directory")
    assert file.read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(capsys, *train, str(empty), "--overwrite")[0] == 0 and (empty / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "notes", "precious"]


@pytest.mark.parametrize("argv,match", [
    (["--methods", ""], r"--methods: give at least one method"),
    (["--methods", ","], r"--methods: give at least one method"),
    (["--methods", "bptt", "bptt"], r"--methods: 'bptt' is given twice"),
    (["--methods", "bptt,dfa", "dfa"], r"--methods: 'dfa' is given twice"),
    (["--methods", "readout-only"], r"'readout-only' is the control"),
    (["--methods", "bptt", "--probe-batches", "0"], r"--probe-batches must be >= 1, got 0"),
    (["--methods", "bptt", "--probe-batches", "-1"], r"--probe-batches must be >= 1, got -1"),
    (["--methods", "bptt", "--seeds", "0"], r"--seeds must be >= 1, got 0"),
])
def test_compare_bad_options_fail_before_training(tmp_path, capsys, argv, match):
    _bad_input(capsys, "compare", "--net", "64-16-10", "--epochs", "1", "--seeds", "1", *argv,
               "--out", str(tmp_path / "rep"), "--runs-dir", str(tmp_path / "runs"), "--no-progress", match=match)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny_exports(tiny_run, tmp_path_factory):
    """The tiny run exported as NIR and as netx."""
    out = tmp_path_factory.mktemp("exports")
    for name in ("net.nir", "net.net"):
        assert main(["export", str(tiny_run), str(out / name)]) == 0
    return out


def _no_cuda():
    import torch
    return not torch.cuda.is_available()


@pytest.mark.parametrize("device,match", [
    ("bogus", r"unknown device 'bogus'"),
    pytest.param("cuda", r"CUDA is not available", marks=pytest.mark.skipif(not _no_cuda(), reason="CUDA present")),
])
@pytest.mark.parametrize("argv", [["cost", "{run}"], ["export", "{run}", "{tmp}/x.nir"], ["import", "{nir}"],
                                  ["import", "{nir}", "--task", "digits"],
                                  ["report", "{run}", "--out", "{tmp}/rep", "--hw", "", "--grad-batches", "1"]])
def test_every_command_checks_its_device(tiny_run, tiny_exports, tmp_path, capsys, device, match, argv):
    argv = [a.format(run=tiny_run, tmp=tmp_path, nir=tiny_exports / "net.nir") for a in argv]
    _bad_input(capsys, *argv, "--device", device, match=match)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["net.nir", "net.net"])
@pytest.mark.parametrize("steps", ["0", "-2"])
def test_import_time_steps_must_be_positive(tiny_exports, capsys, name, steps):
    _bad_input(capsys, "import", str(tiny_exports / name), "--task", "digits", "--time-steps", steps,
               match=rf"--time-steps must be >= 1, got {steps}")



@pytest.mark.parametrize("argv,match", [
    (["build", "--timeout", "nan"], r"--timeout must be a finite number of seconds > 0, got nan"),
    (["run", "--timeout", "-1"], r"--timeout must be a finite number of seconds > 0, got -1"),
    (["run", "--timeout", "inf"], r"--timeout must be a finite number"),
    (["run", "--learn", "--lr", "nan"], r"--lr must be a finite number > 0, got nan"),
    (["run", "--learn", "--lr", "-0.5"], r"--lr must be a finite number > 0, got -0.5"),
])
def test_lava_options_are_checked(tiny_run, capsys, argv, match):
    command, *rest = argv
    _bad_input(capsys, "lava", command, str(tiny_run), *rest, match=match)


@pytest.mark.parametrize("argv,message", [
    (["train", "--data-dir", "{tmp}/none"], r"--data-dir .*none does not exist; give the folder"),
    (["train", "--data-dir", "{tmp}/file"], r"--data-dir .*file is a file; give the folder"),
    (["chip", "eval", "{tmp}", "--data-dir", "{tmp}/none"], r"--data-dir .*none does not exist"),
    (["train", "--save", ""], r"--save needs a folder name"),
    (["train", "--seed", "-1"], None),
    (["train", "--seed", str(2 ** 63)], None),
])
def test_path_and_seed_options_that_cannot_be_used_are_refused_before_any_work(argv, message, tmp_path, capsys):
    """Even for the embedded digits (which reads no folder) a --data-dir that is no folder is an error."""
    (tmp_path / "file").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--net", "64-16-10", "--epochs", "1"][:0 if argv[0] == "chip" else 4]
    if message is None:   # argparse: usage and exit 2
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and "is not in [0, 2^63)" in capsys.readouterr().err
        return
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
