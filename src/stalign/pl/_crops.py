"""Crop gallery for quality control."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._constants import NICHE_UM, SPOT_UM, Key
from .._section import get_section
from .._validators import renamed_arguments

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)


@renamed_arguments(seed="random_state")
def crops(
    data: AnnData | SpatialData,
    *,
    n: int = 16,
    size_um: float | None = None,
    niche_um: float = NICHE_UM,
    which: Literal["spot", "niche", "both"] = "both",
    out_px: int = 64,
    obs_names: Any = None,
    random_state: int = 0,
    ncols: int | None = None,
    table_key: str = Key.table,
    image_key: str | None = None,
    library_id: str | None = None,
    ax: Any = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Gallery of spot and/or niche crops, to check crop geometry and image quality.

    Each panel is titled with the spot name; with ``which="both"`` the spot crop is shown next to its niche crop,
    on which the spot box is outlined. Parts of a crop outside the image are white.

    Parameters
    ----------
    data
        SpatialData with a table, or AnnData in the squidpy Visium convention.
    n
        Number of spots (drawn at random with ``random_state`` unless ``obs_names`` is given).
    size_um
        Side of the spot crop in µm (default 100).
    niche_um
        Side of the niche crop in µm.
    which
        ``"spot"``, ``"niche"`` or ``"both"``.
    out_px
        Pixels per crop side.
    obs_names
        Spots to show (overrides ``n`` and ``random_state``).
    random_state
        Seed of the random choice of spots.
    ncols
        Panels per row.
    table_key, image_key, library_id
        Which table / image / library to use.
    ax
        Draw into this Axes (its area is split into the gallery); by default a new figure.
    figsize
        Figure size when a new figure is created.
    show
        Show the figure (and return None).
    return_fig
        Return the Figure (default); kept for API symmetry with the other plots.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, or ``None`` with ``show=True``.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> fig = sta.pl.crops(
    ...     sdata, n=8, which="both"
    ... )  # spot crop next to its niche crop, spot box outlined
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..pp import read_crops

    if which not in ("spot", "niche", "both"):
        msg = f"which={which!r}; choose 'spot', 'niche' or 'both'."
        raise ValueError(msg)
    size_um = SPOT_UM if size_um is None else size_um
    sec = get_section(data, table_key=table_key, image_key=image_key, library_id=library_id, require_image=True)
    names_all = sec.table.obs_names
    if obs_names is not None:
        pos = names_all.get_indexer(list(obs_names))
        if (pos < 0).any():
            missing = [o for o, p in zip(obs_names, pos, strict=True) if p < 0][:5]
            msg = f"obs_names not in the table: {missing}; pass names from `obs_names`."
            raise KeyError(msg)
    else:
        if n < 1:
            msg = f"n={n!r}; show at least one spot."
            raise ValueError(msg)
        pos = np.sort(np.random.default_rng(random_state).choice(len(names_all), min(n, len(names_all)), replace=False))
    xy = sec.coords[pos]
    names = np.asarray(names_all[pos].astype(str))
    spot = read_crops(sec, xy, size_um=size_um, out_px=out_px, names=names) if which != "niche" else None
    niche = read_crops(sec, xy, size_um=niche_um, out_px=out_px, names=names) if which != "spot" else None
    per = 2 if which == "both" else 1
    k = len(pos) * per
    ncols = ncols or per * max(1, int(np.ceil(np.sqrt(len(pos)))))
    ncols = max(per, ncols - ncols % per)
    nrows = int(np.ceil(k / ncols))
    if ax is None:
        fig = plt.figure(figsize=figsize or (1.4 * ncols, 1.5 * nrows))
        grid = fig.add_gridspec(nrows, ncols, wspace=0.05, hspace=0.3)
    else:
        fig = ax.figure
        grid = ax.get_subplotspec().subgridspec(nrows, ncols, wspace=0.05, hspace=0.3)
        ax.set_axis_off()
    panels = []
    for i, name in enumerate(names):
        if spot is not None:
            panels.append((spot[i], f"{name}\n{size_um:g} µm", None))
        if niche is not None:
            frac = size_um / niche_um if which == "both" else None
            panels.append((niche[i], f"niche {niche_um:g} µm", frac))
    for j, (img, title, frac) in enumerate(panels):
        a = fig.add_subplot(grid[j // ncols, j % ncols])
        a.imshow(np.moveaxis(img, 0, -1), interpolation="nearest")
        if frac is not None and frac < 1:
            s = out_px * frac
            lo = (out_px - s) / 2 - 0.5
            a.add_patch(Rectangle((lo, lo), s, s, fill=False, edgecolor="black", linewidth=0.8))
        a.set_title(title, fontsize=6)
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(f"{sec.library_id}: {len(pos)} spots", fontsize=8)
    if show:
        plt.show()
        return None
    return fig
