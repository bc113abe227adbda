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


def step_losses(loss_fn, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[L(o[k], y) for k < K] of a window of K steps, ``outputs`` [K, B, C], as a [K] tensor: one
    call on the K·B rows when L is a batch mean of per-sample losses (``CEMSELoss``,
    ``ce_mse_loss``; the same per-sample values and means as K calls), else K calls."""
    K, B = outputs.shape[:2]
    per_sample = (CEMSELoss().per_sample if loss_fn is ce_mse_loss else
                  loss_fn.per_sample if isinstance(loss_fn, CEMSELoss) else None)  # known batch means only
    if per_sample is None:
        return torch.stack([loss_fn(outputs[k], target) for k in range(K)])
    return per_sample(outputs.flatten(0, 1), target.repeat(K)).view(K, B).mean(1)
