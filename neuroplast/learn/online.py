"""Online three-factor learning through time: the loop DFA, OPZO and ZO share.

At every time step t the network advances one step with presynaptic traces and with the graph
cut between layers (``Network.step(isolate=True)``). The readout learns from the output error
e[t] = ∂L[t]/∂o[t] with L[t] = L(o[t], y)/T; every hidden spiking layer l receives a top-down
signal δ_l[t] from the rule, and autograd through that layer alone applies the third factor:

    ΔW_l ∝ −(ψ'(u_l[t]) ⊙ δ_l[t]) ⊗ x̂_{l−1}[t]

(ψ' the layer's spike-gradient estimator, x̂ the presynaptic trace). Gradients accumulate over t
and the optimizer steps once per batch, as in OTTT. Memory is independent of T.

Local learning (``ll=1|fixed|trained``, or the method name with ``+ll``) adds a readout per hidden
layer with its own loss; ``igl=k`` makes the k-th hidden layer's trained readout the source of the
top-down signal for the layers before it (intermediate global learning). See ``local``.
"""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import SpecError
from ..snn import detach_state, draws
from . import batched
from .base import Rule, StepAccumulator
from .local import AuxReadout, local_kind
from .loss import step_losses_and_errors

Tensor = torch.Tensor
NOISE_KINDS = ("gaussian", "rademacher")
SITES = ("after", "before")  # noise injected after the neuron (on spikes) or before (on the current)


def draw_noise(net, names, batch: int, kind: str, generator: torch.Generator | None,
               like: Tensor, scale: float = 1.0) -> dict[str, Tensor]:
    """Noise scale·z_l [B, *shape_l] for each named layer, z unit-variance: N(0, 1) or Rademacher ±1
    (N(0, scale²) drawn directly: the same numbers as scale·randn, in one pass)."""
    dev = generator.device if generator is not None else like.device
    out = {}
    for name in names:
        shape = (batch, *net.shapes[name])
        if kind == "rademacher":
            z = rademacher(shape, generator, dev, scale)
        else:
            z = draws.normal(shape, generator, dev, 0.0, scale)
        out[name] = z.to(like.device, like.dtype)
    return out


