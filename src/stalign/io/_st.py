"""Legacy Spatial Transcriptomics (ST): ``read_st``, counts table + spot file + H&E of any legacy ST section."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._build import build_sdata
from .._constants import ST_PITCH_UM, ST_SPOT_UM
from .._validators import check_number
from ._common import image_array, nn_distance
from ._visium import _map_gene_ids

logger = logging.getLogger(__name__)


def _read_counts(counts: Any, *, what: str) -> AnnData | None:
    """Path / DataFrame (spots × genes, spot ids as index) / AnnData → AnnData; ``None`` passes through."""
    if counts is None or isinstance(counts, AnnData):
        return counts
    if isinstance(counts, str | os.PathLike):
        path = Path(counts)
        if not path.is_file():
            msg = f"{what}: counts file {str(path)!r} not found; pass an existing spots × genes table."
            raise FileNotFoundError(msg)
        df = pd.read_csv(path, sep="\t", index_col=0)
    elif isinstance(counts, pd.DataFrame):
        df = counts
    else:
        msg = f"{what}: counts must be a path, a spots × genes DataFrame or an AnnData, got {type(counts).__name__}."
        raise TypeError(msg)
    if df.shape[1] == 0:
        msg = f"{what}: the counts table has no gene columns; is it tab-separated with spot ids in the first column?"
        raise ValueError(msg)
    if df.shape[0] == 0:
        msg = f"{what}: the counts table has no spots (0 rows); pass a spots × genes table with one row per spot."
        raise ValueError(msg)
    # by position: df[c] is a DataFrame when a gene column name is duplicated
    non_num = [c for c, t in zip(df.columns, df.dtypes, strict=True) if not pd.api.types.is_numeric_dtype(t)]
    if non_num:
        msg = f"{what}: non-numeric count columns {non_num[:5]}; the counts table must hold numbers only."
        raise ValueError(msg)
    X = sparse.csr_matrix(df.to_numpy(dtype=np.float32))
    ad = AnnData(X=X)
    ad.obs_names = [str(i) for i in df.index]
    ad.var_names = [str(c) for c in df.columns]
    return ad


def _read_spots(spots: Any, *, what: str) -> pd.DataFrame:
    """Spot file (path or DataFrame with ``pixel_x``, ``pixel_y`` and ``x``, ``y`` or an id index) → indexed by id."""
    if isinstance(spots, str | os.PathLike):
        path = Path(spots)
        if not path.is_file():
            msg = f"{what}: spot file {str(path)!r} not found; pass the ST spot/alignment table with pixel_x, pixel_y."
            raise FileNotFoundError(msg)
        df = pd.read_csv(path, sep="\t")
    elif isinstance(spots, pd.DataFrame):
        df = spots.copy()
    else:
        msg = f"{what}: spots must be a path or a DataFrame, got {type(spots).__name__}."
        raise TypeError(msg)
    missing = [c for c in ("pixel_x", "pixel_y") if c not in df.columns]
    if missing:
        msg = f"{what}: the spot table lacks columns {missing}; it needs pixel_x, pixel_y (full-resolution pixels)."
        raise ValueError(msg)
    bad = [c for c in ("pixel_x", "pixel_y", "x", "y") if c in df.columns and not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        msg = f"{what}: spot table columns {bad} are not numeric; pixel_x, pixel_y (and x, y) must hold numbers."
        raise ValueError(msg)
    nonfinite = ~np.isfinite(df[["pixel_x", "pixel_y"]].to_numpy(dtype=float)).all(axis=1)
    if nonfinite.any():
        msg = (
            f"{what}: {int(nonfinite.sum())} spot positions are NaN or infinite (row {int(np.argmax(nonfinite))}); "
            "fix or drop those rows of the positions file."
        )
        raise ValueError(msg)
    use_xy = {"x", "y"} <= set(df.columns) and isinstance(df.index, pd.RangeIndex)
    if use_xy:
        x, y = df["x"].to_numpy(dtype=float), df["y"].to_numpy(dtype=float)
        if not (np.allclose(x, np.round(x)) and np.allclose(y, np.round(y))):
            msg = f"{what}: spot table x, y are not integers; pass the spot ids as the DataFrame index instead."
            raise ValueError(msg)
        df.index = [f"{int(a)}x{int(b)}" for a, b in zip(np.round(x), np.round(y), strict=True)]
    df.index = pd.Index([str(i) for i in df.index])
    if df.index.has_duplicates:
        dups = df.index[df.index.duplicated()].unique()[:5].tolist()
        msg = f"{what}: duplicate spot ids {dups} in the spot table; each spot must appear once."
        raise ValueError(msg)
    return df


def _warn_odd_counts(X: sparse.spmatrix, *, what: str) -> None:
    """Warn about counts that are accepted but probably not raw: non-integers, or all zero."""
    data = X.data
    if data.size and np.isfinite(data).all() and not np.array_equal(data, np.round(data)):
        warnings.warn(
            f"{what}: the counts are not integers; stalign expects raw counts (normalised or log values are "
            "normalised again). Pass the raw count matrix if you have it.",
            UserWarning,
            stacklevel=3,
        )
    if not data.size or not data.any():
        warnings.warn(
            f"{what}: every count is zero, so the section has no expression; only its image can be embedded.",
            UserWarning,
            stacklevel=3,
        )


def read_st(
    counts: Any,
    spots: Any,
    image: Any = None,
    *,
    sample: str,
    microns_per_pixel: float | None = None,
    image_scalef: float = 1.0,
    labels: pd.Series | None = None,
    selected_only: bool = True,
    spot_diameter_um: float = ST_SPOT_UM,
    pitch_um: float = ST_PITCH_UM,
    data_dir: str | os.PathLike | None = None,
):
    """Read a legacy Spatial Transcriptomics section (counts table + spot file with pixel coordinates + H&E).

    Parameters
    ----------
    counts
        Spots × genes raw counts: a tab-separated file (first column the spot id ``"<x>x<y>"``, header = genes),
        a DataFrame indexed by spot id, an AnnData, or ``None`` (a table with 0 genes over the spots of ``spots``).
        Ensembl ids are mapped to symbols through the reference tables (``var["gene_ids"]`` keeps them).
    spots
        Spot table (path or DataFrame) with ``pixel_x``, ``pixel_y`` (spot centres in full-resolution pixels of the
        image) and either integer array coordinates ``x``, ``y`` (spot id ``f"{x}x{y}"``) or the spot ids as index;
        an optional ``selected`` column marks spots under tissue.
    image
        H&E image (path or array), or ``None``.
    sample
        Section name (``obs["sample"]``, element prefix).
    microns_per_pixel
        µm per full-resolution pixel; by default derived from the spot grid: ``pitch_um`` / the median
        nearest-neighbour distance between spot centres (in pixels).
    image_scalef
        Image pixels per full-resolution pixel (1 when ``pixel_x``/``pixel_y`` refer to this image).
    labels
        Per-spot labels indexed by spot id, stored in ``obs["annotation"]``.
    selected_only
        Keep only spots with ``selected == 1`` when the spot table has that column.
    spot_diameter_um
        Spot diameter (µm).
    pitch_um
        Centre-to-centre spot distance (µm), for deriving ``microns_per_pixel``.
    data_dir
        Folder that holds ``reference/`` for Ensembl ids; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    SpatialData
        SpatialData with table ``"table"`` (spots with both counts and a position), image ``"<sample>_image"`` and
        circles ``"<sample>_spots"``.

    Examples
    --------
    >>> import stalign as sta
    >>> import os
    >>> base = os.path.join(os.environ["STALIGN_DATA_DIR"], "her2st", "data")
    >>> sdata = sta.io.read_st(
    ...     os.path.join(base, "ST-cnts", "C2.tsv.gz"),  # spots x genes counts
    ...     os.path.join(
    ...         base, "ST-spotfiles", "C2_selection.tsv"
    ...     ),  # pixel positions of the spots
    ...     sample="C2",
    ... )
    >>> sdata.tables["table"].n_obs
    187
    """
    if not isinstance(sample, str) or not sample:
        msg = f"sample must be a non-empty string naming the section, got {sample!r}."
        raise TypeError(msg)
    what = f"ST section {sample!r}"
    for name, val in (
        ("microns_per_pixel", microns_per_pixel),
        ("image_scalef", image_scalef),
        ("spot_diameter_um", spot_diameter_um),
        ("pitch_um", pitch_um),
    ):
        if val is None and name == "microns_per_pixel":
            continue
        check_number(val, f"{what}: {name}")
    if labels is not None and not isinstance(labels, pd.Series):
        msg = f"{what}: labels must be a pandas Series indexed by spot id, got {type(labels).__name__}."
        raise TypeError(msg)
    ad = _read_counts(counts, what=what)
    if ad is not None:  # before anything is derived from the positions
        obs_idx = pd.Index([str(o) for o in ad.obs_names])
        if obs_idx.has_duplicates:
            dups = obs_idx[obs_idx.duplicated()].unique()[:5].tolist()
            msg = f"{what}: duplicate spot ids {dups} in the counts; each spot must appear once."
            raise ValueError(msg)
    pos = _read_spots(spots, what=what)
    if microns_per_pixel is None:
        arr_xy = pos[["x", "y"]].to_numpy(dtype=float) if {"x", "y"} <= set(pos.columns) else None
        pitch_px = nn_distance(pos[["pixel_x", "pixel_y"]].to_numpy(dtype=float), arr_xy)
        microns_per_pixel = pitch_um / pitch_px
        logger.info("%s: spot pitch %.2f px → %.4f µm/px", what, pitch_px, microns_per_pixel)
    if selected_only and "selected" in pos.columns:
        pos = pos[pos["selected"].astype(int) == 1]
        if len(pos) == 0:
            msg = (
                f"{what}: no spot of the spot table is selected (selected == 1); pass selected_only=False to keep all."
            )
            raise ValueError(msg)
    X = var_names = var = None
    if ad is not None:
        has_pos = obs_idx.isin(pos.index)
        if not has_pos.any():
            msg = (
                f"{what}: no counts spot id (e.g. {obs_idx[0]!r}) matches a spot of the spot table "
                f"(e.g. {pos.index[0] if len(pos) else 'none'!r}); counts and spots must use the same '<x>x<y>' ids."
            )
            raise ValueError(msg)
        if (~has_pos).any():
            logger.info("%s: %d counts spots have no (selected) position and are dropped.", what, int((~has_pos).sum()))
        keep = np.flatnonzero(has_pos)
        X = sparse.csr_matrix(ad.X)[keep]
        _warn_odd_counts(X, what=what)
        ids = list(obs_idx[keep])
        var_names, var = _map_gene_ids([str(v) for v in ad.var_names])
    else:
        ids = list(pos.index)
    p = pos.loc[ids]
    coords = p[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    obs = pd.DataFrame(index=pd.Index(ids))
    for c in ("x", "y"):
        if c in p.columns:
            obs[f"array_{c}"] = p[c].to_numpy()
    if labels is not None:
        lab = labels.reindex(obs.index)
        obs["annotation"] = pd.Categorical(lab.to_numpy(), categories=sorted(pd.unique(labels.dropna())))
    img = image_array(image)
    sdata = build_sdata(
        sample=str(sample),
        coords_fullres=coords,
        obs_names=ids,
        microns_per_pixel=float(microns_per_pixel),
        spot_diameter_fullres=spot_diameter_um / float(microns_per_pixel),
        counts=X,
        var_names=var_names,
        var=var,
        obs=obs,
        image=img,
        image_scalef=image_scalef,
        technology="st",
        what=what,
    )
    return sdata
