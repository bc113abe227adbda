"""How the on-chip learning equations round: the chip's integers, or the same equations exactly.

``onchip`` writes every equation once and leaves its rounding to an ``Arith``:

  INTEGER  the chip: int64 registers, truncating decays (x·f >> 12), round-to-nearest shifts,
           stochastic rounding SR(x) = ⌊x + u⌋ with u from the unit's counter-based stream
           (``chip.rng``), saturation at the register widths (8-bit weights, 16-bit feedback, …);
  EXACT    the float twin: float64, x·f/4096, x/2^k, SR(x) = x, no saturation. Same scales, same
           noise draws (the noise units are integers in both), same parameters.

EXACT is what the ``floating_pt`` Lava models compute and what ``OnChipLearner(exact=True)``
trains with; the gap between the two is the cost of the chip's precision alone.
"""
from __future__ import annotations

import torch

from .fixed import DECAY_UNITY, IntLIFParams, _decay, exact_lif_integrate, int_dense, int_lif_integrate
from .rng import Stream

Tensor = torch.Tensor


class Arith:
    """Rounding and saturation of one precision (``INTEGER`` or ``EXACT``; use those two)."""

    def __init__(self, exact: bool):
        self.exact = exact
        self.dtype = torch.float64 if exact else torch.int64
        self.name = "exact" if exact else "integer"

    def __repr__(self) -> str:
        return f"Arith({self.name})"

    def sr(self, x: Tensor, stream: Stream, samples, t: int) -> Tensor:
        """Stochastic rounding of x [S, ...] (one row per sample number); exact: x."""
        return x.to(torch.float64) if self.exact else stream.round(x, samples, t)

    def clamp(self, x: Tensor, lo: int, hi: int) -> Tensor:
        """Saturation into a register's range; exact: none."""
        return x if self.exact else x.clamp(lo, hi)

    def decay(self, x: Tensor, factor: int) -> Tensor:
        """x·factor/4096 (integer: truncated toward zero)."""
        return x * (factor / DECAY_UNITY) if self.exact else _decay(x, factor)

    def shr_round(self, x: Tensor, k: int) -> Tensor:
        """x/2^k (integer: rounded to nearest)."""
        return x / (1 << k) if self.exact else (x + (1 << (k - 1))) >> k

    def shl(self, x: Tensor, k: int) -> Tensor:
        """x·2^k."""
        return x * float(1 << k) if self.exact else x << k

    def dense(self, m: Tensor, x: Tensor, weight_exp: int) -> Tensor:
        """a = x·(2m)ᵀ·2^weight_exp (``fixed.int_dense`` in integers)."""
        if not self.exact:
            return int_dense(m, x, weight_exp)
        return (x.to(torch.float64) @ (2 * m).to(torch.float64).t()) * 2.0 ** weight_exp

    def lif_integrate(self, u: Tensor, v: Tensor, a: Tensor, p: IntLIFParams) -> tuple[Tensor, Tensor]:
        """CUBA LIF sub-threshold step (``fixed``)."""
        return (exact_lif_integrate if self.exact else int_lif_integrate)(u, v, a, p)


INTEGER = Arith(exact=False)
EXACT = Arith(exact=True)
