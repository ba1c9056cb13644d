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
#: Fallback when neither ``data_dir=`` nor ``$STALIGN_DATA_DIR`` is given (relative to the working directory).
DEFAULT_DATA_DIR = "../shared/data"


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
    """Resolve the real-data directory: the argument, else ``$STALIGN_DATA_DIR``, else ``../shared/data``."""
    if data_dir is None:
        env = os.environ.get(DATA_DIR_ENV)
        if env:
            data_dir = env
        elif Path(DEFAULT_DATA_DIR).is_dir():
            data_dir = DEFAULT_DATA_DIR
        else:
            msg = (
                f"No data directory given: pass `data_dir=` or set the environment variable {DATA_DIR_ENV} "
                f"to the folder that holds the datasets (the fallback {DEFAULT_DATA_DIR!r} does not exist here)."
            )
            raise ValueError(msg)
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        msg = f"Data directory {str(path)!r} does not exist; pass an existing `data_dir=` or fix ${DATA_DIR_ENV}."
        raise FileNotFoundError(msg)
    return path


def get_table(data: Any, *, table_key: str = "table"):
    """The AnnData that results are written to: ``data`` itself, or ``data.tables[table_key]``."""
    from anndata import AnnData

    if isinstance(data, AnnData):
        return data
    tables = getattr(data, "tables", None)
    if tables is None:
        msg = f"Expected a SpatialData or an AnnData, got {type(data).__name__}."
        raise TypeError(msg)
    if table_key not in tables:
        msg = f"table_key {table_key!r} not in sdata.tables; available: {', '.join(tables.keys()) or 'none'}."
        raise KeyError(msg)
    return tables[table_key]


def copy_data(data: Any, *, table_key: str = "table"):
    """A copy to write results into: AnnData copies; SpatialData shares its (read-only) elements, copies the table."""
    from anndata import AnnData

    if isinstance(data, AnnData):
        return data.copy()
    get_table(data, table_key=table_key)  # TypeError / KeyError naming the problem
    from spatialdata import SpatialData

    tables = {k: (v.copy() if k == table_key else v) for k, v in data.tables.items()}
    return SpatialData(
        images=dict(data.images),
        labels=dict(data.labels),
        points=dict(data.points),
        shapes=dict(data.shapes),
        tables=tables,
    )


def uns_key(key_added: str) -> str:
    """``uns`` key for an ``obsm`` key: ``X_stalign`` → ``stalign`` (scanpy's ``X_<name>`` pattern)."""
    return key_added[2:] if key_added.startswith("X_") else key_added


def check_key(key_added: Any, *, name: str = "key_added") -> str:
    """``key_added`` if it is a non-empty string (checked before any work is done), else a clear error."""
    if not isinstance(key_added, str) or not key_added:
        msg = (
            f"{name}={key_added!r}; it must be a non-empty string (the obsm/uns key the result is stored under), "
            f"e.g. {name}='my_result', got {key_added!r}."
        )
        raise TypeError(msg) if not isinstance(key_added, str) else ValueError(msg)
    return key_added
