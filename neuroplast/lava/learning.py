"""On-chip OPZO / DFA learning as a Lava process graph, and its step-by-step equivalence with the
engine (``neuroplast.chip.onchip.OnChipLearner``), one sample at a time (a weight update after each).

Graph of an L-layer FC network (processes in ``neuroplast.lava.procs``):

    RingBuffer x ──s_in, x_in──> PlasticDense_1 ──a──> ThreeFactorLIF_1 ──s (graded), spk──> … ──>
    PlasticDense_R (readout) ──a──> ErrorUnit ──e──> FeedbackChannel_l ──δ──> ThreeFactorLIF_l ──y──> PlasticDense_l
                                               └──e (readout's third factor)──> PlasticDense_R
    NoiseUnit_l ──z──> ThreeFactorLIF_l, FeedbackChannel_l (OPZO);   ErrorUnit ──o8──> FeedbackChannel_l (OPZO)

Why custom learning processes rather than Lava's ``LearningDense`` with a ``Loihi3FLearningRule``:
Lava's learning engine (lava-nc 0.10.0) can express a product of traces, Δw = 2^e·x1·y1 with y1
sent by the postsynaptic neuron each step, but (1) its presynaptic trace x1 is its own 7-bit trace
with its own impulse/decay arithmetic and stochastic rounding drawn from Lava's generator, not
ours, so a seeded run cannot be reproduced outside Lava; (2) it applies Δw every learning epoch
(t_epoch steps) to 8-bit weights, whereas OPZO/DFA accumulate G = Σ_t y x̂ᵀ over the sample in a
wider register and round once (per-step rounding of a tiny Δw to 8 bits mostly rounds to zero or
to ±1 LSB at random, a different rule); and (3) OPZO's feedback matrix M is itself learned online
from o8 zᵀ, which has no place in the synapse's rule. Our ``PlasticDense`` keeps the chip's
integer widths and calls the engine's arithmetic, so Lava and the engine agree bit for bit.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import compat

compat.install()
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io.source import RingBuffer
from lava.proc.monitor.process import Monitor

from ..chip.onchip import OnChipLearner, Q, update_factor
from .equivalence import Mismatch, differs
from .network import collect, run_isolated
from .procs.process import (
    ErrorUnit,
    FeedbackChannel,
    NoiseUnit,
    PlasticDense,
    ThreeFactorLIF,
)


@dataclass
class LearningGraph:
    source: RingBuffer
    dense: list[PlasticDense]
    lifs: list[ThreeFactorLIF]
    feedback: list[FeedbackChannel]
    error: ErrorUnit
    steps: int
    samples: int
    logs: str       # folder of the .npy logs the models write after each sample
    tag: str        # "fixed_pt" (the chip's integers) or "floating_pt" (an exact learner's float twin)


def _npy(folder: str, name: str, samples: int, like: torch.Tensor) -> str:
    path = str(Path(folder) / f"{name}.npy")
    np.lib.format.open_memmap(path, mode="w+", dtype=like.numpy().dtype, shape=(samples, *like.shape)).flush()
    return path


def build_learning_graph(learner: OnChipLearner, x_int: torch.Tensor, labels: torch.Tensor) -> LearningGraph:
    """Processes for ``learner`` (OPZO or DFA) learning on K samples x_int [T, K, N0] (integer
    payloads, ``learner.encode``), labels [K], one weight update per sample. The learner's current
    weights, feedback and sample counter are the starting point; the learner is not changed. An
    exact learner (``OnChipLearner(exact=True)``) gets the floating_pt models, the chip's the fixed_pt."""
    if learner.method not in ("opzo", "dfa"):
        raise ValueError(f"the Lava learning graph runs opzo and dfa; got {learner.method!r} (zo needs a second, "
                         "clean forward pass per step)")
    T, K = x_int.shape[:2]
    seed, first, opzo = learner.seed, learner.samples_seen, learner.method == "opzo"
    logs = tempfile.mkdtemp(prefix="neuroplast-lava-")   # weights/feedback after each sample (removed by run)
    data = x_int.permute(2, 1, 0).reshape(x_int.shape[2], K * T).numpy().astype(np.int32)   # [N0, K·T]
    source = RingBuffer(data=data)
    common = {"seed": seed, "time_steps": T, "first_sample": first}
    dense, lifs, noises = [], [], []
    pre_payload, pre_clean = source.s_out, source.s_out
    for k, ly in enumerate(learner.layers):
        d = PlasticDense(m=ly["m"].numpy(), weight_exp=int(ly["exp"]), x_scale=int(ly["x_scale"]) if k == 0 else 1,
                         trace_d=int(ly["trace_d"]), trace_max=learner.trace_max, layer=k, log_path=_npy(logs, f'm{k}', K, ly['m']),
                         factor=update_factor(learner.lr, T, ly.get("fb_scale", 1.0), 1, ly["lsb"]), **common)
        pre_payload.connect(d.s_in)
        pre_clean.connect(d.x_in)
        dense.append(d)
        if k == len(learner.layers) - 1:
            break
        n = ly["m"].shape[0]
        p = ly["lif"]
        lif = ThreeFactorLIF(shape=(n,), du=p.du, dv=p.dv, vth=p.vth, q=Q if opzo else 1, sigma=learner.sigma_int,
                             time_steps=T, site=learner.site, noise_gain=int(ly.get("noise_gain", 0)))
        d.a_out.connect(lif.a_in)
        lif.y_out.connect(d.y_in)
        if opzo:
            noise = NoiseUnit(shape=(n,), layer=k, antithetic=True, kind=learner.noise_kind, **common)
            noise.z_out.connect(lif.z_in)
            noises.append(noise)
        lifs.append(lif)
        pre_payload, pre_clean = lif.s_out, lif.spk_out
    readout = learner.layers[-1]
    error = ErrorUnit(labels=labels.numpy().astype(np.int64), num_classes=readout["m"].shape[0],
                      v_scale=float(readout["v_scale"]), **common)
    dense[-1].a_out.connect(error.a_in)
    error.e_out.connect(dense[-1].y_in)
    feedback = []
    for k, (h, lif) in enumerate(zip(learner.hidden, lifs)):
        fb = FeedbackChannel(fb=h["fb"].numpy(), opzo=opzo, beta_shift=learner.beta_shift, layer=k,
                             log_path=_npy(logs, f'fb{k}', K, h['fb']),
                             **common)
        error.e_out.connect(fb.e_in)
        fb.delta_out.connect(lif.delta_in)
        if opzo:
            error.o8_out.connect(fb.o8_in)
            noises[k].z_out.connect(fb.z_in)
        feedback.append(fb)
    return LearningGraph(source, dense, lifs, feedback, error, K * T, K, logs,
                         "floating_pt" if learner.ar.exact else "fixed_pt")


