"""Coordinate-wise LSTM optimizer: the update rule a learned optimizer applies to every coordinate.

Andrychowicz et al., "Learning to learn by gradient descent by gradient descent" (NeurIPS 2016),
Sec. 2.1 and App. A; its zeroth-order form: Ruan et al., "Learning to learn by ZO oracle" (ICLR
2020). One small 2-layer LSTM (hidden 20) is shared by all coordinates; each coordinate i keeps
its own LSTM state, and the step is a pure function

    (Δθ, state') = step(g, state),        θ ← θ + Δθ

of the (estimated) gradient g [N] and the per-coordinate state. Two variants:

``l2l`` (the paper's form, the reference): inputs are the preprocessed gradient (App. A, p = 10)

    (log|g|/p, sign g)  if |g| ≥ e^−p,   else  (−1, e^p·g),

and the update is Δθ = ``out_scale``·LSTM(g) (out_scale = 0.1 as in the paper).

``adam`` (default; what a prototype here needed to reach tuned Adam): inputs are Adam-style
normalised features — g/√v̂, m̂_k/√v̂ for momenta at several time-scales β_k, the preprocessed
gradient and (optionally) log(t+1)/log(10⁴) — and the LSTM emits a per-coordinate multiplier on
Adam's direction d = m̂_0.9/(√v̂ + ε):

    Δθ = −exp(log_scale)·exp(2·tanh(a/2))·d,      a = LSTM(features),

with a zero-initialised head, so it starts as Adam with step size exp(log_scale) and must learn to
beat it; ``log_scale`` is a learnable scalar (meta-trained with its own, larger learning rate).
With ``learn_beta1=True`` the momentum of that direction is learnable too, β₁ = σ(κ) (κ starts
at logit 0.9, Adam's value; same learning rate as the log step size): the optimizer can move from
Adam's momentum toward RMSprop's none (β₁ = 0) or toward heavier averaging of the noisy estimates.
With ``relative=True`` the log-multipliers are centred over the coordinates, b = 2·tanh(a/2) −
mean(2·tanh(a/2)), so the multipliers have geometric mean 1: the LSTM can move step size between
coordinates but not shrink every step at once — the short-horizon bias of truncated unrolls
(Wu et al., ICLR 2018) pulls a learned global step size far below the tuned one.
"""
from __future__ import annotations

import math

import torch
from torch import nn

Tensor = torch.Tensor
VARIANTS = ("adam", "l2l")
EPS = 1e-8
BETA2 = 0.999
ADAM_BETA1 = 0.9


def preprocess(g: Tensor, p: float = 10.0) -> Tensor:
    """Andrychowicz et al. App. A: [N] -> [N, 2]: (log|g|/p, sign g) or (−1, e^p·g) for tiny g."""
    big = g.abs() >= math.exp(-p)
    first = torch.where(big, g.abs().clamp_min(1e-38).log() / p, torch.full_like(g, -1.0))
    second = torch.where(big, g.sign(), g * math.exp(p))
    return torch.stack([first, second], dim=1)


