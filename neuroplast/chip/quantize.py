"""Quantise a trained float network to the chip's integers (``quantize`` -> ``fixed_network.FixedNetwork``).

Float LIF v ← λ·v·(1 − s) + W·x + b, spike v > θ, maps to the integer CUBA LIF of ``fixed`` with
no current memory (du = 4095: u = a << 6 each step), dv = round(4096·(1 − λ)), reset to 0, and a
per-layer voltage scale S (v_int = S·v). A synapse fed by inputs with payload scale X (x_int = X·x:
X = 1 for spikes, 255 for 8-bit graded input (or L
for inputs on a 1/L grid, ``input_scale``), k² after a k×k average pool) stores mantissas

    m = round(W·S / (X·2^(weight_exp + 7)))  ∈ [−128, 127]   (Lava weight 2m; a = Σ 2m·x_int << exp)

Per spiking layer S = vth·64/θ, with vth = 127·θ·X·2^(exp+1)/max|W| and the largest weight exponent
keeping vth ≤ 2^14 (m uses the whole 8 bits; v keeps ±8θ of range before its 24-bit saturation) and
vth ≤ (2^17 − 1)·θ/max_i max(Σ_j W⁺_ij, Σ_j W⁻_ij) (``drive_vth_cap``: the largest input current, every
input at its largest payload, keeps u = a << 6 inside its 24 bits; a stronger drive would wrap u and
silence the layer). The readout
integrates (dv = 0) with S chosen so that T steps of worst-case input cannot saturate v (and lowered when the
chip's largest weight exponent cannot hold max|W|·S in 8 bits). Biases:
b·S = bias_mant·2^bias_exp, the smallest exponent with a 13-bit mantissa; S is capped so that
max|b|·S ≤ 4095·2^bias_exp_max (``bias_vth_cap``; the readout likewise), never clipped; a conv layer's
per-channel bias goes to each of its neurons, a per-neuron one (``NeuronBiasConv2d``, the first layer of a
normalised run folded to take intensities, ``snn.fold_input``) as it is.
Direct input is sent as intensities in [0, 1]: a run trained on normalised images is quantised from
``runs.chip_view`` (normalisation folded into the first layer), never from its normalised inputs.
``timing="sync"`` runs every layer on this step's input (the float engine's timing); ``"lava"``
adds Lava's one-step Dense delay per synapse and runs n_syn extra steps (``run_steps``).
"""
from __future__ import annotations

import math

import torch

from ..errors import DataError, SpecError
from ..snn.layers import Dropout, Flatten, Pool, Readout, SpikingLayer
from .fixed import (
    ACT_SHIFT,
    BIAS_EXP_MAX,
    BIAS_MANT_MAX,
    DECAY_MAX,
    DECAY_UNITY,
    VTH_MAX,
    VTH_SHIFT,
    W_MANT_MAX,
    IntLIFParams,
    check_numerics,
)
from .fixed_network import GRADED_INPUT, FixedLayer, FixedNetwork, FixedSynapse, run_steps
from .hardware import Chip

