"""Synaptic operations (dense and conv2d) with an optional eligibility input for the weight gradient.

    I = W ⊛ x + b

Online rules (OTTT, DFA, OPZO) keep a presynaptic trace x̂[t] = λ·x̂[t−1] + x[t] and want the
weight gradient ∂L/∂W = δ ⊗ x̂ instead of δ ⊗ x, while the current I and the gradient sent back
to x stay those of W ⊛ x (OTTT, Xiao et al. 2022, Sec. 4.1). ``synapse(op, x, weight_input=x̂)``
does exactly that with one forward product. Feedback alignment (Lillicrap et al. 2016) sends the
error back through a fixed random B instead of Wᵀ: ``synapse(op, x, feedback=B)`` (B shaped as W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from . import gemm

Tensor = torch.Tensor


class _TracedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, x_hat, weight, bias, feedback):
        ctx.save_for_backward(x_hat, feedback)
        ctx.has_bias = bias is not None
        return gemm.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x_hat, feedback = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        grad_w = gemm.mm(g2.t(), x_hat.reshape(-1, x_hat.shape[-1]))
        grad_b = g2.sum(0) if ctx.has_bias else None
        grad_x = gemm.mm(g2, feedback).view(*g.shape[:-1], feedback.shape[1]) if ctx.needs_input_grad[0] else None
        return grad_x, None, grad_w, grad_b, None


class _TracedConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, x_hat, weight, bias, feedback, stride, padding):
        ctx.save_for_backward(x_hat, feedback)
        ctx.conf = (x.shape, weight.shape, bias is not None, stride, padding)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, g):
        x_hat, feedback = ctx.saved_tensors
        x_shape, w_shape, has_bias, stride, padding = ctx.conf
        grad_x = torch.nn.grad.conv2d_input(x_shape, feedback, g, stride, padding) if ctx.needs_input_grad[0] else None
        # weight and bias gradients from one call (the kernel sums the bias while it reads g)
        _, grad_w, grad_b = torch.ops.aten.convolution_backward(
            g, x_hat, g.new_empty(1).expand(w_shape), [w_shape[0]] if has_bias else None, _pair(stride), _pair(padding),
            [1, 1], False, [0, 0], 1, [False, True, has_bias])
        return grad_x, None, grad_w, grad_b, None, None, None


class NeuronBiasConv2d(nn.Conv2d):
    """A convolution whose bias is per output neuron, ``bias`` [C_out, H_out, W_out], instead of per channel:
    I = W ⊛ x + b[c, h, w]. The first layer of a network that takes intensities in place of normalised
    inputs (``fold_input.fold_input_norm``): with zero padding, W·1 differs at the map's borders."""

    def __init__(self, conv: nn.Conv2d, bias: Tensor):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=False,
                         padding_mode=conv.padding_mode, dtype=conv.weight.dtype, device=conv.weight.device)
        if bias.dim() != 3 or bias.shape[0] != conv.out_channels:
            raise ValueError(f"NeuronBiasConv2d: bias of shape {list(bias.shape)}; expected [{conv.out_channels}, H, W]")
        with torch.no_grad():
            self.weight.copy_(conv.weight)
        self.bias = nn.Parameter(bias.detach().to(conv.weight.dtype).clone())

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight, None) + self.bias


def synapse(op: nn.Module, x: Tensor, weight_input: Tensor | None = None, feedback: Tensor | None = None) -> Tensor:
    """Apply a ``nn.Linear`` or ``nn.Conv2d``; with ``weight_input`` the weight gradient uses it,
    with ``feedback`` the gradient sent back to x uses it in place of W."""
    if weight_input is None and feedback is None:
        return op(x)
    x_hat = x.detach() if weight_input is None else weight_input
    fb = op.weight.detach() if feedback is None else feedback
    if isinstance(op, nn.Linear):
        return _TracedLinear.apply(x, x_hat, op.weight, op.bias, fb)
    if isinstance(op, NeuronBiasConv2d):
        return _TracedConv2d.apply(x, x_hat, op.weight, None, fb, op.stride, op.padding) + op.bias
    if isinstance(op, nn.Conv2d):
        return _TracedConv2d.apply(x, x_hat, op.weight, op.bias, fb, op.stride, op.padding)
    raise TypeError(f"synapse: unsupported op {type(op).__name__}")