class CoordinateLSTM(nn.Module):
    """The shared per-coordinate network; see the module docstring for the two variants."""

    def __init__(self, variant: str = "adam", hidden: int = 20, layers: int = 2, betas=(0.5, 0.9, 0.99),
                 step_input: bool = True, init_lr: float = 1e-3, out_scale: float = 0.1, p: float = 10.0,
                 relative: bool = False, learn_beta1: bool = False):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown learned-optimizer variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if not init_lr > 0:
            raise ValueError(f"init_lr must be > 0, got {init_lr}")
        self.variant, self.hidden, self.layers = variant, int(hidden), int(layers)
        self.betas, self.step_input = tuple(float(b) for b in betas), bool(step_input)
        self.init_lr, self.out_scale, self.p = float(init_lr), float(out_scale), float(p)
        self.relative, self.learn_beta1 = bool(relative), bool(learn_beta1)
        n_in = 2 if variant == "l2l" else 2 + 1 + len(self.betas) + int(self.step_input)
        self.cells = nn.ModuleList(nn.LSTMCell(n_in if i == 0 else hidden, hidden) for i in range(layers))
        self.head = nn.Linear(hidden, 1)
        if variant == "adam":
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            self.log_scale = nn.Parameter(torch.tensor(math.log(init_lr)))
            if self.learn_beta1:
                self.beta1_logit = nn.Parameter(torch.tensor(math.log(ADAM_BETA1 / (1 - ADAM_BETA1))))
        else:
            self.register_buffer("log_scale", torch.tensor(0.0))

    def config(self) -> dict:
        return {"variant": self.variant, "hidden": self.hidden, "layers": self.layers, "betas": list(self.betas),
                "step_input": self.step_input, "init_lr": self.init_lr, "out_scale": self.out_scale, "p": self.p,
                "relative": self.relative, "learn_beta1": self.learn_beta1}

    def beta1(self) -> Tensor | float:
        """β₁ of the Adam-like direction: learnable σ(κ) with ``learn_beta1``, else Adam's 0.9."""
        return torch.sigmoid(self.beta1_logit) if self.learn_beta1 else ADAM_BETA1

    def beta1_value(self) -> float:
        return float(torch.as_tensor(self.beta1()).detach())

    def init_state(self, n: int, device=None, dtype=torch.float32) -> dict:
        z = torch.zeros(n, self.hidden, device=device, dtype=dtype)
        state = {"h": [z.clone() for _ in self.cells], "c": [z.clone() for _ in self.cells], "t": 0}
        if self.variant == "adam":
            zn = torch.zeros(n, device=device, dtype=dtype)
            state.update(v=zn.clone(), m=[zn.clone() for _ in self.betas], adam_m=zn.clone())
        return state

    def _features(self, g: Tensor, state: dict, new: dict) -> tuple[Tensor, Tensor | None]:
        pre = preprocess(g, self.p)
        if self.variant == "l2l":
            return pre, None
        t = new["t"]
        new["v"] = BETA2 * state["v"] + (1 - BETA2) * g * g
        denom = (new["v"] / (1 - BETA2 ** t)).sqrt() + EPS
        new["m"] = [b * m + (1 - b) * g for b, m in zip(self.betas, state["m"])]
        b1 = self.beta1()
        new["adam_m"] = b1 * state["adam_m"] + (1 - b1) * g
        direction = new["adam_m"] / (1 - b1 ** t) / denom
        cols = [g / denom] + [m / (1 - b ** t) / denom for b, m in zip(self.betas, new["m"])]
        if self.step_input:
            cols.append(torch.full_like(g, math.log(t + 1) / math.log(1e4)))
        feats = torch.cat([torch.stack(cols, 1).clamp(-10, 10), pre], 1)
        return feats, direction

    def step(self, g: Tensor, state: dict) -> tuple[Tensor, dict]:
        """g [N] (the gradient estimate, no graph needed) -> (Δθ [N], new state). Pure."""
        new = {"t": state["t"] + 1, "h": [], "c": []}
        x, direction = self._features(g.detach(), state, new)
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            for cell, h, c in zip(self.cells, state["h"], state["c"]):   # the meta-graph needs autograd's cells
                h, c = cell(x, (h, c))
                new["h"].append(h)
                new["c"].append(c)
                x = h
            a = self.head(x).squeeze(1)
        else:
            with torch.no_grad():
                a = self._lstm_chunked(x, state, new)
        if self.variant == "l2l":
            return self.out_scale * a, new
        b = 2 * torch.tanh(a / 2)
        if self.relative:
            b = b - b.mean()
        return -self.log_scale.exp() * b.exp() * direction, new


    def _lstm_chunked(self, x: Tensor, state: dict, new: dict) -> Tensor:
        """The LSTM layers and head without autograd, CHUNK coordinates at a time: every coordinate
        is independent, and a chunk's gates stay in cache (one [N, 4H] pass per op over 10⁵–10⁶
        coordinates is memory-bound: the whole step was 3× slower on 333k). Same equations as ``nn.LSTMCell``
        (gates i, f, g, o; c' = σ(f)·c + σ(i)·tanh(g); h' = σ(o)·tanh(c'))."""
        n, hid = x.shape[0], self.hidden
        new["h"] = [torch.empty_like(h) for h in state["h"]]
        new["c"] = [torch.empty_like(c) for c in state["c"]]
        a = x.new_empty(n)
        # per gate k: W_k [H, in] as a batch of 4 → gates [4, chunk, H], each gate one contiguous block
        weights = [(cell.weight_ih.view(4, hid, -1).transpose(1, 2), cell.weight_hh.view(4, hid, hid).transpose(1, 2),
                    (cell.bias_ih + cell.bias_hh).view(4, 1, hid)) for cell in self.cells]
        w_head, b_head = self.head.weight.t(), self.head.bias
        for lo in range(0, n, CHUNK):
            hi = min(lo + CHUNK, n)
            inp = x[lo:hi]
            for (w_ih, w_hh, bias), h0, c0, h1, c1 in zip(weights, state["h"], state["c"], new["h"], new["c"]):
                gates = torch.baddbmm(bias, inp.expand(4, -1, -1), w_ih).baddbmm_(h0[lo:hi].expand(4, -1, -1), w_hh)
                gates[:2].sigmoid_()
                gates[2].tanh_()
                gates[3].sigmoid_()
                i, f, gg, o = gates.unbind(0)
                c = torch.mul(f, c0[lo:hi], out=c1[lo:hi]).addcmul_(i, gg)
                inp = torch.tanh(c, out=h1[lo:hi]).mul_(o)
            torch.addmm(b_head, inp, w_head, out=a[lo:hi].unsqueeze(1))
        return a


CHUNK = 4096   # coordinates per cache-resident slice of the no-grad LSTM step


def detach_state(state: dict) -> dict:
    """Cut the optimizer state from the meta-graph (truncated BPTT between unroll segments)."""
    out = {}
    for k, v in state.items():
        out[k] = [x.detach() for x in v] if isinstance(v, list) else (v.detach() if isinstance(v, Tensor) else v)
    return out
