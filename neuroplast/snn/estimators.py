"""The estimator registry: every spike-gradient estimator selectable by name.

    make_estimator("localzo:m=5,delta=0.5,dist=normal")
"""
from __future__ import annotations

from ..registry import build
from .asgl import ASGL
from .localzo import LocalZO
from .spikefn import SpikeEstimator
from .surrogates import SURROGATES

ESTIMATORS: dict[str, type[SpikeEstimator]] = {cls.name: cls for cls in (*SURROGATES, LocalZO, ASGL)}


def make_estimator(spec: str | SpikeEstimator) -> SpikeEstimator:
    """Build an estimator from a spec string such as ``"sigmoid:k=4"``."""
    if isinstance(spec, SpikeEstimator):
        return spec
    return build(spec, ESTIMATORS, "estimator")
