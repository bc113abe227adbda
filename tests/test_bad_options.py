"""Bad option values are one-line errors (exit 2) before any training: non-finite numbers and empty
options in method/estimator specs, --reset soft on a chip, absurd sizes, and chip files whose
[chip] sources/estimated are not lists of strings."""
import re

import pytest
from conftest import ROOT

from neuroplast.chip.hardware import load_chip
from neuroplast.cli import main
from neuroplast.errors import SpecError
from neuroplast.registry import parse_options
from neuroplast.spec import TrainConfig

TRAIN = ["train", "--task", "digits", "--net", "64-16-10", "--epochs", "1", "--no-progress"]
HUGE = "99999999999999999999"


def _bad_input(capsys, *argv, match):
    """``argv`` exits 2 with one line on stderr matching ``match``, nothing on stdout, no traceback."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, (code, err)
    assert re.search(match, err), err


@pytest.mark.parametrize("flags,match", [
    (["--method", "opzo:sigma=inf"], r"opzo: sigma must be a finite number, got inf"),
    (["--method", "zo:sigma=inf"], r"zo: sigma must be a finite number, got inf"),
    (["--method", "zo:sigma=1e400"], r"zo: sigma must be a finite number, got 1e400"),
    (["--method", "opzo:sigma=0.5,beta=nan"], r"opzo: beta must be a finite number, got nan"),
    (["--method", "opzo+ll:sigma=-inf"], r"opzo\+ll: sigma must be a finite number, got -inf"),
    (["--estimator", "asgl:alpha=inf"], r"asgl: alpha must be a finite number, got inf"),
    (["--estimator", "localzo:delta=inf"], r"localzo: delta must be a finite number, got inf"),
    (["--precision", "loihi2", "--method", "opzo:sigma=inf"], r"opzo: sigma must be a finite number, got inf"),
])
def test_non_finite_option_values_are_bad_input_before_training(tmp_path, capsys, flags, match):
    _bad_input(capsys, *TRAIN, *flags, "--save", str(tmp_path / "run"), match=match)
    assert not (tmp_path / "run").exists()


def test_non_finite_option_in_a_task_file_is_bad_input(tmp_path, capsys):
    task = tmp_path / "t.toml"
    task.write_text('dataset = "digits"\nnet = "64-16-10"\nepochs = 1\nmethod = "opzo:sigma=inf"\n')
    _bad_input(capsys, "train", "--task", str(task), "--no-progress", match=r"opzo: sigma must be a finite number")


@pytest.mark.parametrize("flags,match", [
    (["--methods", "bptt", "opzo:sigma=inf"], r"must be a finite number, got inf"),
    (["--methods", "bptt", "--estimator", "asgl:alpha=inf"], r"must be a finite number, got inf"),
    (["--methods", "bptt", "--estimator", "asgl:alpha=-1"], r"asgl needs an initial width alpha > 0, got -1"),
    (["--methods", "bptt", "--estimator", "localzo:m=0"], r"localzo needs an integer number of samples m >= 1"),
])
def test_compare_with_a_bad_option_leaves_no_run_folders(tmp_path, capsys, flags, match):
    _bad_input(capsys, "compare", "--net", "64-16-10", "--epochs", "1", "--seeds", "1", "--no-progress",
               "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), *flags, match=match)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags,match", [
    (["--method", "opzo:sigma=0.5,,beta=0.9"], r"empty option \(option 2, between commas\) in 'opzo:sigma=0.5,,beta=0.9'"),
    (["--method", "opzo:sigma=0.5,"], r"empty option \(option 2, between commas\)"),
    (["--estimator", "sigmoid:,k=4"], r"empty option \(option 1, between commas\)"),
    (["--method", "opzo:"], r"'opzo:' has nothing after ':'; write opzo or opzo:key=value"),
    (["--method", "opzo+ll:"], r"'opzo\+ll:' has nothing after ':'"),
])
def test_empty_options_are_bad_input(capsys, flags, match):
    _bad_input(capsys, *TRAIN, *flags, match=match)


def test_the_spec_parser_still_reads_good_specs():
    assert parse_options("opzo") == ("opzo", {})
    assert parse_options(" OPZO:sigma=0.5, beta=9e-1 ,noise=gaussian") == (
        "opzo", {"sigma": 0.5, "beta": 0.9, "noise": "gaussian"})
    with pytest.raises(SpecError, match="finite"):
        parse_options("localzo:delta=Infinity")


def test_on_chip_training_refuses_soft_reset(tmp_path, capsys):
    _bad_input(capsys, *TRAIN, "--precision", "loihi2", "--method", "opzo", "--reset", "soft",
               "--save", str(tmp_path / "run"),
               match=r"--precision loihi2 trains Loihi's LIF, which resets to 0: use --reset hard")
    assert not (tmp_path / "run").exists()


def test_on_chip_noise_too_large_for_a_graded_spike_is_bad_input(capsys):
    _bad_input(capsys, *TRAIN, "--precision", "loihi2", "--method", "opzo:sigma=1e300",
               match=r"on-chip opzo: sigma=1e\+300 gives noise larger than a loihi2 graded spike holds; use sigma <=")


@pytest.mark.parametrize("flags,match", [
    (["--time-steps", HUGE], rf"time_steps must be between 1 and 1000000, got {HUGE}"),
    (["--batch-size", HUGE], rf"batch_size must be between 1 and 1000000, got {HUGE}"),
    (["--net", f"64-{HUGE}-10"], rf"network '64-{HUGE}-10': layer '{HUGE}' has a size over 1000000"),
    (["--net", "64-" + "9" * 5000 + "-10"], r"has a size over 1000000"),   # beyond int()'s 4300 digits
    (["--net", f"1x8x8-{HUGE}C3-FC"], rf"layer '{HUGE}C3' has a size over 1000000"),
    (["--estimator", f"localzo:m={HUGE}"], r"localzo needs an integer number of samples m >= 1 and <= 1000000"),
])
def test_absurd_sizes_are_bad_input(capsys, flags, match):
    _bad_input(capsys, *TRAIN, *flags, match=match)


@pytest.mark.parametrize("argv,match", [
    (["compare", "--net", "64-16-10", "--methods", "bptt", "--seeds", HUGE], rf"--seeds must be between 1 and 1000000, got {HUGE}"),
    (["compare", "--net", "64-16-10", "--methods", "bptt", "--probe-batches", HUGE], r"--probe-batches must be between 1 and"),
    (["probe-gradients", "--net", "64-16-10", "--batches", HUGE], rf"--batches must be between 1 and 1000000, got {HUGE}"),
    (["import", "x.net", "--time-steps", HUGE], rf"--time-steps must be between 1 and 1000000, got {HUGE}"),
    (["chip", "eval", "run", "--limit", HUGE], rf"--limit must be between 1 and 1000000, got {HUGE}"),
    (["lava", "run", "run", "--steps", HUGE], rf"--steps must be between 1 and 1000000, got {HUGE}"),
    (["lava", "run", "run", "--samples", "0"], r"--samples must be >= 1, got 0"),
])
def test_absurd_counts_of_other_commands_are_bad_input(tmp_path, monkeypatch, capsys, argv, match):
    """Checked before anything is read or trained (the run and file named here do not exist)."""
    monkeypatch.chdir(tmp_path)
    _bad_input(capsys, *argv, match=match)
    assert list(tmp_path.iterdir()) == []


def test_absurd_counts_in_bench_and_meta_tables_are_bad_input():
    from neuroplast.optim.bench import BenchConfig
    from neuroplast.optim.meta_config import MetaConfig
    with pytest.raises(SpecError, match=rf"\[bench\] seeds must be between 1 and 1000000, got {HUGE}"):
        BenchConfig.from_dict({"seeds": int(HUGE)})
    with pytest.raises(SpecError, match=rf"meta meta_iters must be between 1 and 1000000, got {HUGE}"):
        MetaConfig(meta_iters=int(HUGE)).validate()


def test_absurd_epochs_are_bad_input():
    """Checked on the config (a CLI test without the check would train for 10^20 epochs)."""
    with pytest.raises(SpecError, match=rf"epochs must be between 1 and 1000000, got {HUGE}"):
        TrainConfig(net="64-16-10", epochs=int(HUGE)).resolved()
    assert TrainConfig(net="64-16-10", epochs=1_000_000).resolved().epochs == 1_000_000


def test_absurd_time_steps_in_a_task_file_are_bad_input(tmp_path, capsys):
    task = tmp_path / "t.toml"
    task.write_text('dataset = "digits"\nnet = "64-16-10"\ntime_steps = 9223372036854775807\n')
    _bad_input(capsys, "train", "--task", str(task), "--no-progress", match=r"time_steps must be between 1 and")


def test_a_dropout_rate_with_many_digits_is_not_a_size(capsys):
    """Only sizes are bounded: the digits of D0.<many> are a rate (checked as one by the network parser)."""
    _bad_input(capsys, *TRAIN, "--net", "64-D0.99999999999999999999-16-10", match=r"dropout rate must be in \[0, 1\)")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A saved 1-epoch digits run (64-16-10)."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--net", "64-16-10", "--epochs", "1", "--save", str(run), "--no-progress"]) == 0
    return run


def _chip_file(tmp_path, key, value):
    """loihi2.toml with [chip] ``key`` set to ``value`` (TOML text)."""
    text = (ROOT / "hardware_models" / "loihi2.toml").read_text()
    text, n = re.subn(rf"^{key} = \[.*?\]\n", f"{key} = {value}\n", text, count=1, flags=re.S | re.M)
    assert n == 1
    (tmp_path / "chip.toml").write_text(text)
    return tmp_path / "chip.toml"


BAD_LISTS = [("estimated", "5"), ("sources", "5"), ("estimated", '"energy.*"'), ("sources", '["ok", 3]')]


@pytest.mark.parametrize("key,value", BAD_LISTS)
@pytest.mark.parametrize("command", [["chip", "eval"], ["cost"]])
def test_chip_file_lists_that_are_not_lists_of_strings_are_bad_input(tiny_run, tmp_path, capsys, key, value,
                                                                     command):
    path = _chip_file(tmp_path, key, value)
    _bad_input(capsys, *command, str(tiny_run), "--hw", str(path),
               match=rf"chip file .*chip.toml: \[chip\] {key} must be a list of strings")


@pytest.mark.parametrize("key,value", BAD_LISTS)
def test_the_chip_loader_checks_its_lists(tmp_path, key, value):
    with pytest.raises(SpecError, match=rf"chip file .*chip.toml: \[chip\] {key} must be a list of strings, e\.g\."):
        load_chip(_chip_file(tmp_path, key, value))
    good = load_chip(_chip_file(tmp_path, key, '["energy.*"]'))
    assert getattr(good, key) == ("energy.*",)
