"""Command-line interface (thin: parse, call experiment functions, print).

Exit codes: 0 ok, 2 bad input (UserError), 1 failure. ``--json`` prints one JSON object on stdout;
human-readable text always goes to stderr."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from . import cli_chip, cli_export, cli_lava, cli_meta
from .data import dataset_names
from .errors import Interrupted, NeuroplastError, UserError
from .fileio import check_output_dir, check_output_file, json_finite
from .limits import check_count
from .spec import TrainConfig, config_from_dict, load_task_file

#: the demo: digits, 64-256-10 SNN, BPTT, reaches >= 95% test accuracy in well under 2 min on 2 cores
DEMO = {"task": "demo", "dataset": "digits", "net": "64-256-10", "method": "bptt", "time_steps": 4,
        "epochs": 20, "batch_size": 32, "lr": 2e-3, "optimizer": "adam"}


def seed_arg(text: str) -> int:
    """A seed option: an integer in [0, 2^63) (what torch's generators take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 2^63)")
    return value


_TRAIN_FLAGS = {  # flag -> (config key, type, help)
    "--net": ("net", str, "network string, e.g. 784-800-800-10 or 32C3-AP2-64C3-AP2-FC"),
    "--method": ("method", str, "learning rule: bptt | ottt | fa | dfa | zo | opzo, with options, "
                 "e.g. opzo:sigma=0.5,beta=0.99"),
    "--estimator": ("estimator", str, "spike-gradient estimator, e.g. sigmoid:k=4, triangle:w=1, "
                    "localzo:m=5,delta=0.5,dist=normal, asgl:alpha=0.25,p=0.5"),
    "--encoding": ("encoding", str, "input encoding: direct | poisson | frames"),
    "--time-steps": ("time_steps", int, "number of time steps T"),
    "--epochs": ("epochs", int, "training epochs"),
    "--batch-size": ("batch_size", int, "mini-batch size"),
    "--optimizer": ("optimizer", str, "sgd | adam | adamw | rmsprop | adagrad | learned:PATH (a meta-train checkpoint)"),
    "--lr": ("lr", float, "learning rate"),
    "--weight-decay": ("weight_decay", float, "weight decay"),
    "--schedule": ("schedule", str, "learning-rate schedule: cosine | none"),
    "--mse-weight": ("mse_weight", float, "α of the (1−α)·CE + α·MSE loss"),
    "--leak": ("leak", float, "LIF leak λ"),
    "--threshold": ("threshold", float, "LIF threshold θ"),
    "--reset": ("reset", str, "hard | soft"),
    "--val-fraction": ("val_fraction", float, "fraction of training data held out for validation"),
    "--split-seed": ("split_seed", seed_arg, "seed of the train/validation/test split"),
    "--precision": ("precision", str, "float (default) or a chip (loihi2, a chip .toml): on-chip integer "
                    "learning with dfa, opzo or zo"),
    "--trainable": ("trainable", str, "all (default) or readout (control: hidden layers frozen at init)"),
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    p.add_argument("--seed", type=seed_arg, default=None, help="random seed, 0 <= N < 2^63 (default 0)")
    p.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    p.add_argument("--save", default=None, metavar="RUN_DIR", help="write config, metrics and weights here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuroplast", description="Train spiking neural networks the way "
                                     "neuromorphic chips could, and measure what it costs.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a network on a data set")
    tr.add_argument("--task", default="digits",
                    help=f"data set ({', '.join(dataset_names())}), a task name under tasks/, or a TOML file")
    for flag, (key, typ, text) in _TRAIN_FLAGS.items():
        tr.add_argument(flag, dest=key, type=typ, default=None, help=text)
    tr.add_argument("--compile", dest="compiled", action="store_true", default=None,
                    help="fuse the LIF scans: on the CPU hand-written C (built once per machine in about a second), "
                         "elsewhere torch.compile; same spikes, gradients to float rounding; MNIST conv BPTT ~1.06x "
                         "faster per step on an AMD EPYC (reports/speed.md); needs a C compiler, else runs eagerly")
    _run_flags(tr)
    _common(tr)
    demo = sub.add_parser("demo", help="train the default SNN on the embedded digits data (seconds)")
    _run_flags(demo)
    _common(demo)
    pg = sub.add_parser("probe-gradients", help="gradient mean, variance and cosine to a reference, per layer")
    pg.add_argument("--task", default="digits", help="as for train")
    for flag in ("--net", "--method", "--encoding", "--time-steps", "--batch-size", "--leak", "--threshold"):
        key, typ, text = _TRAIN_FLAGS[flag]
        pg.add_argument(flag, dest=key, type=typ, default=None, help=text)
    pg.add_argument("--estimators", nargs="+", default=None, metavar="SPEC",
                    help="estimators to probe with --method (space-separated specs)")
    pg.add_argument("--methods", nargs="+", default=None, metavar="SPEC",
                    help="learning rules to probe with --estimator, e.g. dfa zo opzo:sigma=0.5")
    pg.add_argument("--estimator", dest="estimator", default=None, help="estimator used by --methods")
    pg.add_argument("--reference", default="bptt|sigmoid:k=4", help="reference gradient as METHOD|ESTIMATOR")
    pg.add_argument("--batches", type=int, default=None, help="probe the first N batches (default: one epoch)")
    pg.add_argument("--from-run", default=None, metavar="RUN_DIR", help="probe at the weights of a saved run")
    pg.add_argument("--out", default=None, metavar="DIR", help="write gradients.md/.json/.png here")
    pg.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    _common(pg)
    cp = sub.add_parser("compare", help="train several methods side by side (with seeds and the readout-only control)")
    cp.add_argument("--task", default="digits", help="as for train")
    for flag, (key, typ, text) in _TRAIN_FLAGS.items():
        if flag not in ("--method", "--trainable"):
            cp.add_argument(flag, dest=key, type=typ, default=None, help=text)
    cp.add_argument("--methods", nargs="+", required=True, metavar="SPEC",
                    help="methods, space- or comma-separated: bptt dfa zo opzo:sigma=0.5")
    cp.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method (default 3)")
    cp.add_argument("--probe-batches", type=int, default=20, help="batches for the gradient probe")
    cp.add_argument("--out", default="reports", metavar="DIR", help="where compare_<task>.md goes")
    cp.add_argument("--runs-dir", default="runs", metavar="DIR", help="where the run directories go")
    cp.add_argument("--overwrite", action="store_true",
                    help="replace an earlier comparison of this task (its report and RUNS_DIR/compare_<task>)")
    cp.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    _common(cp)
    cli_meta.add_parsers(sub, _common)
    cli_chip.add_parsers(sub, _common)
    cli_lava.add_parsers(sub, _common)
    cli_export.add_parsers(sub, _common)
    return parser


def resolve_task(task: str) -> dict:
    """A data set name, a TOML file, or the stem of a file under ./tasks/."""
    if task in dataset_names():
        return {"task": task, "dataset": task}
    path = Path(task)
    if path.suffix == ".toml" or path.is_file():
        return load_task_file(path)
    if (Path("tasks") / f"{task}.toml").is_file():
        return load_task_file(Path("tasks") / f"{task}.toml")
    files = sorted(p.stem for p in Path("tasks").glob("*.toml")) if Path("tasks").is_dir() else []
    raise UserError(f"unknown task {task!r}; valid: data sets {', '.join(dataset_names())}"
                    + (f"; task files {', '.join(files)}" if files else "") + "; or a path to a .toml file")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if getattr(args, "from_run", None):
        values = _run_config(args.from_run)
    else:
        values = dict(DEMO) if args.command == "demo" else resolve_task(args.task)
    flags = [k for k, *_ in _TRAIN_FLAGS.values()] + ["compiled", "seed", "device", "data_dir"]
    values.update({key: getattr(args, key) for key in flags if getattr(args, key, None) is not None})
    return config_from_dict(values, source="command line")


def _run_config(run_dir: str) -> dict:
    from .runs import read_run_config
    return read_run_config(run_dir)


def _cmd_train(args) -> dict:
    from .experiment import train  # heavy import (torch) after argument parsing
    summary = train(config_from_args(args), save=args.save, overwrite=args.overwrite, progress=not args.no_progress)
    _print_summary(summary)
    return summary


def _cmd_probe(args) -> dict:
    from .probe import probe_gradients, write_probe_report
    from .runs import read_weights
    from .snn import ESTIMATORS
    if args.out:
        check_output_dir(args.out, "--out")
    cfg = config_from_args(args)
    weights = read_weights(args.from_run) if args.from_run else None
    if args.batches is not None:
        check_count("--batches", args.batches)
    estimators = args.estimators if (args.estimators or args.methods) else sorted(ESTIMATORS)
    result = probe_gradients(cfg, estimators, methods=args.methods, reference=args.reference,
                             max_batches=args.batches, weights=weights)
    for r in result["rows"]:
        print(f"{r['method'] + '|' + r['estimator']:>40} {r['layer']:>8}: mean {r['mean']:.3g}  variance {r['variance']:.3g}  "
              f"cosine {r['cosine']:.3f}", file=sys.stderr)
    if args.out:
        paths = write_probe_report(result, args.out, command="neuroplast " + " ".join(sys.argv[1:]))
        print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return result


def _print_summary(summary: dict) -> None:
    rates = ", ".join(f"{k} {v:.3f}" for k, v in summary["firing_rates"].items())
    epochs = f"{summary['epochs']} epoch" + ("s" if summary["epochs"] != 1 else "")
    print(f"{summary['task']} | {summary['net']} | {summary['method']} | {epochs}: "
          f"test accuracy {100 * summary['test_acc']:.2f}% | firing rates {rates or '-'} | "
          f"wall {summary['wall_s']:.1f} s", file=sys.stderr)


def _terminate(signum, frame):
    raise Interrupted("interrupted")  # so a killed run cleans up its half-written run directory


def _split_methods(items: list[str]) -> list[str]:
    """Space-separated specs; an item without options may also hold a comma-separated list."""
    out = []
    for item in items:
        out += [m for m in item.split(",") if m] if ":" not in item else [item]
    return out


def _check_earlier_comparison(report: Path, runs: Path, overwrite: bool) -> None:
    """UserError where an earlier comparison's report or run folders would be replaced without --overwrite."""
    check_output_file(report, "report", overwrite=overwrite)
    if runs.is_dir() and any(runs.iterdir()) and not overwrite:
        raise UserError(f"{runs} holds an earlier comparison's runs; pass --overwrite to replace them "
                        "or choose another --runs-dir")


def _cmd_compare(args) -> dict:
    from .compare import check_compare_args, compare, write_compare_report
    from .learn import make_rule
    check_output_dir(args.out, "--out")
    check_output_dir(args.runs_dir, "--runs-dir")
    methods = _split_methods(args.methods)
    check_compare_args(methods, args.seeds, args.probe_batches)
    for m in methods:
        make_rule(m)  # unknown names fail before any training
    cfg = config_from_args(args)
    _check_earlier_comparison(Path(args.out) / f"compare_{cfg.task}.md", Path(args.runs_dir) / f"compare_{cfg.task}",
                              args.overwrite)
    res = compare(cfg, methods, seeds=args.seeds, runs_dir=args.runs_dir,
                  probe_batches=args.probe_batches, progress=not args.no_progress)
    for r in res["table"]:
        print(f"{r['method']:>24}: test accuracy {100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_std']:.2f}% "
              f"({r['seeds']} seeds, {r['wall_s_mean']:.1f} s each)", file=sys.stderr)
    paths = write_compare_report(res, args.out, command="neuroplast " + " ".join(sys.argv[1:]))
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return {k: res[k] for k in ("task", "net", "epochs", "table", "probe")}


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also when it lands while an error is being handled
        print("neuroplast: interrupted", file=sys.stderr)
        return 1


def _check_paths(args) -> None:
    """UserError for path options that cannot be what they name: an empty --save, a --data-dir that is
    not a folder (also for the embedded digits, which would silently ignore it)."""
    if getattr(args, "save", None) == "":
        raise UserError("--save needs a folder name")
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        what = "is a file" if Path(data_dir).expanduser().exists() else "does not exist"
        raise UserError(f"--data-dir {data_dir} {what}; give the folder that holds the data sets "
                        "(e.g. ../shared/data)")


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    handler = {"probe-gradients": _cmd_probe, "compare": _cmd_compare, **cli_meta.HANDLERS, **cli_chip.HANDLERS, **cli_lava.HANDLERS, **cli_export.HANDLERS}.get(args.command, _cmd_train)
    try:
        _check_paths(args)
        result = handler(args)
    except UserError as exc:
        print(f"neuroplast: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted:
        print("neuroplast: interrupted", file=sys.stderr)
        return 1
    except NeuroplastError as exc:
        print(f"neuroplast: failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # backstop: a file system failure (disk full, a path that became unusable) is one line
        print(f"neuroplast: failed: {exc}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
            raise
        print("neuroplast: failed: out of memory (a tensor of this network, batch and T does not fit); use a "
              "smaller --batch-size, --time-steps or network", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(json_finite(result), sort_keys=True))   # strict JSON: null for inf/nan
    return 1 if isinstance(result, dict) and result.get("ok") is False else 0   # e.g. an equivalence check failed


if __name__ == "__main__":
    sys.exit(main())
