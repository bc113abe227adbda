"""On-chip three-factor learning in Loihi integers: DFA, OPZO and ZO (``train --precision loihi2``).

Everything the chip holds is an integer at the chip's width; the equations are those of the float
rules (learn/dfa.py, opzo.py, zo.py), each quantity on its own fixed scale:

  forward     integer CUBA LIF (``fixed``); weights 8-bit mantissas m (w = m·LSB_l), no biases
  traces      x̂ ← x̂·(4096 − d)>>12 + SR(impulse·x/X), unsigned ``trace_bits`` (presynaptic, clean input)
  ψ'          boxcar on the membrane before the spike check: 1 where |v − θ| ≤ θ/2
  noise       per-neuron noise units (counter-based hash, ``chip.rng``): z on the scale Z = 16, Rademacher
              or Gaussian-like; after the neuron as graded spikes s·Q + σQ·z/Z, or before it on the input
              current (then y = δ, no ψ'); antithetic across step pairs (OPZO)
  error       e = ∂L[t]/∂o[t] per sample (computed off-core), sent as an 8-bit payload e_int = SR(E·e)
  feedback    DFA: δ_l = e_int·B_l, B_l 8-bit random; OPZO: δ_l = e_int·M_l with the momentum
              feedback M_l ← M_l + (mean_b(o8 zᵀ)·2^f − M_l)>>k in a 16-bit accumulator
              (β = 1 − 2^−k, f fractional bits); ZO: δ_l = SR(D·(ℓ_noisy − ℓ_clean)/σ)·z
  randomness  every draw (noise, SR) is a hash of (seed, unit, sample number, step, lane): batching and
              process order do not change it, so the Lava processes reproduce the engine bit for bit
  update      G_l = Σ_t (ψ'_l ⊙ δ_l)ᵀ x̂_{l−1} (integer); per batch m_l ← clip(m_l − SR(G_l·2^−k_l)), with
              the learning rate realised as a power-of-two shift k_l, stochastic rounding (SR)

Fully connected networks (dense hidden layers and a readout) with direct (graded) input.
"""
from __future__ import annotations

import math

import torch

from ..errors import SpecError
from ..learn import CEMSELoss
from ..snn.layers import Dropout, Flatten, Readout, SpikingLayer
from .fixed import (
    ACT_SHIFT,
    DECAY_MAX,
    DECAY_UNITY,
    VTH_SHIFT,
    W_MANT_MAX,
    IntLIFParams,
    check_numerics,
    int_lif_fire,
)
from .fixed_network import GRADED_INPUT
from .hardware import Chip
from .numerics import EXACT, INTEGER, Arith
from .quantize import threshold_scale
from .rng import Stream

Tensor = torch.Tensor
METHODS = ("dfa", "opzo", "zo")
Q = 16              # payload of a spike when noise is added (graded spikes)
E_PER_T = 64        # error payload scale: e_int = SR(E·e), E = 64·T (|e| ≲ 2/T per sample)
B_SCALE = 32        # DFA feedback: B_int = round(32·√C·B), B ~ N(0, 1/C)
M_FRAC = 8          # OPZO feedback: 8 fractional bits in a 16-bit accumulator
O_SCALE = 8         # OPZO: readout output sent as an 8-bit payload o8 = SR(8·o)
IMPULSE = 16        # trace impulse per unit input
HEADROOM = 8        # initial max |w| maps to mantissa 128/HEADROOM: room for the weights to grow


STREAM_ERROR, STREAM_OUT8, STREAM_ZO = 1, 2, 3          # counter-based streams (chip.rng), one per unit
STREAM_TRACE, STREAM_UPDATE, STREAM_NOISE, STREAM_FEEDBACK = 100, 200, 300, 400   # + layer index


NOISE_KINDS = ("rademacher", "gaussian")
SITES = ("after", "before")   # noise on the spikes a neuron sends, or on its input current
Z_SHIFT = 4
Z = 1 << Z_SHIFT              # noise units emit z on a scale of 16 (Rademacher ±16)
GAUSS_MEAN = 4 * 255 // 2     # the mean of four 8-bit uniforms (510); their std is 147.8
GAUSS_GAIN = 111              # 147.8·111/1024 ≈ 16 = Z: the sum is rescaled by 111 >> 10
GAIN_SHIFT = 8                # noise_gain carries 8 fractional bits
Z_MAX = ((4 * 255 - GAUSS_MEAN) * GAUSS_GAIN + 512) >> 10   # the largest |z| (55, gaussian)