def rademacher(shape: tuple[int, ...], generator: torch.Generator | None, device, scale: float = 1.0) -> Tensor:
    """±scale with probability ½ each, independent: 32 signs from each 32-bit random word (its 4 bytes
    looked up in a [256, 8] table of their bits), 10× cheaper than the sign of a Gaussian draw."""
    n = math.prod(shape)
    shifts, table = _sign_table(float(scale), torch.device(device))
    words = draws.words(-(-n // 32), generator, device)
    nbytes = (words[:, None] >> shifts) & 255
    return torch.nn.functional.embedding(nbytes.flatten(), table).view(-1)[:n].view(shape)


@functools.lru_cache(maxsize=16)
def _sign_table(scale: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """The byte shifts (0, 8, 16, 24) of a word and the [256, 8] table of ±scale for the bits of each
    byte value, made once per (scale, device) rather than at every draw."""
    bits = (torch.arange(256, device=device)[:, None] >> torch.arange(8, device=device)) & 1
    return torch.arange(0, 32, 8, device=device), torch.where(bits.bool(), scale, -scale).float()


def signed(noise: dict[str, Tensor] | None, sign: float) -> dict[str, Tensor] | None:
    """The perturbation sign·n of a ``signed_noise`` pair (a negated copy where sign = −1)."""
    return noise if noise is None or sign > 0 else {k: -v for k, v in noise.items()}


@dataclass
class StepInfo:
    """What a rule may use to form the top-down signals of one group of layers at one step.

    The group's "output" o is the network's readout, or with IGL a middle layer's readout."""

    e: Tensor                                           # ∂L[t]/∂o[t], [B, C] (includes 1/(B·T))
    o: Tensor                                           # output of this (possibly noisy) step, detached
    y: Tensor
    time_steps: int
    loss_fn: Callable
    rerun: Callable[[dict | None], Tensor]              # this group's output from the previous state,
                                                        # with another perturbation (no graph)
    layers: list[str] = field(default_factory=list)    # the hidden layers this output's error reaches
    head: str | None = None                             # None: the network's readout; else the IGL layer
    ref: Tensor | None = None                           # a rule's reference output (OPZO subtract_clean)


class StepReplay:
    """Lets a rerun of a step draw what the step drew, so that a "clean" or antithetic rerun (ZO's
    baselines, OPZO's ``subtract_clean``) sees the same network as the noisy step: the same dropout
    mask (drawn at t = 0), the same ASGL spike noise. ``arm()`` before the step keeps the state of
    every generator the network's layers draw from (the default generators for layers without one);
    ``replaying()`` sets it again for the rerun and afterwards restores the state the step left, so
    reruns change no later draw."""

    def __init__(self, net):
        own = {id(m.generator): m.generator for m in net.modules() if getattr(m, "generator", None) is not None}
        self.generators = list(own.values())
        self.default = any(hasattr(m, "generator") and m.generator is None for m in net.modules())
        self._before = None

    def _states(self):
        states = [g.get_state() for g in self.generators]
        if self.default:
            states.append(torch.get_rng_state())
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                states.append(torch.cuda.get_rng_state_all())
        return states

    def _set(self, states):
        for g, s in zip(self.generators, states):
            g.set_state(s)
        if self.default:
            torch.set_rng_state(states[len(self.generators)])
            if len(states) > len(self.generators) + 1:
                torch.cuda.set_rng_state_all(states[-1])

    def arm(self) -> None:
        self._before = self._states()

    @contextlib.contextmanager
    def replaying(self):
        after = self._states()
        self._set(self._before)
        try:
            yield
        finally:
            self._set(after)


class ThreeFactorRule(Rule):
    """Base of rules whose hidden layers learn from a rule-given top-down signal.

    With noise injected before the neuron (``site = "before"``) the signal estimates the gradient
    with respect to the membrane input, so it is applied to u[t] (∂u/∂I = 1: no ψ' factor);
    otherwise to the spikes s[t], through the layer's estimator ψ'."""

    site = "after"
    last_draws = 0         # fresh random numbers drawn by the last ``noise`` call (cost model)
    #: run the steps in windows with time folded into the batch when rule and net allow it (``batched``)
    fold_time = True

    def can_fold_time(self) -> bool:
        """Whether the rule's signals of step t need nothing but that step's output (no reruns)."""
        return self.site == "after" and not self.local and not self.igl

    def noise_state(self):
        """What ``observe`` needs of the noise of the last ``noise`` call (restored per step when folded)."""

    def set_noise_state(self, state) -> None:
        """Restore what ``noise_state`` returned."""

    def set_local(self, ll, ll_scale: float, igl=0) -> None:
        """Local learning (``ll``: 0, 1/fixed, trained; δ_l += ll_scale·∂L_l/∂a_l) and IGL (``igl``:
        0, or the hidden layer, 1-based index or name, whose readout serves the layers before it)."""
        if not ll_scale > 0:
            raise SpecError(f"{self.name}: ll_scale must be > 0, got {ll_scale}")
        self.local, self.local_scale, self.igl = local_kind(ll), float(ll_scale), igl
        if not isinstance(igl, (int, str)) or (isinstance(igl, int) and igl < 0):
            raise SpecError(f"{self.name}: igl must be 0 (off), a hidden-layer number >= 2 or a layer name, got {igl!r}")
        self.readouts = nn.ModuleDict()   # "ll_<layer>" / "igl_<layer>": AuxReadout
        self._groups: list[tuple[str | None, list[str]]] | None = None

    def setup(self, net) -> None:
        if self._groups is not None:
            return
        hidden = net.spiking_layers()
        if not hidden:
            raise SpecError(f"method {self.name!r} needs a network with at least one hidden spiking layer, "
                            f"got {net.arch!r}")
        ref = next(net.parameters())
        dev, dt = ref.device, ref.dtype

        def readout(name, trained):
            return AuxReadout(math.prod(net.shapes[name]), net.num_classes, trained=trained,
                              generator=self.generator, device=dev, dtype=dt)
        groups: list[tuple[str | None, list[str]]] = [(None, hidden)]
        if self.igl:
            m = self.igl if isinstance(self.igl, str) else (hidden[self.igl - 1] if self.igl <= len(hidden) else None)
            if m not in hidden or hidden.index(m) == 0:
                raise SpecError(f"{self.name}: igl={self.igl!r} must name a hidden spiking layer after the first "
                                f"(1-based index 2..{len(hidden)} or one of {hidden[1:]}) of {net.arch!r}")
            k = hidden.index(m)
            groups = [(m, hidden[:k]), (None, hidden[k:])]
            self.readouts[f"igl_{m}"] = readout(m, True)
        if self.local:
            for name in hidden:
                self.readouts[f"ll_{name}"] = readout(name, self.local == "trained")
        self._groups = groups

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.readouts.parameters() if p.requires_grad]

    def readout_sizes(self) -> dict[str, int]:
        return {k: int(r.weight.numel() + r.bias.numel()) for k, r in self.readouts.items()}

    def prepare(self, net, x_seq: Tensor) -> None:
        """Create per-network state (feedback matrices) on first use."""

    def noise(self, net, t: int, batch: int, like: Tensor) -> dict[str, Tensor] | None:
        """Noise added to hidden spiking outputs at step t (None: a clean pass)."""
        return None

    def signed_noise(self, net, t: int, batch: int, like: Tensor) -> tuple[dict[str, Tensor] | None, float]:
        """``noise`` as (n, sign) with the step's noise sign·n, sign ±1 (the folded path subtracts n
        where sign = −1 instead of adding a negated copy: a − n = a + (−n) exactly)."""
        return self.noise(net, t, batch, like), 1.0

    def hidden_signals(self, net, info: StepInfo) -> dict[str, Tensor]:
        """δ_l [B, N_l] for every hidden spiking layer in ``info.layers``."""
        raise NotImplementedError

    def window_feedback(self, net, E: Tensor, outs: Tensor, states: list, layers: list[str]) -> dict[str, Tensor] | None:
        """The matrices M_l of the signals δ_l[k] = e[k]·M_l[k] of a window of K steps, [C, N_l] for all
        steps or [K, C, N_l] per step, given the window's errors E and outputs ``outs`` [K, B, C] and
        noise states (``noise_state`` of each step), having done what ``observe`` does at each step
        (None: ``hidden_signals`` and ``observe`` step by step). The engine applies them through each
        layer's gate (``batched.top_down_backward``)."""
        return None

    def observe(self, info: StepInfo) -> None:
        """See a group's output after the signals were used (OPZO updates its feedback here, from the
        noise of the step that ``noise_state`` describes)."""

    def compute_grads(self, net, x_seq, y, loss_fn):
        net.check_input(x_seq)
        self.setup(net)
        hidden = net.spiking_layers()
        self.prepare(net, x_seq)
        if self.fold_time and self.can_fold_time() and batched.supported(net):
            return self._compute_batched(net, x_seq, y, loss_fn)
        T = x_seq.shape[0]
        state, acc, replay = net.init_state(), StepAccumulator(T), StepReplay(net)
        for t in range(T):
            noise = self.noise(net, t, x_seq.shape[1], x_seq)
            prev = state
            replay.arm()

            def sent(spikes, perturb, name):  # what layer ``name`` passes on (with its noise after the neuron)
                a = spikes[name]
                if perturb and self.site == "after" and name in perturb:
                    a = a + perturb[name]
                return a

            def rerun(perturb, head=None, x=x_seq[t], prev=prev):
                with torch.no_grad(), replay.replaying():   # the step's own dropout mask and spike noise
                    o, _, spikes = net.step(x, prev, perturb=perturb, perturb_site=self.site)
                return o if head is None else self.readouts[f"igl_{head}"](sent(spikes, perturb, head))
            o, state, s_t = net.step(x_seq[t], prev, traces=True, isolate=True, perturb=noise, perturb_site=self.site)
            loss = loss_fn(o, y) / T
            (e,) = torch.autograd.grad(loss, o, retain_graph=True)
            signals, infos = {}, []
            for head, layers in self._groups:
                if head is None:
                    info = StepInfo(e, o.detach(), y, T, loss_fn, rerun, layers)
                else:
                    o_m, e_m = self.readouts[f"igl_{head}"].error(sent(s_t, noise, head), y, loss_fn, T)
                    info = StepInfo(e_m, o_m, y, T, loss_fn, lambda p, h=head: rerun(p, h), layers, head)
                signals.update(self.hidden_signals(net, info))
                infos.append(info)
            if self.local:
                for name in hidden:
                    r = self.readouts[f"ll_{name}"]
                    _, e_l = r.error(sent(s_t, noise, name), y, loss_fn, T)
                    g = self.local_scale * r.signal(e_l)
                    signals[name] = signals[name].reshape(g.shape) + g
            outs, grads = [o], [e]
            for name in hidden:
                u, s = state["layers"][name]  # graph-connected state of this layer
                target = u if self.site == "before" else s
                if target.requires_grad:  # frozen layers (readout-only control) get nothing
                    outs.append(target)
                    grads.append(signals[name].reshape(target.shape))
            torch.autograd.backward(outs, grads)
            for info in infos:
                self.observe(info)
            state = detach_state(state)
            acc.add(loss, o, s_t)
            acc.noise_draws += self.last_draws
        return acc.result()


    def _compute_batched(self, net, x_seq, y, loss_fn):
        """The same updates, T steps at a time per layer (``learn.batched``): the noise of a window is
        drawn first, step by step as the loop draws it; the network runs the window at once; then the
        rule's ``window_feedback`` gives the window's feedback matrices at once (DFA; OPZO, updating
        its feedback per step), applied through the gates (``batched.top_down_backward``), or the signals and
        ``observe`` go step by step; the gradients of the window go back together."""
        T, B = x_seq.shape[:2]
        hidden = net.spiking_layers()
        sim, acc = batched.CutSimulator(net, isolate=True, keep_layers=True), StepAccumulator(T)

        def no_rerun(perturb, head=None):
            raise RuntimeError(f"{self.name}: reruns need the step loop (set fold_time = False)")
        for t0, t1 in batched.windows(T):
            drawn = []
            for t in range(t0, t1):
                noise, sign = self.signed_noise(net, t, B, x_seq)
                drawn.append((noise, sign, self.noise_state(), self.last_draws))
            o, spikes = sim.window(x_seq[t0:t1], None if drawn[0][0] is None else [d[0] for d in drawn],
                                   signs=[d[1] for d in drawn], last=t1 == T)
            losses, E = step_losses_and_errors(loss_fn, o, y, T)
            feedback = self.window_feedback(net, E, o.detach(), [d[2] for d in drawn], hidden)
            signals = {name: [] for name in hidden}
            for k, (_, _, state, n_drawn) in enumerate(drawn):
                if feedback is None:
                    self.set_noise_state(state)
                    info = StepInfo(E[k], o[k].detach(), y, T, loss_fn, no_rerun, hidden)
                    for name, d in self.hidden_signals(net, info).items():
                        signals[name].append(d)
                    self.observe(info)
                acc.noise_draws += n_drawn
            acc.add_window(losses, o, spikes)
            outs, grads = [o], [E]
            if feedback is not None:
                batched.top_down_backward(sim.last, E, feedback, outs, grads)
            else:
                for name in hidden:
                    if spikes[name].requires_grad:  # frozen layers (readout-only control) get nothing
                        outs.append(spikes[name])
                        grads.append(torch.stack(signals[name]).reshape(spikes[name].shape))
            torch.autograd.backward(outs, grads)
            sim.last = {}   # the window's layers go before the next window runs
            del o, spikes, losses, E, feedback, signals, outs, grads, drawn  # free the window before the next one
        return acc.result()


def feedback_shape(net, name: str) -> tuple[int, int]:
    """[C, N_l] of a feedback matrix from the output to hidden layer ``name``."""
    return net.num_classes, math.prod(net.shapes[name])
