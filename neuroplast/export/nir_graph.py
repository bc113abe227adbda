"""Export to and import from NIR (the Neuromorphic Intermediate Representation, ``nir`` package).

Our discrete LIF u[t] = λ·u[t−1]·(1 − s[t−1]) + I[t], s = H(u − θ), is NIR's
LIF τ·du/dt = (v_leak − u) + R·I stepped with dt (u ← u + dt/τ·(v_leak − u + R·I)) when
τ = dt/(1 − λ), R = τ/dt, v_leak = 0, v_threshold = θ and v_reset = 0 (hard reset); λ = 1 (no leak) is
τ = R = ∞, imported with the limit R·dt/τ = 1. Synapses are
``Affine`` (dense) and ``Conv2d``; average pooling is ``AvgPool2d``; flattening is ``Flatten``; the
readout is an ``Affine`` whose per-step output is averaged over time (graph metadata ``readout``).
Soft reset and max pooling have no NIR form and are refused with the layer named.

A run trained on mean/std-normalised images x = (v − m)/s (``data.norm.InputNorm``) is exported to take
intensities v ∈ [0, 1] (``to_nir(..., input_norm=...)``). Where the fold of the normalisation into the
first synapse (``snn.fold_input``) keeps a bias per output (dense layers, unpadded convolutions), the
folded synapse is written. A padded first convolution would need a bias per neuron (zero padding reads
x = 0, v = m, so W·1 differs at the borders), which NIR's Conv2d (per-channel bias) cannot hold: the
graph then holds the normalisation itself as the node ``input_norm`` right after the Input — a
non-spiking 1×1 ``Conv2d`` C → C, weight 1/s on the diagonal, bias −m/s, no padding (the elementwise
affine map every NIR importer runs: NIR has no bias-only node, ``Scale`` has no offset and ``Affine``
acts on the last axis only) — followed by the trained layers as they are: the convolution (W, b) pads
the normalised x with zeros exactly as in training, and every LIF keeps v_leak = 0 (importers such as
snnTorch refuse v_leak ≠ 0, and Norse starts the membrane at v_leak). The metadata records m and s
(``input_norm_mean``, ``input_norm_std``). ``from_nir`` recognises the node (a Conv2d after the Input
followed by no LIF) and folds it into the first layer (a network that takes intensities), or keeps the
trained network with ``fold_input=False``; graphs of the earlier scheme (the per-neuron rest of the bias
as the LIF's v_leak = R·c) still import: a resting potential v_leak is the constant current
c = v_leak·dt/τ, which joins the bias (τ·du/dt = v_leak − u + R·I; stepped: u ← λ·u + (1 − λ)·v_leak + I).
``to_nir`` refuses a network that already holds a per-neuron convolution bias (``NeuronBiasConv2d``):
export the trained network with its ``input_norm`` instead.

``export_nir(..., input_values="intensities")`` records in the metadata (``input``) that the graph takes
the data set's samples as intensities in [0, 1] (``neuroplast export`` always gives it the run's
normalisation, folded or as the ``input_norm`` node); ``read_nir`` returns whether a graph takes
normalised images (``normalized_input``), which ``neuroplast import --task`` then feeds it, and the
normalisation the graph held as a node (``input_norm``: mean, std).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, SpecError
from ..snn import LIFParams, build_network
from ..snn.fold_input import fold_input_norm
from ..snn.layers import Dropout, Flatten, Pool, Readout, SpikingLayer
from ..snn.synapse import NeuronBiasConv2d

FORMAT = "neuroplast"
#: metadata ``input`` of a graph that takes the data set's samples as intensities in [0, 1]
INPUT_INTENSITIES = "intensities"
#: name of the node that holds an input normalisation x = (v − m)/s (a 1×1 Conv2d; module docstring)
NORM_NODE = "input_norm"


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _first_op(net):
    return next((layer.op for layer in net.layers.values() if isinstance(layer, (SpikingLayer, Readout))), None)


def _norm_node(norm, channels: int, hw: tuple[int, ...]):
    """The NIR node of x = (v − m)/s on [C, H, W]: a 1×1 Conv2d C → C, weight 1/s on the diagonal, bias −m/s."""
    import nir
    weight = (np.eye(channels) / norm.std).reshape(channels, channels, 1, 1)
    bias = np.full(channels, -norm.mean / norm.std)
    return nir.Conv2d(input_shape=tuple(hw), weight=weight.astype(np.float32), stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), groups=1, bias=bias.astype(np.float32))


def to_nir(net, dt: float = 1.0, *, time_steps: int | None = None, encoding: str | None = None,
           input_values: str | None = None, input_norm=None):
    """NIRGraph of a neuroplast network (input → … → output), validated by ``nir``; the run's T and
    input encoding, where given, go into the metadata (``neuroplast import`` evaluates with them), and
    so does ``input_values="intensities"``: the graph takes intensities in [0, 1], not normalised images.
    ``input_norm`` (an ``InputNorm``): ``net`` was trained on x = (v − m)/s, and the graph takes v — the
    normalisation folded into the first synapse, or as the ``input_norm`` node where the fold would need a
    per-neuron convolution bias (module docstring). Every LIF has v_leak = 0."""
    import nir
    if not (math.isfinite(dt) and dt > 0):
        raise SpecError(f"NIR time step dt = {dt:g}: it must be > 0 (e.g. --dt 1)")
    norm_node = None
    if input_norm is not None and not input_norm.identity:
        folded = fold_input_norm(net, input_norm)
        if isinstance(_first_op(folded), NeuronBiasConv2d):
            if len(net.input_shape) != 3:
                raise SpecError(f"input normalisation of a {len(net.input_shape)}-d input before a convolution")
            norm_node = _norm_node(input_norm, net.input_shape[0], net.input_shape[1:])
        else:
            net = folded
    nodes, order = {"input": nir.Input(input_type=np.array(net.input_shape))}, ["input"]
    if norm_node is not None:
        nodes[NORM_NODE] = norm_node
        order.append(NORM_NODE)
    shape = tuple(net.input_shape)
    for name, layer in net.layers.items():
        if isinstance(layer, SpikingLayer):
            if layer.lif.reset != "hard":
                raise SpecError(f"layer {name}: NIR's LIF resets to v_reset; soft reset (subtract θ) has no NIR form")
            op, out_shape = layer.op, net.shapes[name]
            n = tuple(out_shape)
            tau = dt / (1.0 - layer.lif.leak) if layer.lif.leak < 1 else math.inf
            if isinstance(op, NeuronBiasConv2d):
                raise SpecError(f"layer {name}: its bias is per neuron (an input normalisation folded into a padded "
                                "convolution), which NIR's Conv2d cannot hold; export the trained network with "
                                "its normalisation (to_nir(net, input_norm=...)), which writes it as a node")
            if isinstance(op, torch.nn.Conv2d):
                nodes[f"{name}_syn"] = nir.Conv2d(input_shape=tuple(shape[1:]), weight=_np(op.weight),
                                                  stride=tuple(op.stride), padding=tuple(op.padding),
                                                  dilation=tuple(op.dilation), groups=op.groups, bias=_np(op.bias))
            else:
                nodes[f"{name}_syn"] = nir.Affine(weight=_np(op.weight), bias=_np(op.bias))
            nodes[name] = nir.LIF(tau=np.full(n, tau, np.float32), r=np.full(n, tau / dt, np.float32),
                                  v_leak=np.zeros(n, np.float32),
                                  v_threshold=np.full(n, layer.lif.threshold, np.float32),
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
    if time_steps is not None:
        meta["time_steps"] = int(time_steps)
    if encoding is not None:
        meta["encoding"] = str(encoding)
    if input_values is not None:
        if input_values != INPUT_INTENSITIES:
            raise SpecError(f"input_values must be {INPUT_INTENSITIES!r} (or None: not recorded), got {input_values!r}")
        meta["input"] = input_values
    if norm_node is not None:
        meta["input_norm_mean"], meta["input_norm_std"] = float(input_norm.mean), float(input_norm.std)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def export_nir(net, path: str | Path, dt: float = 1.0, *, time_steps: int | None = None,
               encoding: str | None = None, input_values: str | None = None, input_norm=None) -> Path:
    """Write ``net`` as an NIR file (HDF5), atomically (``to_nir``'s metadata and ``input_norm``)."""
    import nir

    from ..fileio import atomic_write
    graph = to_nir(net, dt, time_steps=time_steps, encoding=encoding, input_values=input_values,
                   input_norm=input_norm)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)   # nir.write (h5py) makes no folders
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        nir.write(str(tmp), graph)
        atomic_write(path, lambda fh: fh.write(tmp.read_bytes()), binary=True)
    finally:
        tmp.unlink(missing_ok=True)
    return path


