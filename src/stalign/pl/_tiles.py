"""QC of :func:`stalign.pp.tile_tissue`: the detected tissue and the tiles over the H&E."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .._constants import Key
from .._docs import inject
from .._section import get_section
from ._spatial import _background, _finish

logger = logging.getLogger(__name__)


@inject
def tissue_mask(
    sdata: Any,
    *,
    table_key: str = Key.table,
    tiles: bool = True,
    color: str = "#00c853",
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """The tissue mask that :func:`stalign.pp.tile_tissue` found, outlined over the H&E, with the tile centres.

    Parameters
    ----------
    sdata
        SpatialData after :func:`stalign.pp.tile_tissue`.
    table_key
        The tiles' table.
    tiles
        Draw the tile centres.
    color
        Colour of the mask outline and shading.
    title
        Axes title (default: number of tiles, spacing and threshold).
    {plot_params}

    Returns
    -------
    {plot_returns}

    Examples
    --------
    >>> import os
    >>> import stalign as sta
    >>> png = os.path.join(
    ...     os.environ["STALIGN_DATA_DIR"],
    ...     "dlpfc_humanpilot",
    ...     "10X",
    ...     "151673",
    ...     "tissue_lowres_image.png",
    ... )
    >>> # Visium lowres: ~16 µm/px
    >>> sdata = sta.io.read_image(png, microns_per_pixel=16.09, name="151673")
    >>> sta.pp.tile_tissue(sdata, spacing_um=100)
    >>> ax = sta.pl.tissue_mask(sdata)
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from spatialdata.transformations import get_transformation

    from .._constants import Key

    TILES_KEY = Key.tiles

    table = sdata.tables[table_key] if table_key in getattr(sdata, "tables", {}) else None
    if table is None or TILES_KEY not in table.uns:
        msg = f"Table {table_key!r} was not made by stalign.pp.tile_tissue; run it first (or pass its table_key)."
        raise KeyError(msg)
    params = table.uns[TILES_KEY]["params"]
    region = (table.uns.get("spatialdata_attrs") or {}).get("region")
    mask_key = f"{region}_tissue"
    if mask_key not in sdata.labels:
        msg = f"The tissue mask {mask_key!r} of table {table_key!r} is missing from sdata.labels."
        raise KeyError(msg)
    elem = sdata.labels[mask_key]
    mask = np.asarray(elem.data)
    mask_fpp = float(get_transformation(elem, "global").to_affine_matrix(("x", "y"), ("x", "y"))[0, 0])
    sec = get_section(sdata, table_key=table_key, image_key=params.get("image_key"))
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize or (6, 6))
    else:
        fig = ax.figure
    background, fpp = _background(sec)
    if background is not None:
        ax.imshow(background, origin="upper")
    else:
        fpp = mask_fpp
    s = mask_fpp / fpp
    xs, ys = (np.arange(mask.shape[1]) + 0.5) * s, (np.arange(mask.shape[0]) + 0.5) * s
    extent = (0, mask.shape[1] * s, mask.shape[0] * s, 0)
    ax.imshow(np.ma.masked_where(mask == 0, mask), cmap=ListedColormap([color]), alpha=0.2, extent=extent,
              interpolation="nearest")  # fmt: skip
    ax.contour(xs, ys, mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.0)
    if tiles:
        xy = sec.coords / fpp
        ax.scatter(xy[:, 0], xy[:, 1], s=2, c="k", linewidths=0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    default = (
        f"{table.n_obs} tiles at {params['spacing_um']:g} µm; tissue {100 * params['tissue_fraction_of_image']:.0f} %"
        f" (saturation > {params['saturation_threshold']:.2f})"
    )
    ax.set_title(title if title is not None else default, fontsize=9)
    return _finish(fig, ax, show=show, return_fig=return_fig)
