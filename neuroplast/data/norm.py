"""Input normalisation of static images, x = (v − m)/s, and its exact inverse.

v ∈ [0, 1] is an image's intensity (MNIST: pixel/255), m and s (> 0) the normalisation in the same
units (MNIST: the train set's mean 0.1307 and std 0.3081). Float training on direct input takes x
(``datasets.normalizes``); a chip's graded payloads and the exported networks take v, with the map
folded into the first synaptic layer (``snn.fold_input.fold_input_norm``: W' = W/s,
b' = b − (m/s)·W·1). ``InputNorm()`` (m = 0, s = 1) is the identity: data sets that are not
normalised (digits, N-MNIST, any run on intensities) carry it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class InputNorm:
    """x = (v − mean)/std of intensities v ∈ [0, 1]; ``levels``: the intensities are multiples of
    1/levels (255 for 8-bit images), so that ``intensities`` gives them back exactly."""
    mean: float = 0.0
    std: float = 1.0
    levels: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"InputNorm: mean {self.mean!r} and std {self.std!r} must be finite, std > 0")
        if self.levels is not None and (isinstance(self.levels, bool) or not isinstance(self.levels, int)
                                        or self.levels < 1):
            raise ValueError(f"InputNorm: levels must be a positive integer or None, got {self.levels!r}")

    @property
    def identity(self) -> bool:
        return self.mean == 0.0 and self.std == 1.0

    def normalize(self, v: Tensor) -> Tensor:
        """(v − mean)/std, in v's dtype (the loaders compute it from their integer pixels)."""
        return v if self.identity else (v - self.mean) / self.std

    def intensities(self, x: Tensor) -> Tensor:
        """v = x·std + mean of normalised inputs x; with ``levels`` rounded to the 1/levels grid, which
        gives back exactly the intensities of the data set loaded without normalisation (round(levels·v)
        is the pixel: float32 x is within 1e-5 of it, far inside 0.5). ``x`` itself for the identity."""
        if self.identity:
            return x
        if self.levels is None:
            return x * self.std + self.mean
        pixels = torch.round(x * (self.std * self.levels) + self.mean * self.levels)
        return pixels / self.levels
