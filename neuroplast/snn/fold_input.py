"""Fold an input normalisation into the first synaptic layer, exactly.

A float network trained on normalised inputs x = (v − m)/s (``data.norm.InputNorm``, v ∈ [0, 1] the
intensities) takes v itself when its first synapse (W, b) becomes

    W' = W/s,   b' = b − (m/s)·(W·1),

W·1 being the synapse applied to an all-ones input: W' ⊛ v + b' = W ⊛ ((v − m)/s) + b for every v.
For a dense layer (the readout included) b' is one value per output neuron, the same at every step.
For a convolution, zero padding reads x = 0 (v = m) outside the map, so W·1 sums fewer taps at the
borders and b' is per output neuron, channel and position (``NeuronBiasConv2d``); it stays per channel
where it is the same at every position (no padding). Layers before the first synapse commute with the
map and stay as they are: flatten, dropout (identity in evaluation), average pooling
(avg(x) = (avg(v) − m)/s) and max pooling (max(x) = (max(v) − m)/s, as s > 0); W·1 is taken after
them (they keep an all-ones input all ones).

This is the one place where a normalised float run becomes what a chip or an exported file is given
(``runs.chip_view``): quantisation (``chip eval``, ``lava``), netx and NIR export (where the fold would
need a per-neuron bias, NIR holds the normalisation as a node instead: ``export.nir_graph``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from .gemm import Dense
from .layers import Dropout, Flatten, Pool, Readout, SpikingLayer
from .network import Network
from .synapse import NeuronBiasConv2d

#: b' of a convolution counts as per channel where its positions differ by less than this (relative)
SAME_BIAS_RTOL = 1e-12


def _ones_after(net: Network, first: str) -> torch.Tensor:
    """An all-ones input [1, *input_shape] through the layers before ``first`` (float64, on the device of
    ``first``'s weights, where W·1 is computed)."""
    h = torch.ones((1, *net.input_shape), dtype=torch.float64, device=net.layers[first].op.weight.device)
    for name, layer in net.layers.items():
        if name == first:
            return h
        if isinstance(layer, Pool):
            h = layer.forward(h)
        elif isinstance(layer, Flatten):
            h = h.flatten(1)
        elif not isinstance(layer, Dropout):
            raise SpecError(f"layer {name} ({type(layer).__name__}) before the first synaptic layer: the input "
                            "normalisation cannot be folded through it")
    raise AssertionError(first)


def _folded_op(op: nn.Module, ones: torch.Tensor, mean: float, std: float) -> nn.Module:
    """(W/s, b − (m/s)·W·1) of ``op``, as an op of the same kind (a per-neuron bias where it must be)."""
    w = op.weight.detach().to(torch.float64)
    b = op.bias.detach().to(torch.float64) if op.bias is not None else None
    if isinstance(op, nn.Conv2d):
        w_ones = F.conv2d(ones, w, None, op.stride, op.padding, op.dilation, op.groups)[0]     # [C, H, W]
        if b is not None and b.dim() == 1:
            b = b[:, None, None]
    elif isinstance(op, nn.Linear):
        w_ones = F.linear(ones.flatten(1), w)[0]
    else:
        raise SpecError(f"the first synaptic layer ({type(op).__name__}) has no fold of the input normalisation")
    bias = (0.0 if b is None else b) - (mean / std) * w_ones
    dtype, device = op.weight.dtype, op.weight.device
    if isinstance(op, nn.Conv2d):
        if bias.is_meta:   # no values to compare (a 'meta' network's shapes): per channel where nothing is padded
            same = all(p == 0 for p in op.padding) if isinstance(op.padding, tuple) else op.padding == "valid"
        else:
            per_channel = bias[:, :1, :1].expand_as(bias)
            same = torch.allclose(bias, per_channel, rtol=SAME_BIAS_RTOL,
                                  atol=SAME_BIAS_RTOL * float(bias.abs().max()))
        if same:
            new = nn.Conv2d(op.in_channels, op.out_channels, op.kernel_size, stride=op.stride, padding=op.padding,
                            dilation=op.dilation, groups=op.groups, padding_mode=op.padding_mode,
                            dtype=dtype, device=device)
            bias = bias[:, 0, 0]
        else:
            new = NeuronBiasConv2d(op, bias)
    else:
        new = Dense(op.in_features, op.out_features, dtype=dtype, device=device)
    with torch.no_grad():
        new.weight.copy_(w / std)
        new.bias.copy_(bias)
    return new


def fold_input_norm(net: Network, norm) -> Network:
    """A copy of ``net`` whose first synaptic layer takes intensities v where ``net`` takes
    x = (v − norm.mean)/norm.std (see the module docstring); ``net`` itself for the identity
    normalisation. ``net`` is not changed."""
    if norm.identity:
        return net
    first = next((name for name, layer in net.layers.items() if isinstance(layer, (SpikingLayer, Readout))), None)
    if first is None:
        raise SpecError(f"network {net.arch!r} has no synaptic layer to fold its input normalisation into")
    folded = copy.deepcopy(net)
    layer = folded.layers[first]
    layer.op = _folded_op(layer.op, _ones_after(net, first), float(norm.mean), float(norm.std))
    return folded
