"""The quantised integer network a chip runs (``FixedNetwork``), built by ``quantize.quantize``.

Each synapse holds 8-bit mantissas m and a weight exponent (Lava's weight 2m: a = Σ 2m·x << exp,
integer-exact, ``fixed.int_product``); each spiking layer the integer CUBA LIF of ``fixed``; pooling
sums integer payloads (the k²·mean Lava sends). ``simulate`` runs the network layer by layer over
windows of steps, with the same integers as stepping the whole net one time step at a time.
``timing="sync"`` runs every layer on this step's input (the float engine's timing); ``"lava"``
adds Lava's one-step Dense delay per synapse and runs n_syn extra steps (``run_steps``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import DataError, SpecError
from ..snn.pooling import avg_pool
from .fixed import IntLIFParams, LavaWeights, dense_product, float_product, int_lif_steps, int_product

Tensor = torch.Tensor
GRADED_INPUT = 255          # direct (real-valued) input in [0, 1] is sent as 8-bit graded payloads


@dataclass
class FixedSynapse:
    m: Tensor                 # int64 mantissas [out, in] or [out, in, k, k]
    weight_exp: int
    x_scale: int              # payload scale X of the input
    v_scale: float            # S of the layer it feeds
    conv: dict | None = None  # stride, padding for conv layers
    _made: tuple | None = field(default=None, init=False, repr=False, compare=False)  # (m, m's version, LavaWeights)

    def current(self, x: Tensor) -> Tensor:
        """The synaptic input a (int64) of integer x."""
        return int_product(self.m, x, self.weight_exp, self._product, self.weights())

    def current_exact(self, x: Tensor) -> Tensor:
        """``current`` as float64 exact integers where the product is exact in float32 (``float_product``:
        no int64 round trip), else ``current`` itself."""
        a = float_product(self.m, x, self.weight_exp, self._product, self.weights())
        return self.current(x) if a is None else a

    def weights(self) -> LavaWeights:
        """2m and its exact-product data (``LavaWeights``), made once per mantissa tensor (a new or
        modified ``m`` makes them again)."""
        m = self.m
        if self._made is None or self._made[0] is not m or self._made[1] != m._version:
            self._made = (m, m._version, LavaWeights.of(m))
        return self._made[2]

    def _product(self, a: Tensor, w: Tensor) -> Tensor:
        return dense_product(a, w) if self.conv is None else F.conv2d(a, w, **self.conv)

    def lsb(self) -> float:
        """Float weight of one mantissa step: X·2^(exp+7)/S."""
        return self.x_scale * 2.0 ** (self.weight_exp + 7) / self.v_scale

    def dequantized(self) -> Tensor:
        return self.m.to(torch.float64) * self.lsb()


@dataclass
class FixedLayer:
    name: str
    kind: str                            # spiking | readout | pool | flatten
    synapse: FixedSynapse | None = None
    lif: IntLIFParams | None = None
    pool: tuple[str, int] | None = None


def run_steps(time_steps: int, n_syn: int, timing: str) -> int:
    """Steps a run of T input steps takes: T with sync timing; with Lava's, where each of the n_syn
    synapses (Dense) delivers one step late, the input of step T − 1 reaches the readout at step
    T − 1 + n_syn, so T + n_syn steps (the net drains for n_syn steps after the input ends)."""
    return time_steps + (n_syn if timing == "lava" else 0)


#: steps·B rows per window of ``FixedNetwork.simulate`` (long runs stay in cache, short ones are one window)
WINDOW_ROWS = 8192


def _int_pool(x: Tensor, kind: str, k: int) -> Tensor:
    """Average (as a sum: k²·mean, the payload Lava sends) or max pooling of integer payloads (int, or
    bool spikes); the average by ``avg_pool`` (one GEMM), in float32 for spikes (window sums ≤ k² are
    exact), else float64, rounded back (k² not a power of two leaves the mean inexact)."""
    xf = x.to(torch.float32 if x.dtype == torch.bool else torch.float64)
    return (avg_pool(xf, k) * (k * k) if kind == "avg" else F.max_pool2d(xf, k)).round_().to(torch.int64)


def _count_steps(s: Tensor) -> Tensor:
    """Spikes per neuron summed over the steps of s bool [steps, ...], as int64: the bytes summed in
    uint8 where no count can pass 255 (20× faster than a bool sum, which widens every element)."""
    small = torch.uint8 if len(s) < 256 else torch.int32
    return s.view(torch.uint8).sum(0, dtype=small).to(torch.int64)


def _per_step(fn, h: Tensor) -> Tensor:
    """fn over the steps of h [steps, B, ...] folded into the batch; once where h is one step repeated
    (a stride-0 view), expanded again."""
    if h.stride(0) == 0:
        y = fn(h[0])
        return y.unsqueeze(0).expand(h.shape[0], *y.shape)
    return fn(h.flatten(0, 1)).unflatten(0, h.shape[:2])


class FixedNetwork:
    """An integer network; ``simulate`` returns the readout voltages and spikes per layer."""

    def __init__(self, layers: list[FixedLayer], input_shape, num_classes: int, encoding: str, timing: str,
                 input_scale: int = GRADED_INPUT, binary_spikes: bool = False):
        if timing not in ("sync", "lava"):
            raise SpecError(f"timing must be sync or lava, got {timing!r}")
        self.input_scale = input_scale
        self.layers, self.input_shape, self.num_classes = layers, tuple(input_shape), num_classes
        self.encoding, self.timing = encoding, timing
        self.binary_spikes = binary_spikes   # the chip sends 1-bit spikes only (graded_spike_bits < 8)

    def encode_input(self, x_seq: Tensor) -> Tensor:
        """Float input steps [T, B, ...] -> integer payloads (graded round(input_scale·x) for direct input,
        which must be intensities in [0, 1]: DataError for anything else, e.g. normalised images)."""
        if self.encoding == "direct":
            if x_seq.numel() and (float(x_seq.min()) < 0 or float(x_seq.max()) > 1):
                raise DataError(f"direct input to the chip holds values in [{float(x_seq.min()):.4g}, "
                                f"{float(x_seq.max()):.4g}]; its graded payloads take intensities in [0, 1]: give a "
                                "run trained on normalised images its data as intensities and its normalisation "
                                "folded into the first layer (runs.chip_view)")
            return torch.round(x_seq * self.input_scale).to(torch.int64)
        if not torch.equal(x_seq, x_seq.round()):
            raise SpecError("spike inputs must be integers (counts) for the chip")
        return self.check_payloads(x_seq.to(torch.int64))

    def check_payloads(self, x: Tensor) -> Tensor:
        """x itself; DataError where a chip with binary spikes would be sent anything but 0 or 1 (a count)."""
        if self.binary_spikes and x.numel() and (int(x.max()) > 1 or int(x.min()) < 0):
            lo, hi = int(x.min()), int(x.max())
            raise DataError(f"the input holds payloads in [{lo}, {hi}] (spike counts) but this network runs on a chip "
                            "with binary spikes only (graded_spike_bits < 8), which sends 0 or 1 per step: binarise "
                            "the input (e.g. counts > 0 -> 1) or use a chip with graded spikes (loihi2)")
        return x

    @torch.no_grad()
    def simulate(self, x_seq: Tensor, *, record: bool = False, integer_input: bool = False) -> dict:
        """x_seq float [T, B, *input_shape] -> {"v_out": [B, C] int, "spikes": {layer: [B, ...] counts}};
        ``record=True`` adds "steps": {layer: {"u", "v", "s": [steps, B, N]}} (state after each step);
        ``integer_input=True`` takes x_seq as integer payloads already.

        Layer by layer over windows of steps (the net is feed-forward): in a window each synapse is
        one integer-exact product over its steps·B rows (about ``WINDOW_ROWS``; a constant input is
        multiplied once), then the integer LIF runs step by step, its state carried to the next window
        (``_input_windows``, ``_layer_window``). The same integers as stepping the whole net one time step
        at a time (rows of a product do not interact)."""
        T, _ = x_seq.shape[:2]   # [T, B, ...]
        steps = run_steps(T, sum(layer.synapse is not None for layer in self.layers), self.timing)
        state: dict[str, list] = {}       # layer -> [u, v, the product Lava's Dense still holds]
        trace = {layer.name: {"u": [], "v": [], "s": []} for layer in self.layers if layer.synapse is not None}
        counts: dict[str, Tensor] = {}
        v_out = None
        for h in self._input_windows(x_seq, steps, integer_input):
            for layer in self.layers:
                if layer.kind == "pool":
                    h = _per_step(lambda x, pool=layer.pool: _int_pool(x, *pool), h)
                elif layer.kind == "flatten":
                    h = h.flatten(2)
                else:
                    v, S, shape = self._layer_window(layer, h, state, trace[layer.name] if record else None)
                    if layer.kind == "readout":
                        v_out = v
                    else:
                        h = S.view(len(S), -1, *shape)
                        c = _count_steps(h)
                        counts[layer.name] = counts[layer.name] + c if layer.name in counts else c
        out = {"v_out": v_out, "spikes": counts}
        if record:
            out["steps"] = {k: {"u": torch.stack(d["u"]), "v": torch.stack(d["v"]), "s": torch.cat(d["s"])}
                            for k, d in trace.items()}
        return out

    def _input_windows(self, x_seq: Tensor, steps: int, integer_input: bool):
        """The integer payloads of ``x_seq`` for ``simulate``, window by window: [t1 − t0, B, ...] for steps
        t0..t1 − 1 of ``steps`` (about ``WINDOW_ROWS`` rows each). An input that is the same at every step
        (a stride-0 view, direct encoding) is encoded once and expanded; steps past the input's T (Lava
        timing) are zeros."""
        T, B = x_seq.shape[:2]
        constant = x_seq.stride(0) == 0 and steps == T   # the same input at every step (direct encoding)

        def encode(x):
            return self.check_payloads(x.to(torch.int64)) if integer_input else self.encode_input(x)
        first = encode(x_seq[:1]) if constant else None
        width = max(1, WINDOW_ROWS // max(B, 1))
        for t0 in range(0, steps, width):
            t1 = min(steps, t0 + width)
            if constant:
                yield first.expand(t1 - t0, *first.shape[1:])
                continue
            h = encode(x_seq[t0:min(t1, T)])
            if t1 > T:   # Lava timing: the net drains for n_syn steps after the input ends
                h = torch.cat([h, h.new_zeros((t1 - max(t0, T), *x_seq.shape[1:]))])
            yield h

    def _layer_window(self, layer: FixedLayer, h: Tensor, state: dict, rec: dict | None) -> tuple[Tensor, Tensor, tuple]:
        """One synaptic layer over a window of input payloads h [steps, B, ...]: its integer-exact product,
        Lava's one-step delay (``timing="lava"``), then the integer LIF step by step from ``state[layer.name]``,
        which it updates; appends u, v, s of every step to ``rec`` (where given). Returns (v after the window,
        spikes S bool [steps, B, N], the layer's neuron shape)."""
        flat = layer.kind == "readout" or layer.synapse.conv is None
        a = _per_step(lambda x, syn=layer.synapse: syn.current_exact(x.flatten(1) if flat and x.dim() > 2 else x), h)
        shape = a.shape[2:]
        a = a.flatten(2)
        if layer.name not in state:   # u, v (int64) and the product Lava's Dense holds (as a)
            zero = torch.zeros(a.shape[1:], dtype=torch.int64, device=a.device)
            state[layer.name] = [zero, zero, torch.zeros_like(a[0])]
        u, v, held = state[layer.name]
        if self.timing == "lava":   # Lava's Dense delivers a step late: the LIF sees the product of t − 1
            a, held = torch.cat([held[None], a[:-1]]), a[-1]
        u, v, S, steps_uv = int_lif_steps(u, v, a, layer.lif, record=rec is not None)  # S bool [steps, ...]
        state[layer.name] = [u, v, held]
        if rec is not None:
            rec["u"] += [uv[0] for uv in steps_uv]
            rec["v"] += [uv[1] for uv in steps_uv]
            rec["s"].append(S.to(torch.int64))
        return v, S, shape

    def classify(self, x_seq: Tensor) -> Tensor:
        return self.simulate(x_seq)["v_out"].argmax(1)

    def synapses(self) -> dict[str, FixedSynapse]:
        return {layer.name: layer.synapse for layer in self.layers if layer.synapse is not None}
