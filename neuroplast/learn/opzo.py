"""OPZO: online pseudo-zeroth-order training (Xiao et al., "Online Pseudo-Zeroth-Order Training of
Neuromorphic Spiking Neural Networks", Sec. 4).

One noisy forward pass per step: noise σ·z_l is added to each hidden layer's spikes (Sec. 4.1).
Momentum feedback connections M_l [C, N_l] track the expected Jacobian ∂o/∂a_l from the one-point
estimate, decoupled from the loss (Sec. 4.2, Lemma 4.1):

    M_l ← β·M_l + (1 − β)·mean_batch[(o − o_ref) z_lᵀ] / σ^c

and hidden errors are δ_l = e·M_l with e = ∂L/∂o, followed by the three-factor update
ΔW_l = −η·(ψ'(u_l) ⊙ δ_l) ⊗ x̂_{l−1} (Sec. 4.3). Options: ``noise`` gaussian | rademacher;
``antithetic`` (z at odd steps = −z of the step before, Sec. 4.4); ``sigma_end`` (σ decays
linearly from ``sigma`` to it over training, Appendix C); ``beta``; ``scale_by_sigma`` (c = 1
keeps the 1/σ factor; default c = 0 as in Appendix C, stable while σ → 0: with 1/σ and no
reference the variance of M grows like 1/σ²); ``subtract_clean`` (o_ref = the clean output of the
same step, one extra forward pass; default o_ref = 0, the paper's single pass). With IGL
(``igl=k``) the layers before hidden layer k estimate the Jacobian of that layer's readout
instead, and take its error (Appendix C.1); ``ll`` adds local readouts (Sec. 4.4).
"""
from __future__ import annotations

import torch

from ..errors import SpecError
from ..snn import gemm
from .base import register
from .online import NOISE_KINDS, SITES, ThreeFactorRule, draw_noise, feedback_shape, signed


def momentum_alpha(batch: int, *, beta: float, sigma: float, scale_by_sigma: bool, sign: float = 1.0) -> float:
    """α of M ← β·M + α·oᵀ(σz): sign·(1 − β)/(B·σ^(1+c)) (sign −1 at an antithetic step)."""
    return sign * (1.0 - beta) / (batch * (sigma * sigma if scale_by_sigma else sigma))


