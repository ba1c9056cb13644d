"""10x Visium HD: one bin size of a Space Ranger HD output (``read_visium_hd``) and a writer of that layout.

A Space Ranger HD ``outs`` folder holds ``binned_outputs/square_002um``, ``square_008um`` and ``square_016um``, each a
Visium-like folder (``filtered_feature_bc_matrix.h5`` and ``spatial/`` with ``tissue_positions.parquet``,
``scalefactors_json.json`` and the PNGs), next to ``feature_slice.h5``. A complete ``outs`` folder is read with
:func:`spatialdata_io.visium_hd` as it is; stalign adds only the glue of its conventions (the table's name, its
``obs["sample"]`` and ``uns["spatial"]`` with the µm scale, one ``"global"`` coordinate system). spatialdata-io 0.7
cannot read a folder without ``feature_slice.h5`` (it reads the run's metadata from it) nor a lone ``square_XXXum``
folder such as the one 10x and Bioconductor packages ship as examples: those are read as the Visium-like folder they
are, by :func:`stalign.io.read_visium`, with the µm per pixel that Space Ranger HD records (its spots are bins on a
square grid, so the Visium hexagonal 100 µm pitch does not calibrate them).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._build import square_name
from .._constants import Key
from .._validators import check_number

logger = logging.getLogger(__name__)

#: Bin sizes (µm) that Space Ranger HD writes.
HD_BIN_SIZES_UM = (2, 8, 16)
_BINNED = "binned_outputs"
_SQUARE = re.compile(r"^square_(\d{3})um$")


def is_visium_hd(path: Path) -> bool:
    """Whether ``path`` is a Space Ranger HD ``outs`` folder or one of its ``square_XXXum`` folders."""
    return (path / _BINNED).is_dir() or _SQUARE.match(path.name) is not None


def _available(binned: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in binned.iterdir() if p.is_dir() and (m := _SQUARE.match(p.name)))


def _locate(path: Path, bin_size_um: int | None) -> tuple[Path, Path | None, int]:
    """``(square folder, outs folder or None for a lone square folder, bin size)``; clear errors otherwise."""
    m = _SQUARE.match(path.name)
    if m is not None:  # a lone square_XXXum folder
        own = int(m.group(1))
        if bin_size_um is not None and int(bin_size_um) != own:
            msg = (
                f"{str(path)!r} holds {own} µm bins, not bin_size_um={bin_size_um}; pass bin_size_um={own} (or None), "
                f"or the `outs` folder that holds {square_name(int(bin_size_um))}."
            )
            raise ValueError(msg)
        outs = path.parent.parent if path.parent.name == _BINNED else None
        return path, outs, own
    binned = path / _BINNED
    if not binned.is_dir():
        msg = (
            f"{str(path)!r} is neither a Space Ranger HD `outs` folder (no {_BINNED}/) nor a square_XXXum bin folder; "
            "pass the `outs` folder of a Visium HD run or one of its binned_outputs/square_XXXum folders."
        )
        raise FileNotFoundError(msg)
    have = _available(binned)
    size = 8 if bin_size_um is None else int(bin_size_um)
    if size not in have:
        msg = (
            f"bin_size_um={bin_size_um} is not in {str(binned)!r}; it holds "
            f"{', '.join(f'{b} µm' for b in have) or 'no square_XXXum folder'}. Pass one of those, or make coarser "
            "bins from finer ones with stalign.pp.bin."
        )
        raise ValueError(msg)
    return binned / square_name(size), path, size


def _hd_scalefactors(folder: Path, size: int) -> dict[str, Any]:
    from ._visium import _positive, read_scalefactors

    spatial = folder / "spatial"
    if not spatial.is_dir():
        msg = (
            f"{str(folder)!r} has no spatial/ folder (tissue_positions.parquet, scalefactors_json.json, images); "
            "restore it from the Space Ranger HD output."
        )
        raise FileNotFoundError(msg)
    sf_path = spatial / "scalefactors_json.json"
    if not sf_path.is_file():
        msg = f"Missing scale factors {str(sf_path)!r}; restore scalefactors_json.json from the Space Ranger HD output."
        raise FileNotFoundError(msg)
    sf = read_scalefactors(sf_path)
    _positive(sf, Key.microns_per_pixel, path=sf_path)
    recorded = sf.get("bin_size_um")
    if recorded is not None and not np.isclose(float(recorded), size):
        msg = f"{str(sf_path)!r} records bin_size_um={recorded} in a folder of {size} µm bins; the output is inconsistent."
        raise ValueError(msg)
    return sf


def _glue(sdata, *, sample: str, size: int, scalefactors: dict, table_key: str):
    """Stalign's conventions on a Visium HD SpatialData: table ``"table"``, ``obs["sample"]``, ``uns["spatial"]``."""
    table = sdata.tables[table_key]
    if table_key != Key.table:
        del sdata.tables[table_key]
        sdata.tables[Key.table] = table
    table.obs[Key.sample] = pd.Categorical([sample] * table.n_obs)
    mpp = float(scalefactors[Key.microns_per_pixel])
    sf = {k: float(v) for k, v in scalefactors.items() if isinstance(v, int | float)}
    sf.update({Key.microns_per_pixel: mpp, Key.spot_diameter_fullres: size / mpp, "bin_size_um": float(size)})
    lib = table.uns.setdefault(Key.spatial, {}).setdefault(sample, {})
    lib.setdefault("scalefactors", {}).update(sf)
    lib.setdefault("metadata", {})["technology"] = "visium_hd"
    return sdata


