"""neuroplast: train spiking neural networks the way neuromorphic chips could, and cost it."""
__version__ = "0.1.0"
