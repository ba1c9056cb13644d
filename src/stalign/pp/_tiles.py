"""``pp.tile_tissue``: pseudo-spots on a hexagonal grid in µm over the tissue of an H&E slide that has no spots.

Tissue detection
----------------
On one coarse level (about :data:`MASK_PX_PER_SPOT` pixels across a spot, never the full resolution), the HSV
saturation ``(max - min) / max`` of each pixel is smoothed (Gaussian, σ = 1 pixel) and thresholded with Otsu's
method, bounded to [:data:`MIN_SATURATION`, :data:`MAX_SATURATION`] so that an image with no background (all tissue)
or no tissue (blank glass with JPEG noise) is not split into two arbitrary halves. Glass is grey or white (low
saturation), eosin and haematoxylin are not. Connected pieces smaller than one spot disc are removed (dust, specks)
and holes smaller than one spot disc are filled (lumina, cracks), the usual whole-slide recipe (e.g. CLAM).

Tiles
-----
Centres lie on a hexagonal grid of pitch ``spacing_um`` anchored at the image origin: row ``r`` at
``y = (r + 1/2) · spacing · √3/2``, column ``c`` at ``x = (c + 1/2 + (r mod 2)/2) · spacing``. A tile is kept when
the fraction of its spot disc (diameter ``spot_um``) covered by tissue, the mask convolved with the disc, is at
least ``min_tissue``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from .._constants import SPOT_UM, Key
from .._section import ImageLevel, _levels_from_sdata, get_section, write_library_entry
from .._utils import shallow_copy
from .._validators import check_key, check_number

logger = logging.getLogger(__name__)

#: Tissue-mask resolution: pixels across one spot diameter.
MASK_PX_PER_SPOT = 8
#: Bounds of the Otsu threshold on saturation (0–1).
MIN_SATURATION = 0.05
MAX_SATURATION = 0.25
#: ``uns`` key of the tiling parameters.
TILES_KEY = Key.tiles


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` in [0, 1]: the cut maximising the between-class variance of a histogram."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _drop_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    """``mask`` without its connected pieces (8-connectivity) of fewer than ``min_px`` pixels."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return mask
    small = np.bincount(lab.ravel()) < min_px
    small[0] = False
    return mask & ~small[lab]


def _mask_level(levels: list[ImageLevel], mask_fpp: float) -> tuple[ImageLevel, int]:
    """The level to read the mask from and the integer block factor that brings it to ``mask_fpp``."""
    ok = [lv for lv in levels if lv.fullres_per_px <= mask_fpp * (1 + 1e-6)]
    lv = max(ok, key=lambda v: v.fullres_per_px) if ok else levels[0]
    return lv, max(1, int(mask_fpp / lv.fullres_per_px + 1e-6))


def tissue_mask(
    levels: list[ImageLevel], *, microns_per_pixel: float, spot_um: float = SPOT_UM, threshold: float | None = None
):
    """Tissue mask of an image on a coarse level (see the module docstring for the method).

    Parameters
    ----------
    levels
        Image levels from :func:`stalign._section.get_section` (finest first).
    microns_per_pixel
        µm per full-resolution pixel.
    spot_um
        Spot diameter in µm: sets the mask resolution and the size of removed specks and filled holes.
    threshold
        Saturation threshold (0–1); ``None`` for Otsu's, bounded to [:data:`MIN_SATURATION`, :data:`MAX_SATURATION`].

    Returns
    -------
    ``(mask, fullres_per_px, threshold)``: a bool ``(h, w)`` array, full-resolution pixels per mask pixel, and the
    saturation threshold used.
    """
    import dask.array as da
    from scipy import ndimage

    lv, f = _mask_level(levels, spot_um / MASK_PX_PER_SPOT / microns_per_pixel)
    arr = lv.data if isinstance(lv.data, da.Array) else da.from_array(np.asarray(lv.data))
    arr = arr[:3].astype(np.float32)
    if f > 1:  # block mean, computed chunk by chunk: the level is never held whole
        h, w = (int(s) // f * f for s in arr.shape[-2:])
        arr = da.coarsen(np.mean, arr[:, :h, :w], {1: f, 2: f}, trim_excess=True)
    rgb = np.asarray(arr.compute(scheduler="synchronous"), dtype=np.float32)
    mx, mn = rgb.max(axis=0), rgb.min(axis=0)
    sat = np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)
    sat = ndimage.gaussian_filter(sat, sigma=1.0)
    if threshold is None:
        threshold = float(np.clip(_otsu(sat), MIN_SATURATION, MAX_SATURATION))
    mask = sat > threshold
    fpp = lv.fullres_per_px * f
    disc_px = math.pi * (0.5 * spot_um / (microns_per_pixel * fpp)) ** 2
    mask = _drop_small(mask, disc_px)  # specks
    mask = ~_drop_small(~mask, disc_px)  # small holes
    return mask, float(fpp), threshold


