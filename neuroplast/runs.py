"""Run directories and what every command needs to rebuild a run: the network of a config, mini-batches
of a split, and the run directory itself (config.json, metrics.jsonl, summary.json, weights.pt,
written atomically; ``load_run`` reads one back, ``chip_view`` gives it as a chip or an exported file
takes it)."""
from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from .data import DATASETS, ENCODINGS, load_dataset, normalizes
from .data.datasets import Dataset, Split
from .errors import DataError, UserError
from .fileio import atomic_write_json, folder_problem, make_temp_dir
from .snn import LIFParams, Network, build_network
from .snn.fold_input import fold_input_norm
from .spec import TrainConfig


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def end_epoch(run: RunDir, row: dict, epochs: int, on_epoch=None, where: str = "") -> None:
    """An epoch's ``row`` (epoch, train_loss, train_acc, wall_s, [val_acc]) into the run's metrics, to
    ``on_epoch`` and to the log; ``where`` names what trained (" (loihi2)" for a chip)."""
    run.append_metrics(row)
    if on_epoch:
        on_epoch(row)
    log(f"epoch {row['epoch']}/{epochs}{where}: loss {row['train_loss']:.4f}, train acc {row['train_acc']:.4f}"
        + (f", val acc {row['val_acc']:.4f}" if "val_acc" in row else "") + f" ({row['wall_s']:.1f} s)")


def load_data(cfg: TrainConfig) -> Dataset:
    """The data set of a run as it trains on it: its split, and normalised where ``normalizes`` says."""
    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction,
                        split_seed=cfg.split_seed, time_steps=cfg.time_steps,
                        normalize=normalizes(cfg.encoding, cfg.precision))


def make_network(cfg: TrainConfig, data: Dataset, generator: torch.Generator | None = None) -> Network:
    return build_network(cfg.net, input_shape=data.input_shape, num_classes=data.num_classes,
                         lif=LIFParams(leak=cfg.leak, threshold=cfg.threshold, reset=cfg.reset),
                         estimator=cfg.estimator, generator=generator, compiled=cfg.compiled)


