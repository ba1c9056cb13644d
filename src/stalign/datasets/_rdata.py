"""R data files (``.rda``/``.RData``/``.rds``) of the shared datasets: matrices, dgCMatrix and Seurat counts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse


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
