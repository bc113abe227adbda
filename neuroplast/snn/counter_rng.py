"""Counter-based random numbers: every number a function of (seed, index) alone.

Word p of the stream with seed s is SplitMix64's output p (Steele, Lea & Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014):

    w_p = mix64(s + (p + 1)·γ) mod 2⁶⁴,  γ = 0x9e3779b97f4a7c15,
    mix64(z) = z₂ ^ (z₂ >> 31),  z₂ = (z₁ ^ (z₁ >> 27))·0x94d049bb133111eb,  z₁ = (z ^ (z >> 30))·0xbf58476d1ce4e5b9

Each word gives two numbers: 32-bit words (w >> 32, w mod 2³²); U[0, 1) (the top 24 bits and
bits 8–31, each · 2⁻²⁴, as ``torch.rand``); N(mean, std²) by Box–Muller (r·cos θ, r·sin θ) with
r = √(−2 log u₁), u₁ = (top 24 bits + 1)·2⁻²⁴ ∈ (0, 1], and θ = q·π/2 + φ from the low 24 bits b:
q = b >> 22, φ = ((b mod 2²² + ½)·2⁻²² − ½)·π/2 ∈ (−π/4, π/4). log, cos and sin are float32
polynomials (log m = 2 atanh((m−1)/(m+1)) to s⁹ on m ∈ [√½, √2); Taylor series to φ⁹ and φ¹⁰), so
the numbers are the same wherever they are computed. The draws of the engine (``draws.py``) come
from here: one C pass split over the OpenMP threads (``native/counter_rng.c``), the same numbers
as this module's torch twin, which runs where no C compiler is. Gaussians stop at |z| ≤ 5.8 (24-bit
u₁, as torch's CPU ``randn``).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import native_lib

Tensor = torch.Tensor

GAMMA = 0x9E3779B97F4A7C15
MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
_M64 = (1 << 64) - 1

# float32 constants (native/counter_rng.c holds the same values in hex)
_f = np.float32
SQRT2 = float(_f(np.sqrt(2.0)))
LN2_HI = 0.693145751953125                        # 16 significant bits: e·LN2_HI is exact
LN2_LO = float(_f(np.log(2.0) - LN2_HI))
LOG_COEF = tuple(float(_f(1.0 / k)) for k in (3, 5, 7, 9))
HALF_PI = float(_f(np.pi / 2))
SIN_COEF = tuple(float(_f(c)) for c in (-1 / 6, 1 / 120, -1 / 5040, 1 / 362880))
COS_COEF = tuple(float(_f(c)) for c in (-1 / 2, 1 / 24, -1 / 720, 1 / 40320, -1 / 3628800))


def _signed(v: int) -> int:
    """v mod 2⁶⁴ as the int64 with the same bits."""
    v &= _M64
    return v - (1 << 64) if v >> 63 else v


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


#: words per piece of the torch twin's draws
TWIN_CHUNK = 1 << 19


def stream(seed: int, pairs: int, first: int = 0) -> Tensor:
    """The words w_first … w_{first+pairs−1} of stream ``seed`` (int64 holding the 64 bits), the torch twin."""
    z = (torch.arange(first + 1, first + pairs + 1, dtype=torch.int64) * _signed(GAMMA)).add_(_signed(seed))
    z = (z ^ _shr(z, 30)) * _signed(MIX[0])
    z = (z ^ _shr(z, 27)) * _signed(MIX[1])
    return z ^ _shr(z, 31)


def _sqrt(x: Tensor) -> Tensor:
    """IEEE float32 square root, correctly rounded as C's ``sqrtf`` (numpy's; torch's CPU ``sqrt`` is off
    by an ulp for some inputs)."""
    return torch.from_numpy(np.sqrt(x.numpy()))


def _poly(x: Tensor, coefs: tuple[float, ...]) -> Tensor:
    """c₀ + x·(c₁ + x·(… + x·c_k)), Horner, one rounding per operation."""
    acc = torch.full_like(x, coefs[-1])
    for c in reversed(coefs[:-1]):
        acc = acc.mul_(x).add_(c)
    return acc


def _normal_pairs(w: Tensor, mean: float, std: float) -> Tensor:
    """[pairs, 2] Box–Muller numbers of the words w, in ``native/counter_rng.c``'s operation order."""
    u1 = ((_shr(w, 40) + 1).to(torch.float32)).mul_(2.0 ** -24)
    bits = u1.view(torch.int32)
    e = (bits >> 23) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)
    big = m > SQRT2
    m = torch.where(big, m * 0.5, m)
    e = e + big.to(torch.int32)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    t = s + s
    logm = t + t * (s2 * _poly(s2, LOG_COEF))
    fe = e.to(torch.float32)
    r = _sqrt((fe * LN2_HI + (fe * LN2_LO + logm)).mul_(-2.0))
    b = _shr(w, 8) & 0xFFFFFF
    q = b >> 22
    phi = ((b & 0x3FFFFF).to(torch.float32).add_(0.5).mul_(2.0 ** -22).sub_(0.5)).mul_(HALF_PI)
    p2 = phi * phi
    sn = phi + phi * (p2 * _poly(p2, SIN_COEF))
    cs = _poly(p2, (1.0, *COS_COEF))
    # (cos, sin)(q·π/2 + φ) = (cs, sn), (−sn, cs), (−cs, −sn), (sn, −cs) for q = 0 … 3: swap at odd q,
    # then signs ±1 (exact products)
    odd = (q & 1).bool()
    x, y = torch.where(odd, sn, cs), torch.where(odd, cs, sn)
    x.mul_((1 - 2 * ((q ^ (q >> 1)) & 1)).to(torch.float32))
    y.mul_((1 - 2 * (q >> 1)).to(torch.float32))
    return torch.stack([x.mul_(r).mul_(std).add_(mean), y.mul_(r).mul_(std).add_(mean)], -1)


