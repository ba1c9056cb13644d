"""Helpers shared by the readers: files, images, R data files, spot geometry."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

logger = logging.getLogger(__name__)


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


def require_file(path: Path, *, root: Path | None = None, what: str = "file") -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming it and the data directory."""
    if not Path(path).is_file():
        where = f" (data_dir={str(root)!r})" if root is not None else ""
        msg = f"Missing {what}: {str(path)!r}{where}; check the data directory layout (see SOURCES.md)."
        raise FileNotFoundError(msg)
    return Path(path)


def unknown_sample(kind: str, sample: Any, available: Sequence[str], root: Path) -> ValueError:
    """The error for an unknown section name."""
    avail = ", ".join(available) if available else "none"
    msg = f"Unknown {kind} {sample!r} under data_dir={str(root)!r}; available: {avail}."
    return ValueError(msg)


@contextlib.contextmanager
def _no_pixel_limit():
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our full-resolution H&E scans are legitimately large
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def read_image_array(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into a channels-last array (uint8/uint16/float; converted to uint8 RGB later).

    Palette, CMYK and YCbCr images become RGB; grayscale+alpha keeps the gray channel; 16-bit images stay 16-bit
    (``build_sdata`` rescales them).
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        msg = f"Image file {str(path)!r} not found; pass an existing image path or array."
        raise FileNotFoundError(msg)
    with _no_pixel_limit(), Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            im = im.convert("RGBA" if mode == "PA" or (mode == "P" and "transparency" in im.info) else "RGB")
            mode = im.mode
        if mode == "LA":
            im = im.getchannel(0)
        arr = np.asarray(im)
    if arr.dtype == np.int32:  # PIL mode "I" (often 16-bit data)
        arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr.astype(np.float32)
    return arr


def image_array(image: Any) -> np.ndarray | None:
    """A path or an array → array (``None`` passes through)."""
    if image is None:
        return None
    if isinstance(image, str | os.PathLike):
        return read_image_array(image)
    return np.asarray(image)


def nn_distance(xy: np.ndarray, array_xy: np.ndarray | None = None) -> float:
    """Spot pitch in pixels: median pixel distance from each spot to its nearest neighbour.

    With ``array_xy`` (the array coordinates), the neighbour is chosen on the array grid and its *pixel* distance
    is taken; this avoids the downward bias of a pixel-space minimum over jittered spot detections.
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) < 2:
        msg = "Cannot derive the spot pitch from fewer than 2 spots; pass microns_per_pixel= explicitly."
        raise ValueError(msg)
    if array_xy is not None:
        _, j = cKDTree(np.asarray(array_xy, dtype=np.float64)).query(np.asarray(array_xy, dtype=np.float64), k=2)
        nn = np.linalg.norm(xy - xy[j[:, 1]], axis=1)
    else:
        d, _ = cKDTree(xy).query(xy, k=2)
        nn = d[:, 1]
    nn = nn[nn > 0]
    if nn.size == 0:
        msg = "All spot positions coincide; cannot derive the spot pitch. Pass microns_per_pixel= explicitly."
        raise ValueError(msg)
    return float(np.median(nn))


# --------------------------------------------------------------------------------------------------------- R data


def read_rdata(path: str | os.PathLike) -> dict[str, Any]:
    """Read an ``.rda``/``.RData``/``.rds`` file with the pure-Python ``rdata`` package (S4 → SimpleNamespace)."""
    import rdata

    path = Path(path)
    parsed = rdata.parser.parse_file(path)
    converted = rdata.conversion.convert(parsed)
    if not isinstance(converted, dict):  # an .rds holds one object
        converted = {path.stem: converted}
    return converted


def _r_strings(x: Any) -> list[str] | None:
    if x is None:
        return None
    if hasattr(x, "values") and not isinstance(x, np.ndarray | list | tuple):
        x = x.values
    return [str(v) for v in np.asarray(x, dtype=object).ravel()]


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def dgcmatrix_to_csc(
    obj: Any, *, what: str = "dgCMatrix"
) -> tuple[sparse.csc_matrix, list[str] | None, list[str] | None]:
    """Convert an R ``dgCMatrix`` (as converted by ``rdata``: slots ``i``, ``p``, ``x``, ``Dim``, ``Dimnames``).

    Returns
    -------
    ``(matrix rows × columns, row names, column names)``; names are ``None`` when absent.
    """
    try:
        i = np.asarray(_attr(obj, "i"), dtype=np.int64)
        p = np.asarray(_attr(obj, "p"), dtype=np.int64)
        x = np.asarray(_attr(obj, "x"), dtype=np.float64)
        dim = [int(d) for d in np.asarray(_attr(obj, "Dim")).ravel()]
    except (TypeError, ValueError) as e:
        msg = f"{what}: not a dgCMatrix (needs slots i, p, x, Dim); got {type(obj).__name__}."
        raise ValueError(msg) from e
    if len(dim) != 2 or len(p) != dim[1] + 1 or len(i) != len(x):
        msg = f"{what}: inconsistent dgCMatrix slots (Dim={dim}, len(p)={len(p)}, len(i)={len(i)}, len(x)={len(x)})."
        raise ValueError(msg)
    mat = sparse.csc_matrix((x, i, p), shape=(dim[0], dim[1]))
    dimnames = _attr(obj, "Dimnames")
    rows = cols = None
    if dimnames is not None and len(dimnames) == 2:
        rows, cols = _r_strings(dimnames[0]), _r_strings(dimnames[1])
    return mat, rows, cols


def r_matrix(obj: Any, *, what: str) -> tuple[Any, list[str] | None, list[str] | None]:
    """A genes × spots R matrix (dense, xarray with dimnames, or dgCMatrix) → ``(matrix, rows, cols)``."""
    if hasattr(obj, "coords") and hasattr(obj, "dims") and len(obj.dims) == 2:  # xarray.DataArray
        rows = _r_strings(obj.coords[obj.dims[0]].values) if obj.dims[0] in obj.coords else None
        cols = _r_strings(obj.coords[obj.dims[1]].values) if obj.dims[1] in obj.coords else None
        return np.asarray(obj.values), rows, cols
    if isinstance(obj, pd.DataFrame):
        return obj.to_numpy(), [str(v) for v in obj.index], [str(v) for v in obj.columns]
    if _attr(obj, "i") is not None and _attr(obj, "p") is not None:
        return dgcmatrix_to_csc(obj, what=what)
    if isinstance(obj, np.ndarray) and obj.ndim == 2:
        return obj, None, None
    msg = f"{what}: unsupported matrix type {type(obj).__name__}; expected a dense matrix or a dgCMatrix."
    raise ValueError(msg)


def seurat_counts(obj: Any, *, assay: str = "RNA", what: str = "Seurat object") -> tuple[Any, list[str], list[str]]:
    """Raw counts ``assays[assay]`` of a Seurat object as converted by ``rdata`` → ``(genes × cells, genes, cells)``.

    Supports Seurat v3/v4 ``Assay`` (slot ``counts``) and v5 ``Assay5`` (``layers$counts`` with the names in the
    ``features``/``cells`` LogMaps).
    """
    assays = _attr(obj, "assays")
    if assays is None:
        msg = f"{what}: no 'assays' slot; expected a Seurat object."
        raise ValueError(msg)
    a = _attr(assays, assay)
    if a is None:
        names = list(assays) if isinstance(assays, dict) else []
        msg = f"{what}: no assay {assay!r}; available: {names}."
        raise ValueError(msg)
    counts = _attr(a, "counts")
    if counts is None:
        layers = _attr(a, "layers")
        counts = _attr(layers, "counts") if layers is not None else None
        if counts is None:
            msg = f"{what}: assay {assay!r} has neither a 'counts' slot nor layers$counts."
            raise ValueError(msg)
    mat, genes, cells = r_matrix(counts, what=f"{what} assays${assay} counts")
    if genes is None or cells is None:  # Assay5: names live in LogMaps
        feats, cs = _attr(a, "features"), _attr(a, "cells")
        genes = genes or _logmap_names(feats)
        cells = cells or _logmap_names(cs)
    if genes is None or cells is None:
        msg = f"{what}: the counts matrix has no gene/cell names."
        raise ValueError(msg)
    return mat, genes, cells


def _logmap_names(obj: Any) -> list[str] | None:
    if obj is None:
        return None
    if hasattr(obj, "coords") and hasattr(obj, "dims"):
        return _r_strings(obj.coords[obj.dims[0]].values)
    if isinstance(obj, pd.DataFrame):
        return [str(v) for v in obj.index]
    dn = _attr(obj, "Dimnames") or _attr(obj, "dimnames")
    if dn is not None and len(dn) >= 1:
        return _r_strings(dn[0])
    return None
