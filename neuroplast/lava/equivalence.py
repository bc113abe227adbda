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
    engine: int
    lava: int

    def __str__(self) -> str:
        return (f"sample {self.sample}, layer {self.layer}, {self.quantity}[neuron {self.neuron}] at step {self.step}: "
                f"engine {self.engine}, Lava {self.lava}")


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
            diff = np.argwhere(mine != theirs)
            if len(diff):
                t, j = (int(v) for v in diff[0])
                return Mismatch(sample, layer, q, t, j, int(mine[t, j]), int(theirs[t, j])), lava
    return None, lava
