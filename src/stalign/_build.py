"""Assemble a section into the package's SpatialData shape: shared by every reader and by pp.tile_tissue (core floor)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ._constants import Key
from ._section import _to_uint8_rgb, get_section, write_library_entry

logger = logging.getLogger(__name__)

#: Pyramid levels stop once the longer side is at most this many pixels.
MIN_LEVEL_SIDE = 512
CHUNK = 1024


def image_key(sample: str) -> str:
    """Name of a section's image element."""
    return f"{sample}_image"


def square_name(bin_size_um: int) -> str:
    """Space Ranger HD's name of one bin size (its folder, and stalign's table of those bins): ``square_008um``."""
    return f"square_{int(bin_size_um):03d}um"


def shapes_key(sample: str) -> str:
    """Name of a section's spot-circle element."""
    return f"{sample}_spots"


def validate_counts(counts: Any, *, what: str) -> sparse.csr_matrix:
    """Counts → CSR float32 after checking they are finite and non-negative."""
    X = sparse.csr_matrix(counts) if not sparse.issparse(counts) else counts.tocsr()
    data = X.data
    if data.size and not np.isfinite(data).all():
        msg = f"{what}: the counts contain NaN or infinite values; raw counts must be finite non-negative numbers."
        raise ValueError(msg)
    if data.size and (data < 0).any():
        msg = f"{what}: the counts contain negative values; pass raw (un-normalised, non-negative) counts."
        raise ValueError(msg)
    return X.astype(np.float32)


def check_unique(ids: Sequence[str], *, what: str) -> None:
    """Raise on duplicate spot ids, naming a few."""
    idx = pd.Index(ids)
    if idx.has_duplicates:
        dups = idx[idx.duplicated()].unique()[:5].tolist()
        msg = f"{what}: duplicate spot ids {dups}; each spot must appear once (deduplicate the positions/counts)."
        raise ValueError(msg)


def pyramid_scale_factors(height: int, width: int) -> list[int]:
    """Successive factor-2 levels until the longer side is at most :data:`MIN_LEVEL_SIDE`."""
    factors, side = [], max(height, width)
    while side > MIN_LEVEL_SIDE:
        side //= 2
        factors.append(2)
    return factors


