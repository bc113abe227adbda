"""Export to and import from lava-dl's network exchange format (netx HDF5), in Loihi fixed point.

File layout (what ``lava.lib.dl.netx.hdf5.Network`` of lava-dl 0.6.0 reads): group ``layer`` with
subgroups ``0``, ``1``, …; ``0`` is ``type = input`` with the input ``shape`` (C, H, W order, netx
reverses it to W, H, C); then per synaptic layer ``type = dense | conv``, ``shape``, ``weight``
(integers), ``bias`` (one per neuron, or per channel for a conv layer whose neurons of a channel share
it; a conv layer's per-neuron bias in netx's (W, H, C) order, as lava-dl's blocks take it) and
``neuron`` {type CUBA, iDecay, vDecay, vThMant, refDelay}; a
``flatten`` layer sits between the last convolution and the first dense layer. No ``delay``
dataset is written: every synapse has Lava's one-step Dense/Conv delay (``timing="lava"``).

What netx derives from a layer, and how ``export_netx`` makes that equal to our FixedNetwork:

    neuron:  du = iDecay − 1,  dv = vDecay,  vth = vThMant,  bias_mant = bias,  bias_exp = 6
    dense:   a = Σ_j W_ij·x_j  exactly, for integer W in [−256, 254] (netx picks its own weight
             exponent and bit width, ``optimize_weight_bits``, lossless for such W)
    conv:    a = conv(x, W)  (Lava's Conv ignores weight_exp; W in PyTorch [out, in, kh, kw] order)

so a FixedNetwork is netx-representable when every weight exponent is 0 (W = 2m) or −1 (W = m:
Lava's (Σ 2m·x) >> 1 = Σ m·x exactly) and every bias is ``bias_mant << 6``. ``netx_fixed`` quantises
with ``chip.quantize`` under exactly these limits (weight exponents in [−1, 0], biases re-rounded to
multiples of 2^6, 13-bit mantissas). Without larger exponents the first layer of a direct-input
network is the coarse one (graded input × weight must stay below the capped threshold). Two exact
remedies: inputs on a coarser grid go as smaller exact payloads (``input_scale``, attribute
``input_scale`` of the file; ``neuroplast export`` takes it from the data with ``input_grid``:
digits' 17 grey levels -> 16·x, and the first layer's mantissas use all 8 bits, 127 instead of
24-39 on the compare_digits runs, whose netx accuracy then equals ``chip eval --timing lava``'s on 20
of the 27 and is within 2 test samples of 360 on all), and
``quantize.constant_drive_vth`` lifts that layer's threshold above VTH_CAP as far as u cannot
wrap (helps 255-level inputs such as MNIST a little). The file then holds the network bit for bit
and ``import_netx`` gives it back. The readout is a dense layer
whose neuron integrates (vDecay = 0) and never spikes (vThMant = 2^17 − 1): read its ``v``.
Pooling has no netx layer (lava-dl 0.6.0 raises NotImplementedError for pool/average): average
pooling is folded exactly into the next dense or conv layer (``fold.fold_avg_pool``: AP2 then 64C3
becomes 64C6 with stride 2 and padding 2), max pooling and soft reset (no Loihi form) are refused
with the layer named.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from ..chip.fixed import BIAS_MANT_MAX, DECAY_MAX, VTH_MAX, IntLIFParams
from ..chip.fixed_network import GRADED_INPUT, FixedLayer, FixedNetwork, FixedSynapse
from ..chip.quantize import quantize
from ..errors import DataError, SpecError
from ..snn.layers import Pool, SpikingLayer

FORMAT = "neuroplast-netx"
VERSION = 1
NETX_BIAS_EXP = 6          # netx: bias_exp = 6 for CUBA neurons
NETX_W_MIN, NETX_W_MAX = -256, 254   # what netx's weight optimisation keeps exactly (mixed sign)


def netx_fixed(net, *, time_steps: int, encoding: str = "direct", chip: str = "loihi2",
               input_scale: int = GRADED_INPUT) -> FixedNetwork:
    """``quantize(net)`` under netx's limits (weight exponent −1 or 0, biases ``mant << 6``), Lava timing,
    after folding average pooling into the next synaptic layer (``fold.fold_avg_pool``)."""
    from ..chip.hardware import load_chip
    from .fold import fold_avg_pool
    net = fold_avg_pool(net)
    for name, layer in net.layers.items():
        if isinstance(layer, Pool):
            hint = ("use average pooling (AP2), which is folded into the next layer" if layer.kind == "max" else
                    "it could not be folded into a following synaptic layer")
            raise SpecError(f"layer {name}: netx (lava-dl 0.6.0) has no {layer.kind} pooling layer; {hint}, "
                            "or a strided convolution (e.g. 16C3S2)")
        if isinstance(layer, SpikingLayer) and layer.lif.reset != "hard":
            raise SpecError(f"layer {name}: netx's CUBA neuron resets v to 0 (hard reset); "
                            f"{layer.lif.reset!r} reset cannot be expressed")
    base = load_chip(chip)
    netx_chip = dataclasses.replace(base, numerics={**base.numerics, "weight_exp_min": -1, "weight_exp_max": 0,
                                                             "bias_exp_max": NETX_BIAS_EXP})
    fixed = quantize(net, netx_chip, encoding=encoding, time_steps=time_steps, timing="lava", input_scale=input_scale)
    for layer in fixed.layers:
        if layer.lif is not None:
            b = torch.as_tensor(layer.lif.effective_bias(), dtype=torch.float64)
            mant = torch.round(b / 2 ** NETX_BIAS_EXP).clamp(-BIAS_MANT_MAX - 1, BIAS_MANT_MAX).to(torch.int64)
            layer.lif = dataclasses.replace(layer.lif, bias_mant=mant,
                                            bias_exp=torch.full_like(mant, NETX_BIAS_EXP))
    return fixed


def _effective_weights(layer: FixedLayer) -> np.ndarray:
    syn = layer.synapse
    if syn.weight_exp not in (-1, 0):
        raise SpecError(f"layer {layer.name}: weight exponent {syn.weight_exp} is not 0 or −1; netx stores effective "
                        "integer weights and derives its own exponent: quantise with netx_fixed()")
    w = (2 * syn.m).cpu().numpy().astype(np.int32) >> -syn.weight_exp     # exact: 2m is even
    if w.min() < NETX_W_MIN or w.max() > NETX_W_MAX:
        raise SpecError(f"layer {layer.name}: weights outside netx's 8-bit range [{NETX_W_MIN}, {NETX_W_MAX}]")
    return w


def _bias_mant(layer: FixedLayer, n: int) -> np.ndarray:
    exp = torch.as_tensor(layer.lif.bias_exp).expand(n)
    mant = torch.as_tensor(layer.lif.bias_mant).expand(n)
    if bool((mant != 0).any()) and not bool((exp[mant != 0] == NETX_BIAS_EXP).all()):
        raise SpecError(f"layer {layer.name}: netx fixes the bias exponent at {NETX_BIAS_EXP}; quantise with "
                        "netx_fixed()")
    return mant.cpu().numpy().astype(np.int32)


def _str(group, key: str, value: str) -> None:
    group.create_dataset(key, data=np.bytes_(value))


def netx_bytes(fixed: FixedNetwork, meta: dict | None = None) -> bytes:
    """The netx HDF5 file of ``fixed`` as bytes (see the module docstring for the layout)."""
    import io

    import h5py
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs.update({"format": FORMAT, "version": VERSION, "num_classes": fixed.num_classes,
                        "input_shape": np.asarray(fixed.input_shape, dtype=np.int64), "encoding": fixed.encoding,
                        # graded input for direct values and frame counts; poisson input is 0/1 spikes
                        "input_message_bits": 0 if fixed.encoding == "poisson" else 8,
                        "input_scale": fixed.input_scale,
                        "readout": "v of the last layer (vDecay = 0, never spikes)"})
        for k, v in (meta or {}).items():
            f.attrs[k] = v
        layers = f.create_group("layer")
        g = layers.create_group("0")
        _str(g, "type", "input")
        g.create_dataset("shape", data=np.asarray(fixed.input_shape, dtype=np.int64))
        i, shape = 1, tuple(fixed.input_shape)
        for layer in fixed.layers:
            if layer.kind == "pool":
                raise SpecError(f"layer {layer.name}: netx has no pooling layer")
            g = layers.create_group(str(i))
            g.attrs["name"] = layer.name
            i += 1
            if layer.kind == "flatten":
                _str(g, "type", "flatten")
                shape = (int(np.prod(shape)),)
                continue
            syn, p = layer.synapse, layer.lif
            w = _effective_weights(layer)
            if syn.conv is None:
                _str(g, "type", "dense")
                shape = (w.shape[0],)
                bias = _bias_mant(layer, w.shape[0])
            else:
                _str(g, "type", "conv")
                stride, pad = (np.broadcast_to(np.asarray(syn.conv[k]), (2,)) for k in ("stride", "padding"))
                h, wd = ((shape[d] + 2 * pad[d - 1] - w.shape[d + 1]) // stride[d - 1] + 1 for d in (1, 2))
                shape = (w.shape[0], int(h), int(wd))
                bias_full = _bias_mant(layer, int(np.prod(shape))).reshape(shape)
                bias = bias_full[:, 0, 0]
                if not (bias_full == bias[:, None, None]).all():   # per neuron, in netx's (W, H, C) order
                    bias = np.ascontiguousarray(bias_full.transpose(2, 1, 0))
                g.create_dataset("stride", data=stride.astype(np.int64))
                g.create_dataset("padding", data=pad.astype(np.int64))
                g.create_dataset("dilation", data=np.ones(2, np.int64))
                g.create_dataset("groups", data=np.int64(1))
            g.create_dataset("shape", data=np.asarray(shape, dtype=np.int64))
            g.create_dataset("weight", data=w)
            g.create_dataset("bias", data=bias)
            g.attrs.update({"role": layer.kind, "x_scale": syn.x_scale, "v_scale": syn.v_scale})
            n = g.create_group("neuron")
            _str(n, "type", "CUBA")
            for key, val in (("iDecay", p.du + 1), ("vDecay", p.dv), ("vThMant", p.vth), ("refDelay", 1)):
                n.create_dataset(key, data=np.int64(val))
            n.create_dataset("gradedSpike", data=np.bool_(False))
    return buf.getvalue()


def export_netx(fixed: FixedNetwork, path: str | Path, meta: dict | None = None) -> Path:
    """Write a netx HDF5 file, atomically (readers never see a half-written file)."""
    from ..fileio import atomic_write
    data = netx_bytes(fixed, meta)
    return atomic_write(path, lambda fh: fh.write(data), binary=True)


def _read_str(ds) -> str:
    v = ds[()]
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0]
    return v.decode("ascii") if isinstance(v, bytes) else str(v)


def _ints(ds, what: str, size: int | None = None) -> np.ndarray:
    """A dataset's values as int64; DataError unless they are whole numbers (lava-dl writes integral
    floats) and, with ``size``, that many."""
    a = np.asarray(ds[()])
    whole = a.dtype.kind in "iu" or (a.dtype.kind == "f" and bool(np.all(np.isfinite(a) & (a == np.round(a))
                                                                          & (np.abs(a) < 2.0 ** 62))))
    if not whole:
        raise DataError(f"{what} holds {a.dtype} values that are not whole numbers; netx stores integers: "
                        "export the network again")
    if size is not None and a.size != size:
        raise DataError(f"{what} has {a.size} values, expected {size}: export the network again")
    return a.astype(np.int64)


def _conv_shape(where: str, shape: tuple[int, ...], w: np.ndarray, conv: dict) -> tuple[int, ...]:
    """The output shape of a conv layer on an input of ``shape`` (as the engine computes it); DataError
    when the weight and settings do not fit that input."""
    try:
        out = torch.nn.functional.conv2d(torch.zeros(1, *shape), torch.zeros(w.shape), **conv)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DataError(f"{where}: a conv of weight {w.shape} with {conv} does not fit its input of shape "
                        f"{shape} ({exc}); the file is inconsistent: export it again") from None
    return tuple(out.shape[1:])


def _synapse_from_weights(name: str, w: np.ndarray, conv: dict | None, x_scale: int, v_scale: float) -> FixedSynapse:
    """Mantissas m with Lava weights 2m: W = 2m (exponent 0) when W is even, else m = W, exponent −1
    (Lava: (Σ 2W·x) >> 1 = Σ W·x exactly)."""
    if w.min() < NETX_W_MIN or w.max() > NETX_W_MAX:
        raise DataError(f"netx layer {name}: weights in [{w.min()}, {w.max()}] are outside the 8-bit synapse range "
                        f"[{NETX_W_MIN}, {NETX_W_MAX}]")
    if not (w % 2).any():
        return FixedSynapse(torch.as_tensor(w // 2, dtype=torch.int64), 0, x_scale, v_scale, conv)
    return FixedSynapse(torch.as_tensor(w, dtype=torch.int64), -1, x_scale, v_scale, conv)


def import_netx(path: str | Path) -> FixedNetwork:
    """Read a netx HDF5 file into a FixedNetwork (``timing="lava"``), runnable by our integer engine;
    DataError for a missing, corrupt or inconsistent file."""
    import h5py
    path = Path(path)
    if not path.is_file():
        raise DataError(f"netx file {path} not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path} is not a readable netx HDF5 file ({exc}); it may be truncated: export it again "
                        "with `neuroplast export RUN_DIR --format netx OUT.net`") from None
    with f:
        try:
            return _read(f)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise DataError(f"{path} is not a valid netx file ({type(exc).__name__}: {exc}); export it again") from None


def _read(f) -> FixedNetwork:
    """The FixedNetwork of an open netx file (layout: module docstring); DataError naming what is wrong."""
    _check_version(f)
    groups, synaptic, input_shape = _layer_groups(f)
    encoding = str(f.attrs.get("encoding", "spikes"))
    layers, shape = [], input_shape
    for i, g in enumerate(groups[1:], start=1):
        kind = _read_str(g["type"])
        name = str(g.attrs.get("name", f"layer{i}"))
        if kind == "flatten":
            layers.append(FixedLayer(name, "flatten"))
            shape = (int(np.prod(shape)),)
            continue
        layer, shape = _synaptic_layer(g, i, kind, name, shape, "readout" if i == synaptic[-1] else "spiking")
        layers.append(layer)
    outputs = int(np.prod(shape))
    num_classes = int(f.attrs.get("num_classes", outputs))
    if num_classes != outputs:
        raise DataError(f"attribute num_classes = {num_classes}, but the readout has {outputs} outputs")
    if "input_shape" in f.attrs and tuple(np.asarray(f.attrs["input_shape"]).reshape(-1).tolist()) != input_shape:
        raise DataError(f"attribute input_shape = {np.asarray(f.attrs['input_shape']).tolist()}, but layer 0 "
                        f"has shape {list(input_shape)}")
    input_scale = int(f.attrs.get("input_scale", GRADED_INPUT if encoding == "direct" else 1))
    if input_scale < 1:
        raise DataError(f"attribute input_scale = {input_scale}; the input payload scale must be >= 1")
    return FixedNetwork(layers, input_shape, num_classes, encoding, "lava", input_scale=input_scale)


def _check_version(f) -> None:
    """DataError for a neuroplast netx file of another format version (files from elsewhere carry none)."""
    version = f.attrs.get("version")
    version = version.tolist() if isinstance(version, (np.generic, np.ndarray)) else version
    if str(f.attrs.get("format")) == FORMAT and (isinstance(version, bool) or version != VERSION):
        raise DataError(f"netx file of neuroplast format version {version!r}; this neuroplast reads version "
                        f"{VERSION}: export it again with this version")


def _layer_groups(f) -> tuple[list, list[int], tuple[int, ...]]:
    """(the groups ``layer/0``, ``layer/1``, …, the indices of the dense and conv ones, the input shape of
    layer 0); DataError unless there is a synaptic layer and layer 0 is the input."""
    if "layer" not in f:
        raise DataError("no 'layer' group: not a netx file")
    groups = [f["layer"][str(i)] for i in range(len(f["layer"]))]
    synaptic = [i for i, g in enumerate(groups) if _read_str(g["type"]) in ("dense", "conv")]
    if not synaptic:
        raise DataError("no dense or conv layer")
    first = groups[0]
    if _read_str(first["type"]) != "input":
        raise DataError("layer 0 must be the input layer (type 'input' with its shape)")
    return groups, synaptic, tuple(_ints(first["shape"], "netx layer 0 shape").reshape(-1).tolist())


def _synaptic_layer(g, i: int, kind: str, name: str, shape: tuple[int, ...],
                    default_role: str) -> tuple[FixedLayer, tuple[int, ...]]:
    """(the FixedLayer of netx layer ``i``, a group of type ``kind`` on an input of ``shape``, its output
    shape); ``default_role`` where the group has no ``role`` attribute (files from elsewhere)."""
    if kind not in ("dense", "conv"):
        raise DataError(f"netx layer {i} ({kind}): neuroplast imports input, dense, conv and flatten layers only")
    nrn = g["neuron"]
    ntype = _read_str(nrn["type"])
    if ntype not in ("CUBA", "LOIHI"):
        raise DataError(f"netx layer {i}: neuron type {ntype!r}; neuroplast runs CUBA LIF neurons only")
    if "delay" in g:
        raise DataError(f"netx layer {i}: synaptic delays are not supported")
    where = f"netx layer {i} ({kind})"
    du, dv, vth = (_ints(nrn[k], f"{where} neuron {k}", size=1).item() for k in ("iDecay", "vDecay", "vThMant"))
    w = _ints(g["weight"], f"{where} weight")
    x_scale, v_scale = int(g.attrs.get("x_scale", 1)), float(g.attrs.get("v_scale", 1.0))
    if x_scale < 1 or not (math.isfinite(v_scale) and v_scale > 0):
        raise DataError(f"{where}: x_scale = {x_scale}, v_scale = {v_scale}; need x_scale >= 1 and a finite v_scale > 0")
    out_shape = tuple(_ints(g["shape"], f"{where} shape").reshape(-1).tolist())
    w, conv = _layer_weights(g, where, kind, w, shape, out_shape)
    syn = _synapse_from_weights(str(i), w, conv, x_scale, v_scale)
    bias = _layer_bias(g, where, conv, out_shape)
    if not (1 <= du <= DECAY_MAX + 1 and 0 <= dv <= DECAY_MAX and 0 <= vth <= VTH_MAX
            and -BIAS_MANT_MAX - 1 <= int(bias.min()) and int(bias.max()) <= BIAS_MANT_MAX):
        raise DataError(f"netx layer {i}: neuron iDecay={du}, vDecay={dv}, vThMant={vth}, bias in "
                        f"[{int(bias.min())}, {int(bias.max())}] outside Loihi's ranges (1..4096, 0..4095, "
                        f"0..{VTH_MAX}, {-BIAS_MANT_MAX - 1}..{BIAS_MANT_MAX})")
    lif = IntLIFParams(du - 1, dv, vth, bias, torch.full_like(bias, NETX_BIAS_EXP))
    role = str(g.attrs.get("role", default_role))
    if role not in ("spiking", "readout"):
        raise DataError(f"{where}: role {role!r}; a synaptic layer is 'spiking' or 'readout'")
    return FixedLayer(name, role, syn, lif), out_shape


def _layer_weights(g, where: str, kind: str, w: np.ndarray, shape: tuple[int, ...],
                   out_shape: tuple[int, ...]) -> tuple[np.ndarray, dict | None]:
    """(the weights ``w`` of a dense or conv group as [out, in] or [out, in, kh, kw], the conv settings or
    None); DataError unless they fit the input ``shape`` and give the group's ``out_shape``."""
    if kind == "conv":
        stride, pad, dil = (tuple(np.broadcast_to(_ints(g[k], f"{where} {k}").reshape(-1), (2,)).tolist())
                            for k in ("stride", "padding", "dilation"))
        conv = {"stride": stride, "padding": pad, "dilation": dil,
                "groups": _ints(g["groups"], f"{where} groups", size=1).item()}
        if w.ndim < 4 or w.size != np.prod(w.shape[:4]):   # lava-dl may add trailing axes of size 1
            raise DataError(f"{where}: weight of shape {w.shape} is not [out, in, kh, kw]: export it again")
        w = w.reshape(w.shape[:4])
        expected = _conv_shape(where, shape, w, conv)
    else:
        conv, n_in = None, int(np.prod(shape))
        if w.ndim < 2 or w.size != w.shape[0] * n_in:
            raise DataError(f"{where}: weight of shape {w.shape} does not fit its {n_in} inputs ([out, {n_in}] "
                            "expected): the file is inconsistent: export it again")
        w = w.reshape(-1, n_in)
        expected = w.shape[:1]
    if out_shape != expected:
        raise DataError(f"{where}: its shape {out_shape} is not the {expected} its weight gives on an input of "
                        f"shape {shape}: the file is inconsistent: export it again")
    return w, conv


