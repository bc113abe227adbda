"""A quantised neuroplast network as a Lava process graph, run on Lava's CPU backend (fixed_pt).

FixedNetwork (chip.quantize, ``timing="lava"``) -> RingBuffer (graded 8-bit input) -> per synaptic
layer a Lava ``Dense`` (weights 2m, ``weight_exp``, graded messages for the input layer) feeding
a Lava ``LIF`` (du, dv, vth, bias_mant, bias_exp); the readout is a non-spiking integrating LIF
(dv = 0). Lava's own bit-accurate process models (PyDenseModelBitAcc, PyLifModelBitAcc) run it,
selected with the ``fixed_pt`` tag. Monitors record u, v and spikes of every LIF at every step, so
that ``equivalence`` can compare them with the fast engine.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from dataclasses import dataclass

import numpy as np

from . import compat

compat.install()
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.process import Dense
from lava.proc.io.source import RingBuffer
from lava.proc.lif.process import LIF
from lava.proc.monitor.process import Monitor

from ..chip.fixed import lava_weights
from ..chip.fixed_network import run_steps
from ..errors import NeuroplastError, SpecError


class LavaTimeout(NeuroplastError):
    """A Lava run did not finish in time (the runtime was stopped)."""


@dataclass
class LavaGraph:
    source: RingBuffer
    layers: list[tuple[str, Dense, LIF]]
    steps: int


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def build_graph(fixed, x_int: np.ndarray) -> LavaGraph:
    """Processes for one sample: ``x_int`` [T, N_in] integer payloads. Fully connected networks only."""
    kinds = [layer.kind for layer in fixed.layers]
    for layer in fixed.layers:
        if layer.kind == "pool" or (layer.synapse is not None and layer.synapse.conv is not None):
            what = f"{layer.pool[0]} pooling" if layer.kind == "pool" else "a convolution"
            raise SpecError(f"layer {layer.name} ({what}) has no Lava process here yet: the Lava graph takes fully "
                            "connected networks (e.g. 784-128-10); fold pooling into the next layer's weights or "
                            "use the fast engine (`neuroplast chip eval`)")
    if fixed.timing != "lava":
        raise SpecError("build the Lava graph from a FixedNetwork quantised with timing='lava'")
    n_syn = sum(k in ("spiking", "readout") for k in kinds)
    T = x_int.shape[0]
    steps = run_steps(T, n_syn, "lava")
    data = np.zeros((x_int.shape[1], steps), dtype=np.int32)
    data[:, :T] = x_int.T
    source = RingBuffer(data=data)
    port, graded, layers = source.s_out, True, []
    for layer in fixed.layers:
        if layer.synapse is None:
            continue
        syn, p = layer.synapse, layer.lif
        dense = Dense(weights=_np(lava_weights(syn.m)).astype(np.int32), weight_exp=int(syn.weight_exp),
                      num_message_bits=8 if graded else 0, sign_mode=None)
        n = syn.m.shape[0]
        lif = LIF(shape=(n,), du=int(p.du), dv=int(p.dv), vth=int(p.vth),
                  bias_mant=np.broadcast_to(_np(p.bias_mant), (n,)).astype(np.int32),
                  bias_exp=np.broadcast_to(_np(p.bias_exp), (n,)).astype(np.int32))
        port.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        port, graded = lif.s_out, False
        layers.append((layer.name, dense, lif))
    return LavaGraph(source, layers, steps)


def _child(job, anchor, conn) -> None:
    """Child process: run ``job()`` (which runs Lava processes), send its result (or the error) to the
    parent, always stop the runtime of ``anchor``."""
    os.setsid()  # own process group: the parent can stop Lava's workers with the child
    try:
        import torch  # torch ops in Lava's forked workers (our learning models) would hang in the
        torch.set_num_threads(1)  # parent's OpenMP pool (GNU OpenMP is not fork-safe): one thread each
        conn.send(("ok", job()))
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        try:
            anchor.stop()
        finally:
            conn.close()
            os._exit(0)


def run_isolated(job, anchor, *, timeout: float):
    """Run ``job()`` (Lava runs of the graph containing process ``anchor``) in a forked child with its
    own process group and return what it returns. A run past ``timeout`` seconds is killed with all of
    Lava's workers (LavaTimeout), so nothing of Lava's runtime outlives the call."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(job, anchor, child), daemon=False)
    proc.start()
    child.close()
    status, payload = "timeout", None
    try:
        if parent.poll(timeout):
            status, payload = parent.recv()
    except EOFError:
        status, payload = "error", "its process died without a result"
    finally:
        proc.join(10.0 if status != "timeout" else 0.0)   # a finished run stops its runtime itself
        if proc.is_alive():                                 # a hung one is killed with Lava's workers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.join()
        parent.close()
    if status == "timeout":
        raise LavaTimeout(f"the Lava run did not finish within {timeout:.0f} s; it was stopped")
    if status != "ok":
        raise NeuroplastError(f"the Lava run failed: {payload}")
    return payload


