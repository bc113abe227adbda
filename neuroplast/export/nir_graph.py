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

The normalisation, folded or as the node, is written and read back by ``nir_input_norm``; what each node
of an imported graph is in a neuroplast network is read by ``nir_node_readers``.
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
from .nir_input_norm import NEURON_NODES, NORM_NODE, fold_or_node, split_input_norm  # noqa: F401  (re-exported)
from .nir_node_readers import chain, conv_token, lif_params, pool_token

FORMAT = "neuroplast"
#: metadata ``input`` of a graph that takes the data set's samples as intensities in [0, 1]
INPUT_INTENSITIES = "intensities"


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


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
    net, norm_node = fold_or_node(net, input_norm)
    nodes, order = {"input": nir.Input(input_type=np.array(net.input_shape))}, ["input"]
    if norm_node is not None:
        nodes[NORM_NODE] = norm_node
        order.append(NORM_NODE)
    shape = tuple(net.input_shape)
    for name, layer in net.layers.items():
        layer_nodes = _layer_nodes(net, name, layer, shape, dt)
        nodes.update(layer_nodes)
        order += list(layer_nodes)
        if not isinstance(layer, Dropout):
            shape = tuple(net.shapes[name])
    nodes["output"] = nir.Output(output_type=np.array(shape))
    order.append("output")
    edges = list(zip(order[:-1], order[1:]))
    meta = _metadata(net, dt, time_steps, encoding, input_values, input_norm if norm_node is not None else None)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _layer_nodes(net, name: str, layer, shape: tuple[int, ...], dt: float) -> dict:
    """The NIR nodes of one layer on an input of ``shape``, in chain order (none for dropout); SpecError for a
    layer that has no NIR form."""
    import nir
    if isinstance(layer, SpikingLayer):
        return _spiking_nodes(net, name, layer, shape, dt)
    if isinstance(layer, Readout):
        return {name: nir.Affine(weight=_np(layer.op.weight), bias=_np(layer.op.bias))}
    if isinstance(layer, Pool):
        if layer.kind != "avg":
            raise SpecError(f"layer {name}: max pooling has no NIR node; use average pooling (AP{layer.k})")
        k = np.array([layer.k, layer.k])
        return {name: nir.AvgPool2d(kernel_size=k, stride=k, padding=np.array([0, 0]))}
    if isinstance(layer, Flatten):
        return {name: nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)}
    if not isinstance(layer, Dropout):
        raise SpecError(f"layer {name} ({type(layer).__name__}) has no NIR form")
    return {}


def _spiking_nodes(net, name: str, layer, shape: tuple[int, ...], dt: float) -> dict:
    """The synapse node ``<name>_syn`` (Affine or Conv2d on an input of ``shape``) and the LIF node ``name``
    of a spiking layer: τ = dt/(1 − λ), R = τ/dt, v_leak = 0, hard reset (module docstring)."""
    import nir
    if layer.lif.reset != "hard":
        raise SpecError(f"layer {name}: NIR's LIF resets to v_reset; soft reset (subtract θ) has no NIR form")
    op, n = layer.op, tuple(net.shapes[name])
    tau = dt / (1.0 - layer.lif.leak) if layer.lif.leak < 1 else math.inf
    if isinstance(op, NeuronBiasConv2d):
        raise SpecError(f"layer {name}: its bias is per neuron (an input normalisation folded into a padded "
                        "convolution), which NIR's Conv2d cannot hold; export the trained network with "
                        "its normalisation (to_nir(net, input_norm=...)), which writes it as a node")
    if isinstance(op, torch.nn.Conv2d):
        syn = nir.Conv2d(input_shape=tuple(shape[1:]), weight=_np(op.weight), stride=tuple(op.stride),
                         padding=tuple(op.padding), dilation=tuple(op.dilation), groups=op.groups, bias=_np(op.bias))
    else:
        syn = nir.Affine(weight=_np(op.weight), bias=_np(op.bias))
    neuron = nir.LIF(tau=np.full(n, tau, np.float32), r=np.full(n, tau / dt, np.float32),
                     v_leak=np.zeros(n, np.float32), v_threshold=np.full(n, layer.lif.threshold, np.float32),
                     v_reset=np.zeros(n, np.float32))
    return {f"{name}_syn": syn, name: neuron}