def _read_with_spatialdata_io(outs: Path, *, size: int, sample: str):
    """A complete ``outs`` folder through :func:`spatialdata_io.visium_hd`; its coordinate system becomes ``"global"``."""
    import warnings

    from spatialdata_io import visium_hd

    with warnings.catch_warnings():  # its notes on absent images (cytassist, full resolution) are not the user's
        warnings.filterwarnings("ignore", message=".*(image|Image).*", category=UserWarning)
        sdata = visium_hd(
            outs,
            dataset_id=sample,
            bin_size=size,
            load_segmentations_only=False,
        )
    sdata.rename_coordinate_systems({sample: "global"})
    for name in list(sdata.images):  # one frame for every image: full-resolution pixels ("global")
        from spatialdata.transformations import get_transformation, set_transformation

        own = get_transformation(sdata.images[name], get_all=True)
        set_transformation(sdata.images[name], {"global": own["global"]}, set_all=True)
    return sdata


def read_visium_hd(
    path: str | os.PathLike,
    *,
    bin_size_um: int | None = 8,
    dataset_id: str | None = None,
    fullres_image: str | os.PathLike | None = None,
):
    """Read one bin size of a 10x Visium HD output into stalign's SpatialData shape.

    Accepts a Space Ranger HD ``outs`` folder (``binned_outputs/square_XXXum/``; read with
    :func:`spatialdata_io.visium_hd` when ``feature_slice.h5`` is there) or one ``binned_outputs/square_XXXum``
    folder on its own. Every bin is a spot: the table holds one row per bin under tissue, ``obsm["spatial"]`` its
    centre in full-resolution pixels and ``obs["array_row"/"array_col"]`` its place on the bin grid, so
    :func:`stalign.pp.bin` and :func:`stalign.pp.pseudospots` can aggregate it in µm.

    Parameters
    ----------
    path
        A Space Ranger HD ``outs`` folder, or one of its ``binned_outputs/square_XXXum`` folders.
    bin_size_um
        Bin size to read: 2, 8 or 16 (µm), as the output holds them. ``None`` reads a lone folder's own size (8 µm
        for an ``outs`` folder).
    dataset_id
        Section name (``obs["sample"]``, element prefix); default the folder name (the parent of ``outs``).
    fullres_image
        The full-resolution H&E given to Space Ranger (a pyramidal TIFF/SVS is read lazily by
        :func:`stalign.io.read_image`), next to the PNGs: crops come from the finest level they need.

    Returns
    -------
    SpatialData
        SpatialData with table ``"table"`` (raw counts, gene symbols, ``obs["sample"]``), the H&E and the bins as
        shapes, in ``"global"`` = full-resolution pixels; ``uns["spatial"][sample]["scalefactors"]`` holds
        ``microns_per_pixel`` (Space Ranger's), ``bin_size_um`` and ``spot_diameter_fullres`` (one bin).

    Examples
    --------
    >>> import os
    >>> import stalign as sta
    >>> root = os.path.join(
    ...     os.environ["STALIGN_DATA_DIR"], "visium_hd_visiumio", "inst", "extdata"
    ... )
    >>> sdata = sta.io.read_visium_hd(
    ...     os.path.join(root, "binned_outputs", "square_002um"), bin_size_um=2
    ... )
    >>> table = sdata.tables["table"]
    >>> (
    ...     table.shape,
    ...     round(
    ...         table.uns["spatial"]["extdata"]["scalefactors"]["microns_per_pixel"], 5
    ...     ),
    ... )
    ((10, 10), 0.27382)
    """
    from ._visium import default_dataset_id, read_visium

    if not isinstance(path, str | os.PathLike):
        msg = f"path must be a Visium HD `outs` or square_XXXum folder (a str or Path), got {type(path).__name__}."
        raise TypeError(msg)
    if bin_size_um is not None:
        check_number(bin_size_um, "bin_size_um", hint=" (2, 8 or 16 µm)")
    path = Path(path).expanduser()
    if not path.is_dir():
        msg = f"Visium HD folder {str(path)!r} does not exist; pass the `outs` folder of a Space Ranger HD run."
        raise FileNotFoundError(msg)
    folder, outs, size = _locate(path, bin_size_um)
    sf = _hd_scalefactors(folder, size)
    sample = str(dataset_id) if dataset_id is not None else default_dataset_id(outs if outs is not None else folder)
    if outs is not None and (outs / "feature_slice.h5").is_file():
        sdata = _read_with_spatialdata_io(outs, size=size, sample=sample)
        sdata = _glue(sdata, sample=sample, size=size, scalefactors=sf, table_key=square_name(size))
    else:
        sdata = read_visium(folder, dataset_id=sample, microns_per_pixel=sf[Key.microns_per_pixel])
        sdata = _glue(sdata, sample=sample, size=size, scalefactors=sf, table_key=Key.table)
    if fullres_image is not None:
        _add_fullres(sdata, fullres_image, sample=sample, mpp=float(sf[Key.microns_per_pixel]))
    return sdata


