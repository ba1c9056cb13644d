"""10x Visium: Space Ranger outputs (``read_visium``)."""

from __future__ import annotations

import json
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
from .._constants import VISIUM_SPOT_UM
from .._files import read_image_array, require_file
from .._section import visium_microns_per_pixel
from .._validators import check_number

logger = logging.getLogger(__name__)

POSITION_COLUMNS = ["in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
_POSITION_FILES = (
    "tissue_positions.csv",
    "tissue_positions_list.csv",
    "tissue_positions_list.txt",
    "tissue_positions.parquet",
)
_IMAGES = (("hires", "tissue_hires_image.png"), ("lowres", "tissue_lowres_image.png"))


# ----------------------------------------------------------------------------------------------- Visium building blocks


def find_positions(folder: Path) -> Path | None:
    """The positions file of a Space Ranger ``spatial`` folder (v1 ``tissue_positions_list``, v2 / v3 names)."""
    for name in _POSITION_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def read_positions(path: str | os.PathLike) -> pd.DataFrame:
    """Read Space Ranger spot positions (with or without a header) → DataFrame indexed by barcode.

    Columns: ``in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres``.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        df = df.set_index("barcode") if "barcode" in df.columns else df
    else:
        with open(path) as fh:
            first = fh.readline()
        header = first.split(",")[0].strip().strip('"').lower() == "barcode"
        df = pd.read_csv(path, header=0 if header else None, index_col=0)
        if not header:
            if df.shape[1] != 5:
                msg = (
                    f"{str(path)!r}: expected 6 comma-separated columns (barcode, in_tissue, array_row, array_col, "
                    f"pxl_row_in_fullres, pxl_col_in_fullres), found {df.shape[1] + 1}."
                )
                raise ValueError(msg)
            df.columns = POSITION_COLUMNS
    missing = [c for c in POSITION_COLUMNS if c not in df.columns]
    if missing:
        msg = f"{str(path)!r}: positions lack columns {missing}; is this a Space Ranger tissue_positions file?"
        raise ValueError(msg)
    df.index = df.index.astype(str)
    df.index.name = None
    if df.index.has_duplicates:
        dups = df.index[df.index.duplicated()].unique()[:5].tolist()
        msg = f"{str(path)!r}: duplicate barcodes {dups}; each spot must appear once in the positions file."
        raise ValueError(msg)
    return df[POSITION_COLUMNS]


def read_scalefactors(path: str | os.PathLike) -> dict[str, float]:
    """Read ``scalefactors_json.json``."""
    path = Path(path)
    try:
        sf = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        msg = f"{str(path)!r} is not valid JSON ({e}); restore the Space Ranger scalefactors_json.json."
        raise ValueError(msg) from e
    return sf


def _positive(sf: dict, key: str, *, path: Any) -> float:
    val = sf.get(key)
    try:
        ok = val is not None and np.isfinite(float(val)) and float(val) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        state = "missing" if val is None else f"{val!r}"
        msg = f"Scale factor {key!r} is {state} in {str(path)!r}; it must be a positive number (re-export it from Space Ranger)."
        raise ValueError(msg)
    return float(val)


def _calibrate(positions: pd.DataFrame, diam: float, *, what: str) -> float:
    """µm per full-resolution pixel: from the array grid (100 µm pitch), else 55 µm / ``spot_diameter_fullres``."""
    cols = ["array_row", "array_col", "pxl_col_in_fullres", "pxl_row_in_fullres"]
    mpp = None
    if all(c in positions for c in cols):
        # the section's own spots: the same grid an AnnData of this table calibrates on (scanpy convention)
        mpp = visium_microns_per_pixel(
            positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(),
            positions["array_row"].to_numpy(),
            positions["array_col"].to_numpy(),
        )
    if mpp is None:
        mpp = VISIUM_SPOT_UM / diam
        logger.warning(
            "%s: no usable array grid in the positions; microns_per_pixel %.4f from a 55 µm spot_diameter_fullres "
            "(approximate: pass microns_per_pixel= to the reader if you know it).",
            what,
            mpp,
        )
        return mpp
    logger.info(
        "%s: microns_per_pixel %.4f from the 100 µm array pitch (spot_diameter_fullres spans %.1f µm at it).",
        what,
        mpp,
        diam * mpp,
    )
    return mpp


def assemble_visium(
    *,
    sample: str,
    positions: pd.DataFrame,
    scalefactors: dict,
    scalefactors_path: Any,
    image: np.ndarray | None,
    image_res: str | None,
    counts: Any = None,
    barcodes: list[str] | None = None,
    var_names: list[str] | None = None,
    var: pd.DataFrame | None = None,
    labels: pd.Series | None = None,
    what: str,
    microns_per_pixel: float | None = None,
):
    """Join counts, positions, scale factors, image and labels of one Visium section and build the SpatialData.

    Spots kept: with counts, the barcodes of the counts matrix that are in tissue (barcodes missing from the
    positions are dropped with a warning; none joining is an error); without counts, every in-tissue spot.
    """
    diam = _positive(scalefactors, "spot_diameter_fullres", path=scalefactors_path)
    image_scalef = 1.0
    if image is not None and image_res != "fullres":
        image_scalef = _positive(scalefactors, f"tissue_{image_res}_scalef", path=scalefactors_path)
    in_tissue = positions.index[positions["in_tissue"].astype(int) == 1]
    X = None
    if counts is not None:
        bc = pd.Index([str(b) for b in barcodes])
        if bc.has_duplicates:
            dups = bc[bc.duplicated()].unique()[:5].tolist()
            msg = f"{what}: duplicate barcodes {dups} in the counts; each spot must appear once."
            raise ValueError(msg)
        known = bc.isin(positions.index)
        if not known.any():
            msg = (
                f"{what}: none of the {len(bc)} count barcodes (e.g. {bc[0]!r}) is in the positions file "
                f"(e.g. {positions.index[0]!r}); counts and positions come from different sections or barcode formats."
            )
            raise ValueError(msg)
        keep = known & bc.isin(in_tissue)
        if (~known).any():
            warnings.warn(
                f"{what}: {int((~known).sum())} count barcodes have no position and are dropped.",
                UserWarning,
                stacklevel=3,
            )
        if (known & ~keep).any():
            logger.info(
                "%s: %d count barcodes lie outside the tissue and are dropped.", what, int((known & ~keep).sum())
            )
        X = sparse.csr_matrix(counts)[np.flatnonzero(keep)]
        spots = bc[keep]
    else:
        spots = in_tissue
    pos = positions.loc[spots]
    coords = pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(dtype=np.float64)
    obs = pos[["in_tissue", "array_row", "array_col"]].copy()
    if labels is not None:
        lab = labels.reindex(spots)
        obs["annotation"] = pd.Categorical(lab.to_numpy(), categories=sorted(pd.unique(labels.dropna())))
    sdata = build_sdata(
        sample=sample,
        coords_fullres=coords,
        obs_names=list(spots),
        microns_per_pixel=_calibrate(pos, diam, what=what) if microns_per_pixel is None else microns_per_pixel,
        spot_diameter_fullres=diam,
        counts=X,
        var_names=var_names,
        var=var,
        obs=obs,
        image=image,
        image_scalef=image_scalef,
        technology="visium",
        what=what,
    )
    table = sdata.tables["table"]
    sf_store = table.uns["spatial"][sample]["scalefactors"]
    for k, v in scalefactors.items():
        if isinstance(v, int | float) and k not in sf_store:
            sf_store[k] = float(v)
    if image is not None:
        table.uns["spatial"][sample]["metadata"]["image_resolution"] = image_res
    return sdata


def _map_gene_ids(gene_ids: list[str]) -> tuple[list[str], pd.DataFrame]:
    """Symbols as ``var_names`` (Ensembl ids mapped through the bundled tables), the ids kept in ``var["gene_ids"]``."""
    from .._genes import ensembl_to_symbol

    ids = [str(g) for g in gene_ids]
    symbols = [str(s) for s in ensembl_to_symbol(ids)]
    var = pd.DataFrame({"gene_ids": ids}, index=pd.Index(symbols))
    return symbols, var


# ---------------------------------------------------------------------------------------------------- read_visium


def _counts_from_outs(outs: Path, dataset_id: str | None):
    import scanpy as sc

    h5 = sorted(outs.glob("*filtered_feature_bc_matrix.h5"))
    if dataset_id is not None and (outs / f"{dataset_id}_filtered_feature_bc_matrix.h5").is_file():
        h5 = [outs / f"{dataset_id}_filtered_feature_bc_matrix.h5"]
    if h5:
        ad = sc.read_10x_h5(h5[0])
        return ad, h5[0]
    mtx = outs / "filtered_feature_bc_matrix"
    if mtx.is_dir():
        return sc.read_10x_mtx(mtx, var_names="gene_symbols", make_unique=False), mtx
    return None, None


def default_dataset_id(path: Path) -> str:
    """The section name :func:`read_visium` gives a folder: its name, or its parent's for an ``outs`` folder."""
    path = Path(path).expanduser()
    return path.resolve().parent.name if path.name == "outs" else path.resolve().name


def read_visium(
    path: str | os.PathLike,
    *,
    dataset_id: str | None = None,
    fullres_image: str | os.PathLike | None = None,
    microns_per_pixel: float | None = None,
    counts: AnnData | None = None,
    labels: pd.Series | None = None,
):
    """Read a Space Ranger output folder into the package's SpatialData shape.

    Accepts Space Ranger ``outs`` folders (``filtered_feature_bc_matrix.h5`` or the ``filtered_feature_bc_matrix/``
    mtx folder, and ``spatial/``), Space Ranger 1 ``tissue_positions_list.csv/.txt`` without a header, v2
    ``tissue_positions.csv`` with one, folders with only a hires or only a lowres image (hires is used when both
    exist; the pyramid provides coarser levels), and folders without counts (then the table has 0 genes and holds
    every in-tissue spot). The spatial files may also sit directly in ``path``.

    Parameters
    ----------
    path
        Space Ranger ``outs`` folder (or its ``spatial`` folder's parent).
    dataset_id
        Section name (``obs["sample"]``, element prefix); defaults to the folder name (its parent for ``outs``).
        Also selects ``<dataset_id>_filtered_feature_bc_matrix.h5`` when several count files exist.
    fullres_image
        Optional full-resolution H&E image file (e.g. the TIFF given to Space Ranger); used instead of the PNGs.
    microns_per_pixel
        µm per full-resolution pixel, when known (e.g. from the scanner). Default: from the array grid, whose
        neighbouring spots are 100 µm apart (``array_row``/``array_col`` against the pixel positions).
    counts
        Raw counts (barcodes × genes, Ensembl ids or symbols as ``var_names``) used instead of the folder's
        ``filtered_feature_bc_matrix``, e.g. counts kept apart from the spatial files; Ensembl ids are mapped to
        symbols (``var["gene_ids"]`` keeps them).
    labels
        Per-spot labels indexed by barcode, stored in ``obs["annotation"]`` (NaN for unlabelled spots).

    Returns
    -------
    SpatialData
        SpatialData with table ``"table"`` (raw counts, symbols as ``var_names``, ``var["gene_ids"]``), image
        ``"<dataset_id>_image"`` and circles ``"<dataset_id>_spots"``; µm per full-resolution pixel from the 100 µm
        array pitch (55 µm / ``spot_diameter_fullres`` only when the positions hold no usable grid).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.read_visium("spaceranger_run/outs")  # doctest: +SKIP

    The shared DLPFC data keep Space Ranger's spatial files (positions, scale factors, H&E) without a count matrix;
    they read the same way, with a table of 0 genes:

    >>> import os
    >>> folder = os.path.join(
    ...     os.environ["STALIGN_DATA_DIR"], "dlpfc_humanpilot", "10X", "151673"
    ... )
    >>> sdata = sta.io.read_visium(folder)
    >>> sdata.tables["table"].shape
    (3639, 0)
    """
    if not isinstance(path, str | os.PathLike):
        msg = f"path must be the Space Ranger `outs` folder (a str or Path), got {type(path).__name__}."
        raise TypeError(msg)
    if microns_per_pixel is not None:
        check_number(microns_per_pixel, "microns_per_pixel", hint=" (µm per full-resolution pixel, e.g. 0.7245)")
    if counts is not None and not isinstance(counts, AnnData):
        msg = f"counts must be an AnnData of raw counts (barcodes × genes), got {type(counts).__name__}."
        raise TypeError(msg)
    if labels is not None and not isinstance(labels, pd.Series):
        msg = f"labels must be a pandas Series indexed by barcode, got {type(labels).__name__}."
        raise TypeError(msg)
    outs = Path(path).expanduser()
    if not outs.is_dir():
        msg = f"Space Ranger folder {str(outs)!r} does not exist; pass the `outs` folder of a Space Ranger run."
        raise FileNotFoundError(msg)
    if dataset_id is None:
        dataset_id = default_dataset_id(outs)
    spatial = outs / "spatial" if (outs / "spatial").is_dir() else outs
    pos_path = find_positions(spatial)
    if pos_path is None:
        msg = (
            f"No spot positions in {str(spatial)!r}: expected one of {', '.join(_POSITION_FILES)}; "
            "pass a Space Ranger `outs` folder."
        )
        raise FileNotFoundError(msg)
    sf_path = require_file(spatial / "scalefactors_json.json", what="scale factors (scalefactors_json.json)")
    sf = read_scalefactors(sf_path)
    positions = read_positions(pos_path)
    image, res = None, None
    if fullres_image is not None:
        image, res = read_image_array(fullres_image), "fullres"
    else:
        for r, name in _IMAGES:
            if (spatial / name).is_file():
                image, res = read_image_array(spatial / name), r
                break
    if image is None:
        warnings.warn(
            f"{str(spatial)!r} has no tissue_hires_image.png or tissue_lowres_image.png; reading without image.",
            UserWarning,
            stacklevel=2,
        )
    ad = None if counts is not None else _counts_from_outs(outs, dataset_id)[0]
    X = barcodes = var_names = var = None
    if counts is not None:
        X, barcodes = counts.X, [str(b) for b in counts.obs_names]
        var_names, var = _map_gene_ids([str(g) for g in counts.var_names])
    elif ad is not None:
        X, barcodes = ad.X, [str(b) for b in ad.obs_names]
        gene_ids = ad.var["gene_ids"].astype(str).tolist() if "gene_ids" in ad.var else list(ad.var_names)
        var_names = [str(v) for v in ad.var_names]
        var = pd.DataFrame({"gene_ids": gene_ids}, index=pd.Index(var_names))
        if "feature_types" in ad.var:
            var["feature_types"] = ad.var["feature_types"].astype(str).to_numpy()
    else:
        warnings.warn(
            f"No filtered_feature_bc_matrix(.h5) in {str(outs)!r}; the table has 0 genes.", UserWarning, stacklevel=2
        )
    return assemble_visium(
        sample=str(dataset_id),
        positions=positions,
        scalefactors=sf,
        scalefactors_path=sf_path,
        image=image,
        image_res=res,
        counts=X,
        barcodes=barcodes,
        var_names=var_names,
        var=var,
        labels=labels,
        what=f"Visium {dataset_id}",
        microns_per_pixel=microns_per_pixel,
    )
