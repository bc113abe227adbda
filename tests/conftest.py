"""Shared test settings: where real data sets are looked for (tests skip when they are absent)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: NEUROPLAST_DATA if set, else ../shared/data next to the checkout (our machines)
DATA_ROOT = Path(os.environ.get("NEUROPLAST_DATA", ROOT.parent / "shared" / "data"))
