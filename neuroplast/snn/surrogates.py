"""The surrogate-gradient family (Neftci, Mostafa & Zenke 2019, Sec. IV; Zenke & Vogels 2021).

Forward is always the exact H(x), x = u − θ; backward multiplies by h'(x), the derivative of a
smooth primitive h ≈ H. Each surrogate has one width parameter:

    sigmoid       h = σ(k·x)                             h' = k·σ(kx)(1 − σ(kx))       (OTTT/OPZO, k=4)
    fast_sigmoid  h = (1 + k·x/(1 + k|x|))/k             h' = 1/(1 + k|x|)²            (SuperSpike)
    triangle      h = piecewise quadratic                h' = max(0, 1 − |x|/w)/w      (Bellec et al. 2018)
    arctan        h = ½ + arctan(π·α·x/2)/π              h' = (α/2)/(1 + (π·α·x/2)²)   (Fang et al. 2021)
    rectangular   h = clamp(x/w + ½, 0, 1)               h' = 1{|x| < w/2}/w           (straight-through window)

Rectangular's default window is w = 2 (|u − θ| < θ for θ = 1): with w = 1 a layer whose membranes
start far below threshold gets no gradient at all and stays silent (MNIST conv SNN, 11% accuracy
in reports/estimators.md).
    gaussian      h = Φ(x/σ)                             h' = N(x; 0, σ²)
"""
from __future__ import annotations

import math

import torch

from ..errors import SpecError
from . import native_lib
from .spikefn import SurrogateEstimator

Tensor = torch.Tensor


def _positive(name: str, key: str, value: float) -> float:
    value = float(value)
    if not value > 0 or not math.isfinite(value):
        raise SpecError(f"{name} surrogate needs {key} > 0 (a finite width), got {value}")
    return value


class Sigmoid(SurrogateEstimator):
    name = "sigmoid"
    native_param = "k"

    def __init__(self, k: float = 4.0):
        super().__init__()
        self.k = _positive(self.name, "k", k)
        self._offsets: dict[tuple[float, torch.dtype], Tensor] = {}   # −k·θ per (θ, dtype), see _offset

    def primitive(self, x):
        return torch.sigmoid(self.k * x)

    def derivative(self, x):
        """k·σ(kx)(1 − σ(kx)) = k·e/(1 + e)² with e = exp(−k|x|): one exp, no cancellation as σ → 1
        (relative error ≤ 3e-7 in float32, against 3e-4 for σ − σ²); torch.compile fuses it into the scans."""
        e = x.abs().mul_(-self.k).exp_()
        return e.div_((e + 1.0).square_()).mul_(self.k)

    def fused_gate(self, grad, u, threshold, out, tmp):
        """grad·h'(u − θ) = grad·k·σ(−|z|)(1 − σ(−|z|)), z = k(u − θ) (σ(z)(1 − σ(z)) is even in z), in
        eager passes: k·u − k·θ, −|·| and σ into ``tmp``, torch's sigmoid_backward (grad·y(1 − y)), ·k.
        σ(−|z|) ≤ ½ keeps 1 − y free of cancellation: absolute error ≤ 5e-8·k per unit of grad in
        float32. σ is the cheap transcendental pass on CPUs (AMD Zen: 10× cheaper than tanh, so this
        is 3.5× faster than add, tanh, tanh_backward of grad·(k/4)·(1 − tanh²(z/2)), the same
        function; on an Intel Xeon the tanh form was 3–5% faster per conv step)."""
        if _native_passes(grad, u, out, tmp):   # the same numbers in 3 passes: C, torch's sigmoid, C
            lib, ptr = native_lib.library(), native_lib.ptr
            lib.sigmoid_gate_pre(ptr(u), ptr(tmp), u.numel(), self.k, float(self._offset(threshold, u.dtype)))
            lib.sigmoid_gate_post(ptr(grad), ptr(tmp.sigmoid_()), ptr(out), u.numel(), self.k)
            return out
        torch.add(self._offset(threshold, u.dtype), u, alpha=self.k, out=tmp).abs_().neg_().sigmoid_()
        out = torch.ops.aten.sigmoid_backward.grad_input(grad, tmp, grad_input=out)
        return out.mul_(self.k)

    def _offset(self, threshold: float, dtype: torch.dtype) -> Tensor:
        """−k·θ as a 0-dim tensor (the one-pass k·u − k·θ above), made once per (θ, dtype)."""
        key = (threshold, dtype)
        if key not in self._offsets:
            self._offsets[key] = sigmoid_offset(self.k, threshold, dtype)
        return self._offsets[key]


