"""N-MNIST events (Orchard et al. 2015): the 40-bit file format, the two folder layouts, binning.

Each event is 5 bytes, big-endian: x (8 bits), y (8 bits), polarity (1 bit), timestamp in
microseconds (23 bits)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError, UserError

SENSOR = 34           # 34 x 34 pixels
DURATION_US = 300_000  # recordings last ~300 ms
LAYOUT_HELP = ("expected either Train/<class>/<id>.bin and Test/<class>/<id>.bin, or "
                "<id>.bs2 files with train*.txt and test*.txt lists of 'id label' lines")


def read_events(path: str | os.PathLike) -> np.ndarray:
    """Read one N-MNIST file. Returns int64 [N, 4] with columns x, y, p, t (t in microseconds)."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"missing N-MNIST file: {path}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if raw.size == 0:
        raise DataError(f"{path}: empty file (0 bytes; truncated or not an N-MNIST event file)")
    if raw.size % 5:
        raise DataError(f"{path}: size {raw.size} bytes is not a multiple of 5 (truncated or not an "
                        "N-MNIST event file)")
    rec = raw.reshape(-1, 5).astype(np.int64)
    events = np.empty((len(rec), 4), dtype=np.int64)
    events[:, 0] = rec[:, 0]
    events[:, 1] = rec[:, 1]
    events[:, 2] = rec[:, 2] >> 7
    events[:, 3] = ((rec[:, 2] & 0x7F) << 16) | (rec[:, 3] << 8) | rec[:, 4]
    if len(events) and (events[:, 0].max() >= SENSOR or events[:, 1].max() >= SENSOR):
        raise DataError(f"{path}: event coordinates outside the {SENSOR}x{SENSOR} sensor (corrupt file)")
    return events


def _binned_counts(events: np.ndarray, time_steps: int, duration_us: int, height: int,
                   width: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices into [T, 2, height, width], event counts there) of the kept events."""
    if isinstance(time_steps, bool) or not isinstance(time_steps, (int, np.integer)) or time_steps < 1:
        raise UserError(f"time_steps must be a positive integer, got {time_steps!r}")
    if duration_us <= 0:
        raise UserError(f"duration_us must be positive, got {duration_us!r}")
    events = np.asarray(events)
    if events.ndim != 2 or events.shape[1] != 4:
        raise UserError(f"events must be an [N, 4] array (x, y, p, t), got shape {events.shape}")
    x, y, p, t = (events[:, i].astype(np.int64) for i in range(4))
    keep = (t >= 0) & (t < duration_us)
    x, y, p, t = x[keep], y[keep], p[keep], t[keep]
    if len(t) and (x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height
                   or p.min() < 0 or p.max() > 1):
        raise DataError(f"events outside the {width}x{height}x2 sensor range")
    b = t * time_steps // duration_us
    return np.unique(((b * 2 + p) * height + y) * width + x, return_counts=True)


def bin_events(events: np.ndarray, time_steps: int, duration_us: int = DURATION_US,
               height: int = SENSOR, width: int = SENSOR) -> np.ndarray:
    """Count events per polarity in ``time_steps`` equal bins over [0, duration_us).

    Returns float32 [T, 2, height, width]; channel 0 = OFF (p=0), 1 = ON (p=1).
    Events at or after ``duration_us`` (or before 0) are dropped."""
    flat, counts = _binned_counts(events, time_steps, duration_us, height, width)
    out = np.zeros(time_steps * 2 * height * width, dtype=np.float32)
    out[flat] = counts
    return out.reshape(time_steps, 2, height, width)


def is_nmnist_folder(folder: Path) -> bool:
    """True when ``folder`` looks like one of the two supported layouts."""
    return (folder / "Train").is_dir() or any(folder.glob("train*.txt"))


def _parse_list(path: Path) -> list[tuple[str, int]]:
    """Parse 'id label' lines (tabs, spaces or commas); skip comments and one header line."""
    rows: list[tuple[str, int]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            if len(parts) < 2:
                raise ValueError
            sample, label = str(int(parts[0])), int(parts[1])
        except ValueError:
            if not rows:  # a header line such as "sample class"
                continue
            raise DataError(f"{path}:{lineno}: expected 'id label', got {line!r}") from None
        if not 0 <= label <= 9:
            raise DataError(f"{path}:{lineno}: label {label} out of range 0..9")
        rows.append((sample, label))
    if not rows:
        raise DataError(f"{path}: no 'id label' lines found")
    return rows


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        what = "no file" if not found else f"{len(found)} files ({', '.join(f.name for f in found)})"
        raise DataError(f"{folder}: expected one {pattern} sample list, found {what}; {LAYOUT_HELP}")
    return found[0]


def _small_layout(folder: Path, split: str) -> list[tuple[Path, int]]:
    rows = _parse_list(_one(folder, f"{split}*.txt"))
    files = []
    for sample, label in rows:
        path = folder / f"{sample}.bs2"
        if not path.is_file() and (folder / f"{sample}.bin").is_file():
            path = folder / f"{sample}.bin"
        files.append((path, label))
    return files


def _full_layout(folder: Path, split: str) -> list[tuple[Path, int]]:
    root = folder / split.capitalize()
    if not root.is_dir():
        raise DataError(f"missing N-MNIST folder: {root}; {LAYOUT_HELP}")
    files = []
    for label in range(10):
        cls = root / str(label)
        if cls.is_dir():
            names = sorted(cls.glob("*.bin"), key=lambda f: (not f.stem.isdigit(), len(f.stem), f.stem))
            files += [(f, label) for f in names]
    if not files:
        raise DataError(f"{root}: no <class>/<id>.bin files found (class folders 0..9)")
    return files


def list_samples(folder: str | os.PathLike, split: str) -> list[tuple[Path, int]]:
    """The (file, label) pairs of ``split`` ("train" or "test") in an N-MNIST folder."""
    folder = Path(folder)
    if (folder / "Train").is_dir():
        return _full_layout(folder, split)
    return _small_layout(folder, split)


def load_split(folder: str | os.PathLike, split: str, time_steps: int,
               duration_us: int = DURATION_US) -> tuple[np.ndarray, np.ndarray]:
    """Read and bin one split. Returns (float32 [N, T, 2, 34, 34], int64 [N])."""
    samples = list_samples(folder, split)
    x = np.zeros((len(samples), time_steps * 2 * SENSOR * SENSOR), dtype=np.float32)
    for i, (path, _) in enumerate(samples):
        flat, counts = _binned_counts(read_events(path), time_steps, duration_us, SENSOR, SENSOR)
        x[i, flat] = counts
    x = x.reshape(len(samples), time_steps, 2, SENSOR, SENSOR)
    y = np.fromiter((label for _, label in samples), dtype=np.int64, count=len(samples))
    return x, y
