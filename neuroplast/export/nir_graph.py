"""Export to and import from NIR (the Neuromorphic Intermediate Representation, ``nir`` package).

Our discrete LIF u[t] = λ·u[t−1]·(1 − s[t−1]) + I[t], s = H(u − θ), is NIR's
LIF τ·du/dt = (v_leak − u) + R·I stepped with dt (u ← u + dt/τ·(v_leak − u + R·I)) when
τ = dt/(1 − λ), R = τ/dt, v_leak = 0, v_threshold = θ and v_reset = 0 (hard reset). Synapses are
``Affine`` (dense) and ``Conv2d``; average pooling is ``AvgPool2d``; flattening is ``Flatten``; the
readout is an ``Affine`` whose per-step output is averaged over time (graph metadata ``readout``).
Soft reset and max pooling have no NIR form and are refused with the layer named.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, SpecError
from ..snn import LIFParams, build_network
from ..snn.layers import Dropout, Flatten, Pool, Readout, SpikingLayer

FORMAT = "neuroplast"


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def to_nir(net, dt: float = 1.0):
    """NIRGraph of a neuroplast network (input → … → output), validated by ``nir``."""
    import nir
    nodes, order = {"input": nir.Input(input_type=np.array(net.input_shape))}, ["input"]
    shape = tuple(net.input_shape)
    for name, layer in net.layers.items():
        if isinstance(layer, SpikingLayer):
            if layer.lif.reset != "hard":
                raise SpecError(f"layer {name}: NIR's LIF resets to v_reset; soft reset (subtract θ) has no NIR form")
            op, out_shape = layer.op, net.shapes[name]
            if isinstance(op, torch.nn.Conv2d):
                nodes[f"{name}_syn"] = nir.Conv2d(input_shape=tuple(shape[1:]), weight=_np(op.weight),
                                                  stride=tuple(op.stride), padding=tuple(op.padding),
                                                  dilation=tuple(op.dilation), groups=op.groups, bias=_np(op.bias))
            else:
                nodes[f"{name}_syn"] = nir.Affine(weight=_np(op.weight), bias=_np(op.bias))
            n = tuple(out_shape)
            tau = dt / (1.0 - layer.lif.leak) if layer.lif.leak < 1 else math.inf
            nodes[name] = nir.LIF(tau=np.full(n, tau, np.float32), r=np.full(n, tau / dt, np.float32),
                                  v_leak=np.zeros(n, np.float32), v_threshold=np.full(n, layer.lif.threshold, np.float32),
                                  v_reset=np.zeros(n, np.float32))
            order += [f"{name}_syn", name]
        elif isinstance(layer, Readout):
            nodes[name] = nir.Affine(weight=_np(layer.op.weight), bias=_np(layer.op.bias))
            order.append(name)
        elif isinstance(layer, Pool):
            if layer.kind != "avg":
                raise SpecError(f"layer {name}: max pooling has no NIR node; use average pooling (AP{layer.k})")
            k = np.array([layer.k, layer.k])
            nodes[name] = nir.AvgPool2d(kernel_size=k, stride=k, padding=np.array([0, 0]))
            order.append(name)
        elif isinstance(layer, Flatten):
            nodes[name] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
            order.append(name)
        elif not isinstance(layer, Dropout):
            raise SpecError(f"layer {name} ({type(layer).__name__}) has no NIR form")
        if not isinstance(layer, Dropout):
            shape = tuple(net.shapes[name])
    nodes["output"] = nir.Output(output_type=np.array(shape))
    order.append("output")
    edges = list(zip(order[:-1], order[1:]))
    meta = {"format": FORMAT, "arch": net.arch, "dt": dt, "readout": "mean over time of the per-step output",
            "num_classes": net.num_classes}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def export_nir(net, path: str | Path, dt: float = 1.0) -> Path:
    """Write ``net`` as an NIR file (HDF5), atomically."""
    import nir

    from ..fileio import atomic_write
    graph = to_nir(net, dt)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        nir.write(str(tmp), graph)
        atomic_write(path, lambda fh: fh.write(tmp.read_bytes()), binary=True)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _chain(graph) -> list[str]:
    nxt = dict(graph.edges)
    if len(nxt) != len(graph.edges):
        raise DataError("this NIR graph branches; neuroplast imports feed-forward chains only")
    node, order = next(k for k, v in graph.nodes.items() if type(v).__name__ == "Input"), []
    while node in nxt:
        node = nxt[node]
        order.append(node)
    return order


def from_nir(graph):
    """Rebuild a runnable neuroplast Network from an NIRGraph written by ``to_nir`` (or of that shape)."""
    meta = dict(getattr(graph, "metadata", {}) or {})
    dt = float(meta.get("dt", 1.0))
    inp = next(v for v in graph.nodes.values() if type(v).__name__ == "Input")
    input_shape = tuple(int(x) for x in np.asarray(inp.input_type["input"]).reshape(-1))
    tokens, weights, lif = [], [], None
    pending = None
    for name in _chain(graph):
        node = graph.nodes[name]
        kind = type(node).__name__
        if kind in ("Affine", "Conv2d"):
            pending = (name, node)
        elif kind == "LIF":
            if pending is None:
                raise DataError(f"NIR node {name}: an LIF must follow an Affine or Conv2d")
            syn = pending[1]
            tau, r, th = (float(np.asarray(getattr(node, k)).reshape(-1)[0]) for k in ("tau", "r", "v_threshold"))
            gain = r * dt / tau  # folded into the synapse: our LIF takes I with unit gain
            params = LIFParams(leak=1 - dt / tau if math.isfinite(tau) else 1.0, threshold=th, reset="hard")
            if lif is not None and params != lif:
                raise DataError(f"NIR node {name}: neuroplast networks share one LIF setting; this graph mixes them")
            lif = params
            w, b = np.asarray(syn.weight) * gain, np.asarray(syn.bias) * gain
            tokens.append(f"{w.shape[0]}C{w.shape[-1]}" if type(syn).__name__ == "Conv2d" else str(w.shape[0]))
            weights.append((w, b))
            pending = None
        elif kind == "AvgPool2d":
            tokens.append(f"AP{int(np.asarray(node.kernel_size).reshape(-1)[0])}")
        elif kind in ("Flatten", "Output"):
            if kind == "Output" and pending is not None:  # the readout
                w, b = np.asarray(pending[1].weight), np.asarray(pending[1].bias)
                tokens.append(f"FC{w.shape[0]}")
                weights.append((w, b))
                pending = None
        else:
            raise DataError(f"NIR node {name} ({kind}) has no neuroplast layer")
    arch = "-".join(["x".join(map(str, input_shape)), *tokens])
    num_classes = int(weights[-1][0].shape[0])
    net = build_network(arch, input_shape=input_shape, num_classes=num_classes, lif=lif or LIFParams())
    layers = [layer for layer in net.layers.values() if hasattr(layer, "op")]
    with torch.no_grad():
        for layer, (w, b) in zip(layers, weights, strict=True):
            layer.op.weight.copy_(torch.as_tensor(w, dtype=layer.op.weight.dtype).reshape(layer.op.weight.shape))
            layer.op.bias.copy_(torch.as_tensor(b, dtype=layer.op.bias.dtype))
    return net


def import_nir(path: str | Path):
    import nir
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIR file {path} not found")
    try:
        graph = nir.read(str(path))
    except Exception as exc:  # truncated or not HDF5: h5py and nir raise several types
        raise DataError(f"{path} is not a readable NIR file ({type(exc).__name__}: {exc})") from None
    return from_nir(graph)
