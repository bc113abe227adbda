"""CLI commands of the learned optimizers: ``meta-train`` and ``meta-bench`` (thin wrappers)."""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import MetaFolderError, SpecError, UserError
from .fileio import check_output_dir
from .spec import read_toml

#: flag -> (MetaConfig key, type, help)
_META_FLAGS = {
    "--problem": ("problem", str, "snn (default) or quadratic"),
    "--dataset": ("dataset", str, "data set of the optimizee SNNs (default digits)"),
    "--split": ("split", str, "train (default) or val: meta-train on the validation split only"),
    "--val-fraction": ("val_fraction", float, "fraction of training data held out as validation"),
    "--estimator": ("estimator", str, "spike-gradient estimator of the optimizees (default localzo:m=2)"),
    "--method": ("method", str, "gradient estimate: bptt (through the estimator), opzo, zo, dfa"),
    "--variant": ("variant", str, "adam (default: Adam features, multiplier + log-scale out) or l2l"),
    "--unroll": ("unroll", int, "K, optimizee steps per truncated-BPTT segment (default 20)"),
    "--horizon": ("horizon", int, "optimizee steps per problem before a new one is sampled"),
    "--horizon-start": ("horizon_start", int, "curriculum: horizon grows from this over the first half"),
    "--meta-iters": ("meta_iters", int, "meta-gradient steps"),
    "--meta-lr": ("meta_lr", float, "Adam learning rate of the LSTM"),
    "--scale-lr": ("scale_lr", float, "Adam learning rate of the learnable log step size"),
    "--weights": ("weights", str, "meta-loss weights: log (default) | late | normalized | sum"),
    "--meta-grad": ("meta_grad", str, "meta-gradient: bptt (truncated backprop through each unroll, default) or "
                    "pes (persistent evolution strategies: no truncation bias, pes_particles trajectories)"),
    "--pes-particles": ("pes_particles", int, "PES: antithetic particles (even; default 8)"),
    "--pes-sigma": ("pes_sigma", float, "PES: std of the LSTM-parameter perturbations (default 0.01)"),
    "--eval-every": ("eval_every", int, "evaluate on held-out problem seeds every N iterations"),
    "--eval-seeds": ("eval_seeds", int, "held-out problem seeds per evaluation"),
    "--batch-size": ("batch_size", int, "optimizee mini-batch size"),
    "--time-steps": ("time_steps", int, "SNN time steps T"),
}


def load_task(path: str | Path) -> dict:
    """A TOML file with a ``[meta]`` table (MetaConfig keys) and optionally ``[bench]``."""
    path = Path(path)
    if not path.is_file() and (Path("tasks") / f"{path}.toml").is_file():
        path = Path("tasks") / f"{path}.toml"
    data = read_toml(path)
    extra = sorted(set(data) - {"meta", "bench", "title"})
    if extra:
        raise SpecError(f"{path}: unknown table(s) {extra}; a meta task file has [meta] and [bench]")
    for table in ("meta", "bench"):
        if not isinstance(data.get(table, {}), dict):
            raise SpecError(f"{path}: {table} must be a table ([{table}] with its keys below), got {data[table]!r}")
    return {"name": path.stem, "meta": data.get("meta", {}), "bench": data.get("bench", {})}


def add_parsers(sub, common) -> None:
    mt = sub.add_parser("meta-train", help="meta-train a learned (LSTM) optimizer on unrolled SNN trainings")
    mt.add_argument("--task", default=None, help="TOML file (or name under tasks/) with a [meta] table")
    for flag, (key, typ, text) in _META_FLAGS.items():
        mt.add_argument(flag, dest=key, type=typ, default=None, help=text)
    mt.add_argument("--nets", nargs="+", default=None, help="optimizee network strings (one drawn per problem)")
    mt.add_argument("--out", required=True, metavar="DIR", help="writes best.pt, last.pt, history.jsonl here")
    mt.add_argument("--resume", action="store_true", help="continue from DIR/last.pt")
    mt.add_argument("--overwrite", action="store_true", help="start over in a DIR that holds a run")
    mt.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    common(mt)
    mb = sub.add_parser("meta-bench", help="learned optimizer vs tuned SGD/momentum/Adam/AdaGrad/RMSprop on a target "
                        "SNN; meta-trains first when the task's checkpoint is missing")
    mb.add_argument("--task", required=True, help="TOML file (or name under tasks/) with [bench] (and [meta])")
    mb.add_argument("--seeds", type=int, default=None, help="evaluation seeds (default from the task)")
    mb.add_argument("--baselines-only", action="store_true",
                    help="sweep and evaluate the hand-designed optimizers only (fills the curve cache, e.g. while "
                         "meta-training runs elsewhere); no learned rows, no meta-training")
    mb.add_argument("--learned-only", action="store_true",
                    help="evaluate the learned optimizers only (fills the curve cache beside a --baselines-only "
                         "run); no sweeps, no baseline rows")
    mb.add_argument("--out", default="reports", metavar="DIR", help="where meta_<task>.md/.json/.png go")
    mb.add_argument("--data-dir", default=None, help="folder with data sets (or set NEUROPLAST_DATA)")
    mb.add_argument("--cache", default="runs/meta_bench_cache", metavar="DIR",
                    help="reuse baseline curves computed for the same target (default runs/meta_bench_cache; '' off)")
    common(mb)