Tensor = torch.Tensor
V_HEADROOM = 8              # v must reach ±8θ before it saturates (a larger vth would clip negative v)
VTH_CAP = min(VTH_MAX, (1 << 23) // ((1 << VTH_SHIFT) * V_HEADROOM))
READOUT_VMAX = (VTH_MAX << VTH_SHIFT) - 1   # an integrating readout must stay below its own threshold
UV_LIMIT = 1 << 23          # u and v are 24-bit signed: a << 6 must stay below this
A_MAX = (UV_LIMIT >> ACT_SHIFT) - 1   # the largest |a| whose u = a << 6 cannot wrap (2^17 − 1)


def threshold_scale(theta: float, x_scale: int, lsb: float, lo: int, hi: int, cap: int = VTH_CAP, *,
                    name: str | None = None) -> tuple[int, int]:
    """(weight_exp, vth) for a layer whose weights should step by ``lsb`` (float units): the largest
    exponent in [lo, hi] with 1 ≤ vth ≤ cap, vth = ⌊θ·X·2^(exp+1)/lsb⌋ (from m·2^(exp+7) = W·S/X,
    S = vth·64/θ); (lo, cap) when every exponent wants vth > cap (the mantissas then use fewer bits).
    Weights too large for even (hi, vth = 1), |W| > 127·θ·X·2^(hi+1), would clip: DataError."""
    def vth_of(e):
        return math.floor(theta * x_scale * 2.0 ** (e + 1) / lsb)
    if vth_of(hi) < 1:
        raise DataError(f"{f'layer {name}' if name else 'a layer'}: weights up to {W_MANT_MAX * lsb:g} do not fit the "
                        f"chip's 8-bit mantissas next to its threshold θ = {theta:g}: at the largest weight exponent "
                        f"({hi}) and the smallest threshold (vth = 1) they reach {W_MANT_MAX * theta * x_scale * 2.0 ** (hi + 1):g}; "
                        "scale the weights down")
    exp = next((e for e in range(hi, lo - 1, -1) if 1 <= vth_of(e) <= cap), lo)
    return exp, int(min(vth_of(exp), cap))


def _round(y: Tensor, stochastic: bool, generator) -> Tensor:
    if stochastic:
        return torch.floor(y + torch.rand(y.shape, generator=generator, dtype=y.dtype))
    return torch.round(y)


def _mantissas(w: Tensor, s: float, x_scale: int, exp: int, stochastic: bool, generator) -> Tensor:
    y = w.detach().to(torch.float64) * s / (x_scale * 2.0 ** (exp + 7))
    return _round(y, stochastic, generator).clamp(-W_MANT_MAX - 1, W_MANT_MAX).to(torch.int64)


def signed_reach(w: Tensor) -> float:
    """max_i max(Σ_j W⁺_ij, Σ_j W⁻_ij): the largest |Σ_j W_ij·x_j| over inputs x in [0, 1] (0 for no weights)."""
    wd = w.detach().to(torch.float64).flatten(1)
    return float(torch.maximum(wd.clamp_min(0).sum(1), (-wd).clamp_min(0).sum(1)).max()) if wd.numel() else 0.0


def drive_bound(w: Tensor, s: float, x_scale: int, exp: int) -> int:
    """The largest |a| = |Σ 2m·x << exp| over payloads 0 ≤ x ≤ X for mantissas m of y = W·S/(X·2^(exp+7))
    under any rounding (|m| ≤ ⌈|y|⌉): ⌈2·signed_reach(m)·X·2^exp⌉. u = a << 6 cannot wrap while it is ≤ A_MAX."""
    y = w.detach().to(torch.float64).flatten(1) * (s / (x_scale * 2.0 ** (exp + 7)))
    return math.ceil(2 * signed_reach(torch.ceil(y.abs()).clamp_max(W_MANT_MAX + 1) * y.sign()) * x_scale * 2.0 ** exp)


def drive_vth_cap(w: Tensor, theta: float) -> int:
    """The largest vth at which the float current keeps u from wrapping: a·2^6 = S·Σ W·x ≤ vth·64·R/θ with
    R = ``signed_reach(W)`` (inputs in [0, 1]), so vth ≤ ⌊A_MAX·θ/R⌋ (at least 1: ``fit_drive`` says where
    not even that fits)."""
    reach = signed_reach(w)
    return VTH_MAX if reach == 0 else max(1, min(VTH_MAX, math.floor(A_MAX * theta / reach)))


def fit_drive(name: str, w: Tensor, theta: float, x_scale: int, lsb: float, lo: int, hi: int, exp: int, vth: int,
              ) -> tuple[int, int]:
    """(exp, vth) with vth lowered (and the exponent chosen again, ``threshold_scale``) until the rounded
    mantissas' worst current ``drive_bound`` ≤ A_MAX; DataError where not even vth = 1 keeps u from wrapping."""
    while (a := drive_bound(w, vth * 2.0 ** VTH_SHIFT / theta, x_scale, exp)) > A_MAX:
        cap = min(vth - 1, math.floor(vth * A_MAX / a))
        if cap < 1:
            raise DataError(f"layer {name}: its input current reaches {signed_reach(w) / theta:g}·θ per step (every "
                            "input at its largest value), more than the chip's 24-bit u holds even at the smallest "
                            "threshold scale (vth = 1); scale the weights down")
        exp, vth = threshold_scale(theta, x_scale, lsb, lo, hi, cap)
    return exp, vth


def constant_drive_vth(w: Tensor, b: Tensor | None, theta: float, x_scale: int, exp: int, vth: int,
                       bias_exp_max: int = BIAS_EXP_MAX) -> int:
    """A threshold above VTH_CAP for a layer whose input is constant over the T steps (the first layer
    of a direct-input network), where ``threshold_scale`` had to clip vth at VTH_CAP (too small a
    weight exponent range, e.g. netx's [−1, 0]) and the mantissas therefore lose range.

    The 8θ of v headroom behind VTH_CAP is not needed there: with a constant drive c (bias + input
    current) the hard-reset LIF v ← λv + c is monotone between spikes, so v saturating at +2^23 only
    happens above threshold (a spike either way) and at −2^23 only on a falling trajectory that never
    spikes again, in the float network as on the chip. What remains to guard is exact: u = a << 6
    must not wrap (the worst-case |a| over all inputs in [0, 1], from the rounded-up mantissas,
    stays below 2^17, ``drive_bound``) and the biases must fit the chip's bias range. Returns the largest vth ≤ the
    wanted ⌊θ·X·2^(exp+1)/lsb⌋ (and ≤ VTH_MAX) meeting both, at least ``vth``."""
    wd = w.detach().to(torch.float64).flatten(1)
    lsb = float(wd.abs().max()) / W_MANT_MAX or 1e-12
    cand = min(math.floor(theta * x_scale * 2.0 ** (exp + 1) / lsb), VTH_MAX)
    bmax = float(b.detach().abs().max()) if b is not None else 0.0
    bias_lim = BIAS_MANT_MAX * 2 ** bias_exp_max
    while cand > vth:
        s = cand * 2.0 ** VTH_SHIFT / theta
        if drive_bound(wd, s, x_scale, exp) <= A_MAX and bmax * s <= bias_lim:
            return cand
        cand = math.floor(cand * 0.97)
    return vth


def _abs_max(t: Tensor | None) -> float:
    return float(t.detach().abs().max()) if t is not None and t.numel() else 0.0


def bias_limit(exp_max: int = BIAS_EXP_MAX) -> int:
    """The largest |b·S| the chip's bias holds: BIAS_MANT_MAX·2^exp_max (4095·2^7 = 524160 on Loihi)."""
    return BIAS_MANT_MAX << exp_max


def bias_vth_cap(name: str, b: Tensor | None, theta: float, exp_max: int = BIAS_EXP_MAX) -> int:
    """The largest vth whose scale S = vth·64/θ keeps every bias on the chip, max|b|·S ≤ BIAS_MANT_MAX·2^exp_max:
    ⌊BIAS_MANT_MAX·2^exp_max·θ/(64·max|b|)⌋ (VTH_MAX without biases); DataError where not even vth = 1 fits."""
    bmax = _abs_max(b)
    if bmax == 0:
        return VTH_MAX
    cap = math.floor(bias_limit(exp_max) * theta / (2 ** VTH_SHIFT * bmax))
    if cap < 1:
        raise DataError(f"layer {name}: a bias of {bmax:g} ({bmax / theta:g}·θ) does not fit the chip's bias, "
                        f"{BIAS_MANT_MAX}·2^{exp_max}, even at the smallest threshold scale (vth = 1): at most "
                        f"{bias_limit(exp_max) / 2 ** VTH_SHIFT:g}·θ")
    return min(cap, VTH_MAX)


def _bias(b: Tensor | None, s: float, n: int, exp_max: int = BIAS_EXP_MAX) -> tuple[Tensor, Tensor]:
    """b·S = mant·2^exp, the smallest exp in [0, exp_max] with |mant| ≤ 4095; the caller caps S so that
    max|b|·S fits (``bias_limit``): a bias that does not is an error, never clipped."""
    if b is None:
        return torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)
    b_int = torch.round(b.detach().to(torch.float64) * s)
    exp = torch.zeros_like(b_int)
    while bool(((b_int.abs() / 2 ** exp) > BIAS_MANT_MAX).any()) and int(exp.max()) < exp_max:
        exp = torch.where((b_int.abs() / 2 ** exp) > BIAS_MANT_MAX, exp + 1, exp)
    mant = torch.round(b_int / 2 ** exp)
    if bool((mant.abs() > BIAS_MANT_MAX).any()):
        raise DataError(f"a bias of {float(b_int.abs().max()):g} (b·S) does not fit the chip's bias "
                        f"({BIAS_MANT_MAX}·2^{exp_max}); lower the scale S")
    return mant.to(torch.int64), exp.to(torch.int64)


