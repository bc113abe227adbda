"""Loihi fixed-point execution: integer CUBA LIF and Dense, bit-exact with Lava's bit-accurate
models (lava-nc 0.10.0: lava/proc/lif/models.py ``PyLifModelBitAcc``, lava/proc/dense/models.py
``PyDenseModelBitAcc``), vectorised over batch and neurons with int64 tensors.

Dense (one time step of delay in Lava; ``timing="lava"``):
    w   = 2·m, m the signed 8-bit mantissa (Lava clips to [−256, 255], then drops the LSB of a
          mixed-sign matrix, so only even values survive)
    a   = (Σ_j w_ij·x_j) << weight_exp        (>> −weight_exp when negative; x binary spikes or
                                                graded integer payloads)
CUBA LIF, per step:
    u ← sign(p)·(|p| >> 12),  p = u·(4096 − (du + 1));   u ← u + (a << 6), wrapped once by ±2^24
        where it leaves (−2^23, 2^23]
    v ← clip(sign(q)·(|q| >> 12) + u + (bias_mant << bias_exp), −2^23 + 1, 2^23 − 1),
        q = v·(4096 − dv)
    s = v > (vth << 6);  v ← 0 where s  (u is not reset)
Lava computes in int32 numpy arrays; ``_i32`` reproduces its wrap-around where a value can leave
that range. Checked against traces recorded from Lava itself (tests/data/lava_lif_reference.npz).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError
from ..snn import gemm, native_lib

Tensor = torch.Tensor

DECAY_SHIFT = 12                 # decays du, dv are 12-bit fractions of 4096
DECAY_UNITY = 1 << DECAY_SHIFT
ACT_SHIFT = 6                    # synaptic input is MSB-aligned by 6 bits before it enters u
VTH_SHIFT = 6                    # threshold mantissa is MSB-aligned by 6 bits
UV_BITS = 24                     # u and v are 24-bit signed registers
UV_MAX = 1 << (UV_BITS - 1)
VTH_BITS = 17                    # vth: unsigned 17-bit
VTH_MAX = (1 << VTH_BITS) - 1
BIAS_MANT_BITS = 13              # bias_mant: signed 13-bit
BIAS_MANT_MAX = (1 << (BIAS_MANT_BITS - 1)) - 1
BIAS_EXP_BITS = 3                # bias_exp: unsigned 3-bit (0..7)
BIAS_EXP_MAX = (1 << BIAS_EXP_BITS) - 1
DECAY_MAX = DECAY_UNITY - 1      # du, dv: unsigned 12-bit
W_MANT_BITS = 8                  # weight mantissa m: signed 8-bit; Lava weight = 2·m
W_MANT_MAX = (1 << (W_MANT_BITS - 1)) - 1

#: the chip-file [numerics] widths this integer model implements (Lava's Loihi CUBA LIF and Dense)
MODEL_NUMERICS = {"weight_mantissa_bits": W_MANT_BITS, "current_bits": UV_BITS, "voltage_bits": UV_BITS,
                  "decay_bits": DECAY_SHIFT, "threshold_mantissa_bits": VTH_BITS, "threshold_shift": VTH_SHIFT,
                  "activation_shift": ACT_SHIFT, "bias_mantissa_bits": BIAS_MANT_BITS,
                  "bias_exponent_bits": BIAS_EXP_BITS}


def check_numerics(chip) -> None:
    """DataError naming every [numerics] width of ``chip`` that differs from ``MODEL_NUMERICS``: the
    engine computes with Lava's Loihi widths only, so a chip file asking for others cannot run on it
    (its weight exponent range and graded_spike_bits are read from the file)."""
    bad = [f"{key} = {chip.numerics.get(key)} (the model implements {val})"
           for key, val in MODEL_NUMERICS.items() if chip.numerics.get(key) != val]
    if bad:
        raise DataError(f"chip {chip.name} ({chip.path}): [numerics] {'; '.join(bad)}. The fixed-point model is "
                        "Lava's Loihi LIF/Dense with these widths built in; use a chip file with Loihi's widths")


def _i32(x: Tensor) -> Tensor:
    """Wrap int64 values to int32 two's complement (what Lava's int32 numpy arithmetic does),
    ((x + 2^31) mod 2^32) − 2^31: a cast to int32 keeps the low 32 bits (modular since C++20, and on
    every compiler torch is built with; ``tests/test_chip_fixed.py`` checks it against the formula),
    ~15x faster than the integer remainder."""
    return x.to(torch.int32).to(torch.int64)


def _decay(x: Tensor, factor: int | Tensor) -> Tensor:
    """sign(x·f)·(|x·f| >> 12): multiply by a 12-bit decay factor, truncate toward zero."""
    return _i32(_decay_in_range(x, factor))


def _decay_in_range(x: Tensor, factor: int | Tensor) -> Tensor:
    """``_decay`` of an x already in int32 range (LIF states): |x·f| >> 12 ≤ |x| for f ≤ 4096, so
    the int32 wrap is the identity and is skipped."""
    p = x * factor
    return torch.sign(p) * (p.abs() >> DECAY_SHIFT)


@dataclass(frozen=True)
class IntLIFParams:
    """Integer CUBA LIF constants of one layer (per-neuron bias as tensors [N] or scalars)."""

    du: int
    dv: int
    vth: int
    bias_mant: Tensor | int = 0
    bias_exp: Tensor | int = 0

    def __post_init__(self):
        for name, val, hi in (("du", self.du, DECAY_MAX), ("dv", self.dv, DECAY_MAX), ("vth", self.vth, VTH_MAX)):
            if not 0 <= int(val) <= hi:
                raise ValueError(f"{name} = {val} outside the chip's range [0, {hi}]")

    def effective_bias(self) -> Tensor | int:
        m, e = torch.as_tensor(self.bias_mant, dtype=torch.int64), torch.as_tensor(self.bias_exp, dtype=torch.int64)
        return torch.where(e >= 0, m << e.clamp_min(0), m >> (-e).clamp_min(0))


def int_lif_integrate(u: Tensor, v: Tensor, a: Tensor, p: IntLIFParams) -> tuple[Tensor, Tensor]:
    """Sub-threshold part of a step: (u, v, a) -> (u, v before the spike check)."""
    u = _i32(_decay_in_range(u, DECAY_UNITY - (p.du + 1)) + _i32(a << ACT_SHIFT))   # u, v: int32 range
    wrapped = torch.where(u > UV_MAX, u - 2 * UV_MAX, u)
    u = torch.where(wrapped <= -UV_MAX, u + 2 * UV_MAX, wrapped)   # wraps once, as Lava does
    v = _i32(_decay_in_range(v, DECAY_UNITY - p.dv) + u + p.effective_bias())
    return u, v.clamp(-UV_MAX + 1, UV_MAX - 1)


def exact_lif_integrate(u: Tensor, v: Tensor, a: Tensor, p: IntLIFParams) -> tuple[Tensor, Tensor]:
    """``int_lif_integrate`` in float64 without truncation, wrap-around or clipping (the exact twin of
    the same parameters): u ← u·(4096 − (du + 1))/4096 + a·2^6;  v ← v·(4096 − dv)/4096 + u + bias."""
    u = u * ((DECAY_UNITY - (p.du + 1)) / DECAY_UNITY) + a * float(1 << ACT_SHIFT)
    return u, v * ((DECAY_UNITY - p.dv) / DECAY_UNITY) + u + p.effective_bias()


def int_lif_fire(v: Tensor, p: IntLIFParams) -> tuple[Tensor, Tensor]:
    """Spike where v > vth << 6 and reset v to 0 there: v -> (v, spikes bool)."""
    s = v > (p.vth << VTH_SHIFT)
    return torch.where(s, torch.zeros_like(v), v), s


def int_lif_step(u: Tensor, v: Tensor, a: Tensor, p: IntLIFParams) -> tuple[Tensor, Tensor, Tensor]:
    """One integer CUBA LIF step: (u, v, a) int64 [..., N] -> (u, v, spikes bool)."""
    u, v = int_lif_integrate(u, v, a, p)
    v, s = int_lif_fire(v, p)
    return u, v, s


#: largest |a| for which ``int_lif_steps`` runs in float64: a·2^6 < 2^23, so with |u| ≤ 2^23 every sum
#: stays below 2^25 (no int32 wrap) and u leaves (−2^23, 2^23] by less than 2^23 (one wrap is all)
FLOAT_RUN_MAX_A = (1 << 17) - 1


def int_lif_steps(u: Tensor, v: Tensor, a: Tensor, p: IntLIFParams, *, record: bool = False):
    """``int_lif_step`` over the steps of a [T, ...]: (u, v, spikes bool [T, ...], [(u, v) per step]
    if ``record`` else None), all integers as int64 tensors (``a`` may also be float64 holding exact
    integers, as ``float_product`` gives it).

    Where |a| ≤ ``FLOAT_RUN_MAX_A``, |u| ≤ 2^23 and |bias| < 2^23 (8-bit weights, thousands of inputs per neuron)
    the steps run in float64 on exact integers, the same numbers in fewer and faster passes: a decay
    trunc(x·f/4096) is exact (|x·f| < 2^36 < 2^53, f/4096 a dyadic fraction), no value can reach
    the int32 wrap, and the 24-bit wrap of u is x − 2^24·round((x − ½)/2^24) for |x| < 2^24.
    Otherwise step by step in int64 (``int_lif_step``). An ``a`` that is one step repeated (a stride-0
    view: a constant input) is scanned and converted once.

    The wrap and the clip are skipped where bounds rule them out: with |a| ≤ A, a step takes |u| ≤ M
    to |u| ≤ M·(1 − (du+1)/4096) + 2^6·A, so |u| never exceeds U = max(|u₀|, 2^6·A·4096/(du+1));
    likewise |v| ≤ max(|v₀|, (U + |bias|)·4096/dv) for dv > 0 (a reset only lowers |v|)."""
    bias = p.effective_bias()
    a_step = a[0] if len(a) and a.stride(0) == 0 else a   # a constant a: its one step
    a_max, u_max, b_max = _abs_max(a_step), _abs_max(u), _abs_max(bias)
    if a_max > FLOAT_RUN_MAX_A or u_max > UV_MAX or b_max >= UV_MAX:
        a = a.to(torch.int64)
        spikes, trace = [], [] if record else None
        for t in range(len(a)):
            u, v, s = int_lif_step(u, v, a[t], p)
            spikes.append(s)
            if record:
                trace.append((u, v))
        return u, v, torch.stack(spikes) if spikes else a.new_zeros(a.shape, dtype=torch.bool), trace
    f64 = torch.float64
    cu, cv = (DECAY_UNITY - (p.du + 1)) / DECAY_UNITY, (DECAY_UNITY - p.dv) / DECAY_UNITY
    bias = bias.to(f64)
    vth = float(p.vth << VTH_SHIFT)
    u_bound = max(u_max, a_max * (1 << ACT_SHIFT) * DECAY_UNITY / (p.du + 1))
    wraps = u_bound + 1 >= UV_MAX                     # u stays in (−2^23, 2^23) otherwise: the wrap is the identity
    clips = p.dv == 0 or max(_abs_max(v), (u_bound + b_max) * DECAY_UNITY / p.dv) + 2 >= UV_MAX - 1
    uf, vf = u.to(f64, memory_format=torch.contiguous_format), v.to(f64, memory_format=torch.contiguous_format)
    spikes = torch.empty(a.shape, dtype=torch.bool, device=a.device)
    if not record and _native_run(a_step.to(f64), a_step is not a, uf, vf, bias, spikes,
                                  (cu, cv, vth, float(1 << ACT_SHIFT)), wraps, clips):
        return uf.to(torch.int64), vf.to(torch.int64), spikes, None
    a64 = a_step.to(f64, copy=True).mul_(1 << ACT_SHIFT)   # a copy even where a is float64 already
    a64 = a64.expand(a.shape) if a_step is not a else a64
    wrap = torch.empty_like(uf) if wraps else None
    trace = [] if record else None
    for t in range(len(a)):
        uf = uf.mul_(cu).trunc_().add_(a64[t])                                  # |uf| < 2^24
        if wraps:
            torch.sub(uf, 0.5, out=wrap).mul_(2.0 ** -(UV_BITS)).round_()        # −1, 0 or 1
            uf.sub_(wrap, alpha=float(1 << UV_BITS))
        vf = vf.mul_(cv).trunc_().add_(uf).add_(bias)
        if clips:
            vf.clamp_(-UV_MAX + 1, UV_MAX - 1)
        torch.gt(vf, vth, out=spikes[t])
        vf.masked_fill_(spikes[t], 0.0)
        if record:
            trace.append((uf.to(torch.int64), vf.to(torch.int64)))
    return uf.to(torch.int64), vf.to(torch.int64), spikes, trace


def _native_run(a64: Tensor, constant: bool, uf: Tensor, vf: Tensor, bias: Tensor, spikes: Tensor,
                consts: tuple[float, float, float, float], wraps: bool, clips: bool) -> bool:
    """``int_lif_steps``' float64 run as one C pass (``snn/native/int_lif.c``: the same exact integers), on
    ``uf``, ``vf`` and ``spikes`` in place, from the input a (float64 exact integers, not yet << 6: the
    kernel scales it as it reads it, no copy); ``consts`` = (cu, cv, vth << 6, 2^6). False where it
    does not apply (no C kernels, not the CPU, a bias neither a scalar nor one value per neuron)."""
    per_neuron = bias.numel() == (uf.shape[-1] if uf.dim() else 1)
    if not (native_lib.usable(a64, uf, vf, bias, dtype=torch.float64) and (bias.numel() == 1 or per_neuron)
            and spikes.is_contiguous() and uf.is_contiguous() and vf.is_contiguous()):
        return False
    a64, bias = a64.contiguous(), bias.contiguous()
    n = uf.numel()
    native_lib.library().int_lif_f64(native_lib.ptr(a64), 0 if constant else n, native_lib.ptr(uf),
                                     native_lib.ptr(vf), native_lib.ptr(bias), bias.numel(), native_lib.ptr(spikes),
                                     len(spikes), n, *consts, int(wraps), int(clips))
    return True


def _abs_max(x: Tensor) -> float:
    """max |x| in one pass, no temporary (0 when empty)."""
    if not x.numel():
        return 0.0
    lo, hi = torch.aminmax(x)
    return max(-float(lo), float(hi))


def lava_weights(m: Tensor) -> Tensor:
    """The integer matrix Lava stores for mantissas m: 2·m (even values in [−256, 254])."""
    return 2 * m.to(torch.int64)


def exact_float(x: Tensor, w: Tensor) -> torch.dtype:
    """A float dtype in which every product x·w and every partial sum of a synaptic product is an
    exact integer: float32 where max|x|·max_out Σ_in |w| < 2^24 (spikes, spike counts, 8-bit payloads
    into the nets here: BLAS at float32 speed, and oneDNN for convolutions), else float64 (exact to 2^53)."""
    if not x.numel() or not w.numel():
        return torch.float64
    return _exact_dtype(x, _reach(w))


def _reach(w: Tensor) -> float:
    """max_out Σ_in |w|: the largest |Σ| of a product per unit of input (0 for no weights)."""
    return float(w.abs().flatten(1).sum(1).max()) if w.numel() else 0.0


def _exact_dtype(x: Tensor, reach: float) -> torch.dtype:
    x_max = 1 if x.dtype == torch.bool else _abs_max(x)   # spikes as bool: no scan
    return torch.float32 if x_max * reach < 2 ** 24 else torch.float64


@dataclass(frozen=True)
class LavaWeights:
    """Lava's stored weights w = 2m with what an exact float product needs, computed once per matrix:
    reach = max_out Σ_in |w| (the largest |Σ| per unit of input) and w in float32 and float64."""

    w: Tensor
    reach: float
    f32: Tensor
    f64: Tensor

    @classmethod
    def of(cls, m: Tensor) -> LavaWeights:
        w = lava_weights(m)
        return cls(w, _reach(w), w.to(torch.float32), w.to(torch.float64))

    def dtype_for(self, x: Tensor) -> torch.dtype:
        """``exact_float`` of x with these weights."""
        return _exact_dtype(x, self.reach) if x.numel() and self.w.numel() else torch.float64

    def as_dtype(self, dtype: torch.dtype) -> Tensor:
        return self.f32 if dtype == torch.float32 else self.f64


def int_product(m: Tensor, x: Tensor, weight_exp: int, product, weights: LavaWeights | None = None) -> Tensor:
    """a = product(x, 2m) << weight_exp for integer x (spikes, int or bool, or graded payloads) and mantissas m, with
    ``product`` a dense or conv product: computed in floats where it is exact (``exact_float``), so
    BLAS/oneDNN do it; wrapped to int32 as Lava's dot does. ``weights``: ``LavaWeights.of(m)`` made
    once by the caller (else made here)."""
    lw = weights if weights is not None else LavaWeights.of(m)
    dt = lw.dtype_for(x)
    return _shift(_i32(product(x.to(dt), lw.as_dtype(dt)).to(torch.int64)), weight_exp)


def float_product(m: Tensor, x: Tensor, weight_exp: int, product, weights: LavaWeights | None = None) -> Tensor | None:
    """``int_product`` as exact integers in float64, where the product is exact in float32 (then
    |Σ| < 2^24: no int32 wrap can happen, and Σ << e = Σ·2^e, Σ >> k = floor(Σ·2^−k) exactly), what
    ``int_lif_steps`` takes without int64 round trips; None where float32 is not exact."""
    lw = weights if weights is not None else LavaWeights.of(m)
    if lw.dtype_for(x) != torch.float32:
        return None
    acc = product(x.to(torch.float32), lw.f32).to(torch.float64)
    return acc.mul_(2.0 ** weight_exp) if weight_exp >= 0 else acc.mul_(2.0 ** weight_exp).floor_()


def int_dense(m: Tensor, x: Tensor, weight_exp: int) -> Tensor:
    """a = (x·(2m)ᵀ) << weight_exp for x [..., N_in] int, m [N_out, N_in] (``int_product``)."""
    return int_product(m, x, weight_exp, dense_product)


def dense_product(x: Tensor, w: Tensor) -> Tensor:
    """x [..., N_in] · w [N_out, N_in]ᵀ: the dense layer's product for ``int_product``/``float_product``,
    on the engine's GEMM (``snn.gemm``: oneDNN in float32 on the CPU, 2× MKL's rate on AMD). Exact
    either way: every partial sum is an integer below 2^24 (float32) or 2^53 (``exact_float``), so
    the order of the sums cannot change a bit."""
    return gemm.linear(x, w)


def _shift(acc: Tensor, weight_exp: int) -> Tensor:
    return acc << weight_exp if weight_exp > 0 else acc >> (-weight_exp)
