"""Lava processes of on-chip learning (three-factor synapses, LIF cores exposing ψ', noise units,
top-down feedback channels, error unit). Lava imports every module beside a Process when it looks
for ProcessModels, so this folder holds only ``process.py`` and ``models.py``."""
from .. import compat

compat.install()