def readout_exp(w: Tensor, s: float, x_scale: int, lo: int, hi: int) -> tuple[int, float]:
    """(weight_exp, S) of the readout: the smallest exponent with max|W|·S/(X·2^(exp+7)) ≤ 127.5 (the most
    mantissa bits), else the largest with S lowered to fit it (coarser v, no clipping)."""
    wmax = _abs_max(w) or 1e-12
    exp = next((e for e in range(lo, hi + 1) if wmax * s / (x_scale * 2.0 ** (e + 7)) <= W_MANT_MAX + 0.5), hi)
    return exp, min(s, W_MANT_MAX * x_scale * 2.0 ** (exp + 7) / wmax)


def input_grid(x: Tensor) -> int:
    """The smallest L ≤ 255 with every value of ``x`` (in [0, 1]) a multiple of 1/L, else 255: graded
    payloads round(L·x) then carry such inputs exactly (digits: pixel/16, L = 16), and the first
    layer's weights get 255/L times more room under its threshold (see ``quantize``'s input_scale)."""
    vals = torch.unique(x.detach().to(torch.float64).clamp(0, 1))
    return next((n for n in range(1, GRADED_INPUT) if bool(((vals * n - (vals * n).round()).abs() < 1e-6).all())),
                GRADED_INPUT)


