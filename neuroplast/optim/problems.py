"""Optimizees for meta-training: a loss over a flat parameter vector θ [N] and a gradient estimate.

    θ0 = problem.init()
    L  = problem.loss(θ, t)          differentiable in θ (the meta-loss flows through it)
    g  = problem.grad(θ, L, t)       the estimate the optimizer sees (detached: second derivatives
                                     dropped, Andrychowicz et al. 2016 Sec. 2)

``NoisyQuadratic``: L = ½ Σ_i a_i (θ_i − c_i)², g = ∇L + σ·ξ — the classic learned-optimizer test.
``SNNProblem``: an SNN (any network string) on a data split, one random mini-batch per step; the
estimate is autograd through the network's spike estimator (``method="bptt"``, e.g. LocalZO) or a
learning rule's ``.grad`` (``"opzo"``, ``"zo"``, ...), computed on a worker copy at θ.

Both are rebuilt from their seed; ``state_dict()`` is what they carry besides it from one step to
the next (the generator's position, the cached mini-batch, a rule's feedback matrices, momentum
and noise), and ``load_state_dict`` on the problem of the same seed continues where it was
(meta-training checkpoints an optimizee in progress with it).
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn
from torch.func import functional_call

from ..data import Dataset, encode
from ..learn import CEMSELoss, make_rule
from ..snn import build_network
from ..snn.neurons import LIFParams

Tensor = torch.Tensor


class NoisyQuadratic:
    """L(θ) = ½ Σ a_i (θ_i − c_i)², a_i log-uniform in [a_min, a_max]; gradients carry N(0, σ²) noise."""

    def __init__(self, dim: int = 10, noise: float = 1.0, seed: int = 0, a_range=(0.1, 10.0)):
        self.g = torch.Generator().manual_seed(seed)
        lo, hi = math.log(a_range[0]), math.log(a_range[1])
        self.a = (torch.rand(dim, generator=self.g) * (hi - lo) + lo).exp()
        self.c = torch.randn(dim, generator=self.g)
        self.theta0 = self.c + 2 * torch.randn(dim, generator=self.g)
        self.noise, self.n = float(noise), dim

    def init(self) -> Tensor:
        return self.theta0.clone()

    def loss(self, theta: Tensor, t: int) -> Tensor:
        return 0.5 * (self.a * (theta - self.c) ** 2).sum()

    def grad(self, theta: Tensor, loss: Tensor, t: int) -> Tensor:
        exact = self.a * (theta.detach() - self.c)
        return exact + self.noise * torch.randn(self.n, generator=self.g)

    def eval_loss(self, theta: Tensor) -> float:
        return float(self.loss(theta.detach(), 0))

    def rng_state(self):
        """Snapshot of every random draw to come (restore it to replay the same noise)."""
        return self.g.get_state()

    def set_rng_state(self, state) -> None:
        self.g.set_state(state)

    def state_dict(self) -> dict:
        """What the problem of this seed needs to continue where it is: the noise generator's position."""
        return {"g": self.g.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.g.set_state(state["g"])

    def rule_snapshot(self) -> None:
        """No learning rule, no state of one (see ``SNNProblem.rule_snapshot``)."""
        return None

    def restore_rule(self, snapshot) -> None:
        pass


_PLAIN = (torch.Tensor, int, float, bool, str, type(None))


def _plain(value) -> bool:
    """Whether ``value`` is tensors, numbers and strings in lists, tuples and dicts (what a checkpoint
    read with ``weights_only=True`` holds)."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, _PLAIN) and _plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


def rule_state(rule, generator: torch.Generator) -> dict:
    """Every attribute of a learning rule (feedback matrices, OPZO's momentum feedback and last noise,
    ZO's running baselines, the settings) as plain values; modules (local and IGL readouts) as their
    state dicts. ``generator`` (the problem's, saved with it) is left out; an attribute of any other
    kind is an error, so that state a future rule keeps cannot be dropped from a checkpoint unnoticed."""
    out = {}
    for key, value in vars(rule).items():
        if value is generator:
            continue
        if isinstance(value, nn.Module):
            out[key] = {"module_state": {k: v.detach().clone() for k, v in value.state_dict().items()}}
        elif _plain(value):
            out[key] = value
        else:
            raise TypeError(f"cannot checkpoint the state of rule {rule.name!r}: attribute {key!r} is a "
                            f"{type(value).__name__}")
    return out


def load_rule_state(rule, state: dict, net) -> None:
    """Put back what ``rule_state`` saved into a fresh rule of the same spec for ``net``."""
    if state.get("_groups") is not None:
        rule.setup(net)    # makes the readouts (modules) whose weights come next
    for key, value in state.items():
        current = getattr(rule, key, None)
        if isinstance(current, nn.Module):
            current.load_state_dict(value["module_state"])
        else:
            setattr(rule, key, value)


class SNNProblem:
    """An SNN of network string ``arch`` on ``split`` of ``data``; initial weights × ``init_gain``."""

    def __init__(self, data: Dataset, arch: str, *, split: str = "train", seed: int = 0, estimator: str = "localzo:m=2",
                 method: str = "bptt", batch_size: int = 128, time_steps: int = 4, encoding: str = "direct",
                 init_gain: float = 1.0, lif: LIFParams | None = None, eval_samples: int = 1024):
        self.seed, self.g = seed, torch.Generator().manual_seed(seed)
        self.net = build_network(arch, input_shape=data.input_shape, num_classes=data.num_classes, lif=lif,
                                 estimator=estimator, generator=self.g)
        for m in self.net.modules():
            if hasattr(m, "generator"):
                m.generator = self.g
        self.names = [k for k, _ in self.net.named_parameters()]
        self.shapes = [p.shape for _, p in self.net.named_parameters()]
        self.theta0 = torch.cat([p.detach().reshape(-1) for p in self.net.parameters()]) * init_gain
        self.n = self.theta0.numel()
        self.data, self.split = data, getattr(data, split)
        if len(self.split) == 0:
            raise ValueError(f"the {split} split of {data.name!r} is empty; give it a val_fraction > 0")
        self.method, self.batch_size, self.T, self.encoding = method, batch_size, time_steps, encoding
        self.rule = None if method == "bptt" else make_rule(method)
        if self.rule is not None:
            self.rule.generator = self.g
        self.loss_fn = CEMSELoss()
        self.eval_idx = torch.randperm(len(self.split), generator=self.g)[:eval_samples]
        self._batch: tuple[int, Tensor, Tensor] | None = None

    def init(self) -> Tensor:
        return self.theta0.clone()

    def rng_state(self):
        """Snapshot of every random draw to come: mini-batches, encodings, the estimator's and the
        rule's noise (restore it to replay a segment on the same batches and noise)."""
        return self.g.get_state(), self._batch

    def set_rng_state(self, state) -> None:
        self.g.set_state(state[0])
        self._batch = state[1]

    def state_dict(self) -> dict:
        """What the problem of this seed needs to continue where it is: the generator's position (batches,
        encodings, estimator and rule noise), the cached mini-batch of the current step and the rule's state
        (OPZO's momentum feedback, DFA's and FA's feedback matrices, ...). The network holds nothing else:
        its weights are θ, passed in at every step."""
        return {"g": self.g.get_state(), "batch": self._batch,
                "rule": None if self.rule is None else rule_state(self.rule, self.g)}

    def rule_snapshot(self) -> dict | None:
        """A copy of the learning rule's state (OPZO's momentum feedback, DFA's matrices, ...): PES
        particles each follow their own trajectory, so each keeps its own rule state."""
        return None if self.rule is None else copy.deepcopy(rule_state(self.rule, self.g))

    def restore_rule(self, snapshot: dict | None) -> None:
        """Put back a ``rule_snapshot`` (a copy: the rule may update its tensors in place). It may draw
        from the problem's generator (readouts are rebuilt): restore the generator after it."""
        if self.rule is not None and snapshot is not None:
            load_rule_state(self.rule, copy.deepcopy(snapshot), self.net)

    def load_state_dict(self, state: dict) -> None:
        if self.rule is not None:
            load_rule_state(self.rule, state["rule"], self.net)
        self.g.set_state(state["g"])    # after the rule: its setup may draw readout weights
        self._batch = state["batch"]

    def params(self, theta: Tensor) -> dict[str, Tensor]:
        out, i = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = math.prod(shape)
            out[name] = theta[i:i + k].view(shape)
            i += k
        return out

    def batch(self, t: int) -> tuple[Tensor, Tensor]:
        if self._batch is None or self._batch[0] != t:
            idx = torch.randint(0, len(self.split), (self.batch_size,), generator=self.g)
            x, y = self.split.x[idx], self.split.y[idx]
            self._batch = (t, encode(self.encoding, x, self.T, generator=self.g), y)
        return self._batch[1], self._batch[2]

    def _loss_at(self, theta: Tensor, x_seq: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(functional_call(self.net, self.params(theta), (x_seq,)), y)

    def loss(self, theta: Tensor, t: int) -> Tensor:
        return self._loss_at(theta, *self.batch(t))

    def grad(self, theta: Tensor, loss: Tensor, t: int) -> Tensor:
        if self.rule is None:  # autograd through the network's own spike estimator
            (g,) = torch.autograd.grad(loss, theta, retain_graph=True)
            return g.detach()
        with torch.no_grad():
            for p, v in zip(self.net.parameters(), self.params(theta.detach()).values()):
                p.copy_(v)
        self.net.zero_grad(set_to_none=True)
        self.rule.compute_grads(self.net, *self.batch(t), self.loss_fn)
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.net.parameters()])

    @contextlib.contextmanager
    def _evaluating(self):
        """Evaluation as a trained network runs: eval mode (no dropout, ASGL's pure spikes) and input
        spikes from a generator of its own (the same at every call), so that evaluating θ neither
        varies from call to call nor moves the training draws of ``self.g``."""
        was_training = self.net.training
        self.net.eval()
        try:
            yield torch.Generator().manual_seed(self.seed + 104_729)
        finally:
            self.net.train(was_training)

    @torch.no_grad()
    def eval_loss(self, theta: Tensor) -> float:
        x = self.split.x[self.eval_idx]
        with self._evaluating() as g:
            return float(self._loss_at(theta.detach(), encode(self.encoding, x, self.T, generator=g),
                                       self.split.y[self.eval_idx]))

    @torch.no_grad()
    def accuracy(self, theta: Tensor, split: str = "test", limit: int | None = None, batch: int = 500) -> float:
        """Classification accuracy of θ on (the first ``limit`` samples of) a split."""
        data = getattr(self.data, split)
        n = len(data) if limit is None else min(limit, len(data))
        params, correct = self.params(theta.detach()), 0
        with self._evaluating() as g:
            for i in range(0, n, batch):
                x, y = data.x[i:min(i + batch, n)], data.y[i:min(i + batch, n)]
                logits = functional_call(self.net, params, (encode(self.encoding, x, self.T, generator=g),))
                correct += int((logits.argmax(1) == y).sum())
        return correct / max(n, 1)
