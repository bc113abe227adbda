"""ZO: node perturbation, the zeroth-order baseline (OPZO paper, Table 1 row "ZO"; Sec. 3.2).

Noise σ·z_l (Gaussian or Rademacher) is added to every hidden layer's spikes; each sample's loss
change along that noise estimates its gradient with respect to the layer's activity:

    one-point:  δ_l[b] = (L_b(s + σz) − L_b^ref)/σ · z_l[b]        L^ref = clean pass | running mean
    two-point:  δ_l[b] = (L_b(s + σz) − L_b(s − σz))/(2σ) · z_l[b]   (``baseline=antithetic``)

scaled by 1/(B·T) like the readout's error, then the three-factor update
ΔW_l = −η·(ψ'(u_l) ⊙ δ_l) ⊗ x̂_{l−1}. All layers are perturbed at once, so each layer's estimate
also carries the other layers' noise: the high variance that OPZO reduces. (A prototype here: σ
fixed ≥ 0.5 with a clean-loss baseline works best; small or decaying σ collapses under Adam.)
"""
from __future__ import annotations

import torch

from ..errors import SpecError
from .base import register
from .online import NOISE_KINDS, SITES, ThreeFactorRule, draw_noise

BASELINES = ("clean", "running", "antithetic")


@register
class ZO(ThreeFactorRule):
    name = "zo"

    def __init__(self, sigma: float = 0.5, noise: str = "gaussian", baseline: str = "clean", momentum: float = 0.9,
                 ll: int | str = 0, ll_scale: float = 1.0, igl: int | str = 0, site: str = "after"):
        if not sigma > 0:
            raise SpecError(f"zo needs a noise scale sigma > 0, got {sigma}")
        if noise not in NOISE_KINDS:
            raise SpecError(f"zo: unknown noise {noise!r}; valid: {', '.join(NOISE_KINDS)}")
        if baseline not in BASELINES:
            raise SpecError(f"zo: unknown baseline {baseline!r}; valid: {', '.join(BASELINES)}")
        if not 0.0 <= momentum < 1.0:
            raise SpecError(f"zo needs a baseline momentum in [0, 1), got {momentum}")
        self.sigma, self.noise_kind, self.baseline, self.momentum = float(sigma), noise, baseline, float(momentum)
        self._z: dict[str, torch.Tensor] = {}
        self._running: dict[str | None, torch.Tensor] = {}   # per output (network readout, IGL readout)
        self.set_local(ll, ll_scale, igl)
        if site not in SITES:
            raise SpecError(f"zo: unknown noise site {site!r}; valid: {', '.join(SITES)} (the neuron)")
        self.site = site

    def can_fold_time(self):
        return False  # its signal reruns the step with other noise

    def noise(self, net, t, batch, like):
        self._z = draw_noise(net, net.spiking_layers(), batch, self.noise_kind, self.generator, like)
        self.last_draws = sum(int(z.numel()) for z in self._z.values())
        return {k: self.sigma * v for k, v in self._z.items()}

    def hidden_signals(self, net, info):
        per = getattr(info.loss_fn, "per_sample", None)
        if per is None:
            raise SpecError("zo needs a loss with per-sample values (neuroplast.learn.CEMSELoss)")
        noisy = per(info.o, info.y)
        if self.baseline == "clean":
            diff = (noisy - per(info.rerun(None), info.y)) / self.sigma
        elif self.baseline == "antithetic":
            minus = info.rerun({k: -self.sigma * v for k, v in self._z.items()})
            diff = (noisy - per(minus, info.y)) / (2 * self.sigma)
        else:
            # a 0-dim float64 tensor on the loss's device, the float arithmetic it replaced bit for bit,
            # without a device sync per step
            mean = noisy.detach().mean().double()
            ref = self._running.get(info.head, mean)
            self._running[info.head] = self.momentum * ref + (1 - self.momentum) * mean if info.head in self._running else mean
            diff = (noisy - ref) / self.sigma
        scale = diff / (len(info.y) * info.time_steps)
        return {name: scale.view(-1, *([1] * (self._z[name].dim() - 1))) * self._z[name] for name in info.layers}
