"""Online rules with time folded into the batch: the T steps of ``Network.step`` in one pass per layer.

OTTT, FA, DFA and OPZO cut the graph through time after every step (``detach_state``): a weight
gradient is Σ_t δ[t] ⊗ x̂[t] with δ[t] from step t alone, and the weights change only once per batch.
In a feed-forward network the forward pass of step t therefore depends on no gradient, so all T
steps can run layer by layer (one GEMM/conv over T·B rows, the LIF recursion as a scan), and the
gradient of every step can go back at once through a graph in which each spiking layer passes

    ∂L/∂I[t] = ∂L/∂s[t] · h'(u[t] − θ)          (no path to t−1: the step loop detaches the state)

and each synapse uses the presynaptic trace x̂[t] = λ·x̂[t−1] + x[t] for its weight gradient. The
sums over t move into the GEMMs, so gradients equal the step loop's up to float summation order;
forward values (spikes, outputs, losses) are the same computations, though one GEMM over K·B rows
may round a real-valued input (OPZO's spikes + noise) differently from K GEMMs of B rows (~1 ulp).
A first layer on a constant input (direct encoding) is multiplied once, and its weight gradient is
(Σ_t c_t·∂L/∂I[t]) ⊗ x with x̂[t] = c_t·x, c_t = Σ_{k≤t} λ^k.

``supported(net)`` says when this applies: only spiking, readout, pooling, flatten layers (dropout
in eval or p = 0) and deterministic surrogate estimators (LocalZO's draws and ASGL's noise would come
in another order); the rules fall back to the step loop otherwise.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..snn import gemm, lif_fused, lif_scan
from ..snn.layers import Dropout, Flatten, Pool, Readout, SpikingLayer
from ..snn.pooling import noisy_avg_pool
from ..snn.spikefn import SurrogateEstimator, gate
from ..snn.synapse import synapse

Tensor = torch.Tensor
#: steps per window: memory O(min(T, WINDOW)), flat in T beyond it (6·B rows already keep the GEMMs efficient)
WINDOW = 6


def windows(T: int, size: int | None = None):
    """(t0, t1) of consecutive windows of ``size`` (default ``WINDOW``) steps covering 0..T."""
    size = size or WINDOW
    return [(t0, min(T, t0 + size)) for t0 in range(0, T, size)]


def supported(net) -> bool:
    """Whether ``cut_simulate`` reproduces ``Network.step`` run T times on ``net``."""
    for layer in net.layers.values():
        if isinstance(layer, SpikingLayer):
            if not isinstance(layer.spike, SurrogateEstimator) or layer.spike.relaxed:
                return False
        elif isinstance(layer, Dropout):
            if layer.training and layer.p > 0:
                return False
        elif not isinstance(layer, (Readout, Pool, Flatten)):
            return False
    return True


class _CutLIF(torch.autograd.Function):
    """Spikes of the LIF scan; backward ∂L/∂I[t] = ∂L/∂s[t]·h'(u[t] − θ) (time cut after each step)."""

    @staticmethod
    def forward(ctx, current, params, derivative, state, fused=False):
        ctx.scans = lif_fused if fused else lif_scan
        U, S, _ = ctx.scans.scan_forward(current, params, state, keep_k=False)  # the cut backward needs u only
        ctx.save_for_backward(U)
        ctx.params, ctx.derivative = params, derivative
        ctx.mark_non_differentiable(U)
        ctx.set_materialize_grads(False)  # U gets no gradient: no zero-filled [T, ...] tensor for it
        return S, U

    @staticmethod
    def backward(ctx, g, _):
        (U,) = ctx.saved_tensors
        return ctx.scans.cut_backward(g, U, ctx.params, ctx.derivative), None, None, None, None


class _ConstantTraced(torch.autograd.Function):
    """I[t] = W ⊛ x + b for a constant x, computed once; weight gradient (Σ_t c_t·g[t]) ⊗ x, bias
    gradient Σ_t g[t], both sums from one [2, T]·[T, ·] product (g read once)."""

    @staticmethod
    def forward(ctx, x, weight, bias, op, coeffs):
        ctx.save_for_backward(x)
        ctx.op, ctx.coeffs = op, coeffs
        with torch.no_grad():
            y = op(x)
        return y.unsqueeze(0).expand(len(coeffs), *y.shape)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        op, c = ctx.op, ctx.coeffs
        # one pass over g: row 0 = Σ_t c_t·g[t] (the weight's), row 1 = Σ_t g[t] (the bias's)
        rows = _sum_rows(tuple(c), g.dtype, g.device)
        sums = (rows if op.bias is not None else rows[:1]) @ g.reshape(len(c), -1)
        shape = g.shape[1:]
        return (None, *constant_input_grads(op, x, sums[0].view(shape),
                                            sums[1].view(shape) if op.bias is not None else None), None, None)