def sigmoid_offset(k: float, threshold: float, dtype: torch.dtype) -> Tensor:
    """−k·θ rounded to ``dtype`` as a 0-dim tensor: the constant of the sigmoid gate's first pass,
    z = k·u + (−k·θ) (``Sigmoid.fused_gate``, and the C adjoint of ``lif_native.sigmoid_adjoint``)."""
    return torch.tensor(-k * threshold, dtype=dtype)


def _native_passes(grad: Tensor, u: Tensor, out: Tensor, tmp: Tensor) -> bool:
    """Whether the C passes of ``native/sigmoid_gate.c`` take these (float32 CPU, contiguous, one size)."""
    return (native_lib.usable(grad, u, out, tmp) and u.numel() == grad.numel() == out.numel() == tmp.numel()
            and all(t.is_contiguous() for t in (grad, u, out, tmp)))


class FastSigmoid(SurrogateEstimator):
    name = "fast_sigmoid"
    native_param = "k"

    def __init__(self, k: float = 4.0):
        super().__init__()
        self.k = _positive(self.name, "k", k)

    def primitive(self, x):
        return (1.0 + self.k * x / (1.0 + self.k * x.abs())) / self.k

    def derivative(self, x):
        return x.abs().mul_(self.k).add_(1.0).pow_(-2)


class Triangle(SurrogateEstimator):
    name = "triangle"
    native_param = "w"

    def __init__(self, w: float = 1.0):
        super().__init__()
        self.w = _positive(self.name, "w", w)

    def primitive(self, x):
        w = self.w
        xc = x.clamp(-w, w)
        left = (xc + w).pow(2) / (2 * w * w)
        right = 1.0 - (w - xc).pow(2) / (2 * w * w)
        return torch.where(xc < 0, left, right)

    def derivative(self, x):  # (1 − |x|/w)⁺/w = (1/w − |x|/w²)⁺
        return x.abs().mul_(-1.0 / (self.w * self.w)).add_(1.0 / self.w).clamp_min_(0.0)


class ArcTan(SurrogateEstimator):
    name = "arctan"
    native_param = "alpha"

    def __init__(self, alpha: float = 2.0):
        super().__init__()
        self.alpha = _positive(self.name, "alpha", alpha)

    def primitive(self, x):
        return 0.5 + torch.atan(0.5 * math.pi * self.alpha * x) / math.pi

    def derivative(self, x):
        return (x * (0.5 * math.pi * self.alpha)).square_().add_(1.0).reciprocal_().mul_(0.5 * self.alpha)


class Rectangular(SurrogateEstimator):
    name = "rectangular"
    native_param = "w"

    def __init__(self, w: float = 2.0):
        super().__init__()
        self.w = _positive(self.name, "w", w)

    def primitive(self, x):
        return (x / self.w + 0.5).clamp(0.0, 1.0)

    def derivative(self, x):
        return (x.abs() < 0.5 * self.w).to(x.dtype) / self.w


class Gaussian(SurrogateEstimator):
    name = "gaussian"
    native_param = "sigma"

    def __init__(self, sigma: float = 0.5):
        super().__init__()
        self.sigma = _positive(self.name, "sigma", sigma)

    def primitive(self, x):
        return 0.5 * (1.0 + torch.erf(x / (self.sigma * math.sqrt(2.0))))

    def derivative(self, x):
        return torch.exp(-0.5 * (x / self.sigma).pow(2)) / (self.sigma * math.sqrt(2.0 * math.pi))


SURROGATES = (Sigmoid, FastSigmoid, Triangle, ArcTan, Rectangular, Gaussian)
