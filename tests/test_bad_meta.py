"""Bad input to meta-train, meta-bench and learned-optimizer checkpoints: one line, exit code 2, nothing
written, nothing of the user's overwritten."""
import json
import pickle
import re

import pytest
import torch

from neuroplast.cli import main
from neuroplast.optim import CoordinateLSTM, save_checkpoint

#: a meta-training of seconds on noisy quadratics
QUICK = ["--problem", "quadratic", "--meta-iters", "2", "--eval-every", "2", "--eval-seeds", "1", "--horizon", "20",
         "--unroll", "10", "--no-progress"]


def _bad(capsys, argv, *patterns):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1, (code, err)
    for pattern in patterns:
        assert re.search(pattern, err), err
    return err


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _meta_run(tmp_path, capsys, name="meta", *extra):
    out = tmp_path / name
    assert main(["meta-train", *QUICK, *extra, "--out", str(out)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return out


def test_meta_train_never_writes_into_a_training_run_or_a_foreign_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--net", "64-16-10", "--epochs", "1", "--save", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for folder, kind in ((run, "a training run of `neuroplast train`"), (foreign, "a non-empty folder")):
        before = _files(folder)
        for flags in ([], ["--overwrite"], ["--resume"]):
            _bad(capsys, ["meta-train", *QUICK, "--out", str(folder), *flags],
                 re.escape(f"{folder} is {kind}, not a meta-training folder"), "give another folder")
            assert _files(folder) == before


def test_resume_needs_a_meta_training_run_and_excludes_overwrite(tmp_path, capsys):
    _bad(capsys, ["meta-train", *QUICK, "--out", str(tmp_path / "new"), "--resume"],
         r"--resume: .*new holds no meta-training run to continue; drop --resume")
    assert not (tmp_path / "new").exists()
    out = _meta_run(tmp_path, capsys)
    before = _files(out)
    _bad(capsys, ["meta-train", *QUICK, "--out", str(out), "--resume", "--overwrite"], "exclude each other")
    _bad(capsys, ["meta-train", *QUICK, "--out", str(out)], "already holds a meta-training run; pass --resume")
    assert _files(out) == before
    (out / "notes.txt").write_text("keep me")       # --resume and --overwrite of a meta-training folder still work
    _meta_run(tmp_path, capsys, "meta", "--resume", "--meta-iters", "4")
    assert [json.loads(r)["iteration"] for r in (out / "history.jsonl").read_text().splitlines()] == [0, 2, 4]
    _meta_run(tmp_path, capsys, "meta", "--overwrite")
    assert [json.loads(r)["iteration"] for r in (out / "history.jsonl").read_text().splitlines()] == [0, 2]
    assert (out / "notes.txt").read_text() == "keep me"
    (out / "last.pt").unlink()    # as if stopped before its first checkpoint
    _bad(capsys, ["meta-train", *QUICK, "--out", str(out), "--resume"], r"has no last.pt .* --overwrite")


@pytest.mark.parametrize("argv,match", [
    (["--meta-lr", "1e300"], r"meta_lr = 1e\+300 is too large \(at most 1e\+09"),
    (["--scale-lr", "1e300"], r"scale_lr = 1e\+300 is too large"),
    (["--horizon-start", "5", "--horizon", "2"], r"horizon_start \(5\) must be <= horizon \(2\)"),
    (["--seed", str(2 ** 63 - 1)], r"seed must be in \[0, 2\^40\]"),
])
def test_bad_numbers_fail_before_anything_is_written(tmp_path, capsys, argv, match):
    _bad(capsys, ["meta-train", *QUICK, *argv, "--out", str(tmp_path / "out")], match)
    assert not (tmp_path / "out").exists()


def test_a_failed_meta_training_takes_back_what_it_wrote_until_it_can_be_resumed(tmp_path, capsys, monkeypatch):
    import neuroplast.optim.meta as meta
    real = meta._segment_loss
    assert main(["meta-train", *QUICK, "--meta-grad", "pes", "--pes-particles", "2", "--pes-sigma", "1e30",
                 "--out", str(tmp_path / "new" / "meta")]) == 1         # it stops, diverged, at iteration 0
    assert re.search(r"meta-training diverged: .* or --pes-sigma \(now 1e\+30\)$", capsys.readouterr().err.strip())
    assert not (tmp_path / "new").exists()
    with monkeypatch.context() as m:   # every meta-loss non-finite
        m.setattr(meta, "_segment_loss", lambda model, problem, theta, state, t, l0, horizon, cfg, graph=True: (
            torch.tensor(float("inf"), requires_grad=True), theta, state, l0))
        (tmp_path / "empty").mkdir()
        assert main(["meta-train", *QUICK, "--out", str(tmp_path / "empty")]) == 1
        assert list((tmp_path / "empty").iterdir()) == []
    calls = {"n": 0}

    def stop_later(*args, **kwargs):   # Ctrl-C in the third segment, after last.pt of iteration 2
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(meta, "_segment_loss", stop_later)
        assert main(["meta-train", *QUICK, "--meta-iters", "4", "--out", str(tmp_path / "meta")]) == 1
    assert torch.load(tmp_path / "meta" / "last.pt", weights_only=True)["iteration"] == 2
    _meta_run(tmp_path, capsys, "meta", "--meta-iters", "4", "--resume")
    assert json.loads((tmp_path / "meta" / "summary.json").read_text())["iterations"] == 4


BENCH = '[bench]\ndataset = "digits"\nnet = "64-16-10"\nhorizon = 4\nlong = 1\nseeds = 1\ntest_samples = 10\n' \
        'eval_points = 1\nlearned = {{ x = "{path}" }}\n[bench.sweep]\nsgd = [0.1]\n'


def test_meta_bench_without_a_bench_table_says_so(tmp_path, capsys):
    task = tmp_path / "t.toml"
    task.write_text('[meta]\nproblem = "quadratic"\n')
    _bad(capsys, ["meta-bench", "--task", str(task), "--out", str(tmp_path / "rep"), "--cache", "", "--no-progress"],
         r"no \[bench\] table", r"tasks/meta_digits_conv.toml")
    assert not (tmp_path / "rep").exists()


def test_meta_bench_checks_learned_checkpoints_before_any_sweep(tmp_path, capsys, monkeypatch):
    import neuroplast.optim.bench as bench
    monkeypatch.setattr(bench, "_curve", lambda *a, **k: pytest.fail("a sweep ran before the checkpoints were read"))
    task = tmp_path / "t.toml"
    bad = tmp_path / "meta" / "last.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"\x80\x02garbage")
    task.write_text(BENCH.format(path=bad))
    argv = ["meta-bench", "--task", str(task), "--out", str(tmp_path / "rep"), "--cache", str(tmp_path / "cache"),
            "--no-progress"]
    _bad(capsys, argv, re.escape(f"{bad} is not a readable learned-optimizer checkpoint"))
    task.write_text('[meta]\nproblem = "quadratic"\n' + BENCH.format(path=tmp_path / "new" / "lstm.pt"))
    _bad(capsys, argv, r"lstm.pt does not exist, and meta-training would write best.pt and last.pt; name one")
    assert not (tmp_path / "new").exists() and not (tmp_path / "rep").exists() and not (tmp_path / "cache").exists()


def _garbage(path):
    """Files that are no checkpoint: text, a truncated checkpoint, an empty file, a pickle of protocol 4."""
    save_checkpoint(path.with_name("ok.pt"), CoordinateLSTM())
    good = path.with_name("ok.pt").read_bytes()
    return {"text": b"garbage\n", "truncated": good[:len(good) // 2], "empty": b"",
            "pickle": pickle.dumps({"a": {1, 2}}, protocol=4)}


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "pickle"])
def test_an_unreadable_learned_optimizer_is_one_line(tmp_path, capsys, kind):
    path = tmp_path / "bad.pt"
    path.write_bytes(_garbage(path)[kind])
    err = _bad(capsys, ["train", "--net", "64-16-10", "--epochs", "1", "--optimizer", f"learned:{path}",
                        "--no-progress"],
               re.escape(f"{path} is not a readable learned-optimizer checkpoint ("),
               r"\): re-run `neuroplast meta-train`$")
    assert "weights_only" not in err


def test_a_learned_optimizer_folder_or_another_lstm_is_one_line(tmp_path, capsys):
    argv = ["train", "--net", "64-16-10", "--epochs", "1", "--no-progress", "--optimizer"]
    _bad(capsys, [*argv, f"learned:{tmp_path}"], re.escape(f"{tmp_path} is a folder; give the checkpoint in it, "
                                                          f"e.g. {tmp_path / 'best.pt'}"))
    save_checkpoint(tmp_path / "ok.pt", CoordinateLSTM())
    blob = torch.load(tmp_path / "ok.pt", weights_only=True)
    blob["config"]["hidden"] = 7
    torch.save(blob, tmp_path / "other.pt")
    _bad(capsys, [*argv, f"learned:{tmp_path / 'other.pt'}"], r"its LSTM does not match .* size mismatch")


def test_resume_of_an_unreadable_last_pt_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = _meta_run(tmp_path, capsys)
    (out / "last.pt").write_bytes(b"\x80\x02garbage")
    before = _files(out)
    err = _bad(capsys, ["meta-train", *QUICK, "--out", str(out), "--resume", "--meta-iters", "4"],
               re.escape(f"{out / 'last.pt'} is not a readable learned-optimizer checkpoint"))
    assert "weights_only" not in err and _files(out) == before
    save_checkpoint(out / "last.pt", CoordinateLSTM())    # a learned optimizer, but no meta-training state
    before = _files(out)
    _bad(capsys, ["meta-train", *QUICK, "--out", str(out), "--resume", "--meta-iters", "4"],
         r"without meta-training state \(no opt\).* --overwrite")
    assert _files(out) == before


META_QUICK = '[meta]\nproblem = "quadratic"\nmeta_iters = 2\neval_every = 2\neval_seeds = 1\nhorizon = 20\nunroll = 10\n'


def test_meta_bench_starts_over_in_a_meta_folder_left_before_its_first_checkpoint(tmp_path, capsys):
    """A meta-training killed before its first last.pt leaves config.json: nothing to keep, so meta-bench
    meta-trains there instead of asking for meta-train's --overwrite, which it does not have."""
    out = _meta_run(tmp_path, capsys)
    for p in out.iterdir():
        if p.name != "config.json":
            p.unlink()
    task = tmp_path / "t.toml"
    task.write_text(META_QUICK + BENCH.format(path=out / "best.pt"))
    assert main(["meta-bench", "--task", str(task), "--out", str(tmp_path / "rep"), "--cache", "",
                 "--no-progress"]) == 0, capsys.readouterr().err
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file() and list((tmp_path / "rep").glob("*.md"))


def test_meta_bench_says_where_meta_trains_flags_go(tmp_path, capsys):
    """A checkpoint to continue whose settings differ from the task's [meta]: the advice names meta-train's
    --overwrite, so the message says it belongs to `neuroplast meta-train`, and nothing is written."""
    out = _meta_run(tmp_path, capsys)
    (out / "best.pt").unlink()
    before = _files(out)
    task = tmp_path / "t.toml"
    task.write_text(META_QUICK.replace("horizon = 20", "horizon = 30") + BENCH.format(path=out / "best.pt"))
    code = main(["meta-bench", "--task", str(task), "--out", str(tmp_path / "rep"), "--cache", "", "--no-progress"])
    out_text, err = capsys.readouterr()
    assert code == 2 and out_text == "" and "Traceback" not in err, (code, err)
    last = err.strip().splitlines()[-1]   # after the line that says it is meta-training
    assert last.startswith(f"neuroplast: error: learned optimizer 'x': meta-training it in {out}: --resume:"), last
    assert "horizon = 20" in last and last.endswith(
        f"(flags of `neuroplast meta-train --task {task} --out {out}`; then run meta-bench again)"), last
    assert _files(out) == before and not (tmp_path / "rep").exists()
