"""Niche expression: each spot's neighbourhood aggregated over a radius in micrometres."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import NICHE_UM, Key
from .._docs import inject
from .._section import Section, get_section
from .._utils import save_data
from .._validators import check_key
from ._crops import _writable_table

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

#: Smallest default niche radius (µm): half the 200 µm niche square, widened by 10 % so that neighbours lying exactly
#: on the edge (Visium's first ring at a 100 µm pitch) are included whatever the small error of the µm/px estimate.
NICHE_RADIUS_UM = 0.55 * NICHE_UM
#: The default radius is at least this multiple of the spot pitch (median nearest-neighbour distance), so that a
#: niche always holds the spot's first ring of neighbours, also on legacy ST's 200 µm grid.
PITCH_FACTOR = 1.1


def _check_radius(radius_um: Any) -> float | None:
    """Validate a user radius; ``None`` stays ``None`` (the per-section default, :func:`default_radius_um`)."""
    if radius_um is None:
        return None
    if isinstance(radius_um, bool) or not (
        isinstance(radius_um, int | float | np.integer | np.floating) and np.isfinite(radius_um) and radius_um >= 0
    ):
        msg = f"radius_um={radius_um!r}; the niche radius must be a non-negative number of micrometres (e.g. 110)."
        raise ValueError(msg)
    return float(radius_um)


def spot_pitch_um(section: Section, *, tree: Any = None) -> float:
    """Median distance (µm) from each spot to its nearest neighbour (Visium ~100 µm, legacy ST ~200 µm); NaN if < 2.

    ``tree``: a :class:`scipy.spatial.cKDTree` of ``section.coords`` already built by the caller.
    """
    from scipy.spatial import cKDTree

    if section.coords.shape[0] < 2:
        return float("nan")
    dist, _ = (tree if tree is not None else cKDTree(section.coords)).query(section.coords, k=2)
    return float(np.median(dist[:, 1]) * section.microns_per_pixel)


def default_radius_um(section: Section, *, tree: Any = None) -> float:
    """The default niche radius of a section: ``max(NICHE_RADIUS_UM, PITCH_FACTOR * spot pitch)``.

    110 µm on Visium (the spot and its six neighbours, the 200 µm niche of the ST-Align paper); on legacy ST, whose
    spots lie 200 µm apart, 220 µm, so that the niche holds the first ring of neighbours instead of the spot alone
    (the paper's 200 µm square would hold only the spot there, making the niche a copy of it).
    """
    pitch = spot_pitch_um(section, tree=tree)
    return NICHE_RADIUS_UM if not np.isfinite(pitch) else max(NICHE_RADIUS_UM, PITCH_FACTOR * pitch)


def _graph_and_radius(section: Section, radius_um: float | None) -> tuple[sparse.csr_matrix, float]:
    """:func:`niche_graph` and the radius it used (the per-section default when ``radius_um`` is None)."""
    from scipy.spatial import cKDTree

    radius_um = _check_radius(radius_um)
    n = section.table.n_obs
    tree = cKDTree(section.coords) if n > 1 else None  # one tree for the default radius and the graph
    if radius_um is None:
        radius_um = default_radius_um(section, tree=tree)
    radius_px = radius_um / section.microns_per_pixel
    if n > 1 and radius_px > 0:
        pairs = tree.query_pairs(r=float(radius_px), output_type="ndarray")
        i = np.concatenate([pairs[:, 0], pairs[:, 1]])
        j = np.concatenate([pairs[:, 1], pairs[:, 0]])
        A = sparse.csr_matrix((np.ones(len(i), dtype=np.float32), (i, j)), shape=(n, n))
    else:
        A = sparse.csr_matrix((n, n), dtype=np.float32)
    A = (A + sparse.identity(n, dtype=np.float32, format="csr")).tocsr()
    A.data[:] = 1.0
    deg = np.asarray(A.sum(axis=1)).ravel()
    return (sparse.diags(1.0 / deg) @ A).tocsr().astype(np.float32), float(radius_um)


def niche_graph(section: Section, *, radius_um: float | None = None) -> sparse.csr_matrix:
    """Row-normalised ``(n, n)`` averaging matrix: row ``i`` weights equally every spot within ``radius_um`` of ``i``.

    The spot itself is included. The graph is the radius graph of :func:`squidpy.gr.spatial_neighbors` with
    ``coord_type="generic"`` (every pair within ``radius_um``, the boundary included), built directly with a
    :class:`scipy.spatial.cKDTree` so that no AnnData is touched and squidpy's import (seconds) is not paid on every
    call; a test checks that both graphs are identical.
    """
    return _graph_and_radius(section, radius_um)[0]


def niche_counts(section: Section, *, radius_um: float | None = None, graph: sparse.spmatrix | None = None):
    """``(n, g)`` CSR float32 mean raw counts over each spot's niche (see :func:`niche_graph`)."""
    G = niche_graph(section, radius_um=radius_um) if graph is None else graph
    X = section.table.X
    X = sparse.csr_matrix(X) if not sparse.issparse(X) else X.tocsr()
    return (G @ X.astype(np.float32)).tocsr().astype(np.float32)


@inject
def niche_expression(
    data: AnnData | SpatialData,
    *,
    radius_um: float | None = None,
    key_added: str = Key.niche_expr,
    table_key: str = Key.table,
    library_id: str | None = None,
    copy: bool = False,
) -> Any:
    """Mean raw counts over each spot's niche: every spot whose centre lies within ``radius_um`` (itself included).

    The ST-Align paper averages the spots whose centres fall inside the 200 µm niche square. We use a disc (the
    spatial graph of :func:`squidpy.gr.spatial_neighbors` with ``coord_type="generic"`` and a radius), which is
    isotropic and independent of the array's orientation. The default radius (:func:`default_radius_um`) is 110 µm,
    half the 200 µm niche side widened by 10 %, or 1.1 × the spot pitch if that is larger: on Visium (100 µm pitch)
    the niche holds the spot and its six neighbours; on legacy ST (200 µm pitch) the radius becomes 220 µm and the
    niche holds the spot and its first ring of neighbours (at 110 µm it would be the spot alone, a copy of the spot
    view). Pass ``radius_um`` for a fixed neighbourhood. The graph is built on a
    throw-away AnnData, so ``obsp`` of ``data`` is left untouched.

    Parameters
    ----------
    data
        SpatialData with a table (written into ``data.tables[table_key]``), or AnnData with raw counts in ``X``,
        ``obsm["spatial"]`` and µm/px in ``uns["spatial"][library_id]["scalefactors"]``.
    radius_um
        Niche radius in micrometres (default: :func:`default_radius_um`, 110 µm on Visium, 220 µm on legacy ST).
    key_added
        Key in ``obsm`` and ``uns``.
    {table_key}
    library_id
        Library in ``uns["spatial"]`` (needed only when there are several).
    {copy}

    Returns
    -------
    AnnData | SpatialData | None
        ``None``, or a copy of ``data`` if ``copy=True``. Writes

        - ``obsm[key_added]``: CSR float32 ``(n_obs, n_vars)`` mean raw counts of the niche, columns as ``var_names``;
        - ``uns[key_added]["params"]``: ``radius_um``, ``radius_px`` (full resolution), ``include_self``,
          ``aggregation`` and the mean number of spots per niche.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> sta.pp.niche_expression(sdata)
    >>> table = sdata.tables["table"]
    >>> table.obsm["stalign_niche"].shape
    (3639, 5000)
    """
    radius = _check_radius(radius_um)
    check_key(key_added)
    section = get_section(data, table_key=table_key, library_id=library_id)
    if not section.has_expression:  # raises for NaN, infinite or negative counts
        what = "no genes (0 columns)" if section.table.n_vars == 0 else "only zero counts"
        msg = (
            f"Section {section.library_id!r} has no expression: its table has {what}; niche expression averages "
            "raw counts. Pass a table with raw counts in `X` (image-only sections need no niche expression)."
        )
        raise ValueError(msg)
    G, radius = _graph_and_radius(section, radius)  # one KD-tree for the default radius and the graph
    Xn = niche_counts(section, graph=G)
    params = {
        "radius_um": radius,
        "radius_px": float(radius / section.microns_per_pixel),
        "include_self": True,
        "aggregation": "mean",
        "counts": "raw",
        "mean_spots_per_niche": float(np.diff(G.indptr).mean()) if G.shape[0] else 0.0,
        "library_id": section.library_id,
    }
    ret, table = _writable_table(data, table_key, copy)
    save_data(table, attr="obsm", key=key_added, data=Xn)
    save_data(table, attr="uns", key=key_added, data={"params": params})
    return ret


def _library_sections(data: Any, *, library_key: str | None, table_key: str) -> list[tuple[np.ndarray, Section]]:
    """``(rows, section)`` of each section of ``data``: one section, or one per value of ``obs[library_key]``."""
    from .._utils import get_table

    table = get_table(data, table_key=table_key)
    if library_key is None:
        return [(np.arange(table.n_obs), get_section(data, table_key=table_key))]
    if library_key not in table.obs:
        msg = (
            f"library_key={library_key!r} is not a column of obs (columns: {', '.join(map(str, table.obs.columns))}); "
            "pass the obs column that names each spot's section (e.g. 'sample')."
        )
        raise KeyError(msg)
    libs = table.obs[library_key]
    if libs.isna().any():
        msg = f"obs[{library_key!r}] has missing values; every spot must name its section."
        raise ValueError(msg)
    spatial = table.uns.get(Key.spatial, {})
    out = []
    for lib in pd.unique(libs.astype(str)):
        rows = np.flatnonzero((libs.astype(str) == lib).to_numpy())
        sub = table[rows]
        lib_id = lib if lib in spatial else (None if len(spatial) <= 1 else lib)
        out.append((rows, get_section(sub, library_id=lib_id)))
    return out


@inject
def spatial_smooth(
    data: AnnData | SpatialData,
    values: Any,
    *,
    radius_um: float | None,
    library_key: str | None = None,
    table_key: str = Key.table,
) -> np.ndarray:
    """Average ``values`` over each spot's neighbourhood: every spot within ``radius_um`` (itself included).

    The neighbourhood of :func:`niche_graph` (a disc in micrometres, so one radius means the same tissue on Visium,
    legacy ST and any scan resolution). With ``library_key``, each section is smoothed on its own: a neighbourhood
    never crosses sections. This is the smoothing :func:`stalign.tl.domains` and :func:`stalign.tl.annotate` apply,
    and that the evaluation gives every baseline.

    Parameters
    ----------
    data
        SpatialData (its table) or AnnData with spot positions (``obsm["spatial"]``) and µm/px.
    values
        ``(n_spots, d)`` array (dense or sparse) in the table's spot order, or an ``obsm`` key.
    radius_um
        Neighbourhood radius in µm; ``0`` returns the values unchanged (as float32); ``None``: each section's niche
        radius (:func:`default_radius_um`, what :func:`niche_expression` averages over).
    library_key
        ``obs`` column naming each spot's section, for an AnnData holding several (squidpy's convention); each
        library needs its µm/px in ``uns["spatial"][library]["scalefactors"]``.
    {table_key}

    Returns
    -------
    ``(n_spots, d)`` float32 array (sparse input gives a CSR matrix).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> table = sdata.tables["table"]
    >>> smooth = sta.pp.spatial_smooth(sdata, table.X, radius_um=250)
    >>> smooth.shape == table.shape
    True
    """
    from .._utils import get_table
    from .._validators import check_number

    check_number(radius_um, "radius_um", strict=False, allow_none=True, hint=" (µm; 0 turns smoothing off)")
    table = get_table(data, table_key=table_key)
    X = table.obsm[values] if isinstance(values, str) else values
    if isinstance(values, str) and values not in table.obsm:
        msg = f"values={values!r} is not in obsm (keys: {', '.join(table.obsm)}); pass an array or an obsm key."
        raise KeyError(msg)
    is_sparse = sparse.issparse(X)
    X = X.tocsr().astype(np.float32) if is_sparse else np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != table.n_obs:
        msg = f"values has shape {X.shape}; it must hold one row per spot ({table.n_obs} rows)."
        raise ValueError(msg)
    if radius_um == 0:
        return X.copy()
    parts = _library_sections(data, library_key=library_key, table_key=table_key)
    if len(parts) == 1:
        return (niche_graph(parts[0][1], radius_um=radius_um) @ X).astype(np.float32)
    blocks, order = [], []
    for rows, sec in parts:
        blocks.append(niche_graph(sec, radius_um=radius_um))
        order.append(rows)
    G = sparse.block_diag(blocks, format="csr")
    perm = np.concatenate(order)
    sm = G @ X[perm]
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    out = sm[inv]
    return out.tocsr().astype(np.float32) if is_sparse else np.asarray(out, dtype=np.float32)
