"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool = False) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path`` and rename it into place.

    Readers see either the old file or the complete new one, never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used (or made) as a writable folder, or None."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    base = path
    while not base.exists() and base != base.parent:   # the deepest part that exists
        base = base.parent
    if base.exists() and not base.is_dir():
        return f"{base} is a file, not a folder"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"{base} is not writable"
    return None


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """UserError (before any work is done) unless ``path`` is a writable folder or can be made as one
    (no part of it a file). ``what`` names it in the message, e.g. "--out"."""
    path = Path(path)
    problem = folder_problem(path)
    if problem:
        raise UserError(f"{what} {path}: {problem}; give another folder")
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file", *, overwrite: bool = False) -> Path:
    """UserError (before any work is done) unless ``path`` can be written as a file: not a folder, not an
    existing file unless ``overwrite``, in a writable folder that exists or can be made."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file name, e.g. {path / 'net.nir'}")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise UserError(f"{what} {path} exists; pass --overwrite to replace it or choose another name")
    problem = folder_problem(path.parent)
    if problem:
        raise UserError(f"{what} {path}: {problem}; give another path")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A hidden temporary folder in ``parent`` with the usual permissions (mkdtemp makes 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def write_files(out_dir: str | os.PathLike, writers: dict[str, Callable[[Path], Any]]) -> list[Path]:
    """Call ``writers[name](path)`` for every file into a hidden temporary folder in ``out_dir``, then move
    them all into place: a writer that fails leaves ``out_dir`` as it was (not made, if it did not exist)."""
    out = Path(out_dir)
    made = [p for p in (out, *out.parents) if not p.exists()]   # deepest first
    out.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out, f".{out.name or 'out'}.")
    try:
        for name, write in writers.items():
            write(tmp / name)
        for name in writers:
            os.replace(tmp / name, out / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:   # the folders made for it, deepest first, while empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    tmp.rmdir()
    return [out / name for name in writers]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def json_finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (inf, nan) replaced by None: what strict JSON can hold
    (``json.dumps`` would write the non-standard Infinity / NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_finite(v) for v in obj]
    return obj