def _add_fullres(sdata, fullres_image, *, sample: str, mpp: float) -> None:
    """The full-resolution H&E, read lazily by :func:`stalign.io.read_image` (a slide's pyramid, never whole)."""
    from ._image import read_image

    img = read_image(fullres_image, microns_per_pixel=mpp, name=sample)
    elem = next(iter(img.images.values()))
    level0 = next(iter(elem["scale0"].ds.data_vars.values())) if hasattr(elem, "children") else elem
    h, w = (int(v) for v in level0.shape[-2:])
    xy = np.asarray(sdata.tables[Key.table].obsm[Key.spatial])
    off = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= w) | (xy[:, 1] >= h)
    if off.any():
        msg = (
            f"Visium HD {sample!r}: {int(off.sum())} of {len(off)} bin centres lie outside the {w}x{h} full-resolution "
            f"image {str(fullres_image)!r}; it is not the image Space Ranger aligned these bins to."
        )
        raise ValueError(msg)
    sdata.images[f"{sample}_fullres_image"] = elem


# ----------------------------------------------------------------------------------------------------------- writer


def write_10x_h5(path: str | os.PathLike, counts: Any, *, barcodes: Any, gene_ids: Any, gene_names: Any) -> None:
    """Write ``counts`` (spots × genes) in the 10x HDF5 layout (``matrix/``, CSC genes × spots) that scanpy reads."""
    import h5py
    from scipy import sparse

    X = sparse.csr_matrix(counts)
    csc = X.T.tocsc()  # genes × spots, stored column (spot) by column
    n_genes = X.shape[1]
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.asarray(barcodes, dtype="S"))
        g.create_dataset("data", data=csc.data.astype(np.int32), compression="gzip")
        g.create_dataset("indices", data=csc.indices.astype(np.int64), compression="gzip")
        g.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([n_genes, X.shape[0]], dtype=np.int32))
        feat = g.create_group("features")
        feat.create_dataset("id", data=np.asarray(gene_ids, dtype="S"))
        feat.create_dataset("name", data=np.asarray(gene_names, dtype="S"))
        feat.create_dataset("feature_type", data=np.asarray(["Gene Expression"] * n_genes, dtype="S"))
        feat.create_dataset("genome", data=np.asarray(["GRCh38"] * n_genes, dtype="S"))
        feat.create_dataset("_all_tag_keys", data=np.asarray(["genome"], dtype="S"))