def _disc_coverage(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Fraction of the disc of ``radius_px`` (mask pixels) around each pixel that is tissue (outside = glass)."""
    from scipy.signal import fftconvolve

    r = max(radius_px, 0.5)
    k = int(math.ceil(r))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    disc = (xx**2 + yy**2 <= r * r).astype(np.float32)
    cov = fftconvolve(mask.astype(np.float32), disc / disc.sum(), mode="same")
    return np.clip(cov, 0.0, 1.0)


def hex_grid(x_range_um: tuple[float, float], y_range_um: tuple[float, float], spacing_um: float):
    """Hexagonal grid points (µm) anchored at the origin that fall in a box.

    Parameters
    ----------
    x_range_um, y_range_um
        ``(min, max)`` of the box in µm.
    spacing_um
        Distance between neighbouring points in µm.

    Returns
    -------
    ``(xy_um, row, col)``: ``(n, 2)`` float64 centres and the int64 grid row and column of each.
    """
    dy = spacing_um * math.sqrt(3) / 2
    r0 = max(0, math.floor(y_range_um[0] / dy - 0.5))
    r1 = math.ceil(y_range_um[1] / dy - 0.5)
    c0 = max(0, math.floor(x_range_um[0] / spacing_um - 1))
    c1 = math.ceil(x_range_um[1] / spacing_um)
    rows, cols = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    x = (cols + 0.5 + 0.5 * (rows % 2)) * spacing_um
    y = (rows + 0.5) * dy
    inside = (x >= x_range_um[0]) & (x <= x_range_um[1]) & (y >= y_range_um[0]) & (y <= y_range_um[1])
    return np.column_stack([x, y])[inside], rows[inside].astype(np.int64), cols[inside].astype(np.int64)


def _pick_image(sdata, image_key: str | None) -> str:
    images = list(sdata.images.keys())
    if image_key is not None:
        if image_key not in sdata.images:
            msg = f"image_key {image_key!r} not in sdata.images; available: {', '.join(images) or 'none'}."
            raise KeyError(msg)
        return image_key
    if not images:
        msg = "The SpatialData has no image; read the slide with stalign.io.read_image(path) first."
        raise ValueError(msg)
    recorded = ((sdata.attrs or {}).get(Key.uns) or {}).get("image_key")
    if recorded in sdata.images:
        return recorded
    if len(images) > 1:
        msg = f"The SpatialData holds {len(images)} images ({', '.join(images)}); pass image_key= to choose one."
        raise ValueError(msg)
    return images[0]


def _scale_and_name(sdata, key: str) -> tuple[float, str]:
    """µm per full-resolution pixel and the section name: from :func:`stalign.io.read_image`, else a table's."""
    rec = (sdata.attrs or {}).get(Key.uns) or {}
    mpp = rec.get(Key.microns_per_pixel)
    if mpp is not None and rec.get("image_key", key) == key:
        if not (isinstance(mpp, int | float) and np.isfinite(mpp) and mpp > 0):
            msg = f"sdata.attrs['stalign']['microns_per_pixel'] is {mpp!r}; it must be a positive number."
            raise ValueError(msg)
        return float(mpp), str(rec.get("name") or key.removesuffix("_image"))
    for table_key in sdata.tables:
        try:
            sec = get_section(sdata, table_key=table_key, image_key=key)
        except (KeyError, ValueError):
            continue
        return sec.microns_per_pixel, sec.library_id
    msg = (
        f"Image {key!r} has no recorded µm per pixel; read the slide with stalign.io.read_image(path, "
        "microns_per_pixel=...) (the µm per full-resolution pixel), which records it in sdata.attrs['stalign']."
    )
    raise ValueError(msg)


def tile_tissue(
    sdata: Any,
    *,
    spacing_um: float = 100.0,
    image_key: str | None = None,
    min_tissue: float = 0.5,
    table_key: str = Key.table,
    spot_um: float = SPOT_UM,
    tissue_threshold: float | None = None,
    inplace: bool = True,
):
    """Lay pseudo-spots on a hexagonal grid in µm over the tissue of an H&E image, and annotate them with a table.

    The tissue is found on a coarse pyramid level (Otsu on saturation, small specks removed and small holes filled;
    see :mod:`stalign.pp._tiles`), never at full resolution. After this, :func:`stalign.tl.embed` (image-only
    embedding ``X_stalign_image``), :func:`stalign.tl.domains` and :func:`stalign.tl.predict_expression` work on
    the tiles as on the spots of a Visium section.

    Parameters
    ----------
    sdata
        SpatialData with an image, from :func:`stalign.io.read_image` (or any stalign reader, with another
        ``table_key``).
    spacing_um
        Distance between neighbouring tile centres in µm. Below ``spot_um`` the tiles overlap: a map finer than the
        assay's own spot grid.
    image_key
        Image to tile; default the one :func:`stalign.io.read_image` read, or the only one.
    min_tissue
        Keep a tile when at least this fraction (0–1) of its spot disc is tissue.
    table_key
        Name of the new table; an existing table of that name is refused (choose another name).
    spot_um
        Diameter of each tile's spot disc in µm (the model's spot crop, 100 µm for ``stalign-base``).
    tissue_threshold
        Saturation (0–1) above which a pixel is tissue; ``None`` chooses it by Otsu's method. Lower it when
        :func:`stalign.pl.tissue_mask` shows pale tissue left out (tinted glass raises Otsu's threshold).
    inplace
        Add the elements to ``sdata``; ``False`` returns a new SpatialData sharing ``sdata``'s elements.

    Returns
    -------
    SpatialData | None
        ``None`` (or the new SpatialData with ``inplace=False``); adds

        - ``tables[table_key]``: one row per tile, no genes (``X`` with 0 columns), ``obsm["spatial"]`` (centres in
          full-resolution pixels), ``obs["sample"]``, ``obs["tile_row"]``, ``obs["tile_col"]``,
          ``obs["tissue_fraction"]``, ``uns["spatial"][name]`` (``scalefactors`` with ``microns_per_pixel`` and
          ``spot_diameter_fullres``, and small ``"lowres"``/``"hires"`` ``images``: scanpy and squidpy plot the tiles as
          they are) and ``uns["stalign_tiles"]["params"]``;
        - ``shapes["<name>_tiles"]`` (``"<name>_<table_key>"`` for another table key): circles of diameter ``spot_um``;
        - ``labels["<shapes key>_tissue"]``: the tissue mask (1 = tissue) on its coarse level.

    Examples
    --------
    >>> import os
    >>> import stalign as sta
    >>> # an H&E JPG, 6.2 mm wide
    >>> folder = "stahl_mob_splotch/splotch/tutorials/olfactory_bulb_st/images"
    >>> sdata = sta.io.read_image(
    ...     os.path.join(os.environ["STALIGN_DATA_DIR"], folder, "01.jpg"),
    ...     microns_per_pixel=6200 / 2318,
    ... )
    >>> # every 200 µm here; 100 µm (the default) for a full map
    >>> sta.pp.tile_tissue(sdata, spacing_um=200)
    >>> tiles = sdata.tables["table"]
    >>> tiles.n_vars, tiles.n_obs > 200, sorted(sdata.shapes), sorted(sdata.labels)
    (0, True, ['01_tiles'], ['01_tiles_tissue'])
    >>> sta.tl.embed(sdata, show_progress_bar=False)  # image-only embedding of every tile
    >>> sta.tl.domains(sdata, n_domains=5, use_rep="X_stalign_image")
    """
    from anndata import AnnData
    from spatialdata import SpatialData
    from spatialdata.models import Labels2DModel
    from spatialdata.transformations import Scale

    from .._build import spot_elements

    if not isinstance(sdata, SpatialData):
        msg = (
            f"tile_tissue needs a SpatialData with an image, got {type(sdata).__name__}; read the slide with "
            "stalign.io.read_image(path)."
        )
        raise TypeError(msg)
    spacing_um = check_number(spacing_um, "spacing_um", hint=" (µm between pseudo-spots, e.g. 100)")
    min_tissue = check_number(min_tissue, "min_tissue", strict=False, maximum=1.0, maximum_inclusive=True,
                              hint=" (the tissue fraction of a spot disc)")  # fmt: skip
    spot_um = check_number(spot_um, "spot_um", hint=" (the spot diameter in µm, e.g. 100)")
    if tissue_threshold is not None:
        tissue_threshold = check_number(tissue_threshold, "tissue_threshold", maximum=1.0, maximum_inclusive=True)
    check_key(table_key, name="table_key")
    if table_key in sdata.tables:
        msg = (
            f"sdata already has a table {table_key!r}; tile_tissue does not overwrite it. Pass another table_key "
            f"(e.g. table_key='tiles') to add the tiles beside it."
        )
        raise ValueError(msg)
    key = _pick_image(sdata, image_key)
    mpp, name = _scale_and_name(sdata, key)
    region = f"{name}_tiles" if table_key == Key.table else f"{name}_{table_key}"
    labels_key = f"{region}_tissue"
    for kind, k in (("shapes", region), ("labels", labels_key)):
        if k in getattr(sdata, kind):
            msg = f"sdata.{kind} already has {k!r}; pass another table_key so that the tiles get their own elements."
            raise ValueError(msg)

    levels = _levels_from_sdata(sdata, key, next(iter(sdata.tables.values()), AnnData()))
    mask, mask_fpp, threshold = tissue_mask(levels, microns_per_pixel=mpp, spot_um=spot_um, threshold=tissue_threshold)
    if not mask.any():
        msg = (
            f"No tissue found in image {key!r} (saturation threshold {threshold:.3f}): the image looks blank. Check "
            "that it is an H&E slide and not its label or an empty scan (or lower tissue_threshold=)."
        )
        raise ValueError(msg)
    h0, w0 = levels[0].shape
    width_um, height_um = w0 * levels[0].fullres_per_px * mpp, h0 * levels[0].fullres_per_px * mpp
    ys, xs = np.nonzero(mask)
    um_per_mask_px = mask_fpp * mpp
    pad = 0.5 * spot_um
    x_box = (max(0.0, xs.min() * um_per_mask_px - pad), min(width_um, (xs.max() + 1) * um_per_mask_px + pad))
    y_box = (max(0.0, ys.min() * um_per_mask_px - pad), min(height_um, (ys.max() + 1) * um_per_mask_px + pad))
    xy_um, rows, cols = hex_grid(x_box, y_box, spacing_um)
    on_image = (xy_um[:, 0] < width_um) & (xy_um[:, 1] < height_um)  # a centre must lie on a pixel
    xy_um, rows, cols = xy_um[on_image], rows[on_image], cols[on_image]
    cov_map = _disc_coverage(mask, 0.5 * spot_um / um_per_mask_px)
    ij = np.floor(xy_um / um_per_mask_px).astype(np.int64)
    ij[:, 0] = np.clip(ij[:, 0], 0, mask.shape[1] - 1)
    ij[:, 1] = np.clip(ij[:, 1], 0, mask.shape[0] - 1)
    cov = cov_map[ij[:, 1], ij[:, 0]]
    keep = (cov >= min_tissue) & (cov > 0)
    if not keep.any():
        msg = (
            f"No tile at spacing_um={spacing_um:g} has at least min_tissue={min_tissue:g} of its {spot_um:g} µm disc "
            f"on tissue ({int(mask.sum())} tissue pixels found); lower min_tissue or spacing_um."
        )
        raise ValueError(msg)
    xy_full = xy_um[keep] / mpp
    ids = [f"tile_{r}_{c}" for r, c in zip(rows[keep], cols[keep], strict=True)]
    obs = pd.DataFrame(
        {"tile_row": rows[keep], "tile_col": cols[keep], "tissue_fraction": cov[keep].astype(np.float32)},
        index=pd.Index(ids),
    )
    region, circles, table = spot_elements(
        sample=name,
        coords_fullres=xy_full,
        obs_names=ids,
        microns_per_pixel=mpp,
        spot_diameter_fullres=spot_um / mpp,
        obs=obs,
        technology="tiles",
        region=region,
        what=f"tiles of {name!r}",
    )
    table.uns[TILES_KEY] = {
        "params": {
            "spacing_um": spacing_um,
            "spot_um": spot_um,
            "min_tissue": min_tissue,
            "image_key": key,
            "method": "otsu_saturation" if tissue_threshold is None else "saturation_threshold",
            "saturation_threshold": threshold,
            "mask_microns_per_pixel": float(um_per_mask_px),
            "tissue_fraction_of_image": float(mask.mean()),
            "n_tiles": len(ids),
        }
    }
    mask_el = Labels2DModel.parse(
        mask.astype(np.uint8), dims=("y", "x"), transformations={"global": Scale([mask_fpp, mask_fpp], axes=("x", "y"))}
    )
    target = sdata if inplace else shallow_copy(sdata)
    target.labels[labels_key] = mask_el
    target.shapes[region] = circles
    target.tables[table_key] = table
    write_library_entry(table, get_section(target, table_key=table_key, image_key=key))
    logger.info("tile_tissue: %d tiles at %g µm over %.1f %% of %r", len(ids), spacing_um, 100 * mask.mean(), key)
    return None if inplace else target