def momentum_step(M: torch.Tensor, product: torch.Tensor, beta: float, alpha: float,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """β·M + α·P for the product P = oᵀ(σz) [C, N], into ``out`` (not M itself) or a new tensor."""
    out = torch.mul(M, beta, out=out) if out is not None else M * beta
    return out.add_(product, alpha=alpha)


def momentum_feedback_update(M: torch.Tensor, o: torch.Tensor, noise: torch.Tensor, *, beta: float, sigma: float,
                             scale_by_sigma: bool, sign: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """M ← β·M + (1 − β)·(1/B)·Σ_b o_b (sign·z_b)ᵀ (/σ) for o [B, C] and the drawn noise σ·z [B, N] of
    a step that injected sign·σ·z (sign −1 at an antithetic step): the product oᵀ(σz) (``gemm.mm``),
    then ``momentum_step`` with 1/(B·σ^(1+c)) and the sign in its α (oᵀ(−z) = −(oᵀz) exactly)."""
    alpha = momentum_alpha(o.shape[0], beta=beta, sigma=sigma, scale_by_sigma=scale_by_sigma, sign=sign)
    return momentum_step(M, gemm.mm(o.t(), noise), beta, alpha, out)


@register
class OPZO(ThreeFactorRule):
    name = "opzo"

    def __init__(self, sigma: float = 0.5, sigma_end: float = 0.0, beta: float = 0.99, noise: str = "gaussian",
                 antithetic: bool | int = 1, scale_by_sigma: bool | int = 0, subtract_clean: bool | int = 0,
                 ll: int | str = 0, ll_scale: float = 1.0, igl: int | str = 0, site: str = "after"):
        if not sigma > 0:
            raise SpecError(f"opzo needs a noise scale sigma > 0, got {sigma}")
        if not 0 <= sigma_end <= sigma:
            raise SpecError(f"opzo needs 0 <= sigma_end <= sigma, got {sigma_end}")
        if not 0.0 <= beta < 1.0:
            raise SpecError(f"opzo needs a momentum beta in [0, 1), got {beta}")
        if noise not in NOISE_KINDS:
            raise SpecError(f"opzo: unknown noise {noise!r}; valid: {', '.join(NOISE_KINDS)}")
        self.sigma0, self.sigma_end, self.beta, self.noise_kind = float(sigma), float(sigma_end), float(beta), noise
        self.antithetic, self.scale_by_sigma = bool(antithetic), bool(scale_by_sigma)
        self.subtract_clean = bool(subtract_clean)
        self.set_local(ll, ll_scale, igl)
        if site not in SITES:
            raise SpecError(f"opzo: unknown noise site {site!r}; valid: {', '.join(SITES)} (the neuron)")
        self.site = site
        self.sigma = self.sigma0
        self.feedback: dict[str, torch.Tensor] = {}
        # the step's noise is sign·σ·z: σ·z of the last draw, sign −1 at the antithetic step after it
        self._noise: dict[str, torch.Tensor] = {}
        self._sign = 1.0

    def set_progress(self, fraction):
        self.sigma = self.sigma0 + (self.sigma_end - self.sigma0) * min(max(fraction, 0.0), 1.0)

    def prepare(self, net, x_seq):
        if not self.feedback:
            for name in net.spiking_layers():
                self.feedback[name] = torch.zeros(feedback_shape(net, name), device=x_seq.device, dtype=x_seq.dtype)

    def noise(self, net, t, batch, like):
        return signed(*self.signed_noise(net, t, batch, like))

    def signed_noise(self, net, t, batch, like):
        self.last_draws = 0
        if self.sigma == 0:
            self._noise = {}
            return None, 1.0
        if self.antithetic and t % 2 == 1 and self._noise and self._sign > 0:
            self._sign = -1.0   # σ·(−z) = −(σ·z) exactly: the drawn step's noise with sign −1
            return self._noise, -1.0
        # σ·z drawn as N(0, σ²) (rademacher: σ·sign(z)): the noise itself, no unit-variance copy
        self._noise = draw_noise(net, self.feedback, batch, self.noise_kind, self.generator, like, scale=self.sigma)
        self._sign = 1.0
        self.last_draws = sum(int(n.numel()) for n in self._noise.values())
        return self._noise, 1.0

    def can_fold_time(self):
        return super().can_fold_time() and not self.subtract_clean

    def noise_state(self):
        return self._noise, self._sign

    def set_noise_state(self, state):
        self._noise, self._sign = state

    def hidden_signals(self, net, info):
        info.ref = info.rerun(None) if self.subtract_clean and self._noise else None
        return {name: info.e @ self.feedback[name] for name in info.layers}

    def _update(self, M, o, noise, sign, out=None):
        return momentum_feedback_update(M, o, noise.flatten(1), beta=self.beta, sigma=self.sigma,
                                        scale_by_sigma=self.scale_by_sigma, sign=sign, out=out)

    def window_feedback(self, net, E, outs, states, layers):
        """M_l[k] of the signals δ_l[k] = e[k]·M_l[k] of a window of K steps, M_l updated after each
        step as the step-by-step ``hidden_signals``/``observe`` pair updates it, into one [K, C, N]
        buffer. An antithetic pair (steps k, k+1 with noise +σz and −σz) reads z once: one product
        [o_k, o_{k+1}]ᵀ·σz [2C, N] gives both steps' updates."""
        if self.subtract_clean or not all(n for n, _ in states):
            return None
        out, K = {}, len(states)
        C = outs.shape[-1]
        for name in layers:
            Ms = torch.empty((K, *self.feedback[name].shape), dtype=E.dtype, device=E.device)
            Ms[0].copy_(self.feedback[name])
            k = 0
            while k < K:
                noise, _ = states[k]
                pair = k + 1 < K and states[k + 1][0] is noise
                steps = [k, k + 1] if pair else [k]
                o = torch.cat([outs[j] for j in steps], 1) if pair else outs[k]
                product = gemm.mm(o.t(), noise[name].flatten(1))
                for i, j in enumerate(steps):
                    alpha = momentum_alpha(outs.shape[1], beta=self.beta, sigma=self.sigma,
                                           scale_by_sigma=self.scale_by_sigma, sign=states[j][1])
                    last = j == K - 1   # M after the window: its own tensor (the buffer is freed with the window)
                    M = momentum_step(Ms[j], product[i * C:(i + 1) * C], self.beta, alpha,
                                      out=None if last else Ms[j + 1])
                k += len(steps)
            self.feedback[name] = M
            out[name] = Ms
        self._noise, self._sign = states[-1]
        return out

    def observe(self, info):
        if not self._noise:
            return
        o = info.o if info.ref is None else info.o - info.ref
        for name in info.layers:
            self.feedback[name] = self._update(self.feedback[name], o, self._noise[name], self._sign)