def run_learning(graph: LearningGraph, *, timeout: float = 300.0, record: bool = True) -> dict:
    """Run on Lava's CPU backend (``graph.tag``). Returns per hidden layer u, v, s [K·T, N] (every step),
    per layer the weight mantissas after each sample m [K, N_out, N_in], per hidden layer the
    feedback matrix after each sample, and the ErrorUnit's per-sample logits and loss. ``record=False``
    leaves the Monitors out (they cost Lava more time than the learning itself)."""
    monitors = []
    for k, lif in enumerate(graph.lifs if record else []):
        for what, var in (("u", lif.u), ("v", lif.v), ("s", lif.spk)):
            mon = Monitor()
            mon.probe(var, graph.steps)
            monitors.append((f"hidden{k + 1}", what, mon, var))
    anchor = graph.error

    def job():
        anchor.run(condition=RunSteps(num_steps=graph.steps), run_cfg=Loihi2SimCfg(select_tag=graph.tag))
        out = {"steps": collect(monitors, np.float64 if graph.tag == "floating_pt" else np.int64)}
        out["logits"] = np.asarray(graph.error.logits.get())
        out["loss"] = np.asarray(graph.error.loss.get())
        return out

    try:
        out = run_isolated(job, anchor, timeout=timeout)
        out["m"] = [np.load(Path(graph.logs) / f"m{k}.npy") for k in range(len(graph.dense))]
        out["fb"] = [np.load(Path(graph.logs) / f"fb{k}.npy") for k in range(len(graph.feedback))]
        return out
    finally:
        shutil.rmtree(graph.logs, ignore_errors=True)