@functools.lru_cache(maxsize=64)
def _sum_rows(coeffs: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """[[c_0 … c_{K−1}], [1 … 1]], made once per window shape and device (no host-to-device copy, which
    waits for the GPU, in every window's backward)."""
    return torch.tensor([coeffs, [1.0] * len(coeffs)], dtype=dtype, device=device)


def constant_input_grads(op, x: Tensor, weighted: Tensor, total: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(∂L/∂W, ∂L/∂b) of I[t] = W ⊛ x + b with x constant in time, from ``weighted`` = Σ_t c_t·∂L/∂I[t]
    (x̂[t] = c_t·x) and ``total`` = Σ_t ∂L/∂I[t] (None without a bias), both [B, ...] like I[t]."""
    if isinstance(op, torch.nn.Linear):
        grad_w = gemm.mm(weighted.t(), x)
        return grad_w, total.sum(0) if total is not None else None
    grad_w = torch.nn.grad.conv2d_weight(x, op.weight.shape, weighted, op.stride, op.padding)
    if total is None:
        return grad_w, None
    return grad_w, total.sum(0) if op.bias.dim() == 3 else total.sum((0, 2, 3))   # per neuron / per channel


def _traces(h: Tensor, decay: float, prev: Tensor | None) -> Tensor:
    """x̂[t] = λ·x̂[t−1] + x[t] over [T, B, ...] (detached), x̂[−1] = ``prev`` or none (x̂[0] = x[0])."""
    out = torch.empty(h.shape, dtype=h.dtype, device=h.device)
    for t in range(h.shape[0]):
        last = prev if t == 0 else out[t - 1]
        if last is None:
            out[t] = h[t]
        else:
            torch.add(h[t], last, alpha=decay, out=out[t])  # h + λ·x̂: one pass (may round once, fused)
    return out


def _add_steps(h: Tensor, steps: list[Tensor], signs: list[float] | None = None) -> Tensor:
    """h[k] + signs[k]·steps[k] for every k (signs ±1, default +1), into one new [K, ...] tensor (no
    stacked copy of the steps; sign −1 subtracts, a − n = a + (−n) exactly)."""
    out = torch.empty(h.shape, dtype=h.dtype, device=h.device)
    with torch.no_grad():
        for k, n in enumerate(steps):
            (torch.sub if signs is not None and signs[k] < 0 else torch.add)(h[k], n, out=out[k])
    return out if not h.requires_grad else _PassGrad.apply(h, out)


def _noisy_pool(layer, h: Tensor, steps: list[Tensor], signs: list[float] | None) -> Tensor | None:
    """avg_pool(h[k] + signs[k]·steps[k]) in one pass without writing the sum (``pooling.noisy_avg_pool``)
    where ``layer`` is an average pooling, else None. No graph: for layers cut from each other."""
    if not (isinstance(layer, Pool) and layer.kind == "avg"):
        return None
    return noisy_avg_pool(h.detach(), steps, signs, layer.k)


class _PassGrad(torch.autograd.Function):
    """``out`` (computed from h without a graph) with the gradient of h + constant: identity."""

    @staticmethod
    def forward(ctx, h, out):
        return out

    @staticmethod
    def backward(ctx, g):
        return g, None


def _fold(fn, *xs):
    """Apply a per-step function to [T, B, ...] tensors with time folded into the batch."""
    T = xs[0].shape[0]
    y = fn(*(x.flatten(0, 1) if x is not None else None for x in xs))
    return y.unflatten(0, (T, -1))


@dataclass
class SpikingWindow:
    """One spiking layer in the last window: what ``top_down_backward`` needs to apply a signal to it."""

    current: Tensor                     # I[t0:t1] [K, B, ...], graph-connected to the synapse
    U: Tensor                           # u[t0:t1], detached
    threshold: float
    derivative: Callable                # h' of the layer's estimator
    constant: tuple | None = None       # (x, op, [c_t]) of a first layer on a constant input
    fused: bool = False                 # --compile: gates by ``lif_fused.gate`` (the C gate on the CPU)

    def gate(self, grad: Tensor, u: Tensor, out: Tensor) -> Tensor:
        """out = grad·h'(u − θ) (``out`` may be ``grad``)."""
        return (lif_fused.gate if self.fused else gate)(self.derivative, grad, u, self.threshold, out, out)


class CutSimulator:
    """Runs windows of steps of one sequence, carrying neuron states and traces between windows
    (a window of K steps holds O(K) memory, so memory stays flat in T for T > K)."""

    def __init__(self, net, *, isolate: bool = False, feedback: dict[str, Tensor] | None = None,
                 keep_layers: bool = False):
        self.net, self.isolate, self.feedback = net, isolate, feedback or {}
        self.state: dict[str, tuple[Tensor, Tensor]] = {}
        self.traces: dict[str, Tensor] = {}
        self.coeff: dict[str, float] = {}
        self.keep_layers = keep_layers
        #: with ``keep_layers``: the spiking layers of the last window, for ``top_down_backward`` (the caller
        #: empties it after the window's backward: held longer, a window's currents and potentials would
        #: live through the next one)
        self.last: dict[str, SpikingWindow] = {}

    def window(self, x_seq: Tensor, noise: list[dict[str, Tensor]] | None = None, *,
               signs: list[float] | None = None, last: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """Outputs o[t0:t1] and clean spikes per spiking layer of the next K = ``len(x_seq)`` calls of
        ``Network.step(traces=True)`` (``isolate``, ``perturb`` = ``signs[k]·noise[k][name]`` at step k,
        signs ±1, default +1, added after the neuron, ``feedback``), with a graph through which all
        their gradients go back at once. ``last=True``: no window follows, so no state is carried."""
        h, spikes, first = x_seq, {}, True
        self.last = {}
        pending = None   # (spikes, noise steps, signs) not yet added: an average pooling next adds them itself
        for name, layer in self.net.layers.items():
            if pending is not None:
                fused = _noisy_pool(layer, *pending) if self.isolate else None
                h, pending = (_add_steps(*pending) if fused is None else fused), None
                if fused is not None:   # this layer (the pooling) is done
                    continue
            if self.isolate:
                h = h.detach()
            if isinstance(layer, (SpikingLayer, Readout)):
                fb = self.feedback.get(name)
                constant = None
                if first and h.stride(0) == 0 and fb is None and not h.requires_grad:
                    constant = (h[0], layer.op, self._coefficients(name, layer.trace_decay, h.shape[0]))
                    current = _ConstantTraced.apply(h[0], layer.op.weight, layer.op.bias, *constant[1:])
                else:
                    if first and name in self.coeff:   # earlier windows took the constant path above
                        raise RuntimeError(f"internal: the input of {name!r} was constant in time in earlier "
                                           "windows of this sequence but not in this one; its trace would restart")
                    w_in = None
                    if layer.trace_decay:
                        w_in = _traces(h.detach(), layer.trace_decay, self.traces.get(name))
                        if not last:
                            self.traces[name] = w_in[-1].clone()
                    current = _fold(lambda x, w, f=fb, op=layer.op: synapse(op, x, w, f), h, w_in)
                first = False
                if isinstance(layer, Readout):
                    h = current
                    continue
                derivative = layer.spike.pointwise_derivative()
                h, U = _CutLIF.apply(current, layer.lif, derivative, self.state.get(name), layer.compiled)
                if self.keep_layers:
                    self.last[name] = SpikingWindow(current, U, layer.lif.threshold, derivative, constant,
                                                    layer.compiled)
                if not last:
                    self.state[name] = (U[-1].clone(), h[-1].detach().clone())  # no view: the window's buffers go
                spikes[name] = h
                if noise is not None and name in noise[0]:
                    pending = (h, [n[name] for n in noise], signs)
            else:
                h = layer.forward_seq(h)
        if pending is not None:
            h = _add_steps(*pending)
        return h, spikes

    def _coefficients(self, name: str, decay: float | None, steps: int) -> list[float]:
        """c_t of x̂[t] = c_t·x for a constant input (c_t = λ·c_{t−1} + 1; 1 without a trace)."""
        out = []
        for _ in range(steps):
            c = decay * self.coeff[name] + 1.0 if decay and name in self.coeff else 1.0
            self.coeff[name] = c
            out.append(c)
        return out


#: a layer whose window has at most this many floats (4 MB) goes whole: fewer, longer ops beat
#: step-by-step products there (FC net, oneDNN GEMMs: DFA step 10.1 -> 9.7 ms)
WHOLE = 1 << 20


def top_down_backward(layers: dict[str, SpikingWindow], E: Tensor, feedback: dict[str, Tensor], outs: list,
                      grads: list) -> None:
    """Apply top-down signals δ_l[t] = e[t]·M_l[t] (DFA's fixed B_l, OPZO's momentum feedback) to the
    spiking ``layers`` of a window (``CutSimulator.last``, each popped when done): ∂L/∂I_l[t] = h'(u_l[t] − θ) ⊙ δ_l[t], the product the
    spikes' backward would apply to δ. A large layer goes step by step (``_stepwise``): e[t]·M, a
    [B, C]·[C, N] product with C small, on the engine's GEMM (``gemm.mm``: oneDNN on the CPU, 2× MKL's
    rate at these shapes), then the gate over the step; a window of at most ``WHOLE`` floats (or off
    the CPU) goes at once (``_whole_window``).

    ``E`` [K, B, C]; ``feedback[l]`` [C, N_l] for all steps or [K, C, N_l] per step. A first layer on
    a constant input adds its weight and bias gradients (Σ_t c_t·∂L/∂I[t] ⊗ x, Σ_t ∂L/∂I[t]) to
    ``.grad`` directly, never holding ∂L/∂I for the window; every other layer appends its current and
    ∂L/∂I to ``outs``/``grads`` for one ``torch.autograd.backward`` through the synapses. Equal to
    the spikes' backward up to float summation order."""
    for name, M in feedback.items():
        w = layers.pop(name)
        if not w.current.requires_grad:   # frozen layer (readout-only control)
            continue
        U = w.U.reshape(*w.U.shape[:2], -1)
        if U.numel() <= WHOLE or U.device.type != "cpu":
            _whole_window(w, E, M, U, outs, grads)
        elif w.constant is None:
            outs.append(w.current)
            grads.append(_stepwise(w, E, M, U).view(w.current.shape))
        else:
            _stepwise_constant(w, E, M, U)


def _per_step(E: Tensor, M: Tensor, U: Tensor) -> zip:
    """(e[t], M[t], u[t]) for every step t (M: one matrix for all steps, or one per step)."""
    return zip(E.unbind(0), M.unbind(0) if M.dim() == 3 else [M] * U.shape[0], U.unbind(0))


def _stepwise(w: SpikingWindow, E: Tensor, M: Tensor, U: Tensor) -> Tensor:
    """∂L/∂I [K, B, N] of a large layer, one step at a time (``top_down_backward``)."""
    G = torch.empty_like(U)
    for (e, m, u), g in zip(_per_step(E, M, U), G.unbind(0)):
        w.gate(gemm.mm(e, m), u, g)
    return G


def _stepwise_constant(w: SpikingWindow, E: Tensor, M: Tensor, U: Tensor) -> None:
    """A large first layer on a constant input x: Σ_t c_t·∂L/∂I[t] and Σ_t ∂L/∂I[t] summed step by step
    (∂L/∂I never held for the window), then its weight and bias gradients added to ``.grad``."""
    x, op, c = w.constant
    g = torch.empty_like(U[0])
    weighted = torch.empty_like(g)
    total = torch.empty_like(g) if op.bias is not None else None
    for t, (e, m, u) in enumerate(_per_step(E, M, U)):
        w.gate(gemm.mm(e, m), u, g)
        if t == 0:
            torch.mul(g, c[0], out=weighted)
            if total is not None:
                total.copy_(g)
        else:
            weighted.add_(g, alpha=c[t])
            if total is not None:
                total.add_(g)
    shape = w.current.shape[1:]
    grad_w, grad_b = constant_input_grads(op, x, weighted.view(shape), total.view(shape) if total is not None else None)
    _accumulate(op.weight, grad_w)
    if grad_b is not None:
        _accumulate(op.bias, grad_b)


def _whole_window(w: SpikingWindow, E: Tensor, M: Tensor, U: Tensor, outs: list, grads: list) -> None:
    """``top_down_backward`` of a small layer (or off the CPU): e·M and the gate over the whole window at
    once (a few ops in all instead of a few per step); ∂L/∂I goes back through the layer's synapse, a
    constant input's included (``_ConstantTraced`` sums it over the steps)."""
    K, B, N = U.shape
    D = gemm.mm(E.reshape(K * B, -1), M).view(K, B, N) if M.dim() == 2 else torch.bmm(E, M)
    G = torch.empty_like(U)
    w.gate(D, U, G)
    outs.append(w.current)
    grads.append(G.view(w.current.shape))


def _accumulate(p: Tensor, grad: Tensor) -> None:
    """p.grad += grad, as autograd accumulates (a parameter that does not require grad gets none)."""
    if not p.requires_grad:
        return
    if p.grad is None:
        p.grad = grad.detach()
    else:
        p.grad.add_(grad)
