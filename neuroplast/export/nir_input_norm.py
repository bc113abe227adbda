"""The input normalisation x = (v − m)/s of an NIR graph: folded into the first synapse, or written as the
node ``input_norm`` and read back from it (for ``nir_graph``, whose module docstring says why and when).

The node is a non-spiking 1×1 ``Conv2d`` C → C right after the Input, weight 1/s on the diagonal, bias
−m/s, no padding; a reader takes a Conv2d right after the Input that no neuron node follows for it.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError, SpecError
from ..snn.fold_input import fold_input_norm
from ..snn.layers import Readout, SpikingLayer
from ..snn.synapse import NeuronBiasConv2d
from .nir_node_readers import pair

#: name of the node that holds an input normalisation x = (v − m)/s (a 1×1 Conv2d; module docstring)
NORM_NODE = "input_norm"
#: NIR neuron nodes: a Conv2d right after the Input that one of these follows is a synapse, not the input_norm node
NEURON_NODES = ("LIF", "IF", "CubaLIF", "LI", "CubaLI", "I")


def _first_op(net):
    return next((layer.op for layer in net.layers.values() if isinstance(layer, (SpikingLayer, Readout))), None)


def fold_or_node(net, input_norm):
    """(the network to write, the ``input_norm`` node or None) for ``to_nir``: ``net`` with the normalisation
    folded into its first synapse where that keeps a bias per output, else ``net`` as trained and the node
    (a padded first convolution would need a per-neuron bias); ``net`` itself without a normalisation."""
    if input_norm is None or input_norm.identity:
        return net, None
    folded = fold_input_norm(net, input_norm)
    if not isinstance(_first_op(folded), NeuronBiasConv2d):
        return folded, None
    if len(net.input_shape) != 3:
        raise SpecError(f"input normalisation of a {len(net.input_shape)}-d input before a convolution")
    return net, norm_node(input_norm, net.input_shape[0], net.input_shape[1:])


def norm_node(norm, channels: int, hw: tuple[int, ...]):
    """The NIR node of x = (v − m)/s on [C, H, W]: a 1×1 Conv2d C → C, weight 1/s on the diagonal, bias −m/s."""
    import nir
    weight = (np.eye(channels) / norm.std).reshape(channels, channels, 1, 1)
    bias = np.full(channels, -norm.mean / norm.std)
    return nir.Conv2d(input_shape=tuple(hw), weight=weight.astype(np.float32), stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), groups=1, bias=bias.astype(np.float32))


def split_input_norm(graph, body: list[str], input_shape: tuple[int, ...]) -> tuple:
    """(the ``InputNorm`` of the graph's ``input_norm`` node or None, the node names after it): ``body`` is
    the chain after the Input; its first node is the normalisation when it is a Conv2d, a 1×1 map of the
    input channels, that no neuron node follows."""
    first = graph.nodes[body[0]] if body else None
    if len(body) >= 2 and type(first).__name__ == "Conv2d" and type(graph.nodes[body[1]]).__name__ not in NEURON_NODES \
            and tuple(np.asarray(first.weight).shape[1:]) == (input_shape[0], 1, 1):   # a 1×1 map of the input channels
        return read_norm_node(body[0], graph.nodes[body[0]], input_shape), body[1:]
    return None, body


def read_norm_node(name: str, node, input_shape: tuple[int, ...]):
    """The ``InputNorm`` (m, s) of an ``input_norm`` node: a 1×1 Conv2d C → C with weight 1/s (> 0) on its
    diagonal and bias −m/s (module docstring); DataError for any other node."""
    from ..data.norm import InputNorm
    w = np.asarray(node.weight, dtype=np.float64)
    b = np.asarray(node.bias, dtype=np.float64).reshape(-1) if getattr(node, "bias", None) is not None else None
    c = input_shape[0] if len(input_shape) == 3 else None
    what = (f"NIR node {name}: a Conv2d right after the Input that no LIF follows is read as the input "
            "normalisation x = (v − m)/s (a 1×1 Conv2d C → C, stride 1, no padding, one weight 1/s > 0 on its "
            "diagonal, zero elsewhere, and one bias −m/s)")
    if c is None or w.shape != (c, c, 1, 1) or b is None or b.shape != (c,):
        raise DataError(f"{what}; this one has weight {w.shape} for an input of shape {input_shape}")
    geometry = tuple(pair(getattr(node, key)) for key in ("stride", "padding", "dilation"))
    if geometry != ((1, 1), (0, 0), (1, 1)) or int(node.groups) != 1:
        raise DataError(f"{what}; this one has stride, padding, dilation {geometry} and groups {node.groups}")
    diag = np.diagonal(w[:, :, 0, 0])
    if not (np.isfinite(w).all() and np.isfinite(b).all()) or (w[:, :, 0, 0] != np.diag(diag)).any() \
            or np.unique(diag).size != 1 or not diag[0] > 0 or np.unique(b).size != 1:
        raise DataError(f"{what}; this one's weights or biases differ between channels, are off the diagonal, "
                        "not > 0 or not finite numbers")
    try:
        return InputNorm(mean=float(-b[0] / diag[0]), std=float(1.0 / diag[0]))
    except ValueError as exc:
        raise DataError(f"NIR node {name}: {exc}") from None
