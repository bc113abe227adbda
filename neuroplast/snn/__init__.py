"""Spiking network engine: LIF neurons, spike functions, layers, networks."""
from .estimators import ESTIMATORS, make_estimator
from .network import Network, SimResult, build_network, detach_state
from .neurons import LIFParams, lif_step
from .spikefn import SpikeEstimator, SurrogateEstimator

__all__ = ["Network", "SimResult", "build_network", "detach_state", "LIFParams", "lif_step",
           "ESTIMATORS", "SpikeEstimator", "SurrogateEstimator", "make_estimator"]
