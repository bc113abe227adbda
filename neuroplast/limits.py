"""The largest size neuroplast accepts for a count (epochs, batch size, time steps, layer widths, samples,
seeds, batches): far beyond any real run, far below int64, so that a typo fails with a clear error
instead of an allocation or a run that never ends."""
from __future__ import annotations

from .errors import SpecError

MAX_SIZE = 1_000_000


def check_count(what: str, value: int) -> None:
    """SpecError (exit 2) unless 1 <= ``value`` <= ``MAX_SIZE``; ``what`` names it as the user gave it."""
    if value < 1:
        raise SpecError(f"{what} must be >= 1, got {value}")
    if value > MAX_SIZE:
        raise SpecError(f"{what} must be between 1 and {MAX_SIZE}, got {value}")