def batches(split: Split, batch_size: int, *, generator: torch.Generator | None = None, device=None):
    """Yield (x, y) mini-batches; shuffled when a generator is given (a CPU generator: the same order on
    every device). With ``device`` other than the split's, the split and the order go there once per pass
    and the batches are gathered there: no host-to-device copy, which waits for the GPU, per batch."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    x, y = split.x, split.y
    if device is not None and torch.device(device) != x.device:
        x, y, order = x.to(device), y.to(device), order.to(device)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


class RunDir:
    """A run directory written atomically: built in a hidden temp folder, renamed at the end.

    ``overwrite`` replaces an existing run directory (one with a config.json) only: a folder of other
    files or a file at ``path`` is refused, so that --overwrite never deletes what neuroplast did not write."""

    def __init__(self, path: str | Path | None, overwrite: bool = False):
        self.path = Path(path).resolve() if path else None   # resolved: "." and ".." have a name to rename
        self.tmp: Path | None = None
        if self.path is not None:
            shown = path
            if not self.path.name:
                raise UserError(f"run directory {shown} is the root folder; give a folder to write the run in")
            if self.path.exists() and not self.path.is_dir():
                raise UserError(f"run directory {shown} is a file, not a run directory; choose another path")
            if self.path.exists():
                if not overwrite:
                    raise UserError(f"run directory {shown} exists; pass --overwrite to replace it or choose another")
                if not (self.path / "config.json").is_file() and any(self.path.iterdir()):
                    raise UserError(f"{shown} is not a neuroplast run directory (no config.json): --overwrite replaces "
                                    "run directories (or empty folders) only; choose another path or empty it yourself")
            problem = folder_problem(Path(path).parent)
            if problem:
                raise UserError(f"run directory {shown}: {problem}; choose another path")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = make_temp_dir(self.path.parent, f".{self.path.name}.")

    def append_metrics(self, row: dict) -> None:
        if self.tmp is not None:
            with open(self.tmp / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")

    def commit(self, cfg: TrainConfig, summary: dict, net: Network) -> None:
        if self.tmp is None:
            return
        atomic_write_json(self.tmp / "config.json", cfg.to_dict())
        atomic_write_json(self.tmp / "summary.json", summary)
        torch.save({"arch": net.arch, "input_shape": list(net.input_shape), "num_classes": net.num_classes,
                    "state_dict": net.state_dict()}, self.tmp / "weights.pt")
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old")
            _remove(old)
            self.path.rename(old)
            self.tmp.rename(self.path)
            _remove(old)
        else:
            self.tmp.rename(self.path)
        self.tmp = None

    def abort(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_finite(state: dict, source: str) -> None:
    """UserError naming ``source`` and the first tensor of ``state`` that holds NaN or Inf values."""
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in state.items()
           if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())}
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        key, n = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise UserError(f"{source}: {key} holds {n} NaN/Inf values{more}; the run diverged: retrain it (lower --lr)")


def load_weights(net: Network, state, what: str, *, strict: bool = True) -> None:
    """Load ``state`` into ``net``, or a one-line UserError ``what: <the first parameter that does not fit>``
    (NaN/Inf values are refused, ``_check_finite``). ``strict=False`` still needs every weight and bias (only
    other state, e.g. an estimator's, may differ)."""
    if not isinstance(state, dict):
        raise UserError(f"{what}: the file holds no state dict of weights")
    _check_finite(state, "the weights")
    own = net.state_dict()
    problem = None
    for key, val in state.items():
        if key in own and tuple(getattr(val, "shape", ())) != tuple(own[key].shape):
            problem = (f"parameter {key} has shape {list(getattr(val, 'shape', ()))} in the weights but "
                       f"{list(own[key].shape)} in network {net.arch!r}")
            break
    if problem is None:
        needed = (lambda k: True) if strict else (lambda k: k.endswith((".weight", ".bias")))
        missing = [k for k in own if k not in state and needed(k)]
        extra = [k for k in state if k not in own and needed(k)]
        if missing:
            problem = f"the weights have no {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        elif extra:
            problem = f"network {net.arch!r} has no parameter {extra[0]} of the weights"
    if problem is None:
        try:
            net.load_state_dict(state, strict=strict)
        except (RuntimeError, TypeError, AttributeError) as exc:
            problem = str(exc).strip().splitlines()[0]
    if problem is not None:
        raise UserError(f"{what}: {problem}")


#: the files of a meta-training folder (``neuroplast meta-train --out``); the first three, which a training
#: run never has, mark one (commands on runs refuse it by name)
META_FILES = ("best.pt", "last.pt", "history.jsonl", "config.json", "summary.json")

#: what commands read from summary.json (key -> type, checked where present) and from its "activity"
SUMMARY_TYPES = {"net": str, "method": str, "epochs": int, "test_acc": float, "wall_s": float, "precision": str,
                 "trainable": str, "estimator": str, "firing_rates": dict[str, float], "activity": dict}
ACTIVITY_TYPES = {"samples": int, "updates": int, "noise_draws": int, "input_events": str,
                  "train_spikes": dict[str, float], "train_synops": dict[str, float]}


@contextmanager
def _naming(path: Path):
    """Prefix a UserError about a setting (a data file's DataError passes as it is) with ``path``."""
    try:
        yield
    except DataError:
        raise
    except UserError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise type(exc)(f"{path}: {exc}") from None


def read_run_config(run_dir: str | Path) -> dict:
    """The settings of a run directory (its config.json), checked: keys, value types, ranges and names."""
    from .learn import make_rule
    from .snn import make_estimator
    from .spec import config_from_dict
    path = Path(run_dir) / "config.json"
    if any((Path(run_dir) / name).is_file() for name in META_FILES[:3]) and not (Path(run_dir) / "weights.pt").exists():
        raise UserError(f"{run_dir} is a meta-training folder (learned optimizer), not a training run: pass a "
                        "folder written by `neuroplast train --save`")
    values = _read_json_object(path, "run configuration")
    with _naming(path):
        cfg = config_from_dict(values, source=str(path)).resolved()
        make_rule(cfg.method)
        make_estimator(cfg.estimator)
        for what, name, known in (("data set", cfg.dataset, DATASETS), ("encoding", cfg.encoding, ENCODINGS)):
            if name not in known:
                raise UserError(f"unknown {what} {name!r}; valid: {', '.join(known)}")
    return values


def _read_json_object(path: Path, what: str) -> dict:
    """The JSON object in a run's file ``path``; a UserError naming the file (and ``what`` it should be)."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{path} not found: give a run directory written by `neuroplast train --save`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: a run file is corrupt ({exc}); re-run the training with --save") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror or exc}); give a run directory written by "
                        "`neuroplast train --save`") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} is not a {what} (a JSON object; it holds a {type(values).__name__}); "
                        "re-run the training with --save")
    return values


def read_summary(run_dir: str | Path, required: tuple[str, ...] = ()) -> dict:
    """A run's summary.json, checked: a JSON object with the ``required`` keys, and the types of
    ``SUMMARY_TYPES`` and ``ACTIVITY_TYPES`` where it has those keys; a UserError naming the file otherwise."""
    from .spec import _type_ok
    path = Path(run_dir) / "summary.json"
    summary = _read_json_object(path, "run summary")
    missing = [k for k in required if k not in summary]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; give run directories written by `neuroplast train --save`")
    act = summary.get("activity") or {}
    bad = [k for k, typ in SUMMARY_TYPES.items() if k in summary and not _type_ok(summary[k], typ)]
    if isinstance(act, dict):
        bad += [f"activity.{k}" for k, typ in ACTIVITY_TYPES.items() if k in act and not _type_ok(act[k], typ)]
    if bad:
        raise UserError(f"{path}: {', '.join(bad)} of the wrong type; re-run the training with --save")
    return summary


def read_weights(run_dir: str | Path) -> dict:
    """The state dict of a run's weights.pt, checked to be finite (``_check_finite``)."""
    path = Path(run_dir) / "weights.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except FileNotFoundError:
        raise UserError(f"{path} not found; re-run the training with --save") from None
    except Exception as exc:  # truncated or foreign file: torch raises several types
        raise UserError(f"{path} is not a neuroplast weights file ({type(exc).__name__}); "
                        "re-run the training with --save") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a neuroplast weights file (no state dict); re-run the training with --save")
    _check_finite(state, str(path))
    return state


def load_run(run_dir: str | Path, data_dir: str | None = None) -> tuple[TrainConfig, Network, Dataset]:
    """(config, network with the trained weights, data set) of a run directory written by train --save."""
    from .spec import config_from_dict
    run_dir = Path(run_dir)
    values = read_run_config(run_dir)
    if data_dir is not None:
        values["data_dir"] = data_dir
    state = read_weights(run_dir)
    with _naming(run_dir / "config.json"):
        cfg = config_from_dict(values, source=str(run_dir / "config.json")).resolved()
        data = load_data(cfg)
        net = make_network(cfg, data)
    load_weights(net, state, f"{run_dir / 'weights.pt'} does not fit the network {cfg.net!r} of its config")
    net.eval()
    return cfg, net, data


def chip_view(net: Network, data: Dataset) -> tuple[Network, Dataset]:
    """A run as a chip or an exported file takes it: its inputs as intensities in [0, 1] (``Dataset.intensities``)
    and its network with the data set's input normalisation folded into the first synaptic layer
    (``snn.fold_input.fold_input_norm``), so that network(intensities) = the trained network(normalised inputs).
    ``(net, data)`` themselves when the run was not trained on normalised inputs. Every command that quantises
    a run (chip eval, lava build/run, netx export) goes through here, with one exception: ``lava run --learn``
    starts the on-chip learner from the trained, unfolded weights (its layers have no biases to hold the fold)
    and feeds them intensities, which it warns about for a normalised run (``cli_lava``). NIR export takes the
    trained network and its normalisation (``export.nir_graph.to_nir``: the same fold, or a normalisation node
    where the fold needs a per-neuron bias). The float accuracy stays that of ``load_run``'s network on its
    own inputs."""
    return fold_input_norm(net, data.norm), data.intensities()