class NoiseUnits:
    """Per-neuron noise units: integer z on the scale Z = 16 from the counter-based hash (``chip.rng``),
    so a neuron's draw depends only on (seed, layer, sample number, step, neuron).

    ``rademacher``: z = ±16. ``gaussian``: z = round((b1 + b2 + b3 + b4 − 510)·111/1024) with b_i the four
    bytes of the hash (a sum of four 8-bit uniforms, ≈ N(0, 16²) in [−55, 55], integer-only as a chip's
    noise unit would make it). OPZO pairs steps antithetically: z[t] = −z[t−1] at odd t."""

    def __init__(self, seed: int, layer: int = 0, antithetic: bool = False, kind: str = "rademacher"):
        if kind not in NOISE_KINDS:
            raise SpecError(f"unknown noise {kind!r}; valid: {', '.join(NOISE_KINDS)}")
        self.stream, self.antithetic, self.kind = Stream(seed, STREAM_NOISE + layer), antithetic, kind

    def draw(self, samples, t: int, n: int) -> Tensor:
        if self.antithetic and t % 2 == 1:
            return -self.draw(samples, t - 1, n)
        bits = self.stream.bits(samples, t, (n,))
        if self.kind == "rademacher":
            return ((bits >> 31) * 2 - 1) * Z
        total = (bits & 255) + ((bits >> 8) & 255) + ((bits >> 16) & 255) + (bits >> 24)   # the 4 bytes
        return ((total - GAUSS_MEAN) * GAUSS_GAIN + 512) >> 10                            # round to nearest


def noisy_payload(s: Tensor, z: Tensor | None, q: int, sigma_int: int, ar: Arith = INTEGER) -> Tensor:
    """What a hidden neuron sends: s·q, plus σQ·z/Z rounded (graded spikes) when noise comes after it."""
    s = s.to(ar.dtype) * q
    return s if z is None else s + ar.shr_round(sigma_int * z, Z_SHIFT)   # σQ·z/Z, rounded to nearest


def noise_current(z: Tensor, gain: int, ar: Arith = INTEGER) -> Tensor:
    """Noise before the neuron: a = round(z·gain/2^8), gain = σ·(vth/θ)·2^8/Z (the current that σ·z is)."""
    return ar.shr_round(z * gain, GAIN_SHIFT)                               # rounded to nearest


def third_factor(v_pre: Tensor, delta: Tensor, vth: int, gated: bool) -> Tensor:
    """y = ψ'(v)·δ (``gated``); with noise before the neuron δ already estimates ∂L/∂(input current):
    y = δ (∂u/∂I = 1, as the float rules do)."""
    return surrogate_gate(v_pre, vth) * delta if gated else delta


def error_payload(loss, o: Tensor, y: Tensor, T: int, stream: Stream, samples, t: int,
                  ar: Arith = INTEGER) -> tuple[Tensor, Tensor]:
    """Error unit: per-sample loss and e_int = SR(E·∂L[t]/∂o[t]) (8-bit), L[t] = loss/T, E = 64·T."""
    o_req = o.detach().requires_grad_(True)
    per = loss.per_sample(o_req, y)
    (e,) = torch.autograd.grad(per.sum() / T, o_req)
    return per.detach(), ar.clamp(ar.sr(e * (E_PER_T * T), stream, samples, t), -127, 127)


def output_payload(o: Tensor, stream: Stream, samples, t: int, ar: Arith = INTEGER) -> Tensor:
    """OPZO's copy of the readout output for the feedback channels: o8 = SR(8·o), 8-bit."""
    return ar.clamp(ar.sr(o * O_SCALE, stream, samples, t), -127, 127)


def trace_step(trace: Tensor, clean: Tensor, scale: int, trace_d: int, trace_max: int, stream: Stream, samples,
               t: int, ar: Arith = INTEGER) -> Tensor:
    """Presynaptic trace x̂ ← x̂·(4096 − d)>>12 + SR(IMPULSE·x/scale), saturating at trace_max."""
    impulse = ar.sr(clean.to(torch.float64) * IMPULSE / scale, stream, samples, t)
    return ar.clamp(ar.decay(trace, DECAY_UNITY - trace_d) + impulse, 0, trace_max)


