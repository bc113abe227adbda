"""LocalZO: a local zeroth-order estimate of the spike derivative (Mukhoty et al., NeurIPS 2023).

Forward is the exact H(x), x = u − θ. Backward replaces H'(x) by the 2-point antithetic
zeroth-order estimate at the neuron, averaged over m samples drawn fresh in every backward pass:

    g(x) = (1/m) Σ_i 1{|x| < δ·|z_i|} · |z_i| / (2δ),     z_i ~ i.i.d. unit-variance distribution

(the difference quotient [H(x + δz) − H(x − δz)]/(2δ) · z, which is non-zero only when the
perturbation crosses the threshold). Its expectation is a surrogate fixed by the distribution:

    normal   E g = exp(−x²/2δ²) / (√(2π)·δ)                      (Gaussian of width δ)
    uniform  E g = (3 − x²/δ²) / (4√3·δ)  on |x| < √3·δ, else 0
    laplace  E g = (|x|/δ + 1/√2)·exp(−√2·|x|/δ) / (2δ)

Only |z| matters, so |z| is sampled directly. For the uniform distribution neurons with
|x| ≥ √3·δ get exactly zero, and when most are such only the active ones are sampled (on the CPU:
on a GPU the dense draw avoids a device sync per step).
"""
from __future__ import annotations

import math

import torch

from ..errors import SpecError
from ..limits import MAX_SIZE
from . import draws
from .spikefn import SpikeEstimator, _SurrogateSpike

Tensor = torch.Tensor
SQRT3 = math.sqrt(3.0)


def _abs_normal(shape, generator, device):
    return draws.normal(shape, generator, device).abs_()


def _abs_uniform(shape, generator, device):  # U(−√3, √3) has unit variance
    return draws.uniform(shape, generator, device).mul_(SQRT3)


def _abs_laplace(shape, generator, device):  # Laplace(0, b = 1/√2) has unit variance
    u = draws.uniform(shape, generator, device)
    return torch.log1p(-u).neg_().mul_(1.0 / math.sqrt(2.0))


ABS_SAMPLERS = {"normal": _abs_normal, "uniform": _abs_uniform, "laplace": _abs_laplace}


def expected_derivative(x: Tensor, delta: float, dist: str) -> Tensor:
    """Closed-form E[g(x)] for the given distribution (the surrogate LocalZO implies)."""
    a = x.abs() / delta
    if dist == "normal":
        return torch.exp(-0.5 * a * a) / (math.sqrt(2.0 * math.pi) * delta)
    if dist == "uniform":
        return ((3.0 - a * a) / (4.0 * SQRT3 * delta)).clamp_min(0.0)
    return (a + 1.0 / math.sqrt(2.0)) * torch.exp(-math.sqrt(2.0) * a) / (2.0 * delta)


class LocalZO(SpikeEstimator):
    """LocalZO spike estimator with m samples, perturbation scale δ and a |z| distribution."""

    name = "localzo"

    def __init__(self, m: int = 1, delta: float = 0.5, dist: str = "normal"):
        super().__init__()
        if int(m) != m or not 1 <= m <= MAX_SIZE:
            raise SpecError(f"localzo needs an integer number of samples m >= 1 and <= {MAX_SIZE}, got {m}")
        if not float(delta) > 0:
            raise SpecError(f"localzo needs a perturbation scale delta > 0, got {delta}")
        if dist not in ABS_SAMPLERS:
            raise SpecError(f"localzo: unknown distribution {dist!r}; valid: {', '.join(ABS_SAMPLERS)}")
        self.m, self.delta, self.dist = int(m), float(delta), dist
        self.generator: torch.Generator | None = None
        self._nonzero = 0
        self._total = 0

    def forward(self, x: Tensor) -> Tensor:
        return _SurrogateSpike.apply(x, self.sample_derivative, None)  # H forward, a fresh draw backward

    def pointwise_derivative(self):
        return self.sample_derivative

    def expectation(self, x: Tensor) -> Tensor:
        return expected_derivative(x, self.delta, self.dist)

    def _abs_z(self, n: int, like: Tensor) -> Tensor:
        g = self.generator
        z = ABS_SAMPLERS[self.dist]((self.m, n), g, g.device if g is not None else like.device)
        return z.to(like.device, like.dtype)

    def sample_derivative(self, x: Tensor) -> Tensor:
        """One fresh draw of g(x) for every element of x (same shape as x)."""
        a = x.abs().div_(self.delta).reshape(-1)
        if self.dist == "uniform" and x.device.type == "cpu":   # on a GPU, nonzero() would sync every step
            active = (a < SQRT3).nonzero().squeeze(1)
            if active.numel() < a.numel() // 2:  # sparse: sample only neurons that can be non-zero
                g = torch.zeros_like(a)
                g[active] = self._estimate(self._abs_z(active.numel(), x), a[active])
                return self._count(g).reshape(x.shape)
        return self._count(self._estimate(self._abs_z(a.numel(), x), a)).reshape(x.shape)

    def _estimate(self, z: Tensor, a: Tensor) -> Tensor:
        """(1/m) Σ_i |z_i|·1{|z_i| > a} / (2δ) from |z| [m, n] and a = |x|/δ [n]: the indicator as a
        float 0/1 tensor (z·1.0 = z, z·0.0 = 0 exactly; float compares and products take the vectorised
        path, bool masks do not)."""
        mask = torch.gt(z, a, out=torch.empty_like(z))
        return mask.mul_(z).mean(0).div_(2.0 * self.delta)

    def _count(self, g: Tensor) -> Tensor:
        prev = self._nonzero.to(g.device) if isinstance(self._nonzero, Tensor) else self._nonzero
        # g ≥ 0, so Σ sign(g) counts the non-zeros: 3× cheaper than a bool sum (which widens to int64),
        # exact up to 2²⁴ per call; a tensor: no device sync per backward pass
        self._nonzero = prev + g.sign().sum()
        self._total += g.numel()
        return g

    def gradient_stats(self) -> dict[str, float]:
        return {"nonzero_grad_fraction": int(self._nonzero) / self._total} if self._total else {}
