"""Training loop of on-chip integer learning (``neuroplast train --method opzo --precision loihi2``)."""
from __future__ import annotations

import math
import sys
import time

import torch
from tqdm.auto import tqdm

from ..data import encode
from ..errors import SpecError, TrainingDiverged
from ..registry import parse_options
from ..runs import batches, end_epoch, load_data, make_network
from .cost import new_activity, record_step
from .hardware import load_chip
from .onchip import METHODS, OnChipLearner


def train_onchip(cfg, run, *, progress: bool, on_epoch=None):
    """Same contract as the float loop: returns (summary, float network holding the chip's weights)."""
    t0 = time.perf_counter()
    chip = load_chip(cfg.precision)
    job = _OnChipTraining(cfg, chip, *_onchip_method(cfg))
    train_loss = float("nan")
    for epoch in range(1, cfg.epochs + 1):
        train_loss, train_acc = job.epoch(epoch, progress)
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "lr": job.learner.lr,
               "wall_s": time.perf_counter() - t0}
        if len(job.data.val):
            row["val_acc"] = _accuracy(job.learner, job.data.val, cfg)
        end_epoch(run, row, cfg.epochs, on_epoch, where=f" ({chip.name})")
    job.copy_chip_weights()
    return job.summary(train_loss, t0), job.net


def _onchip_method(cfg) -> tuple[str, dict, float]:
    """(rule name, options, momentum β) of ``cfg.method`` once it is known to have an on-chip form with
    options it takes (sigma, beta: numbers; noise, site) and direct input: SpecError otherwise."""
    name, opts = parse_options(cfg.method)
    if name not in METHODS:
        raise SpecError(f"--precision {cfg.precision} runs on-chip learning with {', '.join(METHODS)}; got method "
                        f"{name!r} (backprop has no on-chip form)")
    unknown = sorted(set(opts) - {"sigma", "beta", "noise", "site"})
    if unknown:
        raise SpecError(f"on-chip {name} takes the options sigma, beta, noise (rademacher|gaussian) and site "
                        f"(after|before); got {unknown}")
    for key in ("sigma", "beta"):
        if key in opts and (isinstance(opts[key], str) or isinstance(opts[key], bool)):
            raise SpecError(f"on-chip {name}: option {key}={opts[key]!r} must be a number, e.g. {name}:{key}="
                            f"{0.5 if key == 'sigma' else 0.99}")
    beta = float(opts.get("beta", 0.99))
    if not 0.0 <= beta < 1.0:
        raise SpecError(f"opzo needs a momentum beta in [0, 1), got {beta}")
    if cfg.encoding != "direct":
        raise SpecError("on-chip learning takes direct (graded) input for now; use --encoding direct")
    return name, opts, beta


class _OnChipTraining:
    """What an on-chip training run holds between its epochs: data, generator, the float network (its
    initialisation, then the chip's weights), the integer learner, the learning-rate schedule's step
    count and the cost model's activity."""

    def __init__(self, cfg, chip, name: str, opts: dict, beta: float):
        self.cfg, self.chip = cfg, chip
        self.data = load_data(cfg)
        self.gen = torch.Generator().manual_seed(cfg.seed)   # weight init, shuffling, input encoding
        net = self.net = make_network(cfg, self.data, self.gen)
        self.learner = OnChipLearner(net, chip, name, lr=cfg.lr, time_steps=cfg.time_steps,
                                     sigma=float(opts.get("sigma", 0.5)),
                                     beta_shift=max(1, round(-math.log2(1 - beta))) if beta > 0 else 1, seed=cfg.seed,
                                     noise=str(opts.get("noise", "rademacher")), site=str(opts.get("site", "after")))
        self.per_epoch = math.ceil(len(self.data.train) / cfg.batch_size)
        self.steps, self.step, self.base_lr = cfg.epochs * self.per_epoch, 0, self.learner.lr
        self.activity, self.hidden = new_activity(), net.spiking_layers()   # what the cost model counts

    def epoch(self, epoch: int, progress: bool) -> tuple[float, float]:
        """One pass over the training set, a weight update per batch (the learning rate on its cosine
        schedule where ``cfg.schedule`` says so): (mean loss, accuracy) over its samples."""
        cfg, net, learner = self.cfg, self.net, self.learner
        loss_sum = correct = seen = 0
        bar = tqdm(batches(self.data.train, cfg.batch_size, generator=self.gen), total=self.per_epoch,
                   desc=f"epoch {epoch}/{cfg.epochs} ({self.chip.name})", disable=None if progress else True,
                   leave=False, file=sys.stderr)
        for x, y in bar:
            if cfg.schedule == "cosine":
                learner.lr = self.base_lr * 0.5 * (1 + math.cos(math.pi * self.step / self.steps))
            x_seq = encode(cfg.encoding, x, cfg.time_steps, generator=self.gen)
            loss, logits = learner.train_batch(x_seq, y)
            record_step(self.activity, net, x_seq,
                        {k: c.view(net.shapes[k]) for k, c in zip(self.hidden, learner.last_spike_counts)},
                        learner.last_noise_draws, len(y))
            self.step += 1
            if not math.isfinite(loss):
                raise TrainingDiverged(f"on-chip loss became {loss} at epoch {epoch}; lower --lr")
            loss_sum += loss * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        return loss_sum / seen, correct / seen

    def copy_chip_weights(self) -> None:
        """Give the float network the chip's weights (dequantised; no biases on chip: zeroed)."""
        with torch.no_grad():
            for layer, w in zip([x for x in self.net.layers.values() if hasattr(x, "op")], self.learner.weights_float()):
                layer.op.weight.copy_(w.to(layer.op.weight.dtype))
                if layer.op.bias is not None:
                    layer.op.bias.zero_()

    def summary(self, train_loss: float, t0: float) -> dict:
        """The run's summary (the float loop's fields; test accuracy of the integer learner, its weight
        mantissas' saturation, the activity with its feedback matrices' sizes), timed from ``t0``."""
        cfg, learner = self.cfg, self.learner
        return {"task": cfg.task, "dataset": cfg.dataset, "net": cfg.net, "method": cfg.method,
                "precision": self.chip.name, "estimator": "boxcar (on-chip)", "epochs": cfg.epochs,
                "time_steps": cfg.time_steps, "seed": cfg.seed, "device": "cpu",
                "test_acc": _accuracy(learner, self.data.test, cfg), "train_loss": train_loss,
                "firing_rates": {}, "params": sum(int(ly["m"].numel()) for ly in learner.layers),
                "trainable": "all", "weight_mantissa_saturation": learner.saturation(),
                "activity": {**self.activity, "readout_entries": {},
                             "feedback_entries": {k: int(h["fb"].numel()) for k, h in zip(self.hidden, learner.hidden)
                                                  if "fb" in h}},
                "wall_s": time.perf_counter() - t0}


def _accuracy(learner, split, cfg, batch: int = 500) -> float:
    correct = 0
    for i in range(0, len(split), batch):
        x, y = split.x[i:i + batch], split.y[i:i + batch]
        correct += int((learner.classify(encode(cfg.encoding, x, cfg.time_steps)) == y).sum())
    return correct / max(1, len(split))
