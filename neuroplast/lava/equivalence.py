"""Equivalence harness: the same quantised network and inputs in Lava (fixed_pt) and in the fast
engine (``FixedNetwork``, Lava timing); u, v and spikes compared at every step, with the first
mismatch reported as (layer, neuron, step, both values)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .network import build_graph, netx_graph, run_graph


@dataclass
class Mismatch:
    sample: int
    layer: str
    quantity: str
    step: int
    neuron: int
    engine: float
    lava: float

    def __str__(self) -> str:
        return (f"sample {self.sample}, layer {self.layer}, {self.quantity}[neuron {self.neuron}] at step {self.step}: "
                f"engine {self.engine}, Lava {self.lava}")


def differs(a: np.ndarray, b: np.ndarray, atol: float = 0.0, rtol: float = 0.0) -> np.ndarray:
    """Where engine values ``a`` and Lava values ``b`` differ: bit for bit (atol = rtol = 0, fixed point),
    else by more than atol + rtol·|b| (float models)."""
    return a != b if atol == rtol == 0 else np.abs(a - b) > atol + rtol * np.abs(b)


def compare_sample(fixed, x_int: torch.Tensor, sample: int = 0, timeout: float = 120.0,
                   netx_file=None) -> tuple[Mismatch | None, dict]:
    """x_int [T, *input_shape] integer payloads of one sample -> (first mismatch or None, Lava's records).
    The Lava graph is built from ``fixed`` (``build_graph``), or loaded by lava-dl from ``netx_file``."""
    graph = (netx_graph(netx_file, x_int.numpy()) if netx_file is not None
             else build_graph(fixed, x_int.reshape(x_int.shape[0], -1).numpy()))
    lava = run_graph(graph, timeout=timeout)
    ours = fixed.simulate(x_int.unsqueeze(1), record=True, integer_input=True)["steps"]
    for layer, rec in lava.items():
        for q in ("s", "u", "v"):
            mine = ours[layer][q][:, 0].reshape(ours[layer][q].shape[0], -1).numpy()
            theirs = rec[q].transpose(0, 3, 2, 1) if rec[q].ndim == 4 else rec[q]   # Lava's W, H, C -> C, H, W
            theirs = theirs.reshape(theirs.shape[0], -1)
            if mine.shape != theirs.shape:
                raise AssertionError(f"layer {layer} {q}: engine recorded {mine.shape}, Lava {theirs.shape}")
            diff = np.argwhere(differs(mine, theirs))
            if len(diff):
                t, j = (int(v) for v in diff[0])
                return Mismatch(sample, layer, q, t, j, mine[t, j].item(), theirs[t, j].item()), lava
    return None, lava


def float_reference(net, x: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    """The engine's float LIF (``lif_step``) with Lava's timing (one step of delay per Dense, biases
    from the first step): per layer the membrane after reset v [steps, N] and spikes, float64."""
    from ..chip.fixed_network import run_steps
    from ..snn.neurons import lif_step
    from ..snn.spikefn import heaviside
    from .network import float_layers
    layers = float_layers(net)
    T = x.shape[0]
    steps = run_steps(T, len(layers), "lava")
    prev = torch.zeros(steps, x.shape[1], dtype=torch.float64)
    prev[:T] = x.to(torch.float64)
    out = {}
    for name, layer in layers:
        w = layer.op.weight.detach().to(torch.float64)
        b = layer.op.bias.detach().to(torch.float64) if layer.op.bias is not None else torch.zeros(w.shape[0])
        current = torch.zeros(steps, w.shape[0], dtype=torch.float64)
        current[1:] = prev[:-1] @ w.t()
        current += b
        u, s, vs, ss = torch.zeros(w.shape[0], dtype=torch.float64), torch.zeros(w.shape[0], dtype=torch.float64), [], []
        for t in range(steps):
            if hasattr(layer, "lif"):
                u, s = lif_step(u, s, current[t], layer.lif, heaviside)
            else:                                  # readout: integrates o[t] = W·x + b
                u = u + current[t]
            vs.append(u * (1 - s))
            ss.append(s.clone())
        out[name] = {"v": torch.stack(vs).numpy(), "s": torch.stack(ss).numpy()}
        prev = torch.stack(ss)
    return out


def compare_float_sample(net, x: torch.Tensor, sample: int = 0, timeout: float = 120.0, atol: float = 1e-9):
    """x [T, N_in] one float sample: Lava's floating_pt LIF/Dense vs ``float_reference``: spikes equal and
    voltages within ``atol``; returns (first mismatch or None, Lava's records)."""
    from .network import build_float_graph, run_graph
    lava = run_graph(build_float_graph(net, x.reshape(x.shape[0], -1).numpy()), timeout=timeout, tag="floating_pt")
    ours = float_reference(net, x.reshape(x.shape[0], -1))
    for layer, rec in ours.items():
        for q, tol in (("s", 0.0), ("v", atol)):
            diff = np.argwhere(differs(rec[q], lava[layer][q], atol=tol))
            if len(diff):
                t, j = (int(v) for v in diff[0])
                return Mismatch(sample, layer, q, t, j, float(rec[q][t, j]), float(lava[layer][q][t, j])), lava
    return None, lava
