"""Reader for the IDX .gz files of MNIST and Fashion-MNIST (LeCun's format).

An IDX file is a 4-byte big-endian magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the payload in C order."""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension

# IDX type code -> numpy dtype (multi-byte types are big-endian)
_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# split -> (images file, labels file, expected count)
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}


def _read_gzip(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"missing data file: {path}")
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None


def read_idx(path: str | os.PathLike, *, magic: int | None = None) -> np.ndarray:
    """Decode one IDX .gz file into a numpy array of its header's shape.

    ``magic``: the expected magic number (e.g. 2051 for images); DataError when it differs."""
    path = Path(path)
    data = _read_gzip(path)
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise DataError(f"{path}: bad IDX magic number {found} (expected {magic})")
    if data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise DataError(f"{path}: bad IDX magic number {found} (not an IDX file)")
    dtype, ndim = _TYPES[data[2]], data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{path}: IDX header truncated (needs {offset} bytes, file has {len(data)})")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset != expected:
        raise DataError(f"{path}: payload has {len(data) - offset} bytes but header dims {dims} "
                        f"need {expected} (truncated or corrupt file)")
    return np.frombuffer(bytearray(data), dtype, offset=offset).reshape(dims)  # writable copy


def read_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike, *,
                  count: int | None = None, image_shape: tuple[int, int] | None = (28, 28),
                  num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file and its labels file and check they fit together.

    Returns (uint8 [N, H, W], uint8 [N]). ``count``/``image_shape``: expected sizes (None: any)."""
    images = read_idx(images_path, magic=IMAGES_MAGIC)
    labels = read_idx(labels_path, magic=LABELS_MAGIC)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected unsigned-byte images [N, H, W], got dims {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: expected unsigned-byte labels [N], got dims {labels.shape}")
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                        f"expected {image_shape[0]}x{image_shape[1]}")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels")
    if count is not None and len(images) != count:
        raise DataError(f"{images_path}: holds {len(images)} images, expected {count}")
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range 0..{num_classes - 1}")
    return images, labels


def read_mnist_folder(folder: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the four original MNIST-style files of ``folder``: {"train": (x, y), "test": (x, y)}."""
    folder = Path(folder)
    return {split: read_idx_pair(folder / img, folder / lab, count=count)
            for split, (img, lab, count) in MNIST_FILES.items()}
