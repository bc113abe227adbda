"""Readers of an NIR graph's nodes for ``nir_graph.from_nir``: the chain of node names, and what one LIF,
Conv2d or AvgPool2d node is in a neuroplast network (LIF parameters, architecture tokens), each with a
DataError naming the node where a neuroplast network has no such part.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import DataError
from ..snn import LIFParams


def chain(graph) -> list[str]:
    """Node names after the Input, in order; DataError unless the graph is one chain through every node."""
    inputs = [k for k, v in graph.nodes.items() if type(v).__name__ == "Input"]
    if len(inputs) != 1:
        raise DataError(f"this NIR graph has {len(inputs)} Input nodes; neuroplast imports graphs with one input")
    nxt = dict(graph.edges)
    if len(nxt) != len(graph.edges):
        raise DataError("this NIR graph branches; neuroplast imports feed-forward chains only")
    order = inputs
    while order[-1] in nxt and len(order) <= len(graph.nodes):
        order.append(nxt[order[-1]])
    if len(order) != len(graph.nodes) or set(order) != set(graph.nodes):
        raise DataError("this NIR graph is not one chain from its Input through every node (it has a cycle, a "
                        "merge or unconnected nodes); neuroplast imports feed-forward chains only")
    return order[1:]


def _uniform(name: str, node, key: str) -> float:
    """The one value of a per-neuron parameter; DataError if its neurons differ (a layer shares one)."""
    vals = np.unique(np.asarray(getattr(node, key), dtype=np.float64))
    if vals.size != 1 or np.isnan(vals[0]):
        shown = ", ".join(f"{v:g}" for v in vals[:4]) + (", …" if vals.size > 4 else "")
        raise DataError(f"NIR node {name}: {key} must be one number for all neurons, got [{shown}]; a neuroplast "
                        f"layer shares one {key}")
    return float(vals[0])


def lif_params(name: str, node, dt: float) -> tuple[LIFParams, float, np.ndarray | None]:
    """(our LIF, the input gain R·dt/τ folded into the synapse, the constant current v_leak·dt/τ per neuron
    or None where v_leak = 0) of an NIR LIF node (the ``nir_graph`` module docstring)."""
    tau, r, th = (_uniform(name, node, k) for k in ("tau", "r", "v_threshold"))
    v = _uniform(name, node, "v_reset") if getattr(node, "v_reset", None) is not None else 0.0
    if v != 0:
        raise DataError(f"NIR node {name}: v_reset = {v:g}; neuroplast's LIF resets to 0 (v_reset = 0)")
    v_leak = np.asarray(node.v_leak, dtype=np.float64) if getattr(node, "v_leak", None) is not None else np.zeros(1)
    if not np.isfinite(v_leak).all():
        raise DataError(f"NIR node {name}: v_leak holds values that are not finite numbers")
    current = None
    if (v_leak != 0).any():
        if math.isinf(tau):
            raise DataError(f"NIR node {name}: v_leak ≠ 0 with τ = ∞ (no leak) reaches no neuron; a neuroplast "
                            "layer without leak takes constant currents as synapse biases")
        current = v_leak * (dt / tau)   # v_leak = R·c of a constant current c (nir_graph module docstring)
    if not tau > dt:
        raise DataError(f"NIR node {name}: τ = {tau:g} is not above dt = {dt:g}; the leak λ = 1 − dt/τ must be in (0, 1]")
    if not th > 0:
        raise DataError(f"NIR node {name}: v_threshold = {th:g}; neuroplast's threshold must be > 0")
    if math.isinf(tau):  # λ = 1: to_nir writes τ = r = ∞ (r = τ/dt, gain 1)
        if r != math.inf:
            raise DataError(f"NIR node {name}: τ = ∞ with r = {r:g} lets no input reach the neuron; write r = ∞ "
                            "(r = τ/dt) for an integrate-and-fire layer")
        return LIFParams(leak=1.0, threshold=th, reset="hard"), 1.0, None
    gain = r * dt / tau
    if not math.isfinite(gain):
        raise DataError(f"NIR node {name}: r = {r:g} with τ = {tau:g} gives no finite input gain r·dt/τ")
    return LIFParams(leak=1 - dt / tau, threshold=th, reset="hard"), gain, current


def pair(value) -> tuple:
    """A node's 2-d setting (stride, padding, …) as a tuple; one value stands for both axes."""
    v = np.asarray(value).reshape(-1).tolist()
    return tuple(v * 2 if len(v) == 1 else v)


def conv_token(name: str, syn) -> str:
    """``<c>C<k>[S<s>]`` of an NIR Conv2d; DataError unless it is one the architecture grammar builds."""
    w = np.asarray(syn.weight)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise DataError(f"NIR node {name}: Conv2d weight of shape {w.shape}; neuroplast convolutions have square "
                        "kernels ([out, in, k, k])")
    k = w.shape[-1]
    stride, padding, dilation = (pair(getattr(syn, key)) for key in ("stride", "padding", "dilation"))
    if len(stride) != 2 or stride[0] != stride[1] or padding != (k // 2, k // 2) or dilation != (1, 1) \
            or int(syn.groups) != 1:
        raise DataError(f"NIR node {name}: Conv2d with stride {stride}, padding {padding}, dilation {dilation}, "
                        f"groups {syn.groups}; neuroplast's convolutions (<c>C<k>S<s>) have one stride for both "
                        f"axes, padding k//2 = {k // 2}, dilation 1 and groups 1")
    return f"{w.shape[0]}C{k}" + (f"S{stride[0]}" if stride[0] != 1 else "")


def pool_token(name: str, node) -> str:
    """``AP<k>`` of an NIR AvgPool2d; DataError unless kernel = stride = k (square) and padding 0."""
    k, stride, padding = (pair(getattr(node, key)) for key in ("kernel_size", "stride", "padding"))
    if len(k) != 2 or k[0] != k[1] or stride != k or padding != (0, 0):
        raise DataError(f"NIR node {name}: AvgPool2d with kernel {k}, stride {stride}, padding {padding}; neuroplast "
                        "pools (AP<k>) have a square kernel, stride = kernel and no padding")
    return f"AP{k[0]}"
