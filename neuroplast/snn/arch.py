"""Declarative network strings.

    "784-800-800-10"                FC: input size, hidden spiking dense layers, readout width
    "128C3-AP2-256C3-AP2-FC"        conv: <c>C<k>[S<stride>] spiking conv (padding k//2), AP<k>/MP<k>
                                    average/max pooling, D<p> dropout, F flatten, <n> spiking dense,
                                    FC[<n>] readout (n defaults to the number of classes)

A leading plain number (``784``) or ``CxHxW`` (``1x28x28``) declares the input and is checked
against the data. The last token is always the readout.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SpecError
from ..limits import MAX_SIZE

_TOKENS = [
    ("conv", re.compile(r"^(\d+)C(\d+)(?:S(\d+))?$", re.I)),
    ("pool", re.compile(r"^(AP|MP)(\d+)$", re.I)),
    ("dropout", re.compile(r"^(?:D|DO|DROP)(0?\.\d+|0|1)$", re.I)),
    ("flatten", re.compile(r"^F(?:LAT)?$", re.I)),
    ("readout", re.compile(r"^FC(\d+)?$", re.I)),
    ("dense", re.compile(r"^(\d+)$")),
    ("input", re.compile(r"^(\d+)x(\d+)x(\d+)$", re.I)),
]
#: what the numbers of a token are, for the error when one is < 1 (None: checked elsewhere)
_SIZE_NAMES = {"conv": ("channels", "kernel size", "stride"), "pool": (None, "pooling size"), "dense": ("width",)}


@dataclass(frozen=True)
class LayerSpec:
    kind: str          # conv | pool | dropout | flatten | dense | readout
    token: str         # the text it came from, for error messages
    index: int         # position in the string (0-based)
    size: int = 0      # channels (conv), width (dense/readout), kernel (pool)
    kernel: int = 0
    stride: int = 1
    pool: str = ""     # avg | max
    p: float = 0.0


def _tokens(arch: str):
    """(index, token, kind, match, where) of every token of a network string: each one parses, and its
    sizes are between 1 and ``MAX_SIZE`` (no data needed)."""
    tokens = [t.strip() for t in str(arch).split("-")]
    if not arch or any(not t for t in tokens):
        raise SpecError(f"network {arch!r}: empty layer token; write e.g. '784-800-10' or '32C3-AP2-FC'")
    for i, tok in enumerate(tokens):
        kind, m = next(((k, r.match(tok)) for k, r in _TOKENS if r.match(tok)), (None, None))
        where = f"network {arch!r}, layer {i + 1} ({tok!r})"
        if kind is None:
            raise SpecError(f"{where}: cannot parse; expected <n>, <c>C<k>, AP<k>, MP<k>, D<p>, F or FC[<n>]")
        sizes = [] if kind == "dropout" else [g.lstrip("0") for g in m.groups() if g is not None and g.isdigit()]
        if any(len(g) > len(str(MAX_SIZE)) or int(g or 0) > MAX_SIZE for g in sizes):   # before int() of 5000 digits
            raise SpecError(f"network {arch!r}: layer {tok!r} has a size over {MAX_SIZE}; "
                            "give sizes a network can have, e.g. 784-800-10")
        for what, g in zip(_SIZE_NAMES.get(kind, ()), m.groups()):
            if what and g is not None and int(g) < 1:
                raise SpecError(f"{where}: the {what} must be >= 1, got {g}")
        yield i, tok, kind, m, where


def check_arch(arch: str) -> None:
    """Check a network string's syntax and sizes, before any data is loaded (``TrainConfig.validate``)."""
    for _ in _tokens(arch):
        pass


def parse_arch(arch: str, input_shape: tuple[int, ...], num_classes: int) -> list[LayerSpec]:
    """Parse a network string into layer specs; check the declared input and readout width."""
    specs: list[LayerSpec] = []
    n_tokens = len(str(arch).split("-"))
    for i, tok, kind, m, where in _tokens(arch):
        last = i == n_tokens - 1
        if i == 0 and not last and kind in ("dense", "input"):
            declared = tuple(int(g) for g in m.groups())
            flat = 1
            for d in input_shape:
                flat *= d
            if declared != tuple(input_shape) and declared != (flat,):
                raise SpecError(f"{where}: declares input {'x'.join(map(str, declared))} but the data "
                                f"has input shape {'x'.join(map(str, input_shape))} ({flat} values)")
            continue
        if kind == "input":
            raise SpecError(f"{where}: an input shape may only be the first token")
        if kind == "dense" and last:
            kind = "readout"
        if kind == "readout":
            if not last:
                raise SpecError(f"{where}: the readout FC must be the last layer")
            n = int(m.group(1)) if m.group(1) else num_classes
            if n != num_classes:
                raise SpecError(f"{where}: readout has {n} outputs but the data has {num_classes} classes")
            specs.append(LayerSpec("readout", tok, i, size=n))
        elif last:
            raise SpecError(f"{where}: the network must end with a readout (FC or the number of classes)")
        elif kind == "conv":
            specs.append(LayerSpec("conv", tok, i, size=int(m.group(1)), kernel=int(m.group(2)),
                                   stride=int(m.group(3) or 1)))
        elif kind == "pool":
            specs.append(LayerSpec("pool", tok, i, kernel=int(m.group(2)),
                                   pool="avg" if m.group(1).upper() == "AP" else "max"))
        elif kind == "dropout":
            p = float(m.group(1))
            if not 0.0 <= p < 1.0:
                raise SpecError(f"{where}: dropout rate must be in [0, 1)")
            specs.append(LayerSpec("dropout", tok, i, p=p))
        else:
            specs.append(LayerSpec(kind, tok, i, size=int(m.group(1)) if kind == "dense" else 0))
    if not any(s.kind == "readout" for s in specs):
        raise SpecError(f"network {arch!r}: no readout layer; end it with FC or the number of classes")
    return specs
