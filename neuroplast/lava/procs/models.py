"""Python ProcessModels (``fixed_pt``) of the on-chip learning processes. Each calls the engine's
functions (``neuroplast.chip.onchip``, ``neuroplast.chip.fixed``) on one sample, so Lava and the
vectorised engine share one implementation of every equation; there is no ``floating_pt`` model:
these processes model the chip's integer learning only (the float rules live in ``neuroplast.learn``).
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

from neuroplast.chip.fixed import (
    IntLIFParams,
    int_dense,
    int_lif_fire,
    int_lif_integrate,
)
from neuroplast.chip.onchip import (
    O_SCALE,
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

INT = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
OUT = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
VAR = LavaPyType(np.ndarray, np.int64)      # integer state of a model


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.int64))


def _log(p: dict, n: int, matrix: np.ndarray) -> None:
    """Write ``matrix`` as entry n − first_sample of the .npy log file ``p["log_path"]`` (if any)."""
    if p.get("log_path"):
        log = np.load(p["log_path"], mmap_mode="r+")
        log[n - p.get("first_sample", 0)] = matrix
        log.flush()
        del log


class _Clocked(PyLoihiProcessModel):
    """(sample number, step within the sample) from Lava's global time step (1-based)."""

    def clock(self) -> tuple[int, int]:
        T = self.proc_params["time_steps"]
        g = self.time_step - 1
        return self.proc_params.get("first_sample", 0) + g // T, g % T


@implements(proc=NoiseUnit, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyNoiseUnitModel(_Clocked):
    z_out: PyOutPort = OUT
    z: np.ndarray = VAR

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.units = NoiseUnits(p["seed"], p["layer"], antithetic=p["antithetic"], kind=p["kind"])

    def run_spk(self):
        n, t = self.clock()
        self.z = self.units.draw(torch.tensor([n]), t, self.z.shape[0])[0].numpy()
        self.z_out.send(self.z.astype(np.int32))


@implements(proc=PlasticDense, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyPlasticDenseModel(_Clocked):
    s_in: PyInPort = INT
    x_in: PyInPort = INT
    y_in: PyInPort = INT
    a_out: PyOutPort = OUT
    m: np.ndarray = VAR
    trace: np.ndarray = VAR
    grad: np.ndarray = VAR

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.trace_rng = Stream(p["seed"], STREAM_TRACE + p["layer"])
        self.update_rng = Stream(p["seed"], STREAM_UPDATE + p["layer"])

    def run_spk(self):
        p, (n, t) = self.proc_params, self.clock()
        m = _t(self.m)
        a = int_dense(m, _t(self.s_in.recv()).unsqueeze(0), p["weight_exp"])[0]
        self.a_out.send(a.numpy().astype(np.int32))
        trace = trace_step(_t(self.trace).unsqueeze(0), _t(self.x_in.recv()).unsqueeze(0), p["x_scale"], p["trace_d"],
                           p["trace_max"], self.trace_rng, torch.tensor([n]), t)
        y = _t(self.y_in.recv())
        grad = _t(self.grad) + torch.outer(y, trace[0])
        if t == p["time_steps"] - 1:      # end of the sample: apply the update, clear G and the trace
            self.m = weight_update(m, grad, p["factor"], self.update_rng, n).numpy()
            _log(p, n, self.m)
            grad, trace = torch.zeros_like(grad), torch.zeros_like(trace)
        self.grad, self.trace = grad.numpy(), trace[0].numpy()


@implements(proc=ThreeFactorLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyThreeFactorLIFModel(_Clocked):
    a_in: PyInPort = INT
    z_in: PyInPort = INT
    delta_in: PyInPort = INT
    s_out: PyOutPort = OUT
    spk_out: PyOutPort = OUT
    y_out: PyOutPort = OUT
    u: np.ndarray = VAR
    v: np.ndarray = VAR
    spk: np.ndarray = VAR

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.params = IntLIFParams(p["du"], p["dv"], p["vth"])

    def run_spk(self):
        p, (_, t) = self.proc_params, self.clock()
        if t == 0:                        # a new sample starts from rest
            self.u, self.v = np.zeros_like(self.u), np.zeros_like(self.v)
        a, z = _t(self.a_in.recv()), _t(self.z_in.recv())
        before = p["site"] == "before" and p["sigma"] > 0
        if before:
            a = a + noise_current(z, p["noise_gain"])
        u, v_pre = int_lif_integrate(_t(self.u), _t(self.v), a, self.params)
        v, s = int_lif_fire(v_pre, self.params)
        s = s.to(torch.int64)
        payload = noisy_payload(s, None if before or p["sigma"] == 0 else z, p["q"], p["sigma"])
        self.s_out.send(payload.numpy().astype(np.int32))
        self.spk_out.send(s.numpy().astype(np.int32))
        self.u, self.v, self.spk = u.numpy(), v.numpy(), s.numpy()
        delta = _t(self.delta_in.recv())
        self.y_out.send(third_factor(v_pre, delta, p["vth"], not before).numpy().astype(np.int32))


@implements(proc=ErrorUnit, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyErrorUnitModel(_Clocked):
    a_in: PyInPort = INT
    e_out: PyOutPort = OUT
    o8_out: PyOutPort = OUT
    logits: np.ndarray = LavaPyType(np.ndarray, np.float64)
    loss: np.ndarray = LavaPyType(np.ndarray, np.float64)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = proc_params
        self.error_rng, self.out8_rng = Stream(p["seed"], STREAM_ERROR), Stream(p["seed"], STREAM_OUT8)
        self.loss_fn = CEMSELoss()

    def run_spk(self):
        p, (n, t) = self.proc_params, self.clock()
        T, k = p["time_steps"], n - p.get("first_sample", 0)
        o = readout_value(_t(self.a_in.recv()).unsqueeze(0), p["v_scale"])
        label = torch.tensor([int(p["labels"][k])])
        per, e_int = error_payload(self.loss_fn, o, label, T, self.error_rng, torch.tensor([n]), t)
        self.e_out.send(e_int[0].numpy().astype(np.int32))
        o8 = self.out8_rng.round(o * O_SCALE, torch.tensor([n]), t).clamp(-127, 127)
        self.o8_out.send(o8[0].numpy().astype(np.int32))
        logits, loss = self.logits.copy(), self.loss.copy()
        logits[k] += o[0].numpy() / T
        loss[k] += float(per[0]) / T
        self.logits, self.loss = logits, loss


@implements(proc=FeedbackChannel, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyFeedbackChannelModel(_Clocked):
    e_in: PyInPort = INT
    o8_in: PyInPort = INT
    z_in: PyInPort = INT
    delta_out: PyOutPort = OUT
    fb: np.ndarray = VAR

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.fb_rng = Stream(proc_params["seed"], STREAM_FEEDBACK + proc_params["layer"])

    def run_spk(self):
        p, (n, t) = self.proc_params, self.clock()
        fb = _t(self.fb)
        e = _t(self.e_in.recv())
        self.delta_out.send((e.unsqueeze(0) @ fb)[0].numpy().astype(np.int32))
        o8, z = _t(self.o8_in.recv()), _t(self.z_in.recv())
        if p["opzo"]:
            self.fb = feedback_update(fb, o8.unsqueeze(0), z.unsqueeze(0), p["beta_shift"], self.fb_rng, n, t).numpy()
        if t == p["time_steps"] - 1:
            _log(p, n, self.fb)
