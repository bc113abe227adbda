"""Python 3.11 compatibility for lava-nc 0.10.0, installed before anything from Lava is imported.

lava-nc 0.10.0 declares Python < 3.11 but is pure Python. One module stops it on 3.11:
``lava/magma/compiler/var_model.py`` declares dataclass fields with instance defaults
(``x: ByteEncoder = ByteEncoder()``), which Python 3.11 rejects ("mutable default ... use
default_factory"). ``install()`` puts an import hook first on ``sys.meta_path`` that loads exactly
that module from its own file with those defaults rewritten to ``field(default_factory=ByteEncoder)``
— the same class, the same values, a fresh encoder per instance. Nothing in site-packages is
edited and no bytecode of the rewritten source is cached. Lava's runtime forks its workers, and a
forked child inherits the already-imported, fixed module.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import re
import sys

TARGET = "lava.magma.compiler.var_model"
_DEFAULT = re.compile(r"^(\s+\w+\s*:\s*ByteEncoder)\s*=\s*ByteEncoder\(\)\s*$", re.MULTILINE)


def patch_source(text: str) -> str:
    """Rewrite ``name: ByteEncoder = ByteEncoder()`` to a default_factory field."""
    return _DEFAULT.sub(r'\1 = __import__("dataclasses").field(default_factory=ByteEncoder)', text)


class _PatchedLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname):
        with open(self.path, encoding="utf-8") as fh:
            source = patch_source(fh.read())
        return compile(source, self.path, "exec", dont_inherit=True)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _PatchedLoader(fullname, spec.origin)
        return spec


def install() -> None:
    """Idempotent; needed on Python >= 3.11 only, harmless before."""
    if sys.version_info < (3, 11) or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