def _metadata(net, dt: float, time_steps: int | None, encoding: str | None, input_values: str | None,
              norm_of_node) -> dict:
    """``to_nir``'s graph metadata; ``norm_of_node``: the normalisation the graph holds as a node, or None."""
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
    if norm_of_node is not None:
        meta["input_norm_mean"], meta["input_norm_std"] = float(norm_of_node.mean), float(norm_of_node.std)
    return meta


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
    dt = _graph_dt(dict(getattr(graph, "metadata", {}) or {}))
    order = chain(graph)
    if not order or type(graph.nodes[order[-1]]).__name__ != "Output":
        raise DataError("this NIR graph's chain does not end at an Output node; neuroplast imports Input → … → Output")
    inp = next(v for v in graph.nodes.values() if type(v).__name__ == "Input")
    input_shape = tuple(int(x) for x in np.asarray(next(iter(inp.input_type.values()))).reshape(-1))
    norm, body = split_input_norm(graph, order[:-1], input_shape)
    tokens, weights, lif = _read_layers(graph, body, dt)
    arch = "-".join(["x".join(map(str, input_shape)), *tokens])
    return _build(arch, input_shape, lif, weights), norm


def _graph_dt(meta: dict) -> float:
    """The time step dt of a graph's metadata (1 where it records none); DataError unless a number > 0."""
    try:
        dt = float(meta.get("dt", 1.0))
    except (TypeError, ValueError):
        dt = math.nan
    if not (math.isfinite(dt) and dt > 0):
        raise DataError(f"NIR graph metadata dt = {meta.get('dt')!r}; the time step must be a number > 0")
    return dt


def _read_layers(graph, body: list[str], dt: float) -> tuple[list[str], list[tuple], LIFParams | None]:
    """(architecture tokens, (node name, weight, bias, constant current or None) per synaptic layer, the
    LIF that the layers share or None) of the nodes between the Input (and ``input_norm``) and the Output:
    Affine/Conv2d → LIF, AvgPool2d and Flatten, then the Affine readout; DataError for anything else."""
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
            params, gain, current = lif_params(name, node, dt)  # the gain is folded into the synapse: our LIF takes I with unit gain
            if lif is not None and params != lif:
                raise DataError(f"NIR node {name}: neuroplast networks share one LIF setting; this graph mixes them")
            lif = params
            conv = type(syn).__name__ == "Conv2d"
            tokens.append(conv_token(syn_name, syn) if conv else str(np.asarray(syn.weight).shape[0]))
            weights.append((syn_name, np.asarray(syn.weight) * gain, np.asarray(syn.bias) * gain, current))
            pending = None
        elif kind == "AvgPool2d":
            tokens.append(pool_token(name, node))
        elif kind != "Flatten":
            raise DataError(f"NIR node {name} ({kind}) has no neuroplast layer")
    if pending is None or type(pending[1]).__name__ != "Affine":
        end = f"{body[-1]} ({type(graph.nodes[body[-1]]).__name__})" if body else "its Input"
        raise DataError(f"this NIR graph ends with {end} before its Output; neuroplast networks end with a "
                        "non-spiking Affine readout (its per-step output averaged over time)")
    w, b = np.asarray(pending[1].weight), np.asarray(pending[1].bias)
    tokens.append(f"FC{w.shape[0]}")
    weights.append((pending[0], w, b, None))
    return tokens, weights, lif


def _build(arch: str, input_shape: tuple[int, ...], lif: LIFParams | None, weights: list[tuple]):
    """The network ``arch`` with ``_read_layers``' weights, biases and constant currents (the last layer, the
    readout, gives the number of classes); DataError where they do not form it."""
    try:
        net = build_network(arch, input_shape=input_shape, num_classes=int(weights[-1][1].shape[0]),
                            lif=lif or LIFParams())
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
    return net


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
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DataError(f"{path} is not a readable NIR file ({why})") from None
    (net, norm), meta, settings = _from_nir(graph), dict(getattr(graph, "metadata", {}) or {}), {}
    if "num_classes" in meta and meta["num_classes"] != net.num_classes:
        raise DataError(f"{path}: metadata num_classes = {np.asarray(meta['num_classes']).tolist()!r}, but the readout has "
                        f"{net.num_classes} outputs")
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