def engine_learning(learner: OnChipLearner, x_seq: torch.Tensor, labels: torch.Tensor) -> tuple[dict, OnChipLearner]:
    """The same K samples through the engine, one sample per batch (on a copy of ``learner``):
    the records ``run_learning`` returns, and the trained copy."""
    learner = copy.deepcopy(learner)
    steps: dict = {}
    m_log: list[list[np.ndarray]] = [[] for _ in learner.layers]
    fb_log: list[list[np.ndarray]] = [[] for _ in learner.hidden]
    losses, logits = [], []
    for i in range(x_seq.shape[1]):
        loss, lg = learner.train_batch(x_seq[:, i:i + 1], labels[i:i + 1], record=steps)
        losses.append(loss)
        logits.append(lg[0].numpy())
        for k, ly in enumerate(learner.layers):
            m_log[k].append(ly["m"].numpy().copy())
        for k, h in enumerate(learner.hidden):
            fb_log[k].append(h["fb"].numpy().copy())
    out = {"steps": {name: {q: torch.cat(v).numpy() for q, v in rec.items()} for name, rec in steps.items()},
           "m": [np.stack(x) for x in m_log], "fb": [np.stack(x) for x in fb_log],
           "logits": np.stack(logits), "loss": np.asarray(losses)}
    return out, learner


def update_agreement(learner: OnChipLearner, engine: dict, lava: dict) -> list[dict]:
    """Per layer: how many weights the engine's run changed, and the fraction of those Lava moved the
    same way (sign of the change over the K samples)."""
    out = []
    for k, (mine, theirs) in enumerate(zip(engine["m"], lava["m"])):
        start = learner.layers[k]["m"].numpy()
        d_eng, d_lava = np.sign(mine[-1] - start), np.sign(theirs[-1] - start)
        moved = d_eng != 0
        out.append({"layer": k + 1, "changed": int(moved.sum()), "weights": int(moved.size),
                    "same_direction": float((d_eng[moved] == d_lava[moved]).mean()) if moved.any() else 1.0})
    return out


def update_cosines(a: OnChipLearner, run_a: dict, b: OnChipLearner, run_b: dict) -> list[float]:
    """Per layer, the cosine between the weight changes of two engine runs (``engine_learning``) of two
    learners, e.g. the float twin and the chip's integers (0 where a change is zero)."""
    out = []
    for k in range(len(a.layers)):
        d_a = run_a["m"][k][-1] - a.layers[k]["m"].numpy()
        d_b = run_b["m"][k][-1] - b.layers[k]["m"].numpy()
        den = float(np.linalg.norm(d_a) * np.linalg.norm(d_b))
        out.append(float((d_a * d_b).sum()) / den if den > 0 else 0.0)
    return out


def first_mismatch(engine: dict, lava: dict, rtol: float = 0.0) -> Mismatch | None:
    """Step by step (u, v, spikes of every hidden layer), then sample by sample (weights, feedback).
    ``rtol`` = 0: bit-exact (fixed_pt); > 0: |a − b| ≤ rtol·(1 + |b|) for the float twin."""
    def differ(a, b):
        return differs(a, b, atol=rtol, rtol=rtol)
    steps_of = next(iter(engine["steps"].values()))["u"].shape[0] if engine["steps"] else 0
    for t in range(steps_of):
        for layer, rec in engine["steps"].items():
            for q in ("s", "u", "v"):
                mine, theirs = rec[q][t], lava["steps"][layer][q][t]
                diff = np.flatnonzero(differ(mine, theirs))
                if len(diff):
                    j = int(diff[0])
                    return Mismatch(-1, layer, q, t, j, mine[j].item(), theirs[j].item())
    for kind in ("m", "fb"):
        for k, (mine, theirs) in enumerate(zip(engine[kind], lava[kind])):
            diff = np.argwhere(differ(mine, theirs))
            if len(diff):
                i, *idx = (int(v) for v in diff[0])
                return Mismatch(i, f"{'layer' if kind == 'm' else 'feedback'}{k + 1}", f"{kind}{idx}", -1,
                                int(np.ravel_multi_index(idx, mine.shape[1:])), mine[tuple(diff[0])].item(),
                                theirs[tuple(diff[0])].item())
    return None
