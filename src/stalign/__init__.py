"""stalign: ST-Align image–gene foundation model for spatial transcriptomics, scverse-style."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import io, models, pl, pp, tl, train
from ._logging import set_verbosity
from ._settings import settings

try:
    __version__ = version("stalign")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = ["io", "models", "pl", "pp", "settings", "set_verbosity", "tl", "train", "__version__"]
