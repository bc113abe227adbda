"""Learning rules (credit assignment). Each computes ``.grad``; optimizers apply it."""
from . import bptt, dfa, fa, opzo, ottt, zo  # noqa: F401  (register the rules)
from .base import RULES, Rule, StepResult, make_rule
from .loss import CEMSELoss, ce_mse_loss

__all__ = ["RULES", "Rule", "StepResult", "make_rule", "CEMSELoss", "ce_mse_loss"]
