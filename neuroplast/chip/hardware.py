"""Chip descriptions (``hardware_models/*.toml``): the one loader that reads and validates them.

A chip file has tables [chip] (name, description, precision = fixed|float, sources, estimated),
[numerics] (bit widths), [capacity] (per core and per chip) and [energy]/[time] (pJ and ns per
event). ``load_chip("loihi2")`` finds a built-in file; ``load_chip("my_chip.toml")`` reads a
user's own. A missing field or an impossible value names the field.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError

#: field -> (low, high) allowed
NUMERICS = {
    "weight_mantissa_bits": (1, 32), "weight_exp_min": (-32, 32), "weight_exp_max": (-32, 32),
    "current_bits": (2, 64), "voltage_bits": (2, 64), "decay_bits": (1, 32), "threshold_mantissa_bits": (1, 32),
    "threshold_shift": (0, 32), "activation_shift": (0, 32), "bias_mantissa_bits": (1, 32),
    "bias_exponent_bits": (0, 8), "graded_spike_bits": (0, 32), "trace_bits": (1, 32), "tag_bits": (1, 32),
    "learning_accumulator_bits": (1, 64), "learning_epoch_max": (1, 1 << 20),
}
CAPACITY = ("cores_per_chip", "neurons_per_core", "synaptic_memory_bits_per_core", "input_axons_per_core",
            "output_axons_per_core")
EVENTS = ("synaptic_op", "synaptic_update", "neuron_update", "neuron_update_active", "spike_within_tile",
          "hop_east_west", "hop_north_south")


def hardware_dirs() -> list[Path]:
    """Where built-in chip files are looked up: $NEUROPLAST_HW, then the repository's hardware_models/."""
    dirs = [Path(os.environ["NEUROPLAST_HW"])] if os.environ.get("NEUROPLAST_HW") else []
    return dirs + [Path(__file__).resolve().parents[2] / "hardware_models"]


def available_chips() -> list[str]:
    return sorted({p.stem for d in hardware_dirs() if d.is_dir() for p in d.glob("*.toml")})


@dataclass(frozen=True)
class Chip:
    name: str
    description: str
    precision: str
    numerics: dict
    capacity: dict
    energy_pj: dict
    time_ns: dict
    sources: tuple[str, ...]
    estimated: tuple[str, ...]
    path: str

    @property
    def fixed(self) -> bool:
        return self.precision == "fixed"

    @property
    def neurons_per_chip(self) -> int:
        return self.capacity["cores_per_chip"] * self.capacity["neurons_per_core"]

    def is_estimated(self, key: str) -> bool:
        """``key`` like "energy.synaptic_op"; matches entries such as "energy.*"."""
        table = key.split(".")[0]
        return key in self.estimated or f"{table}.*" in self.estimated


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file():
        if p.is_dir():
            raise SpecError(f"chip file {p} is a folder; give a .toml chip file")
        if not p.is_file():
            raise SpecError(f"chip file {p} does not exist")
        return p
    for d in hardware_dirs():
        if (d / f"{name_or_path}.toml").is_file():
            return d / f"{name_or_path}.toml"
    raise SpecError(f"unknown chip {str(name_or_path)!r}; built-in chips: {', '.join(available_chips()) or 'none'}; "
                    "or give the path of a .toml chip file")


def _number(table: dict, section: str, key: str, lo=None, hi=None, integer=False):
    if key not in table:
        raise SpecError(f"chip file: missing field [{section}] {key}")
    val = table[key]
    if isinstance(val, bool) or not isinstance(val, (int, float)) or (integer and not isinstance(val, int)):
        raise SpecError(f"chip file: [{section}] {key} must be {'an integer' if integer else 'a number'}, got {val!r}")
    if not math.isfinite(val):
        raise SpecError(f"chip file: [{section}] {key} must be a finite number, got {val!r}")
    if (lo is not None and val < lo) or (hi is not None and val > hi):
        raise SpecError(f"chip file: [{section}] {key} = {val} is impossible (allowed {lo}..{hi})")
    return val


def load_chip(name_or_path: str | Path) -> Chip:
    from ..spec import read_toml
    path = _resolve(name_or_path)
    data = read_toml(path, what="chip file")
    for section in ("chip", "numerics", "capacity", "energy", "time"):
        if not isinstance(data.get(section), dict):
            raise SpecError(f"chip file {path}: missing table [{section}]")
    chip = data["chip"]
    for key in ("name", "description", "precision"):
        if not isinstance(chip.get(key), str):
            raise SpecError(f"chip file {path}: missing field [chip] {key}")
    if chip["precision"] not in ("fixed", "float"):
        raise SpecError(f"chip file {path}: [chip] precision must be fixed or float, got {chip['precision']!r}")
    for key, example in (("sources", '["a paper or datasheet"]'), ("estimated", '["energy.*", "time.*"]')):
        val = chip.get(key, [])
        if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
            raise SpecError(f"chip file {path}: [chip] {key} must be a list of strings, e.g. "
                            f"{key} = {example}; got {val!r}")
    try:
        numerics = {k: _number(data["numerics"], "numerics", k, lo, hi, True) for k, (lo, hi) in NUMERICS.items()}
        if numerics["weight_exp_min"] > numerics["weight_exp_max"]:
            raise SpecError("chip file: [numerics] weight_exp_min > weight_exp_max is impossible")
        capacity = {k: _number(data["capacity"], "capacity", k, 1, None, True) for k in CAPACITY}
        energy = {k: float(_number(data["energy"], "energy", k, 0.0)) for k in EVENTS}
        time_ns = {k: float(_number(data["time"], "time", k, 0.0)) for k in EVENTS}
    except SpecError as exc:
        raise SpecError(f"{exc} ({path})") from None
    return Chip(name=chip["name"], description=chip["description"], precision=chip["precision"], numerics=numerics,
                capacity=capacity, energy_pj=energy, time_ns=time_ns, sources=tuple(chip.get("sources", ())),
                estimated=tuple(chip.get("estimated", ())), path=str(path))
