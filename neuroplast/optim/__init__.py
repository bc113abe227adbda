"""Learned optimizers: a coordinate-wise LSTM (``lstm``), its torch.optim wrapper and checkpoints
(``learned``), optimizee problems (``problems``) and meta-training (``meta``; its config and problem
sampler in ``meta_config``, its meta-gradients, truncated BPTT and PES, in ``meta_grad``)."""
from .learned import LearnedOptimizer, load_checkpoint, save_checkpoint
from .lstm import CoordinateLSTM
from .meta import MetaConfig, meta_train, run_trajectory

__all__ = ["CoordinateLSTM", "LearnedOptimizer", "MetaConfig", "load_checkpoint", "meta_train", "run_trajectory",
           "save_checkpoint"]
