"""Training loss on the readout: the CE + MSE mix of OTTT (Xiao et al. 2022, Sec. 5) and OPZO
(Appendix C):  L(o, y) = (1 − α)·CE(o, y) + α·MSE(o, onehot(y)),  α = 0.05 by default."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_mse_loss(output: torch.Tensor, target: torch.Tensor, mse_weight: float = 0.05) -> torch.Tensor:
    """(1 − α)·cross-entropy + α·mean-squared error to the one-hot target, α = ``mse_weight``."""
    ce = F.cross_entropy(output, target)
    if mse_weight == 0:
        return ce
    onehot = F.one_hot(target, output.shape[-1]).to(output.dtype)
    return (1.0 - mse_weight) * ce + mse_weight * F.mse_loss(output, onehot)
