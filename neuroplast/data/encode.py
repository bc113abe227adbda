"""Input encodings: turn a batch into a [T, B, *input_shape] tensor of per-step inputs."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import SpecError, UserError
from ..snn import draws


def _direct(x: torch.Tensor, time_steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """The static value at every step: a stride-0 view (no copy) along time."""
    return x.unsqueeze(0).expand(time_steps, *x.shape)


def _poisson(x: torch.Tensor, time_steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """Bernoulli rate code: spike with probability clamp(x, 0, 1) at each step (float32 0/1)."""
    shape = (time_steps, *x.shape)
    u = draws.uniform(shape, generator, x.device).to(x.device)
    return (u < x.clamp(0, 1)).to(torch.float32)


def _frames(x: torch.Tensor, time_steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """Event frames [B, T, ...] -> [T, B, ...]."""
    if x.dim() < 3:
        raise SpecError(f"encoding 'frames' needs event data [B, T, ...], got shape {tuple(x.shape)}")
    if x.shape[1] != time_steps:
        raise SpecError(f"encoding 'frames': the data has {x.shape[1]} time bins per sample but "
                        f"{time_steps} time steps were asked for; load the data set with "
                        f"time_steps={time_steps} (or run with {x.shape[1]} steps)")
    return x.transpose(0, 1)


ENCODINGS: dict[str, Callable[[torch.Tensor, int, torch.Generator | None], torch.Tensor]] = {
    "direct": _direct,
    "poisson": _poisson,
    "frames": _frames,
}


def encoding_names() -> list[str]:
    return list(ENCODINGS)


def encode(name: str, x: torch.Tensor, time_steps: int, *,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode a batch ``x`` ([B, *input_shape], or [B, T, *input_shape] for "frames")
    into per-step inputs [T, B, *input_shape]."""
    if name not in ENCODINGS:
        raise UserError(f"unknown encoding {name!r}; valid encodings: {', '.join(ENCODINGS)}")
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise SpecError(f"time_steps must be a positive integer, got {time_steps!r}")
    if not isinstance(x, torch.Tensor):
        raise SpecError(f"encode expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise SpecError(f"encoding {name!r} needs a batch [B, *input_shape], got shape {tuple(x.shape)}")
    return ENCODINGS[name](x, time_steps, generator)