def _check_device(device: str | None) -> None:
    if device not in (None, "cpu"):
        raise UserError(f"meta-training runs on the CPU for now (--device cpu); got {device!r}")


def cmd_meta_train(args) -> dict:
    from .optim import MetaConfig, meta_train
    _check_device(args.device)
    values = dict(load_task(args.task)["meta"]) if args.task else {}
    values.update({k: getattr(args, k) for k, *_ in _META_FLAGS.values() if getattr(args, k) is not None})
    for key in ("nets", "data_dir", "seed"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    cfg = MetaConfig.from_dict(values)
    summary = meta_train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    last = summary["history"][-1] if summary["history"] else {}
    print(f"meta-train: {summary['iterations']} iterations, best held-out score {summary['best_score']:.4g} "
          f"(mean log-loss), last eval loss {last.get('loss_at')}, step size {last.get('step_size', float('nan')):.3g}, "
          f"{summary['restores']} restore(s), {summary['wall_s']:.0f} s -> {args.out}/best.pt", file=sys.stderr)
    return summary


def cmd_meta_bench(args) -> dict:
    import time

    from .optim import MetaConfig, load_checkpoint, meta_train
    from .optim.bench import BenchConfig, run_bench, write_bench_report
    _check_device(args.device)
    check_output_dir(args.out, "--out")
    if args.cache:
        check_output_dir(args.cache, "--cache")
    task = load_task(args.task)
    if not task["bench"]:
        raise UserError(f"task {args.task}: no [bench] table; meta-bench needs one with the target (dataset, net, "
                        "horizon, ...), the sweeps and the learned checkpoints: see tasks/meta_digits_conv.toml")
    bench = dict(task["bench"])
    if args.seeds is not None:
        bench["seeds"] = args.seeds
    if args.data_dir is not None:
        bench["data_dir"] = args.data_dir
    if args.baselines_only and args.learned_only:
        raise UserError("--baselines-only and --learned-only exclude each other; give one (or neither: the full bench)")
    if args.baselines_only:
        bench["learned"] = {}
    if args.learned_only:
        bench["sweep"] = {}
        if not bench.get("learned"):
            raise UserError(f"--learned-only: task {args.task!r} has no learned optimizers ([bench] learned = ...)")
    cfg = BenchConfig.from_dict(bench)
    args.cache = args.cache or None
    t0 = time.perf_counter()
    for label, path in cfg.learned.items():   # the checkpoints there are read before any meta-training or sweep
        if Path(path).exists():
            load_checkpoint(path)
        elif Path(path).name not in ("best.pt", "last.pt"):
            raise UserError(f"learned optimizer {label!r}: {path} does not exist, and meta-training would write "
                            f"best.pt and last.pt; name one of them, e.g. {Path(path).parent / 'best.pt'}")
    for label, path in cfg.learned.items():
        if Path(path).is_file():
            continue
        if not task["meta"]:
            raise UserError(f"learned optimizer {label!r}: {path} does not exist and the task has no [meta] table "
                            "to train it; run `neuroplast meta-train` first")
        values = dict(task["meta"])
        if args.data_dir is not None:
            values["data_dir"] = args.data_dir
        if args.seed is not None:
            values["seed"] = args.seed
        out = Path(path).parent
        resume = (out / "last.pt").exists()
        # without last.pt or best.pt, a meta-training folder holds nothing to keep (stopped before its first checkpoint)
        fresh = not resume and not (out / "best.pt").exists()
        print(f"meta-bench: {path} missing; meta-training it in {out}", file=sys.stderr)
        try:
            meta_train(MetaConfig.from_dict(values), out, resume=resume, overwrite=fresh, progress=not args.no_progress)
        except MetaFolderError as exc:   # its advice names meta-train's --resume/--overwrite: say where they go
            raise UserError(f"learned optimizer {label!r}: meta-training it in {out}: {exc} (flags of `neuroplast "
                            f"meta-train --task {args.task} --out {out}`; then run meta-bench again)") from None
        except UserError as exc:
            raise UserError(f"learned optimizer {label!r}: meta-training it in {out}: {exc}") from None
    res = run_bench(cfg, progress=not args.no_progress, cache_dir=args.cache)
    name = task["name"] + ("_baselines" if args.baselines_only else "_learned" if args.learned_only else "")
    paths = write_bench_report(res, args.out, name, "neuroplast " + " ".join(sys.argv[1:]),
                               time.perf_counter() - t0)
    H, L = res["horizon"], res["long_horizon"]
    for r in res["table"]:
        loss_h, loss_l = r[f"loss@{H}"], r[f"loss@{L}"]
        print(f"{r['optimizer']:>18}: train loss @{H} {loss_h[0] if loss_h else float('nan'):.4f}, "
              f"@{L} {loss_l[0] if loss_l else float('nan'):.4f}", file=sys.stderr)
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return {k: res[k] for k in ("horizon", "long_horizon", "tuned_lr", "table", "learned")}


HANDLERS = {"meta-train": cmd_meta_train, "meta-bench": cmd_meta_bench}