def _layer_bias(g, where: str, conv: dict | None, out_shape: tuple[int, ...]) -> torch.Tensor:
    """The bias mantissas of a group, one per neuron (int64 [N], in our C, H, W order for a conv layer): stored
    one per neuron (a conv layer's in netx's (W, H, C) order), per channel of a conv layer, or one for all
    (0 where the group has no ``bias``)."""
    n = int(np.prod(out_shape))
    bias = _ints(g["bias"], f"{where} bias") if "bias" in g else np.zeros(1, dtype=np.int64)
    if conv is not None and bias.ndim == 3:   # per neuron, in netx's (W, H, C) order
        if bias.shape != out_shape[::-1]:
            raise DataError(f"{where}: bias of shape {bias.shape}; per neuron it is (W, H, C) = {out_shape[::-1]}: "
                            "export it again")
        bias = bias.transpose(2, 1, 0)
    bias = torch.as_tensor(np.ascontiguousarray(bias).reshape(-1))
    if bias.numel() not in (1, n, out_shape[0]):
        raise DataError(f"{where}: bias has {bias.numel()} values; a layer of shape {out_shape} takes one of "
                        f"{sorted({1, out_shape[0], n})}: export it again")
    if conv is not None and bias.numel() == out_shape[0]:
        bias = bias.view(-1, 1, 1).expand(out_shape)
    return bias.reshape(-1).expand(n).clone()