def _spiking_layer(net, name: str, x_scale: int, first_direct: bool, lo: int, hi: int, bias_exp_max: int,
                   stochastic: bool, generator) -> FixedLayer:
    """The integer form of spiking layer ``name`` fed payloads on scale ``x_scale``: vth from ``threshold_scale``
    under the headroom, bias and drive caps (raised by ``constant_drive_vth`` for the first layer of a
    direct-input network, ``first_direct``, where it was clipped at VTH_CAP; lowered by ``fit_drive`` until
    u cannot wrap), mantissas and biases at S = vth·64/θ, dv from the leak."""
    layer = net.layers[name]
    if layer.lif.reset != "hard":
        raise SpecError(f"layer {name}: Loihi's LIF resets to 0 (hard reset); {layer.lif.reset!r} cannot run")
    w, theta = layer.op.weight, layer.lif.threshold
    wmax = float(w.detach().abs().max()) or 1e-12
    cap = min(VTH_CAP, bias_vth_cap(name, layer.op.bias, theta, bias_exp_max), drive_vth_cap(w, theta))
    exp, vth = threshold_scale(theta, x_scale, wmax / W_MANT_MAX, lo, hi, cap, name=name)
    if first_direct and vth == VTH_CAP:
        vth = constant_drive_vth(w, layer.op.bias, theta, x_scale, exp, vth, bias_exp_max)
    exp, vth = fit_drive(name, w, theta, x_scale, wmax / W_MANT_MAX, lo, hi, exp, vth)
    s = vth * 2.0 ** VTH_SHIFT / theta
    conv = None if w.dim() == 2 else {"stride": layer.op.stride, "padding": layer.op.padding}
    syn = FixedSynapse(_mantissas(w, s, x_scale, exp, stochastic, generator), exp, x_scale, s, conv)
    b = layer.op.bias
    per_neuron = b is not None and b.dim() > 1   # NeuronBiasConv2d: one bias per neuron [C, H, W]
    mant, bexp = _bias(b.reshape(-1) if per_neuron else b, s, b.numel() if per_neuron else w.shape[0],
                       bias_exp_max)
    if conv is not None and not per_neuron:  # per-channel bias -> per-neuron [C, H, W]
        shape = net.shapes[name]
        mant, bexp = (t.view(-1, 1, 1).expand(shape).reshape(-1) for t in (mant, bexp))
    dv = int(min(max(round(DECAY_UNITY * (1 - layer.lif.leak)), 0), DECAY_MAX))
    return FixedLayer(name, "spiking", syn, IntLIFParams(DECAY_MAX, dv, vth, mant, bexp))


