"""Aggregation in micrometres of Visium HD bins and Xenium cells: coarser bins (``pp.bin``) and pseudo-spots.

Both sum raw counts through one sparse indicator matrix (groups × points), so a whole slide (hundreds of thousands of
bins) aggregates in one sparse product, with no Python loop over bins or spots.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import VISIUM_SPOT_UM, Key
from .._section import get_section
from .._validators import check_key, check_number

logger = logging.getLogger(__name__)


def _indicator(groups: np.ndarray, n_groups: int) -> sparse.csr_matrix:
    """``(n_groups, n)`` 0/1 matrix: row ``g`` marks the points of group ``g``."""
    n = len(groups)
    return sparse.csr_matrix((np.ones(n, dtype=np.float32), (groups, np.arange(n))), shape=(n_groups, n))


def _sum_counts(M: sparse.csr_matrix, X: Any) -> sparse.csr_matrix:
    X = X.tocsr() if sparse.issparse(X) else sparse.csr_matrix(np.asarray(X))
    return (M @ X.astype(np.float32)).tocsr()


def _summed_table(sec, M: sparse.csr_matrix, *, spot_um: float, **kwargs):
    """The spots × points matrix ``M`` applied to a section's counts, as a new table and its circles (``spot_um``)."""
    from .._build import spot_elements

    table = sec.table
    return spot_elements(
        sample=sec.library_id,
        microns_per_pixel=sec.microns_per_pixel,
        spot_diameter_fullres=spot_um / sec.microns_per_pixel,
        counts=_sum_counts(M, table.X) if table.n_vars else None,
        var_names=list(table.var_names),
        var=table.var,
        obs_names=kwargs.pop("ids"),
        **kwargs,
    )


def _require_sdata(sdata: Any, fn: str):
    from spatialdata import SpatialData

    if not isinstance(sdata, SpatialData):
        msg = f"{fn} needs a SpatialData (from stalign.io.read_visium_hd or read_xenium), got {type(sdata).__name__}."
        raise TypeError(msg)


def _free_key(sdata, key: str, region: str, *, fn: str) -> None:
    if key in sdata.tables:
        msg = f"sdata already has a table {key!r}; {fn} does not overwrite it. Pass another key_added (or delete it)."
        raise ValueError(msg)
    if region in sdata.shapes:
        msg = f"sdata.shapes already has {region!r}; pass another key_added so that the new table gets its own shapes."
        raise ValueError(msg)


def bin(
    sdata: Any,
    *,
    bin_um: int,
    table_key: str = Key.table,
    key_added: str | None = None,
) -> None:
    """Make coarser square bins from finer Visium HD bins by summing their counts (2 → 8 → 16 µm and beyond).

    Space Ranger's bins nest: the coarse bin of a ``bin_um / b`` block of fine bins of size ``b`` is the block of
    grid rows and columns ``array_row // k``, ``array_col // k``. Counts are summed by one sparse product.

    Parameters
    ----------
    sdata
        SpatialData from :func:`stalign.io.read_visium_hd`.
    bin_um
        Size of the new bins in µm, a whole multiple of the table's bin size (``scalefactors["bin_size_um"]``).
    table_key
        Table of the fine bins.
    key_added
        Name of the new table; default ``"square_XXXum"`` (e.g. ``"square_016um"``).

    Returns
    -------
    None
        Adds ``tables[key_added]`` (one row per coarse bin with at least one fine bin: summed raw counts,
        ``obs["array_row"/"array_col"]`` on the coarse grid, ``obs["n_bins"]``, ``obsm["spatial"]`` the mean centre of its
        bins in full-resolution pixels, ``bin_size_um`` in its scale factors) and its circles ``shapes["<sample>_<key>"]``.

    Examples
    --------
    >>> import os
    >>> import stalign as sta
    >>> outs = os.path.join(
    ...     os.environ["STALIGN_DATA_DIR"], "visium_hd_visiumio", "inst", "extdata"
    ... )
    >>> sdata = sta.io.read_visium_hd(outs, bin_size_um=2)  # 10 bins of 2 µm
    >>> sta.pp.bin(sdata, bin_um=8)
    >>> sdata.tables["square_008um"].obs["n_bins"].sum()
    np.int64(10)
    """
    from .._build import square_name

    _require_sdata(sdata, "pp.bin")
    bin_um = check_number(bin_um, "bin_um", hint=" (µm, a multiple of the bins' size, e.g. 16)")
    sec = get_section(sdata, table_key=table_key)
    table, sf = sec.table, table_scalefactors(sec)
    size = sf.get("bin_size_um")
    if size is None or not {"array_row", "array_col"} <= set(table.obs.columns):
        msg = (
            f"Table {table_key!r} holds no Visium HD bins (no scalefactors['bin_size_um'] or obs['array_row'/"
            "'array_col']); read it with stalign.io.read_visium_hd."
        )
        raise ValueError(msg)
    k = bin_um / float(size)
    if abs(k - round(k)) > 1e-6 or round(k) < 1:
        msg = f"bin_um={bin_um:g} is not a whole multiple of the {size:g} µm bins of table {table_key!r}; pass e.g. {2 * size:g}."
        raise ValueError(msg)
    k = int(round(k))
    key_added = square_name(int(bin_um)) if key_added is None else key_added
    check_key(key_added, name="key_added")
    region = f"{sec.library_id}_{key_added}"
    _free_key(sdata, key_added, region, fn="pp.bin")
    rows = table.obs["array_row"].to_numpy(dtype=np.int64) // k
    cols = table.obs["array_col"].to_numpy(dtype=np.int64) // k
    pairs, groups = np.unique(np.column_stack([rows, cols]), axis=0, return_inverse=True)
    groups = groups.ravel()
    M = _indicator(groups, len(pairs))
    n_bins = np.asarray(M.sum(axis=1)).ravel()
    coords = (M @ sec.coords) / n_bins[:, None]
    ids = [f"s_{int(bin_um):03d}um_{r:05d}_{c:05d}-1" for r, c in pairs]
    obs = pd.DataFrame({"array_row": pairs[:, 0], "array_col": pairs[:, 1], "n_bins": n_bins.astype(np.int64)},
                       index=pd.Index(ids))  # fmt: skip
    region, circles, new = _summed_table(
        sec, M, coords_fullres=coords, ids=ids, obs=obs, spot_um=bin_um, technology="visium_hd", region=region,
        scalefactors={"bin_size_um": float(bin_um)}, what=f"pp.bin of table {table_key!r}",
    )  # fmt: skip
    sdata.shapes[region] = circles
    sdata.tables[key_added] = new
    logger.info("pp.bin: %d bins of %g µm → %d bins of %g µm", table.n_obs, size, new.n_obs, bin_um)


