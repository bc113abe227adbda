"""Experiment specification: one validated dataclass, from defaults, a TOML task file and flags.

A task file (``tasks/*.toml``) may group keys in tables ([data], [net], [train]); keys are the
field names of ``TrainConfig``. Flags given on the command line override the file."""
from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SpecError
from .limits import check_count
from .registry import parse_options
from .snn.arch import check_arch
from .snn.estimators import make_estimator

#: per-data-set defaults applied when the user gives no value
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"net": "64-256-10", "time_steps": 4, "encoding": "direct"},
    "mnist": {"net": "784-800-800-10", "time_steps": 6, "encoding": "direct"},
    "fashion-mnist": {"net": "784-800-800-10", "time_steps": 6, "encoding": "direct"},
    "nmnist": {"net": "2x34x34-800-800-10", "time_steps": 30, "encoding": "frames"},
}
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "learned:PATH")
SCHEDULES = ("cosine", "none")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as config.json in the run directory)."""

    task: str = "digits"              # task name (data set name or task file stem)
    dataset: str = "digits"
    net: str | None = None            # network string; None -> the data set's default
    method: str = "bptt"              # learning rule spec, e.g. "ottt"
    estimator: str = "sigmoid:k=4"    # spike-gradient estimator spec
    encoding: str | None = None       # direct | poisson | frames; None -> data set default
    time_steps: int | None = None
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float | None = None           # None: 1e-3 (float optimizers), 0.3 (on-chip SGD steps)
    weight_decay: float = 0.0
    momentum: float = 0.9             # SGD / RMSprop momentum
    schedule: str = "cosine"
    mse_weight: float = 0.05          # α in (1 − α)·CE + α·MSE
    leak: float = 0.5                 # λ of every LIF layer
    threshold: float = 1.0            # θ of every LIF layer
    reset: str = "hard"
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    val_fraction: float | None = None
    split_seed: int = 0
    trainable: str = "all"            # "all", or "readout" (control: hidden layers frozen at init)
    compiled: bool = False            # fuse the LIF recursion (C on the CPU, torch.compile elsewhere)
    precision: str = "float"          # float, or a chip (loihi2, a chip file): on-chip integer learning

    def resolved(self) -> TrainConfig:
        """Fill data-set defaults and validate every field; returns a new config."""
        check_types(dataclasses.asdict(self), TrainConfig, "config")
        defaults = DATASET_DEFAULTS.get(self.dataset, {})
        cfg = dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
        if cfg.lr is None:
            cfg = dataclasses.replace(cfg, lr=1e-3 if cfg.precision == "float" else 0.3)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        check_types(dataclasses.asdict(self), TrainConfig, "config")
        if self.net is None or self.time_steps is None or self.encoding is None:
            raise SpecError(f"data set {self.dataset!r} has no defaults; give --net, --time-steps and --encoding")
        for name in ("epochs", "batch_size", "time_steps"):
            check_count(name, int(getattr(self, name)))
        check_arch(self.net)   # syntax and sizes, before any data is loaded
        # before any run directory is made: empty options, non-finite numbers, an estimator's bad values
        parse_options(self.method)
        make_estimator(self.estimator)
        if self.precision != "float" and self.reset != "hard":
            raise SpecError(f"--precision {self.precision} trains Loihi's LIF, which resets to 0: use --reset hard "
                            f"(got --reset {self.reset})")
        floats = ("lr", "weight_decay", "momentum", "mse_weight", "leak", "threshold", "val_fraction")
        for name in floats:
            val = getattr(self, name)
            if val is not None and not math.isfinite(val):
                raise SpecError(f"{name} must be a finite number, got {val}")
        if not self.lr > 0:
            raise SpecError(f"lr must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise SpecError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise SpecError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.optimizer.startswith("learned:") and not self.optimizer.partition(":")[2]:
            raise SpecError("optimizer learned:PATH needs the path of a checkpoint from `neuroplast meta-train`")
        if self.optimizer not in OPTIMIZERS and not self.optimizer.startswith("learned:"):
            raise SpecError(f"unknown optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise SpecError(f"unknown schedule {self.schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.mse_weight <= 1.0:
            raise SpecError(f"mse_weight must be in [0, 1], got {self.mse_weight}")
        if self.trainable not in ("all", "readout"):
            raise SpecError(f"trainable must be 'all' or 'readout', got {self.trainable!r}")
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise SpecError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}

_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "booleans")}


def _type_ok(val: Any, tp: Any) -> bool:
    """``val`` has type ``tp`` (a field annotation: int, float, str, bool, X | None, list[X], dict[K, V]);
    a bool is not a number and an int is a number."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return val is None
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(val, a) for a in args)
    if tp is bool:
        return isinstance(val, bool)
    if tp is int:
        return isinstance(val, int) and not isinstance(val, bool)
    if tp is float:
        return isinstance(val, (int, float)) and not isinstance(val, bool)
    if tp is str:
        return isinstance(val, str)
    if origin is list:
        return isinstance(val, list) and all(_type_ok(v, args[0]) for v in val)
    if origin is dict:
        return isinstance(val, dict) and all(_type_ok(k, args[0]) and _type_ok(v, args[1]) for k, v in val.items())
    return True


