"""Small shared helpers: device resolution, progress bars, logging writes, data directory."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "STALIGN_DATA_DIR"


def resolve_device(device: Any = None):
    """Resolve a device: explicit value, then ``settings.device``, then CUDA if available, else CPU.

    MPS is never picked silently; a warning says how to opt in.
    """
    import torch

    from ._settings import settings

    if device is None:
        device = settings.device
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            warnings.warn(
                "An Apple MPS device is available but not used; pass device='mps' to use it.", UserWarning, stacklevel=3
            )
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        msg = f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:0' or a torch.device."
        raise ValueError(msg) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"device={device!r} was requested but CUDA is not available here; use device='cpu' or device=None."
        raise ValueError(msg)
    return dev


def track(iterable: Iterable, *, desc: str, total: int | None = None, disable: bool = False, **kwargs):
    """Wrap an iterable in a ``tqdm.auto`` progress bar."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=disable, **kwargs)


def save_data(adata, *, attr: str, key: str, data: Any) -> None:
    """Write ``data`` to ``adata.<attr>[key]`` and log it (squidpy's ``_save_data``)."""
    getattr(adata, attr)[key] = data
    logger.info("Adding `adata.%s[%r]`", attr, key)


def data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Resolve the real-data directory: the argument, else ``$STALIGN_DATA_DIR``; error naming both otherwise."""
    if data_dir is None:
        env = os.environ.get(DATA_DIR_ENV)
        if not env:
            msg = (
                f"No data directory given: pass `data_dir=` or set the environment variable {DATA_DIR_ENV} "
                "to the folder that holds the datasets (e.g. ../shared/data)."
            )
            raise ValueError(msg)
        data_dir = env
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        msg = f"Data directory {str(path)!r} does not exist; pass an existing `data_dir=` or fix ${DATA_DIR_ENV}."
        raise FileNotFoundError(msg)
    return path
