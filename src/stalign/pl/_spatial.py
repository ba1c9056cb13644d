"""Spatial plots over the H&E image, and an embedding plot."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._constants import Key
from .._docs import inject
from .._section import get_section
from .._utils import category_colors, get_table

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

#: Longest side (px) of the image level drawn under the spots.
MAX_BACKGROUND_PX = 2000


def _finish(fig, ax, *, show: bool | None, return_fig: bool):
    import matplotlib.pyplot as plt

    if show:
        plt.show()
        return None
    if return_fig:
        return fig
    return ax


def _background(sec, max_px: int = MAX_BACKGROUND_PX):
    """The coarsest level whose longer side is still ≥ ``max_px`` (or the finest when all are smaller)."""
    if not sec.images:
        return None, 1.0
    big = [lv for lv in sec.images if max(lv.shape) >= max_px]
    lv = max(big, key=lambda lv: lv.fullres_per_px) if big else sec.images[0]
    img = np.asarray(lv.data)
    return np.moveaxis(img, 0, -1), lv.fullres_per_px


def _values(data, table, color: str, *, layer: str | None, values: Any):
    if values is not None:
        if color in getattr(values, "var_names", []):
            v = values[:, color].X
            v = np.asarray(v.todense() if hasattr(v, "todense") else v).ravel()
            return pd.Series(v, index=values.obs_names).reindex(table.obs_names).to_numpy(), False
        msg = f"{color!r} is not a gene of `values` (an AnnData such as tl.predict_expression's result)."
        raise KeyError(msg)
    if color in table.obs:
        col = table.obs[color]
        categorical = isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object or col.dtype == bool
        return col, categorical
    if color in table.var_names:
        X = table.layers[layer] if layer else table.X
        v = X[:, table.var_names.get_loc(color)]
        return np.asarray(v.todense() if hasattr(v, "todense") else v).ravel(), False
    msg = f"color {color!r} is neither an obs column nor a gene of the table (var_names)."
    raise KeyError(msg)


def _category_colors(table, key: str, cats: list) -> dict:
    """``{category: colour}``: ``uns[f"{key}_colors"]`` when it has one per category, else scanpy's default palette.

    The table is left as it is (scanpy's plots write the palette they choose; stalign's ``tl`` functions write it).
    """
    stored = table.uns.get(f"{key}_colors")
    if stored is not None and len(stored) == len(cats):
        return dict(zip(cats, stored, strict=True))
    return dict(zip(cats, category_colors(len(cats)), strict=True))


@inject
def spatial(
    data: AnnData | SpatialData,
    *,
    color: str | None = None,
    values: Any = None,
    layer: str | None = None,
    table_key: str = Key.table,
    library_id: str | None = None,
    spot_scale: float = 1.0,
    cmap: str = "viridis",
    palette: dict | None = None,
    alpha: float = 0.9,
    img: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Spots coloured by an ``obs`` column or a gene, over the H&E image.

    Parameters
    ----------
    data
        SpatialData or AnnData (squidpy convention).
    color
        ``obs`` column (categorical or numeric) or gene (``var_names``, or of ``values``); ``None`` draws spots only.
    values
        AnnData whose genes are plotted instead of the table's, e.g. :func:`stalign.tl.predict_expression` output.
    layer
        Layer of the table for gene values.
    {table_key}
    library_id
        Library in ``uns["spatial"]`` when there are several.
    spot_scale
        Spot size as a multiple of the physical spot diameter.
    cmap
        Colormap for continuous values.
    palette
        ``{category: colour}``; default ``uns[f"{color}_colors"]`` (written by :func:`stalign.tl.domains` and
        :func:`stalign.tl.annotate`, and by scanpy's and squidpy's plots), else scanpy's default palette.
    alpha
        Spot opacity.
    img
        Draw the H&E image underneath.
    title
        Axes title (default ``color``).
    {plot_params}

    Returns
    -------
    {plot_returns}

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> ax = sta.pl.spatial(sdata, color="annotation")  # an obs column
    >>> ax = sta.pl.spatial(sdata, color="MBP", cmap="magma")  # a gene
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    sec = get_section(data, table_key=table_key, library_id=library_id)
    table = get_table(data, table_key=table_key)
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize or (6, 6))
    else:
        fig = ax.figure
    background, fpp = _background(sec) if img else (None, 1.0)
    if background is None:
        fpp = sec.spot_diameter_fullres / 8.0  # draw in units of 1/8 spot when there is no image
    xy = sec.coords / fpp
    if background is not None:
        ax.imshow(background, origin="upper")
    # marker size in points² from the spot diameter in data units
    ax.set_xlim(xy[:, 0].min() - 10, xy[:, 0].max() + 10)
    ax.set_ylim(xy[:, 1].max() + 10, xy[:, 1].min() - 10)
    ax.set_aspect("equal")
    fig.canvas.draw()
    bbox = ax.get_window_extent()
    x0, x1 = ax.get_xlim()
    pts_per_unit = bbox.width / abs(x1 - x0) * 72.0 / fig.dpi
    s = (sec.spot_diameter_fullres / fpp * spot_scale * pts_per_unit) ** 2
    if color is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=s, c="k", alpha=alpha, linewidths=0)
    else:
        vals, categorical = _values(data, table, color, layer=layer, values=values)
        if categorical:
            cats = list(pd.Categorical(vals).categories)
            colors = palette if palette is not None else _category_colors(table, color, cats)
            arr = np.asarray(vals, dtype=object)
            for c in cats:
                sel = arr == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=s, color=colors[c], alpha=alpha, linewidths=0)
            handles = [Line2D([], [], marker="o", ls="", color=colors[c], label=str(c)) for c in cats]
            ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        else:
            v = np.asarray(vals, dtype=float)
            sc_ = ax.scatter(xy[:, 0], xy[:, 1], s=s, c=v, cmap=cmap, alpha=alpha, linewidths=0)
            fig.colorbar(sc_, ax=ax, shrink=0.7)
    ax.set_title(title if title is not None else (color or sec.library_id))
    ax.set_xticks([])
    ax.set_yticks([])
    return _finish(fig, ax, show=show, return_fig=return_fig)


@inject
def domains(data: AnnData | SpatialData, *, key: str = Key.domain, **kwargs):
    """Spatial domains from :func:`stalign.tl.domains` over the H&E (see :func:`spatial` for options).

    Parameters
    ----------
    data
        SpatialData or AnnData.
    key
        ``obs`` key written by :func:`stalign.tl.domains`.
    **kwargs
        Passed to :func:`spatial`.

    Returns
    -------
    {plot_returns}

    Examples
    --------
    {dlpfc_embedded}
    >>> sta.tl.domains(sdata, n_domains=7)
    >>> ax = sta.pl.domains(sdata, title="zero-shot domains")
    """
    return spatial(data, color=key, **kwargs)


@inject
def labels(data: AnnData | SpatialData, *, key: str = Key.label, **kwargs):
    """Labels from :func:`stalign.tl.annotate` over the H&E (see :func:`spatial` for options).

    Parameters
    ----------
    data
        SpatialData or AnnData, after :func:`stalign.tl.annotate`.
    key
        ``obs`` key of the labels (``key_added`` of :func:`stalign.tl.annotate`).
    **kwargs
        Passed to :func:`spatial`.

    Returns
    -------
    {plot_returns}

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> sta.tl.annotate(
    ...     sdata, markers={"WM": ["MBP", "PLP1"], "GM": ["SNAP25", "NRGN"]}
    ... )  # embeds on the way
    >>> ax = sta.pl.labels(sdata)
    """
    return spatial(data, color=key, **kwargs)


@inject
def embedding(
    data: AnnData | SpatialData,
    *,
    use_rep: str | None = None,
    color: str | None = None,
    table_key: str = Key.table,
    random_state: int = 0,
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """2-D PCA view of an stalign embedding, coloured by an ``obs`` column.

    Parameters
    ----------
    data
        SpatialData or AnnData with an embedding from :func:`stalign.tl.embed`.
    use_rep
        ``obsm`` key (default: fused, else image, else gene embedding).
    color
        ``obs`` column.
    {table_key}
    random_state
        Seed of the PCA.
    {plot_show}

    Returns
    -------
    {plot_returns}

    Examples
    --------
    {dlpfc_embedded}
    >>> ax = sta.pl.embedding(sdata, color="annotation")
    >>> ax = sta.pl.embedding(sdata, use_rep="X_stalign_image", color="annotation")
    """
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    from .._utils import default_rep

    table = get_table(data, table_key=table_key)
    rep = default_rep(table, use_rep)
    Y = PCA(n_components=2, random_state=random_state).fit_transform(np.asarray(table.obsm[rep], dtype=np.float64))
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 5))
    else:
        fig = ax.figure
    if color is None:
        ax.scatter(Y[:, 0], Y[:, 1], s=4, c="k")
    else:
        col = table.obs[color]
        if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
            cat = pd.Categorical(col)
            colors = _category_colors(table, color, list(cat.categories))
            for c in cat.categories:
                sel = np.asarray(cat == c)
                ax.scatter(Y[sel, 0], Y[sel, 1], s=4, color=colors[c], label=str(c))
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=3)
        else:
            sc_ = ax.scatter(Y[:, 0], Y[:, 1], s=4, c=np.asarray(col, dtype=float))
            fig.colorbar(sc_, ax=ax)
    ax.set_xlabel(f"{rep} PC1")
    ax.set_ylabel(f"{rep} PC2")
    return _finish(fig, ax, show=show, return_fig=return_fig)
