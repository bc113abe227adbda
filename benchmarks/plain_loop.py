"""A plain hand-written PyTorch loop of an FC LIF SNN: the speed reference for the engine.

Written the way a user would write it without neuroplast: nn.Linear layers, a sigmoid surrogate
autograd function, and a Python loop over time steps that runs every layer at every step."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SigmoidSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).float()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        sg = torch.sigmoid(4.0 * x)
        return g * 4.0 * sg * (1 - sg)


class PlainSNN(nn.Module):
    def __init__(self, sizes=(784, 800, 800, 10), leak=0.5, threshold=1.0):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.leak, self.threshold = leak, threshold

    def forward(self, x, T):
        x = x.flatten(1)
        us = [None] * (len(self.fcs) - 1)
        ss = [None] * (len(self.fcs) - 1)
        out = 0
        for _ in range(T):
            h = x
            for i, fc in enumerate(self.fcs[:-1]):
                cur = fc(h)
                if us[i] is None:
                    us[i] = cur
                else:
                    us[i] = self.leak * us[i] * (1 - ss[i]) + cur
                ss[i] = SigmoidSpike.apply(us[i] - self.threshold)
                h = ss[i]
            out = out + self.fcs[-1](h)
        return out / T


def plain_step(model, opt, x, y, T, mse_weight=0.05):
    opt.zero_grad(set_to_none=True)
    out = model(x, T)
    loss = (1 - mse_weight) * F.cross_entropy(out, y) + mse_weight * F.mse_loss(out, F.one_hot(y, 10).float())
    loss.backward()
    opt.step()
    return float(loss.detach())
