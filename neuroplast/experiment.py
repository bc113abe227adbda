"""Training and evaluation of a network with a learning rule, and run directories on disk.

    data ─encode─▶ x[0:T] ─▶ rule.compute_grads(net) ─▶ optimizer.step() ─▶ metrics
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .chip.cost import new_activity, record_step
from .data import encode
from .data.datasets import Split
from .errors import TrainingDiverged, UserError
from .learn import CEMSELoss, ce_mse_loss, make_rule
from .runs import RunDir, batches, end_epoch, load_data, load_run, log, make_network  # noqa: F401  (re-exported)
from .snn import Network, SpikeEstimator
from .spec import TrainConfig


def resolve_device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s): use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    return dev


def noise_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator of what the rule and the training loop draw while running (noise, feedback
    matrices, input spikes): its own stream, so that e.g. a random feedback matrix never repeats the
    weights drawn by ``build_network`` from the same seed (the layers' own draws: ``Network.seed_draws``)."""
    return torch.Generator(device).manual_seed(seed + 1_000_003)


def _fused(cls, params, **kw) -> torch.optim.Optimizer:
    """``cls`` with its fused (single-kernel) update where torch has one for these parameters: on a CPU
    the fused Adam step of a 1.3M-parameter net takes 0.6 ms against 5 ms for the default one."""
    params = list(params)
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):   # no fused kernel for this optimizer, device or dtype
        return cls(params, **kw)


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    if opt == "sgd":
        return _fused(torch.optim.SGD, params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if opt == "adam":
        return _fused(torch.optim.Adam, params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt == "adamw":
        return _fused(torch.optim.AdamW, params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt == "adagrad":
        return _fused(torch.optim.Adagrad, params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt.startswith("learned:"):  # a meta-trained LSTM: its step size is learned, --lr is not used
        from .optim import LearnedOptimizer
        return LearnedOptimizer.load(opt.partition(":")[2], params)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@torch.no_grad()
def evaluate(net: Network, split: Split, cfg: TrainConfig, device: torch.device,
             generator: torch.Generator | None = None) -> dict:
    """Accuracy, mean loss and mean firing rate per spiking layer on a split."""
    was_training = net.training
    net.eval()
    correct, loss_sum, n, rates = 0, 0.0, 0, {}
    for x, y in batches(split, max(cfg.batch_size, 256), device=device):
        out = net.simulate(encode(cfg.encoding, x, cfg.time_steps, generator=generator))
        loss_sum += float(ce_mse_loss(out.logits, y, cfg.mse_weight)) * len(y)
        correct += int((out.logits.argmax(1) == y).sum())
        for k, r in out.firing_rates().items():
            rates[k] = rates.get(k, 0.0) + r * len(y)
        n += len(y)
    net.train(was_training)
    if n == 0:
        return {"acc": float("nan"), "loss": float("nan"), "firing_rates": {}}
    return {"acc": correct / n, "loss": loss_sum / n, "firing_rates": {k: v / n for k, v in rates.items()}}


def estimator_stats(net: Network) -> dict[str, dict]:
    """Per spiking layer: its estimator's statistics (LocalZO's gradient sparsity, ASGL's α)."""
    out = {}
    for name, layer in net.layers.items():
        est = getattr(layer, "spike", None)
        if isinstance(est, SpikeEstimator):
            stats = est.gradient_stats()
            if stats:
                out[name] = stats
    return out


def train(cfg: TrainConfig, *, save: str | Path | None = None, overwrite: bool = False, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train a network as ``cfg`` says; return the summary (and write a run directory if ``save``)."""
    cfg = cfg.resolved()
    rule = make_rule(cfg.method)
    device = resolve_device(cfg.device)
    run = RunDir(save, overwrite)
    try:
        if cfg.precision != "float":
            from .chip.onchip_train import train_onchip
            summary, net = train_onchip(cfg, run, progress=progress, on_epoch=on_epoch)
        else:
            summary, net = _train(cfg, rule, device, run, progress, on_epoch)
        run.commit(cfg, summary, net)
    except BaseException:
        run.abort()
        raise
    return summary


def _train(cfg, rule, device, run, progress, on_epoch):
    t0 = time.perf_counter()
    job = _Training(cfg, rule, device)
    train_loss = float("nan")
    for epoch in range(1, cfg.epochs + 1):
        train_loss, train_acc = job.epoch(epoch, progress)
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
               "lr": job.opt.param_groups[0]["lr"], "wall_s": time.perf_counter() - t0}
        if len(job.data.val):
            val = evaluate(job.net, job.data.val, cfg, device, job.dev_gen)
            row.update(val_acc=val["acc"], val_loss=val["loss"])
        end_epoch(run, row, cfg.epochs, on_epoch)
    net = job.net
    test = evaluate(net, job.data.test, cfg, device, job.dev_gen)
    summary = {"task": cfg.task, "dataset": cfg.dataset, "net": cfg.net, "method": cfg.method,
               "estimator": cfg.estimator, "epochs": cfg.epochs, "time_steps": cfg.time_steps,
               "seed": cfg.seed, "device": str(device), "test_acc": test["acc"], "test_loss": test["loss"],
               "train_loss": train_loss, "firing_rates": test["firing_rates"],
               "params": sum(p.numel() for p in net.parameters()), "trainable": cfg.trainable,
               "estimator_stats": estimator_stats(net), "activity": {**job.activity, "feedback_entries": rule.feedback_sizes(),
                                                                   "readout_entries": rule.readout_sizes()},
               "wall_s": time.perf_counter() - t0}
    return summary, net


class _Training:
    """What a float training run holds between its epochs: data, generators, network, optimizer,
    schedule, the optimizer-step count and the cost model's activity."""

    def __init__(self, cfg, rule, device):
        self.cfg, self.rule, self.device = cfg, rule, device
        self.data = load_data(cfg)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # CPU: weight init, shuffling
        self.dev_gen = noise_generator(cfg.seed, device)
        net = self.net = make_network(cfg, self.data, self.gen).to(device)
        net.seed_draws(cfg.seed, device)  # dropout masks, LocalZO draws, ASGL spike noise: a stream per layer
        rule.generator = self.dev_gen  # noise and feedback matrices of rules that draw them
        if cfg.trainable == "readout":  # control: hidden layers frozen at their initialisation
            for name, layer in net.layers.items():
                if name != "readout":
                    layer.requires_grad_(False)
        rule.setup(net)  # feedback/readouts the rule trains itself join the optimizer
        self.opt = make_optimizer(cfg, [p for p in net.parameters() if p.requires_grad] + rule.parameters())
        self.per_epoch = math.ceil(len(self.data.train) / cfg.batch_size)
        self.steps = cfg.epochs * self.per_epoch
        self.sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=self.steps)
                      if cfg.schedule == "cosine" else None)
        self.loss_fn = CEMSELoss(cfg.mse_weight)
        self.step = 0
        self.activity = new_activity()  # what the cost model counts

    def epoch(self, epoch: int, progress: bool) -> tuple[float, float]:
        """One pass over the training set: (mean loss, accuracy) over its samples."""
        cfg, net, opt = self.cfg, self.net, self.opt
        net.train()
        loss_sum = correct = seen = 0
        bar = tqdm(batches(self.data.train, cfg.batch_size, generator=self.gen, device=self.device),
                   total=self.per_epoch,
                   desc=f"epoch {epoch}/{cfg.epochs}", disable=None if progress else True, leave=False, file=sys.stderr)
        for x, y in bar:   # on the device already (``batches``)
            opt.zero_grad(set_to_none=True)
            self.rule.set_progress(self.step / self.steps)
            x_seq = encode(cfg.encoding, x, cfg.time_steps, generator=self.dev_gen)
            res = self.rule.compute_grads(net, x_seq, y, self.loss_fn)
            self.step += 1
            if not math.isfinite(res.loss):
                raise TrainingDiverged(f"loss became {res.loss} at epoch {epoch}, step {self.step} "
                                       f"(learning rate {opt.param_groups[0]['lr']:.3g}); lower --lr or check the data")
            # the cost sums are read while the device is idle after the loss's read, before the optimizer
            # step is queued (on a GPU: one drain of its queue per batch, not three); they need no weights
            record_step(self.activity, net, x_seq, res.spike_counts, res.noise_draws, len(y), norm=self.data.norm)
            opt.step()
            if self.sched is not None:
                self.sched.step()
            loss_sum += res.loss * len(y)
            correct = correct + (res.logits.argmax(1) == y).sum()   # a device count, read where shown
            seen += len(y)
            if not bar.disable:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{int(correct) / seen:.3f}")
        return loss_sum / seen, int(correct) / seen
