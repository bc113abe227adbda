"""Lava Processes of on-chip three-factor learning (OPZO, DFA), one sample at a time.

Per time step t of a sample (sample number n), in dataflow order (no process waits on a later one):

  NoiseUnit          z[t] per neuron on the scale 16, Rademacher or Gaussian-like (counter-based,
                     ``chip.rng``; OPZO: z[t] = −z[t−1] at odd t)
  PlasticDense       a[t] = (x[t]·(2m)ᵀ) << exp;  x̂ ← x̂·(4096 − d)>>12 + SR(16·x_clean/X);
                     G += y[t] x̂ᵀ when the postsynaptic third factor y[t] arrives; after the last step of
                     each sample m ← clip(m − SR(G·2^−k)), G ← 0, x̂ ← 0
  ThreeFactorLIF     integer CUBA LIF (``chip.fixed``); sends the graded payload s·Q + σQ·z/16 (noise
                     after the neuron; before it, the noise enters the current) and the clean spike s;
                     gets the top-down δ[t] and returns y[t] = ψ'(v_pre[t])·δ[t] (δ[t] for noise before)
  ErrorUnit          readout o[t] = (a[t] << 6)/V, e_int[t] = SR(64T·∂L[t]/∂o[t]) for the sample's label;
                     OPZO also sends o8[t] = SR(8·o[t])
  FeedbackChannel    δ[t] = e_int[t]·B (DFA, fixed 8-bit B) or e_int[t]·M (OPZO), then OPZO's momentum
                     feedback M ← M + SR((o8 zᵀ·2^8 − M)·2^−k)

The arithmetic is the engine's (``neuroplast.chip.onchip``, the single source of it); the models
call it: fixed_pt with the chip's integers, floating_pt with the same equations unrounded
(``neuroplast.chip.numerics``). ``log_path`` (optional): an .npy file [K, ...] the model writes its matrix into after each
sample (Lava's ``Var.get`` moves large arrays element by element: seconds per 784×128 matrix). Why
custom processes and not Lava's ``LearningDense`` + ``Loihi3FLearningRule``: see
``neuroplast/lava/learning.py``.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class NoiseUnit(AbstractProcess):
    """Noise units for ``shape`` neurons: integer z on the scale 16, Rademacher (±16) or Gaussian-like
    (sum of four 8-bit uniforms), sent to a ThreeFactorLIF and its feedback channel."""

    def __init__(self, *, shape: tuple[int, ...], seed: int, layer: int, antithetic: bool, time_steps: int,
                 kind: str = "rademacher", first_sample: int = 0, **kwargs):
        super().__init__(shape=shape, seed=seed, layer=layer, antithetic=antithetic, time_steps=time_steps,
                         kind=kind, first_sample=first_sample, **kwargs)
        self.z_out = OutPort(shape=shape)
        self.z = Var(shape=shape, init=0)


class PlasticDense(AbstractProcess):
    """Dense synapses with 8-bit weight mantissas m, a presynaptic trace and a three-factor update."""

    def __init__(self, *, m: np.ndarray, weight_exp: int, x_scale: int, trace_d: int, trace_max: int,
                 factor: float, seed: int, layer: int, time_steps: int, log_path: str | None = None,
                 first_sample: int = 0, **kwargs):
        super().__init__(weight_exp=weight_exp, x_scale=x_scale, trace_d=trace_d, trace_max=trace_max,
                         factor=factor, seed=seed, layer=layer, time_steps=time_steps, first_sample=first_sample,
                         log_path=log_path, **kwargs)
        n_out, n_in = m.shape
        self.s_in = InPort(shape=(n_in,))      # payload that drives the synaptic input
        self.x_in = InPort(shape=(n_in,))      # clean presynaptic activity that drives the trace
        self.y_in = InPort(shape=(n_out,))     # third factor from the postsynaptic neuron
        self.a_out = OutPort(shape=(n_out,))
        self.m = Var(shape=m.shape, init=np.asarray(m))   # int64 mantissas (fixed_pt) or float64 (floating_pt)
        self.trace = Var(shape=(n_in,), init=0)
        self.grad = Var(shape=m.shape, init=0)


class ThreeFactorLIF(AbstractProcess):
    """Integer CUBA LIF that exposes its local surrogate ψ'(v) as y = ψ'·δ for its synapses. Noise
    ``site`` "after": added to the graded spike it sends; "before": added to its input current (and
    then y = δ)."""

    def __init__(self, *, shape: tuple[int, ...], du: int, dv: int, vth: int, q: int, sigma: int,
                 time_steps: int, site: str = "after", noise_gain: int = 0, **kwargs):
        super().__init__(shape=shape, du=du, dv=dv, vth=vth, q=q, sigma=sigma, time_steps=time_steps, site=site,
                         noise_gain=noise_gain, **kwargs)
        self.a_in = InPort(shape=shape)
        self.z_in = InPort(shape=shape)        # noise (OPZO); left unconnected (zeros) for DFA
        self.delta_in = InPort(shape=shape)    # top-down error from the feedback channel
        self.s_out = OutPort(shape=shape)      # graded payload s·Q + σQ·z
        self.spk_out = OutPort(shape=shape)    # clean spikes (presynaptic traces)
        self.y_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=0)
        self.spk = Var(shape=shape, init=0)


class ErrorUnit(AbstractProcess):
    """Readout error of each sample's label, as an 8-bit payload (and OPZO's o8 output copy)."""

    def __init__(self, *, labels: np.ndarray, num_classes: int, v_scale: float, seed: int, time_steps: int,
                 first_sample: int = 0, **kwargs):
        super().__init__(labels=labels, num_classes=num_classes, v_scale=v_scale, seed=seed, time_steps=time_steps,
                         first_sample=first_sample, **kwargs)
        self.a_in = InPort(shape=(num_classes,))
        self.e_out = OutPort(shape=(num_classes,))
        self.o8_out = OutPort(shape=(num_classes,))
        self.logits = Var(shape=(len(labels), num_classes), init=0.0)   # mean over time of o, per sample
        self.loss = Var(shape=(len(labels),), init=0.0)


class FeedbackChannel(AbstractProcess):
    """Top-down channel of one hidden layer: δ = e_int·B (DFA) or e_int·M (OPZO, M learned online)."""

    def __init__(self, *, fb: np.ndarray, opzo: bool, beta_shift: int, seed: int, layer: int, time_steps: int,
                 log_path: str | None = None, first_sample: int = 0, **kwargs):
        super().__init__(opzo=opzo, beta_shift=beta_shift, seed=seed, layer=layer, time_steps=time_steps,
                         first_sample=first_sample, log_path=log_path, **kwargs)
        c, n = fb.shape
        self.e_in = InPort(shape=(c,))
        self.o8_in = InPort(shape=(c,))
        self.z_in = InPort(shape=(n,))
        self.delta_out = OutPort(shape=(n,))
        self.fb = Var(shape=fb.shape, init=np.asarray(fb))
