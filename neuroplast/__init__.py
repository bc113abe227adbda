"""neuroplast: train spiking neural networks the way neuromorphic chips could, and cost it."""
from .allocator import reuse_freed_memory

__version__ = "0.1.0"
reuse_freed_memory()   # large activations reuse freed memory instead of being page-faulted in each step
