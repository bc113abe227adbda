"""Named components built from spec strings: ``"name:key=value,key=value"``.

Estimators, learning rules and later optimizers are chosen by such strings on the command line
and in task files; this is the one parser and builder they share."""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from .errors import SpecError


def _parse_value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_options(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:a=1,b=x"`` -> ("name", {"a": 1, "b": "x"}); empty options and non-finite numbers are
    SpecErrors (the one check every rule, estimator and on-chip method goes through)."""
    name, colon, rest = str(spec).strip().partition(":")
    name = name.strip().lower()
    if colon and not rest.strip():
        raise SpecError(f"{spec!r} has nothing after ':'; write {name} or {name}:key=value,key=value")
    opts = {}
    for i, item in enumerate((p.strip() for p in rest.split(",")) if colon else ()):
        if not item:
            raise SpecError(f"empty option (option {i + 1}, between commas) in {spec!r}; "
                            "write name:key=value,key=value without repeated or trailing commas")
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"cannot parse option {item!r} in {spec!r}; write name:key=value,key=value")
        value = _parse_value(val.strip())
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{name}: {key.strip()} must be a finite number, got {val.strip()} (in {spec!r})")
        opts[key.strip()] = value
    return name, opts


def build(spec: str, registry: Mapping[str, type], noun: str) -> Any:
    """Instantiate ``registry[name](**options)`` from a spec; unknown names/options list the valid ones."""
    name, opts = parse_options(spec)
    if name not in registry:
        raise SpecError(f"unknown {noun} {name!r}; valid {noun}s: {', '.join(sorted(registry))}")
    cls = registry[name]
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k not in ("self", "args", "kwargs")}
    unknown = sorted(set(opts) - set(params))
    if unknown:
        raise SpecError(f"{noun} {name!r} has no option(s) {unknown}; valid options: {list(params)}")
    for key, value in opts.items():
        kind = str(params[key].annotation)   # e.g. "float", "bool | int", "int | str" (postponed annotations)
        if isinstance(value, str) and kind != str(inspect.Parameter.empty) and "str" not in kind:
            raise SpecError(f"{noun} {name!r}: option {key}={value!r} must be a number ({kind}), "
                            f"e.g. {name}:{key}={params[key].default!r}")
    return cls(**opts)