def run_graph(graph: LavaGraph, *, timeout: float = 120.0, tag: str = "fixed_pt") -> dict[str, dict[str, np.ndarray]]:
    """Run on Lava's CPU backend with ``tag`` models (fixed_pt: int64 records; floating_pt: float64);
    per layer u, v [steps, N] and spikes [steps, N] (in a forked child, see ``run_isolated``)."""
    monitors = []
    for name, _, lif in graph.layers:
        for what, target in (("u", lif.u), ("v", lif.v), ("s", lif.s_out)):
            mon = Monitor()
            mon.probe(target, graph.steps)
            monitors.append((name, what, mon, target))
    anchor = graph.layers[-1][2]

    def job():
        anchor.run(condition=RunSteps(num_steps=graph.steps), run_cfg=Loihi2SimCfg(select_tag=tag))
        return collect(monitors, np.int64 if tag == "fixed_pt" else np.float64)

    return run_isolated(job, anchor, timeout=timeout)


def monitor_data(mon, target, dtype=np.int64) -> np.ndarray:
    """A Monitor's record of ``target`` as [steps, N] (int64 for fixed point)."""
    data = mon.get_data()[target.process.name]
    return np.asarray(data[next(iter(data))]).astype(dtype)


def collect(monitors, dtype=np.int64) -> dict[str, dict[str, np.ndarray]]:
    """Records of (layer name, quantity, Monitor, Var) tuples as {layer: {quantity: [steps, N]}}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, what, mon, target in monitors:
        out.setdefault(name, {})[what] = monitor_data(mon, target, dtype)
    return out


READOUT_VTH = 1e30   # the float readout integrates and never fires


def float_layers(net) -> list[tuple[str, object]]:
    """The synaptic layers of a float network that Lava's float Dense + LIF can run (FC, hard reset)."""
    from ..snn.layers import Dropout, Flatten, Readout, SpikingLayer
    out = []
    for name, layer in net.layers.items():
        if isinstance(layer, (Flatten, Dropout)):
            continue
        if not isinstance(layer, (SpikingLayer, Readout)) or layer.op.weight.dim() != 2:
            raise SpecError(f"layer {name} ({type(layer).__name__}) has no float Lava process here: the float graph "
                            "takes fully connected networks (e.g. 64-128-10); use the fixed-point graph for the others")
        if isinstance(layer, SpikingLayer) and layer.lif.reset != "hard":
            raise SpecError(f"layer {name} resets by subtraction; Lava's LIF resets to 0 (train with hard reset)")
        out.append((name, layer))
    return out


def build_float_graph(net, x: np.ndarray) -> LavaGraph:
    """A float network as Lava processes run with their floating_pt models: RingBuffer (graded) ->
    Dense (W, one step of delay) -> LIF with du = 1 (u = a), dv = 1 − λ, vth = θ, bias_mant = b, so
    v[t] = λ·v[t−1] + W·x[t−1] + b and s = v > θ with reset to 0 — the engine's lif_step; the readout
    is an integrating LIF (dv = 0) that never fires. ``x`` [T, N_in] one sample."""
    layers = float_layers(net)
    T = x.shape[0]
    steps = run_steps(T, len(layers), "lava")
    data = np.zeros((x.shape[1], steps))
    data[:, :T] = x.T
    source = RingBuffer(data=data)
    port, graded, out = source.s_out, True, []
    for name, layer in layers:
        w = _np(layer.op.weight).astype(np.float64)
        b = _np(layer.op.bias).astype(np.float64) if layer.op.bias is not None else np.zeros(w.shape[0])
        dense = Dense(weights=w, num_message_bits=24 if graded else 0)
        spiking = hasattr(layer, "lif")
        lif = LIF(shape=(w.shape[0],), du=1.0, dv=1.0 - layer.lif.leak if spiking else 0.0,
                  vth=layer.lif.threshold if spiking else READOUT_VTH, bias_mant=b)
        port.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        port, graded = lif.s_out, False
        out.append((name, dense, lif))
    return LavaGraph(source, out, steps)


def netx_graph(path, x_int: np.ndarray) -> LavaGraph:
    """A netx HDF5 file loaded by lava-dl (``netx.hdf5.Network``, graded 8-bit input when the file says
    so) fed by a RingBuffer; ``x_int`` [T, *input_shape] integer payloads of one sample (C, H, W order).
    The layers are named as in the file (attribute ``name``), so the records compare with ``FixedNetwork``."""
    import h5py
    from lava.lib.dl import netx
    with h5py.File(path, "r") as f:
        bits = int(f.attrs.get("input_message_bits", 0))
        names = [str(f["layer"][str(i)].attrs.get("name", f"layer{i}")) for i in range(len(f["layer"]))
                 if f["layer"][str(i)]["type"][()] in (b"dense", b"conv")]
    net = netx.hdf5.Network(net_config=str(path), input_message_bits=bits)
    T = x_int.shape[0]
    steps = run_steps(T, len(net.layers), "lava")      # net.layers: its dense and conv blocks (no input block)
    sample = np.moveaxis(x_int, 0, -1)                      # [*input_shape, T]
    if sample.ndim == 4:                                    # C, H, W -> netx's W, H, C
        sample = sample.transpose(2, 1, 0, 3)
    data = np.zeros((*sample.shape[:-1], steps), dtype=np.int32)
    data[..., :T] = sample
    source = RingBuffer(data=data)
    source.s_out.connect(net.inp)
    layers = [(name, block.synapse, block.neuron) for name, block in zip(names, net.layers, strict=True)]
    return LavaGraph(source, layers, steps)
