"""Global settings: the default device and the folder of the shared datasets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class _Settings:
    """Package-wide defaults (``stalign.settings``), each overridden by the argument of the same name.

    Attributes
    ----------
    device
        Default torch device of :func:`stalign.tl.embed` and training (``None``: CUDA when present, else CPU).
    verbosity
        How much stalign logs (0–4 or ``"error"`` … ``"debug"``), as scanpy's ``settings.verbosity``.
    data_dir
        Folder that holds the shared datasets read by the :mod:`stalign.datasets` loaders (``stalign.datasets.dlpfc`` etc.);
        ``None``: ``$STALIGN_DATA_DIR``. Nothing is read relative to the working directory.
    """

    device: str | None = None
    data_dir: str | os.PathLike | None = None

    @property
    def verbosity(self) -> int:
        """How much stalign logs, as ``scanpy.settings.verbosity``: 0 errors, 1 warnings (default), 2 info, 3 hints, 4 debug.

        Set it to a number or a name (``"info"``); see :func:`stalign.set_verbosity`.
        """
        from ._logging import verbosity

        return verbosity()

    @verbosity.setter
    def verbosity(self, level: int | str) -> None:
        from ._logging import set_verbosity

        set_verbosity(level)

    def resolved_data_dir(self) -> Path | None:
        """``data_dir``, else ``$STALIGN_DATA_DIR``, else ``None``."""
        value = self.data_dir if self.data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
        return None if value is None else Path(value).expanduser()


#: Environment variable naming the datasets folder.
DATA_DIR_ENV = "STALIGN_DATA_DIR"

settings = _Settings()