#: NIR neuron nodes: a Conv2d right after the Input that one of these follows is a synapse, not the input_norm node
NEURON_NODES = ("LIF", "IF", "CubaLIF", "LI", "CubaLI", "I")


def _chain(graph) -> list[str]:
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


def _lif(name: str, node, dt: float) -> tuple[LIFParams, float, np.ndarray | None]:
    """(our LIF, the input gain R·dt/τ folded into the synapse, the constant current v_leak·dt/τ per neuron
    or None where v_leak = 0) of an NIR LIF node (module docstring)."""
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
        current = v_leak * (dt / tau)   # v_leak = R·c of a constant current c (module docstring)
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


def _pair(value) -> tuple:
    v = np.asarray(value).reshape(-1).tolist()
    return tuple(v * 2 if len(v) == 1 else v)


def _conv_token(name: str, syn) -> str:
    """``<c>C<k>[S<s>]`` of an NIR Conv2d; DataError unless it is one the architecture grammar builds."""
    w = np.asarray(syn.weight)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise DataError(f"NIR node {name}: Conv2d weight of shape {w.shape}; neuroplast convolutions have square "
                        "kernels ([out, in, k, k])")
    k = w.shape[-1]
    stride, padding, dilation = (_pair(getattr(syn, key)) for key in ("stride", "padding", "dilation"))
    if len(stride) != 2 or stride[0] != stride[1] or padding != (k // 2, k // 2) or dilation != (1, 1) \
            or int(syn.groups) != 1:
        raise DataError(f"NIR node {name}: Conv2d with stride {stride}, padding {padding}, dilation {dilation}, "
                        f"groups {syn.groups}; neuroplast's convolutions (<c>C<k>S<s>) have one stride for both "
                        f"axes, padding k//2 = {k // 2}, dilation 1 and groups 1")
    return f"{w.shape[0]}C{k}" + (f"S{stride[0]}" if stride[0] != 1 else "")


def _pool_token(name: str, node) -> str:
    """``AP<k>`` of an NIR AvgPool2d; DataError unless kernel = stride = k (square) and padding 0."""
    k, stride, padding = (_pair(getattr(node, key)) for key in ("kernel_size", "stride", "padding"))
    if len(k) != 2 or k[0] != k[1] or stride != k or padding != (0, 0):
        raise DataError(f"NIR node {name}: AvgPool2d with kernel {k}, stride {stride}, padding {padding}; neuroplast "
                        "pools (AP<k>) have a square kernel, stride = kernel and no padding")
    return f"AP{k[0]}"


def _input_norm(name: str, node, input_shape: tuple[int, ...]):
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
    geometry = tuple(_pair(getattr(node, key)) for key in ("stride", "padding", "dilation"))
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


def from_nir(graph, *, fold_input: bool = True):
    """Rebuild a runnable neuroplast Network from an NIRGraph written by ``to_nir`` (or of that shape:
    Input, [an ``input_norm`` 1×1 Conv2d,] then Affine/Conv2d → LIF, AvgPool2d and Flatten nodes, then an
    Affine readout → Output); DataError naming what else a graph holds. A graph's input normalisation is
    folded into the first layer, so that the network takes what the graph takes (intensities), or with
    ``fold_input=False`` left out: the trained network, on normalised inputs (``read_nir`` gives m, s)."""
    net, norm = _from_nir(graph)
    return fold_input_norm(net, norm) if norm is not None and fold_input else net


def _from_nir(graph):
    """(network without the input normalisation, its ``InputNorm`` or None) of an NIRGraph (``from_nir``)."""
    meta = dict(getattr(graph, "metadata", {}) or {})
    try:
        dt = float(meta.get("dt", 1.0))
    except (TypeError, ValueError):
        dt = math.nan
    if not (math.isfinite(dt) and dt > 0):
        raise DataError(f"NIR graph metadata dt = {meta.get('dt')!r}; the time step must be a number > 0")
    order = _chain(graph)
    if not order or type(graph.nodes[order[-1]]).__name__ != "Output":
        raise DataError("this NIR graph's chain does not end at an Output node; neuroplast imports Input → … → Output")
    body = order[:-1]
    inp = next(v for v in graph.nodes.values() if type(v).__name__ == "Input")
    input_shape = tuple(int(x) for x in np.asarray(next(iter(inp.input_type.values()))).reshape(-1))
    norm = None
    first = graph.nodes[body[0]] if body else None
    if len(body) >= 2 and type(first).__name__ == "Conv2d" and type(graph.nodes[body[1]]).__name__ not in NEURON_NODES \
            and tuple(np.asarray(first.weight).shape[1:]) == (input_shape[0], 1, 1):   # a 1×1 map of the input channels
        norm, body = _input_norm(body[0], graph.nodes[body[0]], input_shape), body[1:]
    tokens, weights, lif, pending = [], [], None, None
    for name in body:
        node = graph.nodes[name]
        kind = type(node).__name__
        if pending is not None and kind != "LIF":
            raise DataError(f"NIR node {pending[0]} ({type(pending[1]).__name__}) is followed by {name} ({kind}); "
                            "neuroplast needs an LIF after every synapse but the readout Affine before Output")
        if kind in ("Affine", "Conv2d"):
            pending = (name, node)
        elif kind == "LIF":
            if pending is None:
                raise DataError(f"NIR node {name}: an LIF must follow an Affine or Conv2d")
            syn_name, syn = pending
            params, gain, current = _lif(name, node, dt)  # the gain is folded into the synapse: our LIF takes I with unit gain
            if lif is not None and params != lif:
                raise DataError(f"NIR node {name}: neuroplast networks share one LIF setting; this graph mixes them")
            lif = params
            conv = type(syn).__name__ == "Conv2d"
            tokens.append(_conv_token(syn_name, syn) if conv else str(np.asarray(syn.weight).shape[0]))
            weights.append((syn_name, np.asarray(syn.weight) * gain, np.asarray(syn.bias) * gain, current))
            pending = None
        elif kind == "AvgPool2d":
            tokens.append(_pool_token(name, node))
        elif kind != "Flatten":
            raise DataError(f"NIR node {name} ({kind}) has no neuroplast layer")
    if pending is None or type(pending[1]).__name__ != "Affine":
        end = f"{body[-1]} ({type(graph.nodes[body[-1]]).__name__})" if body else "its Input"
        raise DataError(f"this NIR graph ends with {end} before its Output; neuroplast networks end with a "
                        "non-spiking Affine readout (its per-step output averaged over time)")
    w, b = np.asarray(pending[1].weight), np.asarray(pending[1].bias)
    tokens.append(f"FC{w.shape[0]}")
    weights.append((pending[0], w, b, None))
    arch = "-".join(["x".join(map(str, input_shape)), *tokens])
    try:
        net = build_network(arch, input_shape=input_shape, num_classes=int(w.shape[0]), lif=lif or LIFParams())
    except SpecError as exc:
        raise DataError(f"this NIR graph does not form a neuroplast network: {exc}") from None
    layers = [(key, layer) for key, layer in net.layers.items() if hasattr(layer, "op")]
    with torch.no_grad():
        for (key, layer), (name, w, b, current) in zip(layers, weights, strict=True):
            if w.shape != tuple(layer.op.weight.shape) or b.shape != tuple(layer.op.bias.shape):
                raise DataError(f"NIR node {name}: weight {w.shape} and bias {b.shape} do not fit its input; "
                                f"{arch} needs weight {tuple(layer.op.weight.shape)} and bias {tuple(layer.op.bias.shape)}")
            layer.op.weight.copy_(torch.as_tensor(w, dtype=layer.op.weight.dtype))
            layer.op.bias.copy_(torch.as_tensor(b, dtype=layer.op.bias.dtype))
            if current is not None:   # per-neuron constant current (v_leak) joins the bias
                layer.op = _with_current(name, layer.op, current, net.shapes[key])
    return net, norm


def _with_current(name: str, op, current: np.ndarray, out_shape: tuple[int, ...]):
    """``op`` with the constant current c [*out_shape] (an LIF's v_leak) added to its bias: a per-neuron
    bias, ``NeuronBiasConv2d`` for a convolution."""
    n = math.prod(out_shape)
    if current.size not in (1, n):
        raise DataError(f"NIR node {name}: the LIF after it has {current.size} v_leak values for {n} neurons")
    c = torch.tensor(np.broadcast_to(current.reshape(-1), (n,)).reshape(out_shape), dtype=torch.float64)
    if isinstance(op, torch.nn.Conv2d):
        return NeuronBiasConv2d(op, op.bias.detach().to(torch.float64)[:, None, None] + c)
    op.bias.add_(c.to(op.bias.dtype))
    return op


def import_nir(path: str | Path):
    """``from_nir`` of an NIR file; DataError for a missing, unreadable or unsupported one."""
    return read_nir(path)[0]


def read_nir(path: str | Path) -> tuple:
    """(network, run settings) of an NIR file: the settings are the time steps and input encoding that
    ``export_nir`` recorded, ``normalized_input``: whether the graph takes mean/std-normalised images
    (False for graphs that say they take intensities, that hold their normalisation as a node, and for
    graphs from elsewhere; for neuroplast graphs exported before the metadata said so, whether their run
    trained on them, ``data.normalizes``), and ``input_norm`` ({mean, std}) where the graph holds its
    normalisation as a node, which the network takes folded in (``from_nir``); DataError for malformed ones."""
    import nir
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIR file {path} not found")
    try:
        graph = nir.read(str(path))
    except Exception as exc:  # truncated or not HDF5: h5py and nir raise several types
        raise DataError(f"{path} is not a readable NIR file ({type(exc).__name__}: {exc})") from None
    (net, norm), meta, settings = _from_nir(graph), dict(getattr(graph, "metadata", {}) or {}), {}
    if norm is not None:
        net = fold_input_norm(net, norm)   # the graph takes intensities: so does the network
        settings["input_norm"] = {"mean": norm.mean, "std": norm.std}
    if "time_steps" in meta:
        T = meta["time_steps"]
        if not (isinstance(T, (int, np.integer)) and not isinstance(T, bool) and T >= 1):
            raise DataError(f"{path}: metadata time_steps = {T!r} is not a number of steps; pass --time-steps")
        settings["time_steps"] = int(T)
    if "encoding" in meta:
        enc = _text(meta["encoding"])
        from ..data.encode import encoding_names
        if enc not in encoding_names():
            raise DataError(f"{path}: metadata encoding = {enc!r} is not one of {', '.join(encoding_names())}")
        settings["encoding"] = enc
    if "input" in meta:
        if _text(meta["input"]) != INPUT_INTENSITIES:
            raise DataError(f"{path}: metadata input = {_text(meta['input'])!r}; neuroplast graphs take "
                            f"{INPUT_INTENSITIES!r} (samples as intensities in [0, 1])")
        settings["normalized_input"] = False
    elif norm is not None:   # the graph normalises its input itself
        settings["normalized_input"] = False
    elif _text(meta.get("format", "")) == FORMAT:
        # exported before the input was recorded: the trained network itself, on the inputs it trained on
        from ..data import normalizes
        settings["normalized_input"] = normalizes(settings.get("encoding", "direct"))
    else:
        settings["normalized_input"] = False
    return net, settings


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
