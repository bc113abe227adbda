"""Compatibility fixes for lava-nc 0.10.0, installed before anything from Lava is imported.

lava-nc 0.10.0 declares Python < 3.11 but is pure Python. Two of its modules need a fix here:

- ``lava/magma/compiler/var_model.py`` declares dataclass fields with instance defaults
  (``x: ByteEncoder = ByteEncoder()``), which Python 3.11 rejects ("mutable default ... use
  default_factory"): they become ``field(default_factory=ByteEncoder)`` — the same class, the same
  values, a fresh encoder per instance.
- ``lava/magma/runtime/message_infrastructure/multiprocessing.py`` calls
  ``multiprocessing.set_start_method('fork')`` at import, which raises "context has already been
  set" once anything in the process has touched the default context (tqdm's lock does): the call
  gets ``force=True``, so Lava still gets the fork start method it needs.

``install()`` puts an import hook first on ``sys.meta_path`` that loads exactly those modules from
their own files with the rewritten source (same line numbers). Nothing in site-packages is edited
and no bytecode of rewritten source is cached. Lava's runtime forks its workers, and a forked child
inherits the already-imported, fixed modules.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import re
import sys

TARGET = "lava.magma.compiler.var_model"
START_METHOD = "lava.magma.runtime.message_infrastructure.multiprocessing"
_DEFAULT = re.compile(r"^(\s+\w+\s*:\s*ByteEncoder)\s*=\s*ByteEncoder\(\)\s*$", re.MULTILINE)


def patch_source(text: str) -> str:
    """Rewrite ``name: ByteEncoder = ByteEncoder()`` to a default_factory field."""
    return _DEFAULT.sub(r'\1 = __import__("dataclasses").field(default_factory=ByteEncoder)', text)


def patch_start_method(text: str) -> str:
    """``mp.set_start_method('fork')`` -> ``mp.set_start_method('fork', force=True)``."""
    return text.replace("mp.set_start_method('fork')", "mp.set_start_method('fork', force=True)")


PATCHES = {TARGET: patch_source, START_METHOD: patch_start_method}


class _PatchedLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):
        with open(self.path, encoding="utf-8") as fh:
            source = PATCHES[fullname](fh.read())
        return compile(source, self.path, "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _PatchedLoader(fullname, spec.origin)
        return spec


def install() -> None:
    """Idempotent; harmless where a fix is not needed."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
