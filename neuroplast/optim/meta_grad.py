"""Meta-gradients of a learned optimizer's segment losses (Andrychowicz et al. 2016).

Over a segment of K = ``unroll`` optimizee steps from step t the learned optimizer's meta-loss is

    meta-loss = (1/K) Σ_{k=1..K} w_t · ℓ(L(θ_t)),      θ_{t+1} = θ_t + Δθ(φ; g_t),

with g_t the optimizee's gradient estimate (detached: second derivatives dropped). ``weights``
chooses w·ℓ:

    sum: L_t          normalized: L_t / L_0          late: (t/H)·L_t / L_0          log: log L_t

(L_0 the optimizee's initial loss, H the horizon; a plain sum is dominated by the early high-loss
phase). Its gradient in the LSTM weights φ comes from truncated BPTT through the segment
(``_segment_loss``), or from persistent evolution strategies (``pes_segment``): perturbed copies
of the LSTM each run the problem's trajectory, and the accumulated perturbations make the estimate
unbiased for the whole trajectory (truncated BPTT, which ignores how φ shaped the state each
segment starts from, drove the step size of a tuned Adam start down: reports/meta_horizon_bias.md).
Forward passes only, N× the optimizee steps. ``_meta_optimizer`` is the Adam that steps φ.
"""
from __future__ import annotations

import math

import torch

from .lstm import CoordinateLSTM
from .meta_config import MetaConfig


def _meta_loss_term(kind: str, loss, l0: float, t: int, horizon: int):
    if kind == "sum":
        return loss
    if kind == "normalized":
        return loss / l0
    if kind == "late":
        return (t / horizon) * loss / l0
    return loss.clamp_min(1e-30).log()


def _segment_loss(model: CoordinateLSTM, problem, theta, state, t: int, l0: float | None, horizon: int,
                  cfg: MetaConfig, graph: bool = True):
    """K = ``unroll`` optimizee steps from (θ, LSTM state) at step t: (meta-loss of the segment, θ, state, l0).
    ``graph=False``: θ is cut after every step (no meta-graph through the unroll, as PES needs)."""
    meta_loss = 0.0
    for _ in range(cfg.unroll):
        loss = problem.loss(theta, t)
        if l0 is None:
            l0 = max(float(loss.detach()), 1e-12)
        g = problem.grad(theta, loss, t)
        if t > 0:
            meta_loss = meta_loss + _meta_loss_term(cfg.weights, loss, l0, t, horizon)
        upd, state = model.step(g, state)
        theta, t = theta + upd, t + 1
        if not graph:                   # θ stays a leaf for the optimizee's next gradient
            theta = theta.detach().requires_grad_(True)
    meta_loss = (meta_loss + _meta_loss_term(cfg.weights, problem.loss(theta, t), l0, t, horizon)) / cfg.unroll
    return meta_loss, theta, state, l0


def pes_segment(model: CoordinateLSTM, problem, particles: list[dict], t: int, horizon: int, cfg: MetaConfig,
                generator: torch.Generator) -> tuple[float, torch.Tensor]:
    """Persistent evolution strategies (Vicol, Metz & Sohl-Dickstein, ICML 2021) over one segment.

    Each particle i keeps its own trajectory (θ_i, LSTM state) and the sum ξ_i of the perturbations
    ε_i ~ N(0, σ²I) of the LSTM parameters φ it has run with since the trajectory began; after the
    segment run with φ + ε_i (antithetic pairs ε, −ε), the unbiased estimate of ∂(segment loss)/∂φ
    over the whole trajectory is ĝ = Σ_i ξ_i·L_i / (N σ²), with no truncation bias (truncated BPTT
    ignores the effect of φ on the state the segment starts from, which favours small steps).
    Every particle replays the segment on the same mini-batches and estimator noise (common random
    numbers), so the loss differences between particles come from their perturbations, not from
    the data they happened to draw; and each keeps its own learning-rule state (OPZO's momentum
    feedback follows its own trajectory).
    Returns (mean segment loss over the particles, ĝ as a flat vector); inf loss if one diverged."""
    phi = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    half = len(particles) // 2
    eps = torch.randn(half, phi.numel(), generator=generator) * cfg.pes_sigma
    eps = torch.cat([eps, -eps])
    losses, trainable = [], [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)      # forward only: no graph through the LSTM (the optimizee's own grads still work)
    rng = problem.rng_state()
    fresh = problem.rule_snapshot()    # a learning rule's state: each particle carries its own
    try:
        for i, p in enumerate(particles):
            problem.restore_rule(fresh if p.get("rule") is None else p["rule"])
            problem.set_rng_state(rng)
            torch.nn.utils.vector_to_parameters(phi + eps[i], model.parameters())
            loss, theta, state, p["l0"] = _segment_loss(model, problem, p["theta"].detach().requires_grad_(True),
                                                        p["state"], t, p["l0"], horizon, cfg, graph=False)
            p["theta"], p["state"] = theta.detach(), state
            p["xi"] = p["xi"] + eps[i]
            p["rule"] = problem.rule_snapshot()
            losses.append(float(loss.detach()) if torch.is_tensor(loss) else float(loss))
    finally:
        torch.nn.utils.vector_to_parameters(phi, model.parameters())
        for q, flag in zip(model.parameters(), trainable):
            q.requires_grad_(flag)
    if not all(math.isfinite(x) for x in losses):
        return math.inf, torch.zeros_like(phi)
    L = torch.tensor(losses, dtype=phi.dtype)
    grad = (torch.stack([p["xi"] for p in particles]) * (L - L.mean()).unsqueeze(1)).sum(0)
    return float(L.mean()), grad / (len(particles) * cfg.pes_sigma ** 2)


def _meta_optimizer(model: CoordinateLSTM, cfg: MetaConfig) -> torch.optim.Adam:
    """Adam on the LSTM; the learnable global scalars (log step size, β₁) get their own, larger rate."""
    scalars = ("log_scale", "beta1_logit")
    groups = [{"params": [p for n, p in model.named_parameters() if n not in scalars], "lr": cfg.meta_lr}]
    own = [p for n, p in model.named_parameters() if n in scalars]
    if own:
        groups.append({"params": own, "lr": cfg.scale_lr})
    return torch.optim.Adam(groups)
