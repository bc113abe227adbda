"""Lava (lava-nc) side of neuroplast: only imported when lava-nc is installed.

``compat`` makes lava-nc 0.10.0 import on Python 3.11 and is installed before anything from Lava;
``network`` builds a quantised network as a Lava process graph and runs it (fixed_pt);
``equivalence`` compares Lava and the fast engine step by step."""
from . import compat

compat.install()


def require_lava() -> None:
    """Clear error when lava-nc is missing."""
    try:
        import lava  # noqa: F401
    except ImportError:
        from ..errors import UserError
        raise UserError('lava-nc is not installed: pip install --only-binary=:all: --ignore-requires-python '
                        '"lava-nc==0.10.0" "numpy<2"') from None
