"""``LearnedOptimizer``: a meta-trained ``CoordinateLSTM`` used like any torch.optim optimizer.

    opt = LearnedOptimizer.load("meta/best.pt", net.parameters())
    rule.compute_grads(net, x_seq, y, loss_fn)      # any estimate of the gradient in .grad
    opt.step()

Each parameter tensor keeps its own per-coordinate LSTM state; the LSTM itself is frozen.
Checkpoints (``save_checkpoint``) carry a format tag, a version and the LSTM's configuration, so
a file from another version or a corrupt file fails with a message that says what to do.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import DataError
from ..fileio import atomic_write
from .lstm import CoordinateLSTM

FORMAT = "neuroplast.learned_optimizer"
VERSION = 1


def save_checkpoint(path: str | Path, model: CoordinateLSTM, meta: dict | None = None, **extra) -> Path:
    """Write the LSTM (and optional training state in ``extra``) atomically."""
    blob = {"format": FORMAT, "version": VERSION, "config": model.config(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta or {}, **extra}

    def write(f):
        torch.save(blob, f)
    return atomic_write(path, write, binary=True)


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[CoordinateLSTM, dict]:
    """Read a checkpoint -> (model, whole blob). Clear errors for missing, corrupt or foreign files."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"learned-optimizer checkpoint {path} is a folder; give the checkpoint in it, e.g. "
                        f"{path / 'best.pt'}")
    if not path.is_file():
        raise DataError(f"learned-optimizer checkpoint {path} not found; train one with `neuroplast meta-train`")
    try:
        with warnings.catch_warnings():   # e.g. torch's "Detected pickle protocol 4" for a foreign file
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types, with many lines that suggest weights_only=False
        reason = "permission denied" if isinstance(exc, PermissionError) else \
            f"truncated, corrupt or not written by torch.save: {type(exc).__name__}"
        raise DataError(f"{path} is not a readable learned-optimizer checkpoint ({reason}): re-run "
                        "`neuroplast meta-train`") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise DataError(f"{path} is not a neuroplast learned-optimizer checkpoint (no {FORMAT!r} tag)")
    if blob.get("version") != VERSION:
        raise DataError(f"{path} was written by learned-optimizer format version {blob.get('version')}, this "
                        f"neuroplast reads version {VERSION}; meta-train it again with this version")
    try:
        model = CoordinateLSTM(**blob["config"])
        model.load_state_dict(blob["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        why = " ".join(str(exc).split())   # load_state_dict lists every mismatch on lines of its own
        raise DataError(f"{path}: its LSTM does not match this neuroplast's architecture ({why}); "
                        "meta-train it again with this version") from None
    return model, blob


class LearnedOptimizer(torch.optim.Optimizer):
    """torch.optim interface around a (frozen) ``CoordinateLSTM``. Its param groups' ``lr`` (default
    1.0) multiplies the learned step, so LR schedulers act on it as a factor."""

    def __init__(self, params, model: CoordinateLSTM, lr_scale: float = 1.0):
        if not lr_scale > 0:
            raise ValueError(f"lr_scale must be > 0, got {lr_scale}")
        super().__init__(params, {"lr": float(lr_scale)})
        self.model = model.requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path, params, lr_scale: float = 1.0) -> LearnedOptimizer:
        model, _ = load_checkpoint(path)
        return cls(params, model, lr_scale)

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, self.model)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            # one coordinate vector per group (as in meta-training, where θ is all parameters at once;
            # it matters for the ``relative`` variant, whose multipliers are centred over the vector)
            for chunk in ([params] if self.model.relative else [[p] for p in params]):
                if not chunk:
                    continue
                st = self.state[chunk[0]]
                n = sum(p.numel() for p in chunk)
                if "lstm" not in st or st["lstm"]["h"][0].shape[0] != n:
                    self.model.to(chunk[0].device)
                    st["lstm"] = self.model.init_state(n, chunk[0].device, chunk[0].dtype)
                update, st["lstm"] = self.model.step(torch.cat([p.grad.reshape(-1) for p in chunk]), st["lstm"])
                for p, u in zip(chunk, update.split([p.numel() for p in chunk])):
                    p.add_(u.view_as(p), alpha=group["lr"])
        return loss