def _block_mean(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Rounded 2×2 block mean of a ``(y, x, c)`` uint8 image, cropped to ``(h, w)`` (exact for factor-2 levels)."""
    v = img[: 2 * h, : 2 * w]
    out = v[0::2, 0::2].astype(np.uint16)
    out += v[1::2, 0::2]
    out += v[0::2, 1::2]
    out += v[1::2, 1::2]
    out += 2
    out //= 4
    return out.astype(np.uint8)


def _materialise_pyramid(tree, level0_yxc: np.ndarray):
    """Replace the lazy levels of a parsed multiscale image by in-memory block means.

    spatialdata builds each level lazily from full resolution, so every crop read from a coarse level would
    recompute the whole chain (seconds per window on a 10k² image). An image the readers decoded is in memory
    anyway; its pyramid costs well under a second to compute once, and then every window read is a slice.
    """
    import dask.array as da

    if not hasattr(tree, "children") or not len(tree.children):
        return tree
    prev = level0_yxc
    for i, name in enumerate(sorted(tree.children, key=lambda n: int(n.removeprefix("scale")))):
        node = tree[name]
        var = next(iter(node.ds.data_vars))
        h, w = (int(v) for v in node.ds[var].shape[-2:])
        level = prev if i == 0 else _block_mean(prev, h, w)
        cyx = np.moveaxis(level, -1, 0)
        new = node.ds[var].copy(data=da.from_array(cyx, chunks=(cyx.shape[0], CHUNK, CHUNK)))
        tree[name] = node.ds.assign({var: new})
        prev = level
    return tree


def extend_pyramid(levels: Sequence[Any], *, min_side: int = MIN_LEVEL_SIDE) -> list:
    """``levels`` ``(c, y, x)`` uint8 (finest first) plus lazy factor-2 levels below the last one, down to ``min_side``.

    Each added level is a rounded 2×2 block mean (:func:`_block_mean`'s arithmetic) of the one above it, computed
    on demand chunk by chunk as a dask array: never the whole image at once. A file without a pyramid thus gets one
    lazily, and a file whose coarsest level is still large gets the missing levels.
    """
    import dask.array as da

    levels = list(levels)
    while max(levels[-1].shape[-2:]) > min_side:
        prev = levels[-1]
        if not isinstance(prev, da.Array):
            prev = da.from_array(np.asarray(prev), chunks=(prev.shape[0], CHUNK, CHUNK))
        h, w = (int(s) // 2 for s in prev.shape[-2:])
        even = prev[:, : 2 * h, : 2 * w]
        even = even.rechunk({1: _even_chunks(even.chunks[1]), 2: _even_chunks(even.chunks[2])})
        total = da.coarsen(np.sum, even.astype(np.uint16), {1: 2, 2: 2}, dtype=np.uint16)
        nxt = ((total + 2) // 4).astype(np.uint8)
        if max(nxt.chunksize[1:]) < CHUNK // 2:  # keep chunks (and the task graph) from shrinking with the level
            nxt = nxt.rechunk((nxt.shape[0], CHUNK // 2, CHUNK // 2))
        levels.append(nxt)
    return levels


def _even_chunks(chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk sizes along one axis moved so that every chunk is even (``da.coarsen`` by 2 needs it)."""
    out, carry = [], 0
    for c in chunks:
        c += carry
        carry = c % 2
        if c - carry:
            out.append(c - carry)
    if carry:  # only when the total is odd, which callers avoid by trimming
        out.append(carry)
    return tuple(out)


def multiscale_image(levels: Sequence[Any], *, image_scalef: float = 1.0):
    """A multiscale image element from levels ``(c, y, x)`` uint8 RGB, finest first (numpy or dask; kept lazy).

    Every level maps to full-resolution pixels through ``"global"``: level 0 by ``1 / image_scalef`` and each coarser
    level by its size ratio to level 0 (spatialdata derives those from the shapes), so pyramids whose levels are not
    exact factors of two (SVS: 4×, with rounding) keep their true scale.
    """
    import dask.array as da
    import xarray as xr
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity, Scale, set_transformation

    h0, w0 = (int(s) for s in levels[0].shape[-2:])
    tree = {}
    for i, lv in enumerate(levels):
        arr = lv if isinstance(lv, da.Array) else da.from_array(np.asarray(lv), chunks=(lv.shape[0], CHUNK, CHUNK))
        h, w = (int(s) for s in arr.shape[-2:])
        coords = {"c": ["r", "g", "b"], "y": (np.arange(h) + 0.5) * h0 / h, "x": (np.arange(w) + 0.5) * w0 / w}
        tree[f"scale{i}"] = xr.Dataset({"image": xr.DataArray(arr, dims=("c", "y", "x"), coords=coords)})
    tree = xr.DataTree.from_dict(tree)
    t = Identity() if image_scalef == 1.0 else Scale([1 / image_scalef, 1 / image_scalef], axes=("x", "y"))
    set_transformation(tree, {"global": t}, set_all=True)
    Image2DModel().validate(tree)
    return tree


def build_image(image: np.ndarray, *, image_scalef: float = 1.0, what: str = "image"):
    """An in-memory ``(h, w[, c])`` image → multiscale element with its factor-2 pyramid computed once in memory."""
    import dask.array as da
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity, Scale

    arr = _to_uint8_rgb(np.asarray(image), name=what)
    h, w = arr.shape[:2]
    data = da.from_array(np.moveaxis(arr, -1, 0), chunks=(3, CHUNK, CHUNK))
    t = Identity() if image_scalef == 1.0 else Scale([1 / image_scalef, 1 / image_scalef], axes=("x", "y"))
    factors = pyramid_scale_factors(h, w)
    parsed = Image2DModel.parse(
        data,
        dims=("c", "y", "x"),
        scale_factors=factors or None,
        transformations={"global": t},
        c_coords=["r", "g", "b"],
        chunks=(3, CHUNK, CHUNK),
    )
    return _materialise_pyramid(parsed, arr)


def spot_elements(
    *,
    sample: str,
    coords_fullres: np.ndarray,
    obs_names: Sequence[str],
    microns_per_pixel: float,
    spot_diameter_fullres: float,
    counts: Any = None,
    var_names: Sequence[str] | None = None,
    var: pd.DataFrame | None = None,
    obs: pd.DataFrame | None = None,
    technology: str = "visium",
    region: str | None = None,
    scalefactors: dict | None = None,
    what: str | None = None,
):
    """The spot circles and the table annotating them, in the package's conventions.

    Parameters
    ----------
    sample
        Section name; becomes ``obs["sample"]`` and the library id.
    coords_fullres
        ``(n, 2)`` spot centres ``(x, y)`` in full-resolution pixels.
    obs_names
        Spot ids, unique.
    microns_per_pixel
        µm per full-resolution pixel.
    spot_diameter_fullres
        Spot diameter in full-resolution pixels.
    counts
        ``(n, g)`` raw counts; ``None`` for a table with 0 genes (image + positions only).
    var_names
        Gene symbols (``g``).
    var
        Extra per-gene columns (e.g. ``gene_ids``), indexed like ``var_names``.
    obs
        Extra per-spot columns (labels, array coordinates), indexed by ``obs_names``.
    technology
        ``"visium"`` or ``"st"``; recorded in ``uns``.
    region
        The circles' element name (default :func:`shapes_key`).
    scalefactors
        Extra scale factors recorded next to ``microns_per_pixel``.
    what
        Name of the section in messages.

    Returns
    -------
    ``(region, circles, table)``: the shapes element name, the circles (radius in full-resolution pixels, in
    ``"global"``) and the parsed table (``X`` with 0 columns when ``counts`` is None).
    """
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    what = what or f"section {sample!r}"
    obs_names = pd.Index([str(o) for o in obs_names])
    check_unique(obs_names, what=what)
    coords = np.asarray(coords_fullres, dtype=np.float64)
    if coords.shape != (len(obs_names), 2):
        msg = f"{what}: {coords.shape[0]} positions for {len(obs_names)} spots; positions must be (n_spots, 2)."
        raise ValueError(msg)
    if not np.isfinite(coords).all():
        msg = f"{what}: some spot positions are NaN or infinite; fix or drop those rows of the positions file."
        raise ValueError(msg)
    for name, val in (("microns_per_pixel", microns_per_pixel), ("spot_diameter_fullres", spot_diameter_fullres)):
        if val is None or not np.isfinite(val) or val <= 0:
            msg = f"{what}: {name} is {val!r}; it must be a positive number (check the scale factors file)."
            raise ValueError(msg)

    if counts is None:
        X = sparse.csr_matrix((len(obs_names), 0), dtype=np.float32)
        var_df = pd.DataFrame(index=pd.Index([], dtype=str))
    else:
        X = validate_counts(counts, what=what)
        if X.shape[0] != len(obs_names):
            msg = f"{what}: counts have {X.shape[0]} spots but positions have {len(obs_names)}."
            raise ValueError(msg)
        var_df = var.copy() if var is not None else pd.DataFrame(index=pd.Index([str(v) for v in var_names]))
        var_df.index = pd.Index([str(v) for v in var_names]) if var_names is not None else var_df.index.astype(str)
    obs_df = obs.copy() if obs is not None else pd.DataFrame(index=obs_names)
    obs_df.index = obs_names
    obs_df[Key.sample] = pd.Categorical([sample] * len(obs_names))
    region = region or shapes_key(sample)
    obs_df["region"] = pd.Categorical([region] * len(obs_names))
    obs_df["spot_id"] = np.arange(len(obs_names))

    adata = AnnData(X=X, obs=obs_df, var=var_df)
    if adata.var_names.has_duplicates:
        adata.var_names_make_unique()
    adata.obsm[Key.spatial] = coords
    sf = {
        Key.microns_per_pixel: float(microns_per_pixel),
        Key.spot_diameter_fullres: float(spot_diameter_fullres),
        **(scalefactors or {}),
    }
    adata.uns[Key.spatial] = {sample: {"scalefactors": sf, "images": {}, "metadata": {"technology": technology}}}
    circles = ShapesModel.parse(
        coords,
        geometry=0,
        radius=np.full(len(coords), spot_diameter_fullres / 2.0),
        index=np.arange(len(obs_names)),
        transformations={"global": Identity()},
    )
    table = TableModel.parse(adata, region=region, region_key="region", instance_key="spot_id")
    return region, circles, table


def build_sdata(
    *,
    sample: str,
    image: np.ndarray | None = None,
    image_scalef: float = 1.0,
    what: str | None = None,
    **spot: Any,
):
    """Build a :class:`~spatialdata.SpatialData` with one table, one multiscale image and spot circles.

    Parameters
    ----------
    sample
        Section name; becomes ``obs["sample"]``, the library id and the element-name prefix.
    image
        ``(h, w[, c])`` H&E image; converted to uint8 RGB.
    image_scalef
        Image pixels per full-resolution pixel (1 for a full-resolution image, Space Ranger's ``tissue_*_scalef``).
    what
        Name of the section in messages.
    **spot
        The spots and their table, as :func:`spot_elements` takes them (``coords_fullres``, ``obs_names``,
        ``microns_per_pixel``, ``spot_diameter_fullres``, ``counts``, ...).
    """
    from spatialdata import SpatialData

    what = what or f"section {sample!r}"
    if image_scalef is None or not np.isfinite(image_scalef) or image_scalef <= 0:
        msg = f"{what}: image scale factor is {image_scalef!r}; it must be a positive number (check the scale factors file)."
        raise ValueError(msg)
    region, circles, table = spot_elements(
        sample=sample,
        scalefactors=None if image is None else {"image_scalef": float(image_scalef)},
        what=what,
        **spot,
    )
    images = {}
    if image is not None:
        arr = _to_uint8_rgb(np.asarray(image), name=f"{what}: image")
        h, w = arr.shape[:2]
        xy_img = np.asarray(table.obsm[Key.spatial]) * image_scalef
        # A spot whose centre falls outside the image cannot be cropped: refuse clearly.
        off = (xy_img[:, 0] < 0) | (xy_img[:, 1] < 0) | (xy_img[:, 0] >= w) | (xy_img[:, 1] >= h)
        if off.any():
            msg = (
                f"{what}: {int(off.sum())} of {len(off)} spot centres lie outside the {w}x{h} image "
                f"(e.g. {table.obs_names[np.flatnonzero(off)[0]]!r}); check the image scale factor or drop those spots."
            )
            raise ValueError(msg)
        images[image_key(sample)] = build_image(arr, image_scalef=image_scalef, what=f"{what}: image")
    sdata = SpatialData(images=images, shapes={region: circles}, tables={Key.table: table})
    if images:
        write_library_entry(table, get_section(sdata))
    return sdata
