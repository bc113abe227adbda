"""Data set registry: the Dataset/Split types and the loaders of digits, MNIST, Fashion-MNIST
and N-MNIST. Nothing is cached on disk; every split is deterministic in ``split_seed``."""
from __future__ import annotations

import dataclasses
import gzip
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, UserError
from . import idx, nmnist
from .norm import InputNorm

ENV_VAR = "NEUROPLAST_DATA"


@dataclass(frozen=True, eq=False)
class Split:
    """Samples of one split. x: float32 [N, *input_shape] (static) or [N, T, *input_shape]
    (events); y: int64 [N]."""
    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Split: {self.x.shape[0]} inputs but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set. ``input_shape`` is per time step; ``kind`` is "static" or "events". ``norm``:
    the normalisation its inputs carry, x = (v − m)/s of intensities v ∈ [0, 1] (identity unless
    loaded with ``normalize`` and the data set normalises)."""
    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    kind: str
    norm: InputNorm = field(default_factory=InputNorm)

    def intensities(self) -> Dataset:
        """The same samples with inputs as intensities in [0, 1] (``norm`` undone exactly, ``InputNorm.intensities``):
        what a chip or an exported network takes. ``self`` when the inputs are not normalised."""
        if self.norm.identity:
            return self
        raw = {k: Split(self.norm.intensities(s.x), s.y) for k, s in
               (("train", self.train), ("val", self.val), ("test", self.test))}
        return dataclasses.replace(self, **raw, norm=InputNorm())


def _split(x: np.ndarray | torch.Tensor, y: np.ndarray) -> Split:
    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, np.float32))
    return Split(xt, torch.from_numpy(np.ascontiguousarray(y, np.int64)))


def _holdout(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: the last round(val_fraction*n) samples of a seeded shuffle are val.
    Both index sets are sorted, so the samples keep their original order."""
    n_val = int(round(val_fraction * n))
    if n_val == 0:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n - n_val]), np.sort(perm[n - n_val:])


# ----------------------------------------------------------------------------- folders

def _base_dir(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_VAR) or None
        if data_dir is None:
            raise DataError(f"no data directory given: pass --data-dir DIR or set {ENV_VAR}")
    base = Path(data_dir).expanduser()
    if not base.is_dir():
        raise DataError(f"data directory does not exist: {base}")
    return base


def _candidates(base: Path, subdirs: tuple[str, ...]) -> list[Path]:
    return [base] + [base / s for s in subdirs]


def _searched(folders: list[Path]) -> str:
    return ", ".join(str(f) for f in folders)


# ----------------------------------------------------------------------------- loaders

def _load_digits(*, data_dir, val_fraction, split_seed, time_steps, normalize) -> Dataset:
    """scikit-learn's 8x8 digits (embedded): test 20% (ceil), val ``val_fraction``, rest train."""
    val_fraction = 0.1 if val_fraction is None else val_fraction
    raw = resources.files(__package__).joinpath("digits.csv.gz").read_bytes()
    try:
        table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("ascii")), delimiter=",",
                           dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"package data digits.csv.gz is corrupt ({exc})") from None
    if table.shape[1] != 65 or table[:, :64].min() < 0 or table[:, :64].max() > 16 \
            or table[:, 64].min() < 0 or table[:, 64].max() > 9:
        raise DataError(f"package data digits.csv.gz is corrupt (table shape {table.shape})")
    n = len(table)
    n_test = math.ceil(0.2 * n)
    n_val = int(round(val_fraction * n))
    if n_test + n_val >= n:
        raise UserError(f"val_fraction={val_fraction} leaves no training samples for digits")
    perm = np.random.default_rng(split_seed).permutation(n)
    parts = np.split(perm, [n_test, n_test + n_val])  # test, val, train
    x = (table[:, :64].astype(np.float32) / 16.0).reshape(n, 1, 8, 8)
    y = table[:, 64]
    test, val, train = (_split(x[np.sort(p)], y[np.sort(p)]) for p in parts)
    return Dataset("digits", train, val, test, (1, 8, 8), 10, "static")


def _mnist_folder(name: str, data_dir, subdirs: tuple[str, ...]) -> Path:
    folders = _candidates(_base_dir(data_dir), subdirs)
    needed = [f for img, lab, _ in idx.MNIST_FILES.values() for f in (img, lab)]
    for folder in folders:
        if any((folder / f).is_file() for f in needed):
            for f in needed:
                if not (folder / f).is_file():
                    raise DataError(f"missing {name} file: {folder / f} (searched: {_searched(folders)})")
            return folder
    raise DataError(f"missing {name} file: {needed[0]} not found in any of: {_searched(folders)}; "
                    f"pass --data-dir DIR (the folder holding the four IDX .gz files or its parent) "
                    f"or set {ENV_VAR}")


