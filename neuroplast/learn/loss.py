"""Training loss on the readout: the CE + MSE mix of OTTT (Xiao et al. 2022, Sec. 5) and OPZO
(Appendix C):  L(o, y) = (1 − α)·CE(o, y) + α·MSE(o, onehot(y)),  α = 0.05 by default.

``CEMSELoss(α)(o, y)`` is the batch mean; ``.per_sample(o, y)`` the loss of every sample (needed by
zeroth-order rules, whose update weighs each sample's noise by its own loss)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CEMSELoss:
    mse_weight: float = 0.05

    def per_sample(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(output, target, reduction="none")
        if self.mse_weight == 0:
            return ce
        onehot = F.one_hot(target, output.shape[-1]).to(output.dtype)
        mse = (output - onehot).pow(2).mean(-1)
        return (1.0 - self.mse_weight) * ce + self.mse_weight * mse

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_sample(output, target).mean()


def ce_mse_loss(output: torch.Tensor, target: torch.Tensor, mse_weight: float = 0.05) -> torch.Tensor:
    """(1 − α)·cross-entropy + α·mean-squared error to the one-hot target, α = ``mse_weight``."""
    return CEMSELoss(mse_weight)(output, target)


def _known(loss_fn) -> CEMSELoss | None:
    """The ``CEMSELoss`` behind ``loss_fn`` when it is one of the known batch-mean losses."""
    return CEMSELoss() if loss_fn is ce_mse_loss else loss_fn if isinstance(loss_fn, CEMSELoss) else None


def step_losses(loss_fn, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[L(o[k], y) for k < K] of a window of K steps, ``outputs`` [K, B, C], as a [K] tensor: one
    call on the K·B rows when L is a batch mean of per-sample losses (``CEMSELoss``,
    ``ce_mse_loss``; the same per-sample values and means as K calls), else K calls."""
    K, B = outputs.shape[:2]
    known = _known(loss_fn)
    if known is None:
        return torch.stack([loss_fn(outputs[k], target) for k in range(K)])
    return known.per_sample(outputs.flatten(0, 1), target.repeat(K)).view(K, B).mean(1)


def step_losses_and_errors(loss_fn, outputs: torch.Tensor, target: torch.Tensor,
                           time_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(L(o[k], y)/T for k < K, detached; E = ∂(Σ_k L(o[k], y)/T)/∂o) of a window, ``outputs``
    [K, B, C], T = ``time_steps``. For the CE + MSE mix E is written out (no autograd pass):

        ∂L/∂o = [(1 − α)·(softmax(o) − onehot(y)) + (2α/C)·(o − onehot(y))] / (B·T)

    (equal to autograd's up to float rounding); any other loss goes through autograd."""
    known = _known(loss_fn)
    o = outputs.detach()
    if known is None:
        o.requires_grad_(True)
        with torch.enable_grad():
            losses = step_losses(loss_fn, o, target) / time_steps
            (E,) = torch.autograd.grad(losses.sum(), o)
        return losses.detach(), E
    with torch.no_grad():
        losses = step_losses(known, o, target) / time_steps
        B, C = o.shape[1], o.shape[-1]
        onehot = F.one_hot(target, C).to(o.dtype)
        a = known.mse_weight
        E = torch.softmax(o, -1).sub_(onehot).mul_((1.0 - a) / (B * time_steps))
        if a:
            E.add_(o - onehot, alpha=2.0 * a / (B * C * time_steps))
    return losses, E