def write_visium_hd(
    outs: str | os.PathLike,
    *,
    counts: Any,
    array_row: Any,
    array_col: Any,
    xy_fullres: np.ndarray,
    gene_ids: Any,
    gene_names: Any,
    bin_size_um: int,
    microns_per_pixel: float,
    hires_image: np.ndarray | None = None,
    hires_scalef: float = 1.0,
    feature_slice: bool = False,
) -> Path:
    """Write one bin size in the Space Ranger HD layout: ``outs/binned_outputs/square_XXXum/`` (for tests/benchmarks).

    The bins' barcodes follow Space Ranger's ``s_008um_<row>_<col>-1``. With ``feature_slice``, an ``outs/feature_slice.h5``
    holding only the metadata spatialdata-io reads makes the folder a complete output for :func:`spatialdata_io.visium_hd`.

    Returns
    -------
    The ``square_XXXum`` folder.
    """
    from PIL import Image

    outs = Path(outs)
    size = int(bin_size_um)
    folder = outs / _BINNED / square_name(size)
    spatial = folder / "spatial"
    spatial.mkdir(parents=True, exist_ok=True)
    rows, cols = np.asarray(array_row, dtype=np.int64), np.asarray(array_col, dtype=np.int64)
    barcodes = [f"s_{size:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)]
    xy = np.asarray(xy_fullres, dtype=np.float64)
    pos = pd.DataFrame(
        {
            "barcode": barcodes,
            "in_tissue": np.ones(len(rows), dtype=np.int32),
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": xy[:, 1],
            "pxl_col_in_fullres": xy[:, 0],
        }
    )
    pos.to_parquet(spatial / "tissue_positions.parquet", index=False)
    sf = {
        "spot_diameter_fullres": size / microns_per_pixel,
        "bin_size_um": float(size),
        "microns_per_pixel": float(microns_per_pixel),
        "regist_target_img_scalef": float(hires_scalef),
        "tissue_lowres_scalef": float(hires_scalef),
        "fiducial_diameter_fullres": 0.0,
        "tissue_hires_scalef": float(hires_scalef),
    }
    (spatial / "scalefactors_json.json").write_text(json.dumps(sf))
    if hires_image is not None:
        Image.fromarray(np.asarray(hires_image, dtype=np.uint8)).save(spatial / "tissue_hires_image.png")
    write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, barcodes=barcodes, gene_ids=gene_ids,
                 gene_names=gene_names)  # fmt: skip
    if feature_slice:
        import h5py

        meta = {"hd_layout_json": json.dumps({"file_format": "1.0"})}
        with h5py.File(outs / "feature_slice.h5", "w") as f:
            f.attrs["metadata_json"] = json.dumps(meta)
    return folder