def _mnist_like(name: str, subdirs: tuple[str, ...]) -> Callable[..., Dataset]:
    def load(*, data_dir, val_fraction, split_seed, time_steps, normalize) -> Dataset:
        folder = _mnist_folder(name, data_dir, subdirs)
        arrays = idx.read_mnist_folder(folder)
        (x_all, y_all), (x_test, y_test) = arrays["train"], arrays["test"]
        tr, va = _holdout(len(x_all), val_fraction or 0.0, split_seed)
        x_train = x_all[tr] if len(va) else x_all
        offset, scale, norm = 0.0, 255.0, InputNorm()
        if normalize:  # exact global mean/std of the train images, from their histogram
            hist = torch.bincount(torch.from_numpy(x_train).view(-1), minlength=256).double().numpy()
            v = np.arange(256, dtype=np.float64)
            mean = (hist @ v) / hist.sum()
            std = math.sqrt(max((hist @ (v * v)) / hist.sum() - mean * mean, 0.0)) or 1.0
            offset, scale = mean, std
            norm = InputNorm(mean / 255.0, std / 255.0, levels=255)   # the same map on intensities pixel/255

        def to_x(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a.astype(np.float32)).unsqueeze(1)
            return t.sub_(offset).div_(scale)

        train = _split(to_x(x_train), y_all[tr])
        val = _split(to_x(x_all[va]), y_all[va])
        test = _split(to_x(x_test), y_test)
        return Dataset(name, train, val, test, (1, 28, 28), 10, "static", norm)
    load.__doc__ = f"{name}: the four original IDX .gz files; val_fraction default 0."
    return load


def _load_nmnist(*, data_dir, val_fraction, split_seed, time_steps, normalize) -> Dataset:
    """N-MNIST event recordings binned into ``time_steps`` frames of 2x34x34 event counts."""
    if time_steps is None:
        raise UserError("the nmnist data set needs time_steps (the number of event frames per sample)")
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise UserError(f"time_steps must be a positive integer, got {time_steps!r}")
    folders = _candidates(_base_dir(data_dir), ("nmnist-small", "nmnist", "N-MNIST"))
    folder = next((f for f in folders if nmnist.is_nmnist_folder(f)), None)
    if folder is None:
        raise DataError(f"no N-MNIST data found in any of: {_searched(folders)}; {nmnist.LAYOUT_HELP}")
    x_all, y_all = nmnist.load_split(folder, "train", time_steps)
    x_test, y_test = nmnist.load_split(folder, "test", time_steps)
    tr, va = _holdout(len(x_all), val_fraction or 0.0, split_seed)
    if len(va):
        train, val = _split(x_all[tr], y_all[tr]), _split(x_all[va], y_all[va])
    else:
        train, val = _split(x_all, y_all), _split(x_all[:0], y_all[:0])
    return Dataset("nmnist", train, val, _split(x_test, y_test), (2, 34, 34), 10, "events")


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "mnist": _mnist_like("mnist", ("mnist", "MNIST/raw")),
    "fashion-mnist": _mnist_like("fashion-mnist", ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw")),
    "nmnist": _load_nmnist,
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def normalizes(encoding: str, precision: str = "float") -> bool:
    """Whether a run takes static images mean/std normalised (``load_dataset(normalize=...)``): only
    float training on direct input, where the image is the input current. Poisson rates and frame
    counts need intensities in [0, 1] (normalised values would saturate the rate code), and so do
    the chip's graded payloads of on-chip training. A normalised data set says so in ``Dataset.norm``; what
    runs a float network on a chip or exports it takes intensities and folds the normalisation into the first
    synaptic layer (``runs.chip_view``)."""
    return encoding == "direct" and precision == "float"


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None,
                 val_fraction: float | None = None, split_seed: int = 0,
                 time_steps: int | None = None, normalize: bool = True) -> Dataset:
    """Load a data set by name. ``val_fraction`` None: the data set's default (digits 0.1,
    others 0). ``time_steps`` is needed by event data sets only."""
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}; valid data sets: {', '.join(DATASETS)}")
    if val_fraction is not None:
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
                or not 0.0 <= val_fraction < 1.0:
            raise UserError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or split_seed < 0:
        raise UserError(f"split_seed must be a non-negative integer, got {split_seed!r}")
    return DATASETS[name](data_dir=data_dir, val_fraction=val_fraction, split_seed=int(split_seed),
                          time_steps=time_steps, normalize=normalize)
