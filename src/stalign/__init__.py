"""stalign: ST-Align image–gene foundation model for spatial transcriptomics, scverse-style."""

from __future__ import annotations

from . import cohort, datasets, io, models, pl, pp, tl, train
from ._logging import set_verbosity
from ._settings import settings
from ._utils import package_version

__version__ = package_version()

__all__ = ["cohort", "datasets", "io", "models", "pl", "pp", "settings", "set_verbosity", "tl", "train", "__version__"]
