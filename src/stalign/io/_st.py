"""Legacy Spatial Transcriptomics (ST): the generic ``read_st`` and the her2st / STUtility / Ståhl MOB loaders."""

from __future__ import annotations

import logging
import os
import re
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
from ._common import image_array, nn_distance, read_rdata, require_file, resolve_root, unknown_sample
from ._visium import _map_gene_ids

logger = logging.getLogger(__name__)

_XY = re.compile(r"^X?(-?\d+(?:\.\d+)?)[x_](-?\d+(?:\.\d+)?)$")


def parse_xy(ids: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Parse spot ids ``"<x>x<y>"`` / ``"X<x>x<y>"`` / ``"<x>_<y>"`` into float arrays; ``None`` if any fails."""
    xs, ys = [], []
    for i in ids:
        m = _XY.match(str(i).strip())
        if m is None:
            return None
        xs.append(float(m.group(1)))
        ys.append(float(m.group(2)))
    return np.asarray(xs), np.asarray(ys)


def rounded_ids(x: np.ndarray, y: np.ndarray) -> list[str]:
    """``f"{round(x)}x{round(y)}"`` with halves rounded away from zero (not banker's rounding)."""
    rx = np.floor(np.asarray(x, dtype=float) + 0.5).astype(int)
    ry = np.floor(np.asarray(y, dtype=float) + 0.5).astype(int)
    return [f"{a}x{b}" for a, b in zip(rx, ry, strict=True)]


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


# --------------------------------------------------------------------------------------------------------- her2st


def _her2st_sections(base: Path) -> list[str]:
    names = (
        {p.name.split(".")[0] for p in (base / "ST-cnts").glob("*.tsv.gz")} if (base / "ST-cnts").is_dir() else set()
    )
    if (base / "ST-spotfiles").is_dir():
        names |= {p.name.removesuffix("_selection.tsv") for p in (base / "ST-spotfiles").glob("*_selection.tsv")}
    return sorted(names)


def her2st_image_file(base: Path, section: str) -> Path | None:
    """The full-resolution JPG of a her2st section, when present (``ST-imgs/<letter>/<section>/*.jpg``)."""
    folder = base / "ST-imgs" / section[0] / section
    jpgs = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    return jpgs[0] if jpgs else None


def her2st(section: str, *, data_dir: str | os.PathLike | None = None, load_image: bool = True):
    """Load one HER2+ breast cancer section (Andersson et al. 2021, legacy ST).

    Reads ``her2st/data/ST-cnts/<section>.tsv.gz`` (raw counts, spots × genes, symbols),
    ``ST-spotfiles/<section>_selection.tsv`` (pixel positions), the full-resolution H&E
    ``ST-imgs/<letter>/<section>/*.jpg`` when present, and pathologist labels
    ``ST-pat/lbl/<section>_labeled_coordinates.tsv`` into ``obs["annotation"]`` when present (joined on the rounded
    array coordinates). µm per full-resolution pixel comes from the ST grid (200 µm pitch ÷ the median
    nearest-neighbour spot distance in pixels), so it is recorded also for sections without an image.

    Parameters
    ----------
    section
        Section name, e.g. ``"C2"``.
    data_dir
        Folder that holds the datasets; defaults to ``$STALIGN_DATA_DIR``.
    load_image
        Read the H&E image when present (``False`` skips the slow full-resolution decode).

    Returns
    -------
    SpatialData (no image element when the section has no image).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.her2st("C2")
    >>> table = sdata.tables["table"]
    >>> table.n_obs, list(sdata.images)
    (187, ['C2_image'])
    >>> len(sta.io.her2st("A2").images)  # an expression-only section: no image element
    0
    """
    root = resolve_root(data_dir)
    base = root / "her2st" / "data"
    section = str(section)
    available = _her2st_sections(base)
    if section not in available:
        raise unknown_sample("her2st section", section, available, root)
    spotfile = require_file(base / "ST-spotfiles" / f"{section}_selection.tsv", root=root, what="her2st spot file")
    cfile = base / "ST-cnts" / f"{section}.tsv.gz"
    counts = cfile if cfile.is_file() else None
    if counts is None:
        logger.info("her2st %s: no counts file %s; the table has 0 genes.", section, cfile)
    img = her2st_image_file(base, section) if load_image else None
    labels = None
    lfile = base / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv"
    if lfile.is_file():
        lab = pd.read_csv(lfile, sep="\t").dropna(subset=["x", "y"])
        labels = pd.Series(lab["label"].to_numpy(), index=rounded_ids(lab["x"].to_numpy(), lab["y"].to_numpy()))
        labels = labels[~labels.index.duplicated()]
    return read_st(counts, spotfile, img, sample=section, labels=labels, data_dir=root)


# --------------------------------------------------------------------------------------------------- STUtility MOB


def stutility_mob(section: str | int, *, data_dir: str | os.PathLike | None = None):
    """Load one STUtility mouse olfactory bulb section (``MOB1`` … ``MOB4``, legacy ST).

    Reads ``stutility_mob/inst/extdata/counts/MOB<n>.tsv`` (spots × 1,000 genes, mouse Ensembl ids mapped to
    symbols, ``var["gene_ids"]`` keeps them), ``alignment_table_MOB<n>.tsv`` (pixel positions in the 1905 px JPG;
    only ``selected == 1`` spots, i.e. under tissue, are kept) and ``MOB<n>.jpg``. µm/px from the 2k array's
    100 µm grid unit (the 66-unit array spans the 6.5 mm ST frame), fitted over the whole alignment table.

    Parameters
    ----------
    section
        ``"MOB1"`` … ``"MOB4"`` (or ``1`` … ``4``).
    data_dir
        Folder that holds the datasets; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    SpatialData.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.stutility_mob("MOB1")
    >>> table = sdata.tables["table"]
    >>> table.n_obs, table.n_vars, list(sdata.images)
    (379, 1000, ['MOB1_image'])
    """
    root = resolve_root(data_dir)
    base = root / "stutility_mob" / "inst" / "extdata" / "counts"
    section = str(section)
    section = f"MOB{section}" if section.isdigit() else section
    available = sorted(p.stem for p in base.glob("MOB*.tsv")) if base.is_dir() else []
    if section not in available:
        raise unknown_sample("STUtility MOB section", section, available, root)
    spots = require_file(base / f"alignment_table_{section}.tsv", root=root, what="STUtility alignment table")
    img = base / f"{section}.jpg"
    if not img.is_file():
        logger.info("STUtility %s: no image %s.", section, img)
    return read_st(
        base / f"{section}.tsv",
        spots,
        img if img.is_file() else None,
        sample=section,
        microns_per_pixel=hex_array_microns_per_pixel(pd.read_csv(spots, sep="\t")),
        data_dir=root,
    )


#: The ST "2k" arrays (STUtility's MOB sections) index a hexagonal grid in 100 µm units: x 1–66 spans the
#: 6.5 mm frame, same-row neighbours are 2 units (200 µm) apart and diagonal neighbours √2 units.
HEX_ARRAY_UNIT_UM = 100.0


def hex_array_microns_per_pixel(table: pd.DataFrame) -> float:
    """µm per pixel of a 2k-array alignment table: least-squares fit of pixel ~ array coordinate over all spots."""
    x, y = table["x"].to_numpy(float), table["y"].to_numpy(float)
    px, py = table["pixel_x"].to_numpy(float), table["pixel_y"].to_numpy(float)
    sx = np.polyfit(x, px, 1)[0]
    sy = np.polyfit(y, py, 1)[0]
    px_per_unit = float(np.sqrt(abs(sx * sy)))
    if not np.isfinite(px_per_unit) or px_per_unit <= 0:
        msg = "Cannot derive µm/px from the alignment table (degenerate array coordinates); pass microns_per_pixel=."
        raise ValueError(msg)
    return HEX_ARRAY_UNIT_UM / px_per_unit


# ------------------------------------------------------------------------------------------------------ Ståhl MOB

#: Splotch's ST array frame: ``px = (x - 1) * 194 * W / 6200``.
SPLOTCH_FRAME_UM = 6200.0
SPLOTCH_PITCH_UNITS = 194.0


def splotch_pixels(x: np.ndarray, y: np.ndarray, width: int) -> np.ndarray:
    """Splotch's ``calculate_st_slide_coordinates``: array coordinates → image pixels, ``(n, 2)`` x, y."""
    f = SPLOTCH_PITCH_UNITS * width / SPLOTCH_FRAME_UM
    return np.column_stack([(np.asarray(x, float) - 1) * f, (np.asarray(y, float) - 1) * f])


def onehot_labels(path: Path) -> pd.Series:
    """Splotch one-hot annotation (regions × spots ``X_Y``) → label per spot id ``"XxY"`` (NaN when unlabelled)."""
    df = pd.read_csv(path, sep="\t", index_col=0)
    ids = [str(c).replace("_", "x") for c in df.columns]
    vals = df.to_numpy()
    lab = np.where(vals.sum(axis=0) > 0, df.index.to_numpy()[vals.argmax(axis=0)], None)
    return pd.Series(lab, index=pd.Index(ids), dtype=object)


def _stahl_paths(root: Path) -> dict[str, Path]:
    base = root / "stahl_mob_splotch"
    return {
        "splotch": base / "splotch" / "tutorials" / "olfactory_bulb_st",
        "sepal": base / "sepal" / "data" / "real" / "mob.tsv.gz",
        "rep12": base / "spatialanno" / "inst" / "extdata" / "Rep12_MOB_count_matrix-1.RData",
    }


def stahl_counts_from_matrix(mat: Any, genes: list[str], spots: list[str], *, what: str) -> AnnData:
    """Genes × spots counts with fractional spot ids ``"[X]<x>x<y>"`` → spots × genes AnnData with ``obs['x'/'y']``."""
    xy = parse_xy(spots)
    if xy is None:
        bad = next(s for s in spots if _XY.match(str(s).strip()) is None)
        msg = f"{what}: spot id {bad!r} is not '<x>x<y>' array coordinates."
        raise ValueError(msg)
    X = sparse.csr_matrix(sparse.csc_matrix(mat).T) if sparse.issparse(mat) else sparse.csr_matrix(np.asarray(mat).T)
    ad = AnnData(X=X.astype(np.float32))
    ad.obs_names = rounded_ids(*xy)
    ad.var_names = [str(g) for g in genes]
    ad.obs["x"], ad.obs["y"] = xy
    return ad


def _stahl_counts(root: Path, rep: str) -> AnnData | None:
    paths = _stahl_paths(root)
    what = f"Ståhl MOB replicate {rep}"
    if rep == "11" and paths["sepal"].is_file():
        df = pd.read_csv(paths["sepal"], sep="\t", index_col=0)
        return stahl_counts_from_matrix(df.to_numpy().T, [str(c) for c in df.columns], list(df.index), what=what)
    if rep == "12" and paths["rep12"].is_file():
        from ._common import r_matrix

        objs = read_rdata(paths["rep12"])
        obj = objs.get("MOB_raw", next(iter(objs.values())) if len(objs) == 1 else None)
        if obj is None:
            msg = f"{what}: {str(paths['rep12'])!r} has no object 'MOB_raw' (found {', '.join(objs)})."
            raise ValueError(msg)
        mat, genes, spots = r_matrix(obj, what=what)
        return stahl_counts_from_matrix(mat, genes, spots, what=what)
    table = paths["splotch"] / "count_tables" / f"{rep}_01.tsv"
    if table.is_file():  # Splotch count table: genes × spots
        df = pd.read_csv(table, sep="\t", index_col=0)
        return stahl_counts_from_matrix(df.to_numpy(), [str(g) for g in df.index], list(df.columns), what=what)
    return None


def stahl_replicate(replicate: str | int) -> str:
    """The section name of a Ståhl MOB replicate (``obs["sample"]``): ``11`` → ``"11"``, ``1`` → ``"01"``."""
    try:
        return f"{int(str(replicate)):02d}"
    except ValueError:
        return str(replicate)


def stahl_mob(replicate: str | int, *, data_dir: str | os.PathLike | None = None):
    """Load one Ståhl et al. 2016 mouse olfactory bulb replicate (legacy ST, Splotch layout).

    Image ``stahl_mob_splotch/splotch/tutorials/olfactory_bulb_st/images/<NN>.jpg`` (its width spans the
    6,200 µm ST array frame: µm/px = 6200 / W), layer labels from the one-hot ``annotations/<NN>_01.tsv`` into
    ``obs["annotation"]``, spot pixels by Splotch's ``px = (x - 1) · 194 · W / 6200`` (same for y).
    Counts: replicate 11 from ``sepal/data/real/mob.tsv.gz``, replicate 12 from
    ``spatialanno/inst/extdata/Rep12_MOB_count_matrix-1.RData`` (``MOB_raw``), any replicate from Splotch's
    ``count_tables/<NN>_01.tsv``, when present. Spot ids are the rounded array coordinates ``f"{x}x{y}"`` (as the
    annotation columns), positions use the fractional coordinates. Without counts, the spots are the annotation
    columns and the table has 0 genes.

    Note: Splotch's frame implies a 194 µm pitch whereas the ST array pitch is nominally 200 µm; we follow the
    frame (≈ 2.67 µm/px), a 3 % difference.

    Parameters
    ----------
    replicate
        ``1`` … ``12`` (``"11"`` or ``"01"`` also work).
    data_dir
        Folder that holds the datasets; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    SpatialData.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.stahl_mob(11)
    >>> table = sdata.tables["table"]
    >>> table.n_obs, list(sdata.images)
    (262, ['11_image'])
    >>> sorted(table.obs["annotation"].dropna().unique())
    ['Glomerular layer', 'Granular Cell Layer', 'Mitral Cell Layer', 'Olfactory nerve layer', 'Outer Plexiform Layer']
    """
    root = resolve_root(data_dir)
    paths = _stahl_paths(root)
    rep = stahl_replicate(replicate)
    img_dir, ann_dir = paths["splotch"] / "images", paths["splotch"] / "annotations"
    available = sorted({p.stem for p in img_dir.glob("*.jpg")} if img_dir.is_dir() else set())
    if rep not in available:
        raise unknown_sample("Ståhl MOB replicate", replicate, available, root)
    img_path = img_dir / f"{rep}.jpg"
    from ._common import read_image_array

    image = read_image_array(img_path)
    width = int(image.shape[1])
    mpp = SPLOTCH_FRAME_UM / width
    ann = ann_dir / f"{rep}_01.tsv"
    labels = onehot_labels(ann) if ann.is_file() else None
    ad = _stahl_counts(root, str(int(rep)) if rep.isdigit() else rep)
    what = f"Ståhl MOB {rep}"
    if ad is not None:
        if pd.Index(ad.obs_names).has_duplicates:
            dups = pd.Index(ad.obs_names)[pd.Index(ad.obs_names).duplicated()].unique()[:5].tolist()
            msg = f"{what}: rounded spot ids {dups} are duplicated; the counts hold two spots at one array position."
            raise ValueError(msg)
        xy = splotch_pixels(ad.obs["x"].to_numpy(), ad.obs["y"].to_numpy(), width)
        spots = pd.DataFrame(
            {"pixel_x": xy[:, 0], "pixel_y": xy[:, 1], "x": ad.obs["x"].to_numpy(), "y": ad.obs["y"].to_numpy()},
            index=pd.Index(ad.obs_names),
        )
        counts: Any = AnnData(X=ad.X, obs=pd.DataFrame(index=ad.obs_names), var=pd.DataFrame(index=ad.var_names))
    elif labels is not None:
        xy0 = parse_xy(labels.index)
        xy = splotch_pixels(xy0[0], xy0[1], width)
        spots = pd.DataFrame({"pixel_x": xy[:, 0], "pixel_y": xy[:, 1], "x": xy0[0], "y": xy0[1]}, index=labels.index)
        counts = None
    else:
        msg = f"{what}: neither counts nor the annotation file {str(ann)!r} exist, so there are no spots (data_dir={str(root)!r})."
        raise FileNotFoundError(msg)
    if labels is not None and ad is not None:
        n = int(pd.Index(ad.obs_names).isin(labels.index).sum())
        if n < len(ad.obs_names):
            warnings.warn(
                f"{what}: {len(ad.obs_names) - n} counts spots have no annotation column.", UserWarning, stacklevel=2
            )
    return read_st(counts, spots, image, sample=rep, microns_per_pixel=mpp, labels=labels, data_dir=root)
