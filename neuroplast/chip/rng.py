"""Counter-based random numbers for chip units: noise units and stochastic rounding.

Every random bit a learning unit uses is ``hash32`` of a counter (seed, unit stream, sample number,
time step, lane), not the next output of a shared generator. A neuron's noise unit or a synapse
block's rounding unit can compute it locally (a few integer multiplies, as a hardware hash or an
LFSR indexed by the same counter would), and the draw does not depend on how samples are batched or
in which order processes run: the vectorised engine (many samples at once) and the Lava processes
(one sample after another, one process per unit) draw the same bits.

hash32 is the "lowbias32" integer hash (C. Wellons, 2018): x ^= x >> 16; x *= 0x7feb352d;
x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16 (mod 2^32), computed in int64 (the products wrap
modulo 2^64 and are masked to their low 32 bits, see ``_mul32``).
"""
from __future__ import annotations

import functools

import torch

Tensor = torch.Tensor
MASK = (1 << 32) - 1


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x·c) mod 2^32 for x, c in [0, 2^32), x held in int64: the int64 product wraps modulo 2^64 (two's
    complement, as torch's CPU and GPU kernels multiply; checked against Python integers on large
    tensors in tests/test_onchip.py), which keeps its low 32 bits exact. 3× faster than splitting c
    so that no product leaves int64."""
    return (x * c) & MASK


def hash32(x: Tensor | int) -> Tensor:
    x = torch.as_tensor(x, dtype=torch.int64) & MASK
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


@functools.lru_cache(maxsize=64)
def _lanes(n: int) -> Tensor:
    """hash32 of the lane numbers 0 … n−1, [1, n] (the same for every stream and step: made once)."""
    return hash32(torch.arange(n, dtype=torch.int64)).view(1, n)


class Stream:
    """The random bits of one unit (``seed``, ``stream`` id), indexed by (sample, step, lane)."""

    def __init__(self, seed: int, stream: int):
        self.key = int(hash32(hash32(seed) ^ stream))

    def bits(self, sample: Tensor | int, step: int, shape: tuple[int, ...]) -> Tensor:
        """uint32 values in int64, shape [len(sample), *shape] (one row per sample number)."""
        sample = torch.as_tensor(sample, dtype=torch.int64).reshape(-1, 1)
        k = hash32(hash32(self.key ^ (step & MASK)) ^ (sample & MASK))          # [S, 1]
        n = 1
        for d in shape:
            n *= d
        return hash32(k ^ _lanes(n)).view(-1, *shape)

    def uniform(self, sample, step: int, shape) -> Tensor:
        """float64 in [0, 1), 32-bit resolution."""
        return self.bits(sample, step, shape).to(torch.float64) / float(1 << 32)

    def rademacher(self, sample, step: int, shape) -> Tensor:
        """±1 (int64), from the hash's top bit."""
        return (self.bits(sample, step, shape) >> 31) * 2 - 1

    def round(self, x: Tensor, sample, step: int) -> Tensor:
        """Stochastic rounding floor(x + u) to int64; x [S, ...] with one row per sample number."""
        return torch.floor(x.to(torch.float64) + self.uniform(sample, step, tuple(x.shape[1:]))).to(torch.int64)