def _draw(kernel: str, seed: int, n: int, dtype: torch.dtype, pairs_of: Callable[[Tensor], Tensor], *args,
          native: bool = True) -> Tensor:
    """n numbers, two from each word: the C kernel ``kernel(seed, words, *args, out)`` where it is built
    (and ``native``), else the torch twin ``pairs_of(words)`` [k, 2] a piece of ``TWIN_CHUNK`` words at
    a time (its passes stay in cache)."""
    pairs = -(-n // 2)
    out = torch.empty(2 * pairs, dtype=dtype)
    if native and native_lib.usable(out, dtype=dtype):
        getattr(native_lib.library(), kernel)(seed & _M64, pairs, *args, native_lib.ptr(out))
    else:
        view = out.view(pairs, 2)
        for p0 in range(0, pairs, TWIN_CHUNK):
            p1 = min(pairs, p0 + TWIN_CHUNK)
            view[p0:p1] = pairs_of(stream(seed, p1 - p0, p0))
    return out[:n]


def words(seed: int, n: int, native: bool = True) -> Tensor:
    """n int64 numbers in [0, 2³²): the two halves of each word, high first."""
    return _draw("rng_words", seed, n, torch.int64, lambda w: torch.stack([_shr(w, 32), w & 0xFFFFFFFF], -1),
                 native=native)


def uniform(seed: int, n: int, native: bool = True) -> Tensor:
    """n float32 numbers in [0, 1) on the 2⁻²⁴ grid."""
    return _draw("rng_uniform", seed, n, torch.float32,
                 lambda w: torch.stack([_shr(w, 40), _shr(w, 8) & 0xFFFFFF], -1).to(torch.float32).mul_(2.0 ** -24),
                 native=native)


def normal(seed: int, n: int, mean: float = 0.0, std: float = 1.0, native: bool = True) -> Tensor:
    """n float32 N(mean, std²) numbers."""
    mean, std = float(_f(mean)), float(_f(std))
    return _draw("rng_normal", seed, n, torch.float32, lambda w: _normal_pairs(w, mean, std), mean, std,
                 native=native)