def _readout_layer(name: str, layer: Readout, x_scale: int, steps: int, lo: int, hi: int, bias_exp_max: int,
                   stochastic: bool, generator) -> FixedLayer:
    """The integer form of the integrating readout (dv = 0, threshold out of reach) fed payloads on scale
    ``x_scale``: S as large as ``steps`` steps of worst-case input allow below its threshold, lowered to keep
    the biases on the chip (``bias_limit``), the mantissas in 8 bits (``readout_exp``) and u from wrapping
    (``drive_bound``); DataError where no scale keeps u or where every weight would round to 0."""
    w, b = layer.op.weight.detach(), layer.op.bias
    reach = float((w.abs().sum(1) + (b.detach().abs() if b is not None else 0)).max()) or 1e-12
    s, bmax = READOUT_VMAX / (steps * reach), _abs_max(b)
    if bmax > 0:
        s = min(s, bias_limit(bias_exp_max) / bmax)     # the biases fit the chip's bias
    exp, s = readout_exp(w, s, x_scale, lo, hi)
    for _ in range(64):   # rounded-up mantissas can lift the current past u's range: lower S
        if (a := drive_bound(w, s, x_scale, exp)) <= A_MAX:
            break
        exp, s = readout_exp(w, s * A_MAX / a * (1 - 1e-9), x_scale, lo, hi)
    else:
        raise DataError(f"layer {name}: no scale keeps its input current inside the chip's 24-bit u")
    wmax = _abs_max(w)
    if wmax > 0 and wmax * s / (x_scale * 2.0 ** (exp + 7)) < 0.5:
        raise DataError(f"layer {name}: its biases (up to {bmax:g}) are too large next to its weights "
                        f"(up to {wmax:g}): at a scale that keeps them on the chip's bias "
                        f"({BIAS_MANT_MAX}·2^{bias_exp_max}) every weight rounds to 0")
    syn = FixedSynapse(_mantissas(w, s, x_scale, exp, stochastic, generator), exp, x_scale, s)
    mant, bexp = _bias(b, s, w.shape[0], bias_exp_max)
    return FixedLayer(name, "readout", syn, IntLIFParams(DECAY_MAX, 0, VTH_MAX, mant, bexp))


def quantize(net, chip: Chip, *, encoding: str = "direct", time_steps: int, stochastic: bool = False,
             generator: torch.Generator | None = None, timing: str = "sync",
             input_scale: int = GRADED_INPUT) -> FixedNetwork:
    """Integer version of ``net`` for ``chip`` (see the module docstring). Direct input x ∈ [0, 1] is sent
    as graded payloads round(input_scale·x) (``input_grid`` finds an exact smaller scale for data on a
    coarser grid). Layer by layer (``_spiking_layer``, ``_readout_layer``), each fed payloads on the scale
    the layer before it sends: input_scale (direct) or 1 (spikes), times k² after a k×k average pool."""
    if not chip.fixed:
        raise SpecError(f"chip {chip.name!r} has float precision; there is nothing to quantise")
    check_numerics(chip)
    lo, hi = chip.numerics["weight_exp_min"], chip.numerics["weight_exp_max"]
    graded = chip.numerics["graded_spike_bits"]
    if not 1 <= input_scale <= GRADED_INPUT:
        raise SpecError(f"input_scale {input_scale} must be in [1, {GRADED_INPUT}] (8-bit graded payloads)")
    x_scale = input_scale if encoding == "direct" else 1
    bias_exp_max = chip.numerics.get("bias_exp_max", BIAS_EXP_MAX)
    if x_scale > 1 and graded < 8:
        raise SpecError(f"{chip.name} has binary spikes only; a network with real-valued (direct) input needs graded "
                        "spikes: train it with --encoding poisson, or use a chip with graded spikes (loihi2)")
    layers, n_syn = [], sum(isinstance(m, (SpikingLayer, Readout)) for m in net.layers.values())
    steps = run_steps(time_steps, n_syn, timing)
    for name, layer in net.layers.items():
        if isinstance(layer, SpikingLayer):
            first_direct = encoding == "direct" and not any(f.synapse is not None for f in layers)
            layers.append(_spiking_layer(net, name, x_scale, first_direct, lo, hi, bias_exp_max, stochastic,
                                         generator))
            x_scale = 1
        elif isinstance(layer, Readout):
            layers.append(_readout_layer(name, layer, x_scale, steps, lo, hi, bias_exp_max, stochastic, generator))
        elif isinstance(layer, Pool):
            if layer.kind == "avg" and graded < 8:
                raise SpecError(f"{chip.name} has binary spikes only; average pooling sends spike counts "
                                "(use max pooling, MP2, or a chip with graded spikes)")
            layers.append(FixedLayer(name, "pool", pool=(layer.kind, layer.k)))
            if layer.kind == "avg":
                x_scale *= layer.k ** 2
        elif isinstance(layer, Flatten):
            layers.append(FixedLayer(name, "flatten"))
        elif not isinstance(layer, Dropout):
            raise SpecError(f"layer {name} ({type(layer).__name__}) has no fixed-point form")
    return FixedNetwork(layers, net.input_shape, net.num_classes, encoding, timing,
                        input_scale=input_scale if encoding == "direct" else 1, binary_spikes=graded < 8)