def split_into_bins(
    counts: Any, xy_um: np.ndarray, *, spot_um: float, bin_um: float, random_state: int = 0
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Split each spot's counts into the square bins (of a grid anchored at 0 µm) whose centres lie in its disc.

    Every count of a spot goes to one of its bins, uniformly at random (a multinomial split): the simulation that
    turns a Visium section into Visium HD bins for the consistency check and the scale benchmark. Spots whose discs
    hold no bin centre are dropped.

    Returns
    -------
    ``(bin counts CSR, array_row, array_col, spot of each bin)``.
    """
    from scipy import sparse

    X = sparse.csr_matrix(counts).astype(np.int64)
    xy_um = np.asarray(xy_um, dtype=np.float64)
    r = spot_um / 2 - 1e-6  # a bin on the disc's edge stays out, whatever the float rounding downstream
    k = int(np.ceil(spot_um / 2 / bin_um)) + 1
    dr, dc = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1), indexing="ij")
    row0 = np.floor(xy_um[:, 1] / bin_um).astype(np.int64)[:, None] + dr.ravel()
    col0 = np.floor(xy_um[:, 0] / bin_um).astype(np.int64)[:, None] + dc.ravel()
    inside = np.hypot((col0 + 0.5) * bin_um - xy_um[:, [0]], (row0 + 0.5) * bin_um - xy_um[:, [1]]) <= r
    inside &= (row0 >= 0) & (col0 >= 0)
    spot, cand = np.nonzero(inside)
    rows, cols = row0[spot, cand], col0[spot, cand]
    n_per_spot = np.bincount(spot, minlength=X.shape[0])
    first = np.concatenate([[0], np.cumsum(n_per_spot)[:-1]])
    coo = X.tocoo()
    has = n_per_spot[coo.row] > 0
    s_idx, g_idx, c = coo.row[has], coo.col[has], coo.data[has]
    unit_spot, unit_gene = np.repeat(s_idx, c), np.repeat(g_idx, c)
    rng = np.random.default_rng(random_state)
    unit_bin = first[unit_spot] + (rng.random(len(unit_spot)) * n_per_spot[unit_spot]).astype(np.int64)
    B = sparse.csr_matrix(
        (np.ones(len(unit_bin), dtype=np.float32), (unit_bin, unit_gene)), shape=(len(rows), X.shape[1])
    )
    B.sum_duplicates()
    return B, rows, cols, spot


def write_visium_as_hd(
    sdata, outs: str | os.PathLike, *, bin_um: int = 8, spot_um: float = 55.0, random_state: int = 0
):
    """Write a Visium section (a stalign reader's SpatialData) as Visium HD bins in the Space Ranger HD layout.

    The counts of each spot are split into the ``bin_um`` bins whose centres lie in its ``spot_um`` disc
    (:func:`split_into_bins`); the bins keep the section's full-resolution frame and µm per pixel, and its image
    becomes ``tissue_hires_image.png``. With ``feature_slice.h5``, so that :func:`spatialdata_io.visium_hd` reads it.

    Returns
    -------
    The ``outs`` folder.
    """
    table = sdata.tables[Key.table]
    lib = str(table.obs[Key.sample].iloc[0])
    sf = table.uns[Key.spatial][lib]["scalefactors"]
    mpp = float(sf[Key.microns_per_pixel])
    B, rows, cols, _ = split_into_bins(table.X, table.obsm[Key.spatial] * mpp, spot_um=spot_um, bin_um=bin_um,
                                       random_state=random_state)  # fmt: skip
    image = np.moveaxis(np.asarray(next(iter(sdata.images.values()))["scale0"]["image"].values), 0, -1)
    write_visium_hd(
        outs,
        counts=B,
        array_row=rows,
        array_col=cols,
        xy_fullres=np.column_stack([(cols + 0.5) * bin_um, (rows + 0.5) * bin_um]) / mpp,
        gene_ids=table.var["gene_ids"] if "gene_ids" in table.var else table.var_names,
        gene_names=table.var_names,
        bin_size_um=bin_um,
        microns_per_pixel=mpp,
        hires_image=image,
        hires_scalef=float(sf.get("image_scalef", 1.0)),
        feature_slice=True,
    )
    return Path(outs)
