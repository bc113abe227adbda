"""Python ProcessModels of the on-chip learning processes, two per process:

  fixed_pt     the chip's integer arithmetic (``numerics.INTEGER``): bit-exact with the engine's
               ``OnChipLearner``;
  floating_pt  the same equations in float64 without rounding or saturation (``numerics.EXACT``):
               equal (to float rounding) to ``OnChipLearner(exact=True)``, the float twin.

Each model's ``run_spk`` calls the engine's functions (``neuroplast.chip.onchip``) on one sample
with its precision's ``Arith``, so Lava and the vectorised engine share one implementation of every
equation. The processes' parameters (decays on the 4096 scale, thresholds, shifts) mean the same in
both precisions. Both models of a process are made by ``_models`` from one class.
"""
from __future__ import annotations

import numpy as np
import torch
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neuroplast.chip.fixed import IntLIFParams, int_lif_fire
from neuroplast.chip.numerics import EXACT, INTEGER, Arith
from neuroplast.chip.onchip import (
    STREAM_ERROR,
    STREAM_FEEDBACK,
    STREAM_OUT8,
    STREAM_TRACE,
    STREAM_UPDATE,
    NoiseUnits,
    error_payload,
    feedback_update,
    noise_current,
    noisy_payload,
    output_payload,
    readout_value,
    third_factor,
    trace_step,
    weight_update,
)
from neuroplast.chip.rng import Stream
from neuroplast.lava.procs.process import (
    ErrorUnit,
    FeedbackChannel,
    NoiseUnit,
    PlasticDense,
    ThreeFactorLIF,
)
from neuroplast.learn import CEMSELoss


def _log(p: dict, n: int, matrix: np.ndarray) -> None:
    """Write ``matrix`` as entry n − first_sample of the .npy log file ``p["log_path"]`` (if any)."""
    if p.get("log_path"):
        log = np.load(p["log_path"], mmap_mode="r+")
        log[n - p.get("first_sample", 0)] = matrix
        log.flush()
        del log


class _Model(PyLoihiProcessModel):
    """Clock, precision and port conversions shared by the models."""

    ar: Arith = INTEGER

    def clock(self) -> tuple[int, int]:
        """(sample number, step within the sample) from Lava's global time step (1-based)."""
        T = self.proc_params["time_steps"]
        g = self.time_step - 1
        return self.proc_params.get("first_sample", 0) + g // T, g % T

    def t(self, x) -> torch.Tensor:
        """A port's or Var's array as a tensor of this precision's dtype."""
        return torch.from_numpy(np.asarray(x, dtype=np.float64 if self.ar.exact else np.int64))

    def send(self, port: PyOutPort, x: torch.Tensor) -> None:
        port.send(x.numpy().astype(np.float64 if self.ar.exact else np.int32))


def _models(base: type, proc: type, *, ins: tuple = (), outs: tuple = (), state: tuple = (),
            floats: tuple = ()) -> tuple[type, type]:
    """The fixed_pt (INTEGER) and floating_pt (EXACT) ProcessModels of ``proc`` running ``base.run_spk``:
    ports ``ins``/``outs`` and Vars ``state`` typed for the precision, Vars ``floats`` float64 in both."""
    made = []
    for tag_name, ar, suffix in (("fixed_pt", INTEGER, "Model"), ("floating_pt", EXACT, "FloatModel")):
        port = (float, None) if ar.exact else (np.int32, 24)
        attrs: dict = {"ar": ar, "__module__": __name__, "__qualname__": f"Py{proc.__name__}{suffix}",
                       "__doc__": f"{proc.__name__}, {ar.name} arithmetic ({tag_name}). {base.__doc__}"}
        attrs.update({n: LavaPyType(PyInPort.VEC_DENSE, port[0], precision=port[1]) for n in ins})
        attrs.update({n: LavaPyType(PyOutPort.VEC_DENSE, port[0], precision=port[1]) for n in outs})
        attrs.update({n: LavaPyType(np.ndarray, np.float64 if ar.exact else np.int64) for n in state})
        attrs.update({n: LavaPyType(np.ndarray, np.float64) for n in floats})
        cls = type(attrs["__qualname__"], (base,), attrs)
        made.append(implements(proc=proc, protocol=LoihiProtocol)(requires(CPU)(tag(tag_name)(cls))))
    return made[0], made[1]


class _NoiseUnit(_Model):
    """z[t] from the unit's counter-based stream (integers in both precisions)."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.units = NoiseUnits(p["seed"], p["layer"], antithetic=p["antithetic"], kind=p["kind"])

    def run_spk(self):
        n, t = self.clock()
        z = self.units.draw(torch.tensor([n]), t, self.z.shape[0])[0]
        self.z = z.numpy().astype(self.z.dtype)
        self.send(self.z_out, z)


class _PlasticDense(_Model):
    """a = x·(2m)ᵀ·2^exp; trace; G += y x̂ᵀ; weight update at the end of each sample."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.trace_rng = Stream(p["seed"], STREAM_TRACE + p["layer"])
        self.update_rng = Stream(p["seed"], STREAM_UPDATE + p["layer"])

    def run_spk(self):
        p, (n, t), ar = self.proc_params, self.clock(), self.ar
        m = self.t(self.m)
        self.send(self.a_out, ar.dense(m, self.t(self.s_in.recv()).unsqueeze(0), p["weight_exp"])[0])
        trace = trace_step(self.t(self.trace).unsqueeze(0), self.t(self.x_in.recv()).unsqueeze(0), p["x_scale"],
                           p["trace_d"], p["trace_max"], self.trace_rng, torch.tensor([n]), t, ar)
        grad = self.t(self.grad) + torch.outer(self.t(self.y_in.recv()), trace[0])
        if t == p["time_steps"] - 1:      # end of the sample: apply the update, clear G and the trace
            self.m = weight_update(m, grad, p["factor"], self.update_rng, n, ar).numpy()
            _log(p, n, self.m)
            grad, trace = torch.zeros_like(grad), torch.zeros_like(trace)
        self.grad, self.trace = grad.numpy(), trace[0].numpy()