def surrogate_gate(v_pre: Tensor, vth: int) -> Tensor:
    """ψ' as a boxcar on the membrane before the spike check: 1 where |v − θ| ≤ θ/2 (θ = vth << 6)."""
    th = vth << VTH_SHIFT
    return (2 * (v_pre - th).abs() <= th).to(torch.int64)


def feedback_update(fb: Tensor, o8: Tensor, z: Tensor, beta_shift: int, stream: Stream, sample: int,
                    t: int, ar: Arith = INTEGER) -> Tensor:
    """OPZO momentum feedback M ← M + SR((mean_b(o8 (z/Z)ᵀ)·2^f − M)·2^−k), 16-bit (β = 1 − 2^−k)."""
    est = (o8.t().to(torch.float64) @ z.to(torch.float64)) * (1 << M_FRAC) / (o8.shape[0] * Z)
    step = ar.sr(((est - fb) / (1 << beta_shift)).unsqueeze(0), stream, sample, t)[0]
    return ar.clamp(fb + step, -(1 << 15), (1 << 15) - 1)


def update_factor(lr: float, T: int, fb_scale: float, batch: int, lsb: float) -> float:
    """The power of two 2^−k that turns an integer gradient sum into mantissa steps for learning rate lr:
    δ_float = δ_int/(E·fb_scale), x̂_float = x̂_int/IMPULSE, Δw = −lr·mean_b Σ_t δ x̂ in units of lsb."""
    c = lr / (E_PER_T * T * fb_scale * IMPULSE * batch * lsb)
    return 2.0 ** round(math.log2(c)) if c > 0 else 0.0


def weight_update(m: Tensor, grad: Tensor, factor: float, stream: Stream, batch: int, ar: Arith = INTEGER) -> Tensor:
    """m ← clip(m − SR(G·2^−k)) into the signed 8-bit mantissa range."""
    step = ar.sr((grad.to(torch.float64) * factor).unsqueeze(0), stream, batch, 0)[0]
    return ar.clamp(m - step, -W_MANT_MAX - 1, W_MANT_MAX)


def readout_value(a: Tensor, v_scale: float, ar: Arith = INTEGER) -> Tensor:
    """The readout's output o[t] in float units: its synaptic input a[t] (<< 6), over the voltage scale."""
    return ar.shl(a, ACT_SHIFT).to(torch.float64) / v_scale


def _sr(x: Tensor, gen: torch.Generator) -> Tensor:
    """Stochastic rounding to integers (initial weights)."""
    return torch.floor(x + torch.rand(x.shape, generator=gen, dtype=x.dtype)).to(torch.int64)


def _learnable_layers(net, chip: Chip, method: str, noise: str, site: str) -> list:
    """The synaptic layers of ``net`` (dense spiking layers, then the readout) once ``method``, with
    ``noise`` at ``site``, is known to run on ``chip`` and the network to be one it learns: SpecError
    otherwise."""
    if method not in METHODS:
        raise SpecError(f"on-chip learning supports {', '.join(METHODS)}; got {method!r}")
    if noise not in NOISE_KINDS or site not in SITES:
        raise SpecError(f"on-chip noise must be one of {', '.join(NOISE_KINDS)} at a site in {', '.join(SITES)} "
                        f"(the neuron); got noise={noise!r}, site={site!r}")
    if not chip.fixed:
        raise SpecError(f"chip {chip.name!r} has float precision; on-chip learning needs a fixed-point chip")
    check_numerics(chip)
    if method in ("opzo", "zo") and chip.numerics["graded_spike_bits"] < 8:
        raise SpecError(f"{method} injects noise into the spikes a layer sends, which needs graded spikes; "
                        f"{chip.name} has binary spikes only (use dfa, or loihi2)")
    if chip.numerics["graded_spike_bits"] < 8:
        raise SpecError(f"direct (real-valued) input needs graded spikes; {chip.name} has binary spikes only")
    layers = [x for x in net.layers.values() if not isinstance(x, (Flatten, Dropout))]
    if not (all(isinstance(x, SpikingLayer) and x.op.weight.dim() == 2 for x in layers[:-1])
            and isinstance(layers[-1], Readout) and len(layers) >= 2):
        raise SpecError(f"on-chip learning runs fully connected networks (e.g. 64-256-10); got {net.arch!r}")
    return layers


