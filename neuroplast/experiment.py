"""Training and evaluation of a network with a learning rule, and run directories on disk.

    data ─encode─▶ x[0:T] ─▶ rule.compute_grads(net) ─▶ optimizer.step() ─▶ metrics
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import encode, load_dataset
from .data.datasets import Dataset, Split
from .errors import TrainingDiverged, UserError
from .fileio import atomic_write_json, make_temp_dir
from .learn import CEMSELoss, ce_mse_loss, make_rule
from .snn import LIFParams, Network, SpikeEstimator, build_network
from .spec import TrainConfig


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def resolve_device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return dev


def noise_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator of everything drawn while running (noise, LocalZO samples, dropout masks,
    feedback matrices): its own stream, so that e.g. a random feedback matrix never repeats the
    weights drawn by ``build_network`` from the same seed."""
    return torch.Generator(device).manual_seed(seed + 1_000_003)


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    if opt == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if opt == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt.startswith("learned:"):  # a meta-trained LSTM: its step size is learned, --lr is not used
        from .optim import LearnedOptimizer
        return LearnedOptimizer.load(opt.partition(":")[2], params)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_network(cfg: TrainConfig, data: Dataset, generator: torch.Generator | None = None) -> Network:
    return build_network(cfg.net, input_shape=data.input_shape, num_classes=data.num_classes,
                         lif=LIFParams(leak=cfg.leak, threshold=cfg.threshold, reset=cfg.reset),
                         estimator=cfg.estimator, generator=generator, compiled=cfg.compiled)