def _describe(tp: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        real = [a for a in args if a is not type(None)]
        return " or ".join(_describe(a, plural) for a in real) + (" (or left out)" if len(real) < len(args) else "")
    if origin is list:
        return ("lists" if plural else "a list") + f" of {_describe(args[0], True)}"
    if origin is dict:
        return ("tables" if plural else "a table") + f" of {_describe(args[1], True)}"
    return _NAMES[tp][plural] if tp in _NAMES else str(tp)


def check_types(values: dict[str, Any], cls: type, where: str) -> None:
    """SpecError naming the key unless every value in ``values`` has the type its field of the dataclass
    ``cls`` declares (the one type check of task files, config.json, [meta] and [bench] tables)."""
    hints = typing.get_type_hints(cls)
    for key, val in values.items():
        if key in hints and not _type_ok(val, hints[key]):
            raise SpecError(f"{where}: {key} must be {_describe(hints[key])}, got {val!r}")


def flatten_tables(values: dict[str, Any]) -> dict[str, Any]:
    """Merge [table]-grouped keys into one flat mapping."""
    flat: dict[str, Any] = {}
    for key, val in values.items():
        if isinstance(val, dict):
            flat.update(val)
        else:
            flat[key] = val
    return flat


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Build a config from a flat (or [table]-grouped) mapping; unknown keys and values of the wrong
    type are errors naming ``source``."""
    if not isinstance(values, dict):
        raise SpecError(f"{source}: expected a table of settings (a JSON object or TOML tables), "
                        f"got a {type(values).__name__}")
    flat = flatten_tables(values)
    unknown = sorted(set(flat) - FIELDS)
    if unknown:
        raise SpecError(f"{source}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(FIELDS))}")
    check_types(flat, TrainConfig, source)
    return TrainConfig(**flat)


def read_toml(path: str | Path, what: str = "task file") -> dict[str, Any]:
    """A TOML file as a dict; a missing, unreadable or malformed file is a SpecError naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SpecError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise SpecError(f"{what} {path} is a folder; give a .toml file") from None
    except OSError as exc:
        raise SpecError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{what} {path} is not a text file (not UTF-8); give a .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{what} {path} is not valid TOML: {exc}") from None


def load_task_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML task file into a flat dict of the keys it sets (task name = file stem by default)."""
    path = Path(path)
    data = read_toml(path)
    if "meta" in data or "bench" in data:
        raise SpecError(f"{path} is a learned-optimizer task ([meta]/[bench] tables); run it with "
                        f"`neuroplast meta-bench --task {path}` or `neuroplast meta-train --task {path}`")
    config_from_dict(data, source=str(path))  # validates the keys and their types
    return {"task": path.stem, **flatten_tables(data)}