class OnChipLearner:
    """Integer network + integer three-factor learning, built from a float network's initialisation.

    ``exact=True``: the float twin (``numerics.EXACT``): the same equations, scales, parameters and
    noise draws in float64 without any rounding or saturation; initial weights w/LSB unrounded."""

    def __init__(self, net, chip: Chip, method: str, *, lr: float, time_steps: int, sigma: float = 0.5,
                 beta_shift: int = 7, seed: int = 0, trace_decay: float | None = None, noise: str = "rademacher",
                 site: str = "after", exact: bool = False):
        layers = _learnable_layers(net, chip, method, noise, site)
        self.method, self.chip, self.T, self.lr = method, chip, time_steps, float(lr)
        self.ar = EXACT if exact else INTEGER
        self.gen = torch.Generator().manual_seed(seed)   # initial weights only; learning draws from chip.rng
        self.seed, self.samples_seen, self.batches_seen = seed, 0, 0
        self.trace_max = (1 << chip.numerics["trace_bits"]) - 1
        sigma_max = ((1 << chip.numerics["graded_spike_bits"] - 1) - 1 - Q) * Z / (Q * Z_MAX)
        if method != "dfa" and not sigma <= sigma_max:   # also catches nan and inf
            raise SpecError(f"on-chip {method}: sigma={sigma} gives noise larger than a {chip.name} graded spike "
                            f"holds; use sigma <= {sigma_max:.4g}")
        self.sigma_int = max(1, round(sigma * Q)) if method != "dfa" else 0
        self.sigma = self.sigma_int / Q
        self.noise_kind, self.site = noise, site
        self.beta_shift = beta_shift
        self.loss = CEMSELoss()
        self.layers = self._integer_layers(layers, trace_decay, exact)   # draws the weights from gen first
        self.hidden = self.layers[:-1]
        self.error_rng, self.out8_rng, self.zo_rng = (Stream(seed, k) for k in (STREAM_ERROR, STREAM_OUT8, STREAM_ZO))
        self._init_noise_and_feedback(net.num_classes, exact)           # then DFA's feedback matrices

    def _integer_layers(self, layers: list, trace_decay: float | None, exact: bool) -> list[dict]:
        """Each layer on the chip: mantissas m = SR(w/LSB) (w/LSB unrounded when ``exact``; the draws from
        ``gen`` are made in both precisions) with LSB from ``threshold_scale``, leaving HEADROOM for the
        weights to grow, the input payload scale, the integer LIF, the presynaptic trace decay, and the
        layer's trace and update streams."""
        q_hidden = Q if self.method != "dfa" else 1
        out, x_scale = [], GRADED_INPUT
        lo, hi = self.chip.numerics["weight_exp_min"], self.chip.numerics["weight_exp_max"]
        for index, layer in enumerate(layers):
            w = layer.op.weight.detach().to(torch.float64)
            lsb = float(w.abs().max()) * HEADROOM / (W_MANT_MAX + 1)
            theta = layer.lif.threshold if isinstance(layer, SpikingLayer) else 1.0
            exp, vth = threshold_scale(theta, x_scale, lsb, lo, hi)
            lsb = theta * x_scale * 2.0 ** (exp + 1) / vth          # exact for the integer vth
            m = _sr(w / lsb, self.gen).clamp(-W_MANT_MAX - 1, W_MANT_MAX)   # draws from gen in both precisions
            m = w / lsb if exact else m
            dv = 0 if isinstance(layer, Readout) else min(max(round(DECAY_UNITY * (1 - layer.lif.leak)), 0), DECAY_MAX)
            # presynaptic trace decay: the float rules' λ of the layer (0 for the readout: x̂ = x)
            lam = layer.trace_decay if trace_decay is None or isinstance(layer, Readout) else trace_decay
            out.append({"m": m, "exp": exp, "theta": theta, "lsb": lsb, "x_scale": x_scale, "v_scale": vth * 64 / theta,
                        "lif": IntLIFParams(DECAY_MAX, dv, vth), "trace_d": round(DECAY_UNITY * (1 - lam)),
                        "trace_rng": Stream(self.seed, STREAM_TRACE + index),
                        "update_rng": Stream(self.seed, STREAM_UPDATE + index)})
            x_scale = q_hidden
        return out

    def _init_noise_and_feedback(self, C: int, exact: bool) -> None:
        """Each hidden layer's noise units, noise gain (the current σ·z is, for noise before the neuron) and
        feedback stream, and its feedback to the C outputs: DFA's fixed random B_int = round(32·√C·B),
        8-bit, drawn from ``gen`` layer by layer (unrounded when ``exact``); OPZO's momentum M, zero."""
        for k, h in enumerate(self.hidden):
            n = h["m"].shape[0]
            h["noise"] = NoiseUnits(self.seed, k, antithetic=self.method == "opzo", kind=self.noise_kind)
            h["noise_gain"] = round(self.sigma * h["lif"].vth / h["theta"] * (1 << GAIN_SHIFT) / Z)
            h["fb_rng"] = Stream(self.seed, STREAM_FEEDBACK + k)
            if self.method == "dfa":
                b = torch.randn(C, n, generator=self.gen, dtype=torch.float64) / math.sqrt(C)
                h["fb"] = b * B_SCALE * math.sqrt(C) if exact else \
                    torch.round(b * B_SCALE * math.sqrt(C)).clamp(-127, 127).to(torch.int64)
                h["fb_scale"] = B_SCALE * math.sqrt(C)
            elif self.method == "opzo":
                h["fb"] = torch.zeros(C, n, dtype=self.ar.dtype)
                h["fb_scale"] = float(1 << M_FRAC) * O_SCALE   # M ≈ σ·∂o/∂a (no 1/σ, OPZO App. C)

    def saturation(self) -> dict[str, float]:
        """Fraction of weight mantissas at the 8-bit limits, per layer (a sign that the scale is too tight)."""
        return {f"layer{k + 1}": float((ly["m"].abs() >= W_MANT_MAX).double().mean()) for k, ly in enumerate(self.layers)}

    def weights_float(self) -> list[Tensor]:
        return [ly["m"].to(torch.float64) * ly["lsb"] for ly in self.layers]

    def _forward_step(self, x: Tensor, state: list, noise: list | None):
        """One integer step from ``state`` (list of (u, v)); returns (o float [B, C], new state, per-layer
        (v_pre, spikes, clean input payload))."""
        h, new, seen, ar = x, [], [], self.ar
        for k, ly in enumerate(self.layers):
            a = ar.dense(ly["m"], h, ly["exp"])
            if noise is not None and self.site == "before" and k < len(self.hidden):
                a = a + noise_current(noise[k], ly["noise_gain"], ar)
            u, v = state[k]
            u, v_pre = ar.lif_integrate(u, v, a, ly["lif"])
            if k == len(self.layers) - 1:
                new.append((u, v_pre))
                seen.append((v_pre, None, h))
                return readout_value(a, ly["v_scale"], ar), new, seen
            v, s = int_lif_fire(v_pre, ly["lif"])
            new.append((u, v))
            seen.append((v_pre, s, h))
            h = self.payload(s, noise[k] if noise is not None and self.site == "after" else None)
        raise AssertionError("unreachable")

    def payload(self, s: Tensor, z: Tensor | None) -> Tensor:
        """What a hidden neuron sends: graded s·Q + σQ·z/Z with noise after it (OPZO, ZO), s·Q without,
        s for DFA."""
        return noisy_payload(s, z, Q if self.method != "dfa" else 1, self.sigma_int, self.ar)

    @property
    def gated(self) -> bool:
        """Whether hidden updates carry ψ' (all but noise injected before the neuron)."""
        return not (self.site == "before" and self.method != "dfa")

    @staticmethod
    def encode(x_seq: Tensor) -> Tensor:
        """Float input [T, B, ...] in [0, 1] -> graded integer payloads [T, B, N0]."""
        return torch.round(x_seq.clamp(0, 1) * GRADED_INPUT).to(torch.int64).flatten(2)

    def train_batch(self, x_seq: Tensor, y: Tensor, record: dict | None = None) -> tuple[float, Tensor]:
        """One batch of online learning (float input [T, B, N0] in [0, 1]); returns (mean loss, logits).

        Every random draw is keyed by (sample number, step) (``chip.rng``), so a batch of one sample
        gives exactly what the Lava processes (``neuroplast.lava.learning``) compute. ``record``
        collects u, v (after the spike check) and spikes of every hidden layer at every step."""
        x_int, ar = self.encode(x_seq), self.ar
        T, B = x_int.shape[:2]
        samples = torch.arange(self.samples_seen, self.samples_seen + B)
        state = [(torch.zeros(B, ly["m"].shape[0], dtype=ar.dtype),) * 2 for ly in self.layers]
        traces = [torch.zeros(B, ly["m"].shape[1], dtype=ar.dtype) for ly in self.layers]
        grads = [torch.zeros_like(ly["m"]) for ly in self.layers]
        loss_sum, logits = 0.0, 0.0
        # activity of this batch (cost model): spikes per hidden neuron summed over the batch and T, noise draws
        self.last_spike_counts = [torch.zeros(h["m"].shape[0], dtype=torch.int64) for h in self.hidden]
        self.last_noise_draws = 0
        for t in range(T):
            z = None if self.method == "dfa" else [h["noise"].draw(samples, t, h["m"].shape[0])
                                                   for h in self.hidden]
            o, new_state, seen = self._forward_step(x_int[t], state, z)
            for k, counts in enumerate(self.last_spike_counts):
                counts += seen[k][1].sum(0, dtype=torch.int64)
            self.last_noise_draws += sum(int(n.numel()) for n in z) if z is not None else 0
            if record is not None:
                for k in range(len(self.hidden)):
                    rec = record.setdefault(f"hidden{k + 1}", {"u": [], "v": [], "s": []})
                    for q, val in zip("uvs", (*new_state[k], seen[k][1].to(torch.int64))):
                        rec[q].append(val)
            per, e_int = error_payload(self.loss, o, y, T, self.error_rng, samples, t, ar)
            loss_sum += float(per.mean()) / T
            logits = logits + o / T
            for k, ly in enumerate(self.layers):  # presynaptic traces of the clean input each layer receives
                clean = seen[k][2] if k == 0 else seen[k - 1][1].to(torch.int64)
                traces[k] = trace_step(traces[k], clean, ly["x_scale"] if k == 0 else 1, ly["trace_d"],
                                       self.trace_max, ly["trace_rng"], samples, t, ar)
            if self.method == "zo":
                o_clean, _, _ = self._forward_step(x_int[t], state, None)
                diff = (per - self.loss.per_sample(o_clean, y)) / self.sigma
                d_int = ar.clamp(ar.sr((diff * E_PER_T).unsqueeze(1), self.zo_rng, samples, t)[:, 0], -127, 127)
            for k, ly in enumerate(self.hidden):
                delta = (ar.shr_round(d_int.view(-1, 1) * z[k], Z_SHIFT) if self.method == "zo"   # d·z/Z, rounded
                         else e_int @ ly["fb"])
                grads[k] += third_factor(seen[k][0], delta, ly["lif"].vth, self.gated).t() @ traces[k]
            grads[-1] += e_int.t() @ traces[-1]
            if self.method == "opzo":
                o8 = output_payload(o, self.out8_rng, samples, t, ar)
                for k, ly in enumerate(self.hidden):
                    ly["fb"] = feedback_update(ly["fb"], o8, z[k], self.beta_shift, ly["fb_rng"], int(samples[0]), t, ar)
            state = new_state
        for ly, grad in zip(self.layers, grads):
            factor = update_factor(self.lr, T, ly.get("fb_scale", 1.0), B, ly["lsb"])
            ly["m"] = weight_update(ly["m"], grad, factor, ly["update_rng"], self.batches_seen, self.ar)
        self.samples_seen += B
        self.batches_seen += 1
        return loss_sum, logits

    @torch.no_grad()
    def classify(self, x_seq: Tensor) -> Tensor:
        x_int = self.encode(x_seq)
        B = x_int.shape[1]
        state = [(torch.zeros(B, ly["m"].shape[0], dtype=self.ar.dtype),) * 2 for ly in self.layers]
        total = 0.0
        for t in range(x_int.shape[0]):
            o, state, _ = self._forward_step(x_int[t], state, None)
            total = total + o
        return total.argmax(1)
