"""Where the shared datasets live (``data_dir``) and the error for a section a dataset does not hold."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def resolve_root(data_dir: str | os.PathLike | None) -> Path:
    """The datasets folder: the argument, else ``stalign.settings.data_dir``, else ``$STALIGN_DATA_DIR``.

    Nothing is read relative to the working directory: without any of the three, a clear error says how to set it.
    """
    from .._settings import DATA_DIR_ENV, settings

    path = Path(data_dir).expanduser() if data_dir is not None else settings.resolved_data_dir()
    if path is None:
        msg = (
            "No datasets folder given: pass `data_dir=`, set `stalign.settings.data_dir`, or set the environment "
            f"variable {DATA_DIR_ENV} to the absolute path of the folder that holds the datasets (e.g. in the project "
            f'folder: export {DATA_DIR_ENV}="$PWD/../shared/data").'
        )
        raise ValueError(msg)
    if not path.is_dir():
        if data_dir is not None:
            where = "`data_dir=`"
        else:
            where = "stalign.settings.data_dir" if settings.data_dir is not None else f"${DATA_DIR_ENV}"
        if path.is_absolute():
            fix = f"Point {where} at an existing folder."
        else:
            fix = (
                f"It is a relative path, read from the current folder {os.getcwd()!r}: set an absolute one (e.g. in "
                f'the project folder: export {DATA_DIR_ENV}="$PWD/../shared/data").'
            )
        msg = f"Datasets folder {str(path)!r} (from {where}) does not exist. {fix}"
        raise FileNotFoundError(msg)
    return path.resolve()


def unknown_sample(kind: str, sample: Any, available: Sequence[str], root: Path) -> ValueError:
    """The error for an unknown section name."""
    avail = ", ".join(available) if available else "none"
    msg = f"Unknown {kind} {sample!r} under data_dir={str(root)!r}; available: {avail}."
    return ValueError(msg)