class _ThreeFactorLIF(_Model):
    """CUBA LIF; sends the (noisy) payload and the clean spike; returns y = ψ'(v)·δ."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.params = IntLIFParams(p["du"], p["dv"], p["vth"])

    def run_spk(self):
        p, (_, t), ar = self.proc_params, self.clock(), self.ar
        if t == 0:                        # a new sample starts from rest
            self.u, self.v = np.zeros_like(self.u), np.zeros_like(self.v)
        a, z = self.t(self.a_in.recv()), self.t(self.z_in.recv())
        before = p["site"] == "before" and p["sigma"] > 0
        if before:
            a = a + noise_current(z, p["noise_gain"], ar)
        u, v_pre = ar.lif_integrate(self.t(self.u), self.t(self.v), a, self.params)
        v, s = int_lif_fire(v_pre, self.params)
        self.send(self.s_out, noisy_payload(s, None if before or p["sigma"] == 0 else z, p["q"], p["sigma"], ar))
        self.send(self.spk_out, s.to(ar.dtype))
        self.u, self.v, self.spk = u.numpy(), v.numpy(), s.to(ar.dtype).numpy()
        delta = self.t(self.delta_in.recv())
        self.send(self.y_out, third_factor(v_pre, delta, p["vth"], not before).to(ar.dtype))


class _ErrorUnit(_Model):
    """Readout o[t], error payload e[t] of the sample's label, OPZO's output copy o8[t]."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.error_rng, self.out8_rng = Stream(p["seed"], STREAM_ERROR), Stream(p["seed"], STREAM_OUT8)
        self.loss_fn = CEMSELoss()

    def run_spk(self):
        p, (n, t), ar = self.proc_params, self.clock(), self.ar
        T, k = p["time_steps"], n - p.get("first_sample", 0)
        o = readout_value(self.t(self.a_in.recv()).unsqueeze(0), p["v_scale"], ar)
        label = torch.tensor([int(p["labels"][k])])
        per, e = error_payload(self.loss_fn, o, label, T, self.error_rng, torch.tensor([n]), t, ar)
        self.send(self.e_out, e[0])
        self.send(self.o8_out, output_payload(o, self.out8_rng, torch.tensor([n]), t, ar)[0])
        logits, loss = self.logits.copy(), self.loss.copy()
        logits[k] += o[0].numpy() / T
        loss[k] += float(per[0]) / T
        self.logits, self.loss = logits, loss


class _FeedbackChannel(_Model):
    """δ = e·B (DFA) or e·M with OPZO's momentum update of M."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.fb_rng = Stream(proc_params["seed"], STREAM_FEEDBACK + proc_params["layer"])

    def run_spk(self):
        p, (n, t), ar = self.proc_params, self.clock(), self.ar
        fb = self.t(self.fb)
        self.send(self.delta_out, (self.t(self.e_in.recv()).unsqueeze(0) @ fb)[0])
        o8, z = self.t(self.o8_in.recv()), self.t(self.z_in.recv())
        if p["opzo"]:
            self.fb = feedback_update(fb, o8.unsqueeze(0), z.unsqueeze(0), p["beta_shift"], self.fb_rng, n, t, ar).numpy()
        if t == p["time_steps"] - 1:
            _log(p, n, self.fb)


PyNoiseUnitModel, PyNoiseUnitFloatModel = _models(_NoiseUnit, NoiseUnit, outs=("z_out",), state=("z",))
PyPlasticDenseModel, PyPlasticDenseFloatModel = _models(
    _PlasticDense, PlasticDense, ins=("s_in", "x_in", "y_in"), outs=("a_out",), state=("m", "trace", "grad"))
PyThreeFactorLIFModel, PyThreeFactorLIFFloatModel = _models(
    _ThreeFactorLIF, ThreeFactorLIF, ins=("a_in", "z_in", "delta_in"), outs=("s_out", "spk_out", "y_out"),
    state=("u", "v", "spk"))
PyErrorUnitModel, PyErrorUnitFloatModel = _models(
    _ErrorUnit, ErrorUnit, ins=("a_in",), outs=("e_out", "o8_out"), floats=("logits", "loss"))
PyFeedbackChannelModel, PyFeedbackChannelFloatModel = _models(
    _FeedbackChannel, FeedbackChannel, ins=("e_in", "o8_in", "z_in"), outs=("delta_out",), state=("fb",))
