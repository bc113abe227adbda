"""Fold average pooling into the next synaptic layer, exactly (for formats without a pooling layer).

Average pooling AP_k (kernel = stride = k, floor of the map size) is linear, so the synapse after it
can take the unpooled map directly:

* AP_k, flatten, dense W (readout included): W' on the unpooled C×H×W map with every weight spread
  over its k×k window divided by k²; rows and columns that pooling drops (H or W not a multiple of k)
  get weight 0.
* AP_k, conv (kernel K, stride s, padding p): conv with kernel k·K, stride k·s, padding k·p and
  W'[o, c, k·i + a, k·j + b] = W[o, c, i, j]/k². The output size is the same, ⌊(H + 2kp − kK)/(ks)⌋ + 1
  = ⌊(⌊H/k⌋ + 2p − K)/s⌋ + 1, and windows map onto windows; the one case that is not exact (a map
  size not divisible by k with p > 0, where the last windows reach into the rows that pooling
  dropped) is refused with the layers named.

Consecutive pools compose (AP_a then AP_b is AP_ab); dropout (identity at inference) is kept in
place; a per-neuron bias (``NeuronBiasConv2d``) stays as it is (the output map does not change). Max
pooling is left in the network: it is not linear. The input normalisation of a run trained on
normalised images is folded into the first synaptic layer by ``snn.fold_input`` (``runs.chip_view``),
before this.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from ..snn.layers import Dropout, Flatten, Pool, Readout, SpikingLayer
from ..snn.network import Network
from ..snn.synapse import NeuronBiasConv2d


def _spread(w: torch.Tensor, k: int) -> torch.Tensor:
    """[..., h, w] -> [..., k·h, k·w]: every entry repeated over its k×k block, divided by k²."""
    return w.repeat_interleave(k, -2).repeat_interleave(k, -1) / (k * k)


def _fold_linear(op: nn.Linear, k: int, unpooled: tuple[int, int, int]) -> nn.Linear:
    c, h, wd = unpooled
    hp, wp = h // k, wd // k
    w = _spread(op.weight.detach().reshape(op.out_features, c, hp, wp), k)
    w = F.pad(w, (0, wd - k * wp, 0, h - k * hp))          # dropped trailing rows/cols: weight 0
    new = nn.Linear(c * h * wd, op.out_features, bias=op.bias is not None,
                    dtype=op.weight.dtype, device=op.weight.device)
    with torch.no_grad():
        new.weight.copy_(w.reshape(op.out_features, -1))
        if op.bias is not None:
            new.bias.copy_(op.bias)
    return new


def _fold_conv(op: nn.Conv2d, k: int, unpooled: tuple[int, int, int], where: str) -> nn.Conv2d:
    if op.groups != 1 or tuple(op.dilation) != (1, 1) or op.padding_mode != "zeros" or isinstance(op.padding, str):
        raise SpecError(f"{where}: only plain convolutions (groups 1, dilation 1, zero padding) can take the pooling")
    kernel, stride, pad = tuple(op.kernel_size), tuple(op.stride), tuple(op.padding)
    for d, size in enumerate(unpooled[1:]):
        pooled = size // k
        last = stride[d] * ((pooled + 2 * pad[d] - kernel[d]) // stride[d]) - pad[d] + kernel[d] - 1
        if size % k and last >= pooled:   # the last windows would read rows that pooling dropped
            raise SpecError(f"{where}: a {unpooled[1]}x{unpooled[2]} map is not a multiple of the pooling size "
                            f"{k} and the convolution pads it, so no strided convolution equals pooling then "
                            "convolving; use a map size divisible by the pooling (e.g. another input size) or "
                            "export to NIR, which has average pooling")
    per_neuron = isinstance(op, NeuronBiasConv2d)   # its bias is per output neuron: the output map is the same
    new = nn.Conv2d(op.in_channels, op.out_channels, tuple(k * v for v in kernel), stride=tuple(k * v for v in stride),
                    padding=tuple(k * v for v in pad), bias=op.bias is not None and not per_neuron,
                    dtype=op.weight.dtype, device=op.weight.device)
    with torch.no_grad():
        new.weight.copy_(_spread(op.weight.detach(), k))
        if op.bias is not None and not per_neuron:
            new.bias.copy_(op.bias)
    return NeuronBiasConv2d(new, op.bias) if per_neuron else new


def fold_avg_pool(net: Network) -> Network:
    """An equivalent network without average pooling layers (see the module docstring); ``net`` is
    not changed. Returns ``net`` itself when it has no average pooling."""
    if not any(isinstance(layer, Pool) and layer.kind == "avg" for layer in net.layers.values()):
        return net
    layers, shapes = {}, {}
    shape = tuple(net.input_shape)
    pending: tuple[str, int, tuple[int, int, int]] | None = None   # (pool names, k, unpooled shape)
    for name, layer in net.layers.items():
        if isinstance(layer, Pool) and layer.kind == "avg":
            if pending is None:
                pending = (name, layer.k, shape)
            else:
                pending = (f"{pending[0]}+{name}", pending[1] * layer.k, pending[2])
            continue
        new = copy.deepcopy(layer)
        if pending is not None:
            pools, k, unpooled = pending
            op = getattr(layer, "op", None)
            where = f"layer {pools} (AP{k}) before layer {name}"
            if isinstance(layer, (SpikingLayer, Readout)) and isinstance(op, nn.Conv2d):
                new.op = _fold_conv(op, k, unpooled, where)
                pending = None
            elif isinstance(layer, (SpikingLayer, Readout)) and isinstance(op, nn.Linear):
                new.op = _fold_linear(op, k, unpooled)
                pending = None
            elif isinstance(layer, Flatten):
                layers[name], shapes[name] = new, (math.prod(unpooled),)
                continue
            elif isinstance(layer, Dropout):   # keeps the shape of what it follows
                layers[name], shapes[name] = new, shapes[next(reversed(shapes))] if layers else unpooled
                continue
            else:   # max pooling after average pooling: nothing to fold into, keep the pool
                layers[pools], shapes[pools] = Pool("avg", k), net.shapes[pools.split("+")[-1]]
                pending = None
        layers[name], shapes[name] = new, net.shapes[name]
        shape = net.shapes[name]
    return Network(layers, arch=f"{net.arch} (average pooling folded)", input_shape=net.input_shape,
                   num_classes=net.num_classes, shapes=shapes)
