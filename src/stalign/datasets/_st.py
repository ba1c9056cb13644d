"""Legacy ST datasets: HER2+ breast cancer (her2st), STUtility's and Ståhl et al.'s mouse olfactory bulb (MOB)."""

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

from .. import io
from .._docs import inject
from .._files import read_image_array, require_file
from ._common import resolve_root, unknown_sample
from ._rdata import r_matrix, read_rdata

logger = logging.getLogger(__name__)

#: Spot ids ``"<x>x<y>"`` / ``"X<x>x<y>"`` / ``"<x>_<y>"`` of the legacy ST arrays (fractional in Ståhl's counts).
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


@inject
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
    {data_dir}
    load_image
        Read the H&E image when present (``False`` skips the slow full-resolution decode).

    Returns
    -------
    SpatialData (no image element when the section has no image).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.her2st("C2")
    >>> table = sdata.tables["table"]
    >>> table.n_obs, list(sdata.images)
    (187, ['C2_image'])
    >>> len(
    ...     sta.datasets.her2st("A2").images
    ... )  # an expression-only section: no image element
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
    return io.read_st(counts, spotfile, img, sample=section, labels=labels, data_dir=root)


# --------------------------------------------------------------------------------------------------- STUtility MOB


@inject
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
    {data_dir}

    Returns
    -------
    SpatialData with the spots under the tissue, their counts and the H&E.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.stutility_mob("MOB1")
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
    return io.read_st(
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


@inject
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
    {data_dir}

    Returns
    -------
    SpatialData with the spots (their layer in ``obs["annotation"]``) and the H&E; counts when present.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.stahl_mob(11)
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
    return io.read_st(counts, spots, image, sample=rep, microns_per_pixel=mpp, labels=labels, data_dir=root)
