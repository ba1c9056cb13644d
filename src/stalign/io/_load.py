"""One entry point for every source (``load``) and conversion to squidpy-convention AnnData (``to_anndata``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._constants import Key

logger = logging.getLogger(__name__)

#: Longest side of the downsampled image stored as ``"hires"`` by :func:`to_anndata`.
HIRES_MAX_SIDE = 2000


def _loaders() -> dict:
    from ._st import her2st, stahl_mob, stutility_mob
    from ._visium import dlpfc

    return {"dlpfc": dlpfc, "her2st": her2st, "stutility_mob": stutility_mob, "stahl_mob": stahl_mob}


def load(spec: str | os.PathLike, *, data_dir: str | os.PathLike | None = None):
    """Load a section from a short spec or a path.

    Parameters
    ----------
    spec
        ``"<dataset>:<section>"`` for the shared datasets (``"dlpfc:151673"``, ``"her2st:C2"``,
        ``"stutility_mob:MOB1"``, ``"stahl_mob:11"``), a Space Ranger ``outs`` folder, a ``.zarr`` SpatialData store,
        an ``.h5ad`` file (squidpy-convention AnnData), or an H&E image file (``.svs``, ``.tif``, ``.jpg``, ... read by
        :func:`read_image`, which needs the file to record its µm per pixel; no spots until
        :func:`stalign.pp.tile_tissue`).
    data_dir
        Folder that holds the datasets, for dataset specs; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    SpatialData (AnnData for ``.h5ad``; an image file gives a SpatialData with the image only).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.load("stutility_mob:MOB1")  # "<dataset>:<section>", as on the command line
    >>> sdata.tables["table"].n_obs
    379
    >>> sta.io.to_anndata(sdata).write_h5ad("MOB1.h5ad")
    >>> sta.io.load("MOB1.h5ad")  # a path: .h5ad, .zarr or a Space Ranger outs folder
    AnnData object with n_obs × n_vars = 379 × 1000...
    """
    if not isinstance(spec, str | os.PathLike):
        msg = f"spec must be a dataset spec such as 'dlpfc:151673' or a path, got {type(spec).__name__}."
        raise TypeError(msg)
    text = str(spec)
    loaders = _loaders()
    name, sep, section = text.partition(":")
    if sep and name in loaders and not Path(text).exists():
        if not section:
            msg = f"Spec {text!r} has no section; use e.g. '{name}:<section>'."
            raise ValueError(msg)
        return loaders[name](section, data_dir=data_dir)
    path = Path(text).expanduser()
    if not path.exists():
        msg = (
            f"Cannot load {text!r}: not an existing path and not a dataset spec; use one of "
            f"{', '.join(f'{k}:<section>' for k in loaders)}, a Space Ranger outs folder, a .zarr or a .h5ad path."
        )
        raise (ValueError(msg) if sep else FileNotFoundError(msg))
    from .._utils import is_image_path

    if path.is_file() and is_image_path(path):
        from ._image import read_image

        return read_image(path)
    if path.suffix == ".h5ad":
        import anndata as ad

        return ad.read_h5ad(path)
    if path.suffix == ".zarr" or (path / "zmetadata").exists() or (path / "zarr.json").exists():
        import spatialdata as sd

        return sd.read_zarr(path)
    if path.is_dir():
        from ._visium import read_visium

        return read_visium(path)
    msg = (
        f"Cannot load {text!r}: unsupported file type {path.suffix!r}; use a .zarr, a .h5ad, a Space Ranger folder or "
        "an image file (.svs, .ndpi, .tif, .tiff, .jpg, .png)."
    )
    raise ValueError(msg)


def _downsample(arr: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """(c, y, x) → (c, y', x') by an integer block mean so the longer side is at most ``max_side``."""
    h, w = arr.shape[-2:]
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    if f == 1:
        return np.asarray(arr), 1
    hh, ww = (h // f) * f, (w // f) * f
    a = np.asarray(arr[:, :hh, :ww], dtype=np.float32)
    a = a.reshape(a.shape[0], hh // f, f, ww // f, f).mean(axis=(2, 4))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8), f


def to_anndata(sdata: Any, *, table_key: str = Key.table, max_side: int = HIRES_MAX_SIDE):
    """SpatialData (as the readers return) → AnnData in the scanpy/squidpy Visium convention.

    The table is copied; ``uns["spatial"][library]["images"]["hires"]`` holds the finest pyramid level whose longer
    side is at most ``max_side`` pixels (block-averaged from the next finer level when none is that small), with a
    matching ``scalefactors["tissue_hires_scalef"]`` (image pixels per full-resolution pixel).

    Parameters
    ----------
    sdata
        SpatialData with a table and optionally an image.
    table_key
        Table to convert.
    max_side
        Longest side (pixels) of the stored image.

    Returns
    -------
    AnnData with ``obsm["spatial"]`` (full-resolution pixels) and ``uns["spatial"]``.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.dlpfc("151673")
    >>> adata = sta.io.to_anndata(sdata)
    >>> adata.obsm["spatial"].shape
    (3639, 2)
    >>> list(adata.uns["spatial"])
    ['151673']
    >>> import scanpy as sc
    >>> ax = sc.pl.spatial(adata, color="annotation", show=False)  # scanpy and squidpy read it as any Visium AnnData
    """
    from .._section import get_section

    if isinstance(max_side, bool) or not isinstance(max_side, int | np.integer) or max_side < 1:
        msg = f"max_side={max_side!r}; it must be a positive integer number of pixels (e.g. {HIRES_MAX_SIDE})."
        raise ValueError(msg)
    sec = get_section(sdata, table_key=table_key)
    adata = sec.table.copy()
    lib = sec.library_id
    spatial = adata.uns.setdefault(Key.spatial, {})
    entry = dict(spatial.get(lib, {}))
    sf = dict(entry.get("scalefactors", {}))
    sf[Key.microns_per_pixel] = sec.microns_per_pixel
    sf[Key.spot_diameter_fullres] = sec.spot_diameter_fullres
    images = {}
    if sec.images:
        small = [lv for lv in sec.images if max(lv.shape) <= max_side]
        if small:
            lv = min(small, key=lambda v: v.fullres_per_px)
            arr, f = np.asarray(lv.data), 1
        else:
            lv = sec.images[-1]
            arr, f = _downsample(np.asarray(lv.data), max_side)
        images["hires"] = np.moveaxis(np.asarray(arr), 0, -1)
        sf["tissue_hires_scalef"] = 1.0 / (lv.fullres_per_px * f)
    entry["scalefactors"] = sf
    entry["images"] = images
    spatial[lib] = entry
    adata.uns.pop("spatialdata_attrs", None)
    return adata