def table_scalefactors(sec) -> dict:
    """The scale factors recorded for a section's library (``{}`` when the table has none)."""
    return dict(((sec.table.uns.get(Key.spatial) or {}).get(sec.library_id) or {}).get("scalefactors") or {})


def pseudospots(
    sdata: Any,
    *,
    spacing_um: float = 100.0,
    spot_um: float | None = None,
    centers: np.ndarray | None = None,
    table_key: str = Key.table,
    key_added: str = "pseudospots",
) -> None:
    """Visium-like pseudo-spots over Visium HD bins or Xenium cells: the counts of every bin/cell in each spot disc.

    The centres lie on the hexagonal grid of :func:`stalign.pp.tile_tissue` (pitch ``spacing_um``, anchored at the
    image origin) within the points' bounding box, or at given ``centers``; a pseudo-spot is kept when its disc of diameter
    ``spot_um`` holds at least one bin/cell centre, and its counts are their sum. Below ``spot_um`` the discs overlap,
    and a bin/cell counts in each spot that holds it. :func:`stalign.tl.embed` then works on the new table as on a
    Visium section (``table_key=key_added``), and the map back to the bins/cells carries results to them.

    Parameters
    ----------
    sdata
        SpatialData from :func:`stalign.io.read_visium_hd` or :func:`stalign.io.read_xenium` (or any stalign table).
    spacing_um
        Distance between neighbouring pseudo-spots in µm (Visium: 100).
    spot_um
        Diameter of a pseudo-spot's disc in µm; default 55 (a Visium spot).
    centers
        ``(n, 2)`` pseudo-spot centres ``(x, y)`` in full-resolution pixels, instead of the grid (e.g. the spots of a
        Visium section, or every bin to embed each with a spot's worth of expression around it).
    table_key
        Table of the bins or cells.
    key_added
        Name of the new table.

    Returns
    -------
    None
        Adds

        - ``tables[key_added]``: one row per pseudo-spot, summed raw counts, ``obsm["spatial"]`` (centres in
          full-resolution pixels), ``obs["n_points"]`` (bins/cells summed), ``obs["grid_row"/"grid_col"]`` (grid) or
          ``obs["center_index"]`` (``centers``), ``spot_diameter_fullres`` = ``spot_um``;
        - ``shapes["<sample>_<key_added>"]``: its circles;
        - in the source table, ``obsm[key_added]``: a sparse ``(n_points, n_pseudospots)`` 0/1 matrix, the pseudo-spots
          of each bin/cell (their counts are summed), and ``obs[key_added]``: its nearest pseudo-spot, within the
          grid's hexagonal cell (``spacing_um / √3``) or the spot's disc, whichever is larger (NaN beyond: e.g. a bin
          whose pseudo-spots were dropped), so that results map back to every bin/cell.

    Examples
    --------
    >>> import os
    >>> import stalign as sta
    >>> path = os.path.join(
    ...     os.environ["STALIGN_DATA_DIR"],
    ...     "xenium_insitupy_ileum",
    ...     "tests",
    ...     "data",
    ...     "Xenium_Prime_Mouse_Ileum_tiny_outs",
    ... )
    >>> sdata = sta.io.read_xenium(path)  # 23 cells
    >>> sta.pp.pseudospots(
    ...     sdata, spacing_um=30
    ... )  # overlapping 55 µm discs: every cell is in one or more
    >>> cells = sdata.tables["table"]
    >>> cells.obsm["pseudospots"].shape[0], bool(cells.obs["pseudospots"].notna().all())
    (23, True)
    >>> sta.tl.embed(
    ...     sdata, table_key="pseudospots", show_progress_bar=False
    ... )  # doctest: +SKIP
    """
    from scipy.spatial import cKDTree

    from ._tiles import hex_grid

    _require_sdata(sdata, "pp.pseudospots")
    spacing_um = check_number(spacing_um, "spacing_um", hint=" (µm between pseudo-spots, e.g. 100)")
    spot_um = VISIUM_SPOT_UM if spot_um is None else check_number(spot_um, "spot_um", hint=" (µm, e.g. 55)")
    check_key(key_added, name="key_added")
    sec = get_section(sdata, table_key=table_key)
    table, mpp = sec.table, sec.microns_per_pixel
    region = f"{sec.library_id}_{key_added}"
    _free_key(sdata, key_added, region, fn="pp.pseudospots")
    if key_added in table.obsm or key_added in table.obs:
        msg = f"Table {table_key!r} already has obs/obsm[{key_added!r}]; pass another key_added."
        raise ValueError(msg)
    xy_um = sec.coords * mpp
    radius = spot_um / 2
    if centers is None:
        # centres within the points' extent: on the image whenever the bins/cells are
        lo, hi = xy_um.min(axis=0), xy_um.max(axis=0)
        c_um, grid_r, grid_c = hex_grid((lo[0], hi[0]), (lo[1], hi[1]), spacing_um)
        ids = np.char.add(np.char.add("ps_", grid_r.astype(str)), np.char.add("_", grid_c.astype(str)))
        extra = {"grid_row": grid_r, "grid_col": grid_c}
    else:
        c_px = np.asarray(centers, dtype=np.float64)
        if c_px.ndim != 2 or c_px.shape[1] != 2 or not np.isfinite(c_px).all() or len(c_px) == 0:
            msg = f"centers has shape {c_px.shape}; pass an (n, 2) array of finite (x, y) in full-resolution pixels."
            raise ValueError(msg)
        c_um = c_px * mpp
        ids = np.char.add("ps_", np.arange(len(c_um)).astype(str))
        extra = {"center_index": np.arange(len(c_um))}
    # the bins/cells of every disc: one KD-tree query, then one sparse matrix (pseudo-spots × points)
    members = cKDTree(xy_um).query_ball_point(c_um, r=radius + 1e-9, return_sorted=False)
    lengths = np.fromiter((len(m) for m in members), dtype=np.int64, count=len(members))
    keep = lengths > 0
    if not keep.any():
        msg = f"No bin/cell centre lies within {spot_um:g} µm discs of any pseudo-spot; check spot_um= and centers=."
        raise ValueError(msg)
    cols = np.fromiter((j for m, k in zip(members, keep, strict=True) if k for j in m), dtype=np.int64,
                       count=int(lengths[keep].sum()))  # fmt: skip
    indptr = np.concatenate([[0], np.cumsum(lengths[keep])])
    M = sparse.csr_matrix((np.ones(len(cols), dtype=np.float32), cols, indptr), shape=(int(keep.sum()), len(xy_um)))
    M.sort_indices()
    c_um, ids = c_um[keep], ids[keep]
    obs = pd.DataFrame({k: v[keep] for k, v in extra.items()}, index=pd.Index(ids.tolist()))
    obs["n_points"] = lengths[keep]
    region, circles, new = _summed_table(
        sec, M, coords_fullres=c_um / mpp, ids=ids.tolist(), obs=obs, spot_um=spot_um, technology="pseudospots",
        region=region, scalefactors={"spacing_um": float(spacing_um), "spot_um": float(spot_um)},
        what=f"pp.pseudospots of table {table_key!r}",
    )  # fmt: skip
    reach = radius if centers is not None else max(radius, spacing_um / np.sqrt(3))
    dist, nearest = cKDTree(c_um).query(xy_um, distance_upper_bound=reach + 1e-9)
    label = np.where(np.isfinite(dist), ids[np.minimum(nearest, len(ids) - 1)], None)
    # everything is computed: now write (nothing half-written on an error above)
    sdata.shapes[region] = circles
    sdata.tables[key_added] = new
    table.obsm[key_added] = M.T.tocsr()
    table.obs[key_added] = pd.Categorical(label, categories=ids.tolist())
    logger.info(
        "pp.pseudospots: %d pseudo-spots of %g µm (pitch %g µm) over %d points",
        new.n_obs,
        spot_um,
        spacing_um,
        len(xy_um),
    )