def batches(split: Split, batch_size: int, *, generator: torch.Generator | None = None):
    """Yield (x, y) mini-batches; shuffled when a generator is given."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield split.x[idx], split.y[idx]


@torch.no_grad()
def evaluate(net: Network, split: Split, cfg: TrainConfig, device: torch.device,
             generator: torch.Generator | None = None) -> dict:
    """Accuracy, mean loss and mean firing rate per spiking layer on a split."""
    was_training = net.training
    net.eval()
    correct, loss_sum, n, rates = 0, 0.0, 0, {}
    for x, y in batches(split, max(cfg.batch_size, 256)):
        x, y = x.to(device), y.to(device)
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


class RunDir:
    """A run directory written atomically: built in a hidden temp folder, renamed at the end."""

    def __init__(self, path: str | Path | None, overwrite: bool = False):
        self.path = Path(path) if path else None
        self.tmp: Path | None = None
        if self.path is not None:
            if self.path.exists() and not overwrite:
                raise UserError(f"run directory {self.path} exists; pass --overwrite to replace it or choose another")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = make_temp_dir(self.path.parent, f".{self.path.name}.")

    def append_metrics(self, row: dict) -> None:
        if self.tmp is not None:
            with open(self.tmp / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")

    def commit(self, cfg: TrainConfig, summary: dict, net: Network) -> None:
        if self.tmp is None:
            return
        atomic_write_json(self.tmp / "config.json", cfg.to_dict())
        atomic_write_json(self.tmp / "summary.json", summary)
        torch.save({"arch": net.arch, "input_shape": list(net.input_shape), "num_classes": net.num_classes,
                    "state_dict": net.state_dict()}, self.tmp / "weights.pt")
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            self.path.rename(old)
            self.tmp.rename(self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.path)
        self.tmp = None

    def abort(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def load_run(run_dir: str | Path, data_dir: str | None = None) -> tuple[TrainConfig, Network, Dataset]:
    """(config, network with the trained weights, data set) of a run directory written by train --save."""
    from .spec import config_from_dict
    run_dir = Path(run_dir)
    try:
        values = json.loads((run_dir / "config.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir / 'config.json'} not found: give a run directory written by `neuroplast train --save`") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{run_dir / 'config.json'} is corrupt ({exc}); re-run the training with --save") from None
    if data_dir is not None:
        values["data_dir"] = data_dir
    cfg = config_from_dict(values, source=str(run_dir / "config.json")).resolved()
    try:
        blob = torch.load(run_dir / "weights.pt", map_location="cpu", weights_only=True)
        state = blob["state_dict"]
    except FileNotFoundError:
        raise UserError(f"{run_dir / 'weights.pt'} not found; re-run the training with --save") from None
    except Exception as exc:  # truncated or foreign file: torch raises several types
        raise UserError(f"{run_dir / 'weights.pt'} is not a neuroplast weights file ({type(exc).__name__}); "
                        "re-run the training with --save") from None
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction,
                        split_seed=cfg.split_seed, time_steps=cfg.time_steps)
    net = make_network(cfg, data)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{run_dir / 'weights.pt'} does not fit the network {cfg.net!r} of its config ({exc})") from None
    net.eval()
    return cfg, net, data


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
            summary, net = train_onchip(cfg, run, progress=progress, on_epoch=on_epoch, make_network=make_network,
                                        batches=batches, log=log)
        else:
            summary, net = _train(cfg, rule, device, run, progress, on_epoch)
        run.commit(cfg, summary, net)
    except BaseException:
        run.abort()
        raise
    return summary


def _train(cfg, rule, device, run, progress, on_epoch):
    t0 = time.perf_counter()
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction,
                        split_seed=cfg.split_seed, time_steps=cfg.time_steps)
    gen = torch.Generator().manual_seed(cfg.seed)  # CPU: weight init, shuffling
    dev_gen = noise_generator(cfg.seed, device)
    net = make_network(cfg, data, gen).to(device)
    for m in net.modules():  # dropout masks, LocalZO draws, ASGL spike noise
        if hasattr(m, "generator"):
            m.generator = dev_gen
    rule.generator = dev_gen  # noise and feedback matrices of rules that draw them
    if cfg.trainable == "readout":  # control: hidden layers frozen at their initialisation
        for name, layer in net.layers.items():
            if name != "readout":
                layer.requires_grad_(False)
    rule.setup(net)  # feedback/readouts the rule trains itself join the optimizer
    opt = make_optimizer(cfg, [p for p in net.parameters() if p.requires_grad] + rule.parameters())
    steps = cfg.epochs * math.ceil(len(data.train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cfg.schedule == "cosine" else None
    loss_fn = CEMSELoss(cfg.mse_weight)
    step, train_loss = 0, float("nan")
    activity = {"updates": 0, "noise_draws": 0, "samples": 0, "train_spikes": {}, "train_synops": {}}  # cost model
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        loss_sum = correct = seen = 0
        bar = tqdm(batches(data.train, cfg.batch_size, generator=gen), total=math.ceil(len(data.train) / cfg.batch_size),
                   desc=f"epoch {epoch}/{cfg.epochs}", disable=None if progress else True, leave=False, file=sys.stderr)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            rule.set_progress(step / steps)
            x_seq = encode(cfg.encoding, x, cfg.time_steps, generator=dev_gen)
            res = rule.compute_grads(net, x_seq, y, loss_fn)
            step += 1
            if not math.isfinite(res.loss):
                raise TrainingDiverged(f"loss became {res.loss} at epoch {epoch}, step {step} "
                                       f"(learning rate {opt.param_groups[0]['lr']:.3g}); lower --lr or check the data")
            opt.step()
            activity["updates"] += 1
            activity["noise_draws"] += res.noise_draws
            for k, v in res.spike_counts.items():
                activity["train_spikes"][k] = activity["train_spikes"].get(k, 0) + int(v.sum())
            for k, v in net.count_synops(x_seq, res.spike_counts).items():
                activity["train_synops"][k] = activity["train_synops"].get(k, 0.0) + v
            activity["samples"] += len(y)
            if sched is not None:
                sched.step()
            loss_sum += res.loss * len(y)
            correct += int((res.logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        train_loss = loss_sum / seen
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": correct / seen,
               "lr": opt.param_groups[0]["lr"], "wall_s": time.perf_counter() - t0}
        if len(data.val):
            val = evaluate(net, data.val, cfg, device, dev_gen)
            row.update(val_acc=val["acc"], val_loss=val["loss"])
        run.append_metrics(row)
        if on_epoch:
            on_epoch(row)
        log(f"epoch {epoch}/{cfg.epochs}: loss {train_loss:.4f}, train acc {row['train_acc']:.4f}"
            + (f", val acc {row['val_acc']:.4f}" if "val_acc" in row else "") + f" ({row['wall_s']:.1f} s)")
    test = evaluate(net, data.test, cfg, device, dev_gen)
    summary = {"task": cfg.task, "dataset": cfg.dataset, "net": cfg.net, "method": cfg.method,
               "estimator": cfg.estimator, "epochs": cfg.epochs, "time_steps": cfg.time_steps,
               "seed": cfg.seed, "device": str(device), "test_acc": test["acc"], "test_loss": test["loss"],
               "train_loss": train_loss, "firing_rates": test["firing_rates"],
               "params": sum(p.numel() for p in net.parameters()), "trainable": cfg.trainable,
               "estimator_stats": estimator_stats(net), "activity": {**activity, "feedback_entries": rule.feedback_sizes(),
                                                                   "readout_entries": rule.readout_sizes()},
               "wall_s": time.perf_counter() - t0}
    return summary, net
