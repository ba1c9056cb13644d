"""The DLPFC Visium dataset (Maynard et al. 2021): Space Ranger spatial files, layer labels, counts from R files."""

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

from .. import io
from .._docs import inject
from .._files import require_file
from ._common import resolve_root, unknown_sample
from ._rdata import r_matrix, read_rdata, seurat_counts

logger = logging.getLogger(__name__)

#: Files of a Space Ranger spatial folder that hold the spot positions (any Space Ranger version).
_POSITION_GLOB = "tissue_positions*"


def _dlpfc_samples(root: Path) -> list[str]:
    tenx = root / "dlpfc_humanpilot" / "10X"
    if not tenx.is_dir():
        return []
    return sorted(p.name for p in tenx.iterdir() if p.is_dir() and any(p.glob(_POSITION_GLOB)))


def dlpfc_counts_file(root: Path, sample: str) -> Path | None:
    """The counts file of a DLPFC sample, when present (BANKSY list or DR-SC Seurat object)."""
    for rel in (
        f"dlpfc_banksy_counts/data/dlpfc{sample}.rda",
        f"dlpfc_drsc_{sample}/data/dlpfc{sample}.rda",
        f"dlpfc_drsc_151510/data/dlpfc{sample}.rda",
    ):
        if (root / rel).is_file():
            return root / rel
    return None


def counts_from_r_object(obj: Any, *, what: str) -> tuple[sparse.csr_matrix, list[str], list[str]]:
    """Counts from a converted R object → ``(spots × genes CSR, barcodes, gene ids)``.

    Accepts the BANKSY list (``expression``: dense genes × spots with dimnames), a Seurat object
    (``assays$RNA`` counts, a dgCMatrix genes × spots), or a bare genes × spots matrix.
    """
    if isinstance(obj, dict) and "expression" in obj:
        mat, genes, cells = r_matrix(obj["expression"], what=f"{what} $expression")
    elif (isinstance(obj, dict) and "assays" in obj) or hasattr(obj, "assays"):
        mat, genes, cells = seurat_counts(obj, what=what)
    else:
        mat, genes, cells = r_matrix(obj, what=what)
    if genes is None or cells is None:
        msg = f"{what}: the counts matrix has no gene or spot names (dimnames); cannot join it to the positions."
        raise ValueError(msg)
    X = sparse.csr_matrix(sparse.csc_matrix(mat).T) if sparse.issparse(mat) else sparse.csr_matrix(np.asarray(mat).T)
    return X, cells, genes


def _pick_r_object(objs: dict[str, Any], *, sample: str, path: Path) -> Any:
    if f"dlpfc{sample}" in objs:
        return objs[f"dlpfc{sample}"]
    if len(objs) == 1:
        return next(iter(objs.values()))
    msg = f"{str(path)!r} holds {len(objs)} objects ({', '.join(objs)}); expected one named 'dlpfc{sample}'."
    raise ValueError(msg)


@inject
def dlpfc(sample: str | int, *, data_dir: str | os.PathLike | None = None):
    """Load one DLPFC Visium slice (Maynard et al. 2021) from the shared data layout.

    Reads ``dlpfc_humanpilot/10X/<sample>/`` (positions, scale factors, ``tissue_hires_image.png`` when present,
    else ``tissue_lowres_image.png``), the layer labels ``10X/barcode_level_layer_map.tsv`` into
    ``obs["annotation"]`` (L1–L6, WM; NaN for unlabelled spots), and the raw counts when present
    (``dlpfc_banksy_counts/data/dlpfc<sample>.rda``, or the DR-SC Seurat object
    ``dlpfc_drsc_151510/data/dlpfc151510.rda``). Ensembl ids become symbols (``var["gene_ids"]`` keeps them).

    Spots: with counts, the in-tissue spots that have counts; without counts, every in-tissue spot and a table
    with 0 genes (image, positions and labels still load).

    Parameters
    ----------
    sample
        Slice id, e.g. ``"151673"``.
    {data_dir}

    Returns
    -------
    SpatialData
        SpatialData with table ``"table"``, image ``"<sample>_image"`` and circles ``"<sample>_spots"``;
        µm per full-resolution pixel from the 100 µm array pitch (0.726 on these sections).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> table = sdata.tables["table"]
    >>> table.n_obs, table.n_vars
    (3639, 5000)
    >>> list(sdata.images), list(sdata.shapes)
    (['151673_image'], ['151673_spots'])
    >>> sorted(table.obs["annotation"].dropna().unique())
    ['L1', 'L2', 'L3', 'L4', 'L5', 'L6', 'WM']
    """
    root = resolve_root(data_dir)
    sample = str(sample)
    available = _dlpfc_samples(root)
    if sample not in available:
        raise unknown_sample("DLPFC sample", sample, available, root)
    folder = root / "dlpfc_humanpilot" / "10X" / sample
    what = f"DLPFC {sample}"
    require_file(folder / "scalefactors_json.json", root=root, what="scale factors")
    if not (folder / "tissue_hires_image.png").is_file():
        require_file(folder / "tissue_lowres_image.png", root=root, what="DLPFC image")

    labels = None
    lab_path = root / "dlpfc_humanpilot" / "10X" / "barcode_level_layer_map.tsv"
    if lab_path.is_file():
        lab = pd.read_csv(lab_path, sep="\t", header=None, names=["barcode", "sample", "layer"], dtype=str)
        lab = lab[lab["sample"] == sample]
        labels = pd.Series(lab["layer"].to_numpy(), index=lab["barcode"].to_numpy())
        labels = labels[~labels.index.duplicated()]
    else:
        logger.info("%s: no label file %s.", what, lab_path)

    cpath = dlpfc_counts_file(root, sample)
    if cpath is None:
        logger.info("%s: no counts file; the table has 0 genes.", what)
        with warnings.catch_warnings():  # the dataset has no count matrix: read_visium's warning says what we logged
            warnings.filterwarnings("ignore", message="No filtered_feature_bc_matrix", category=UserWarning)
            return io.read_visium(folder, dataset_id=sample, labels=labels)
    obj = _pick_r_object(read_rdata(cpath), sample=sample, path=cpath)
    X, barcodes, gene_ids = counts_from_r_object(obj, what=f"{what} counts {cpath.name}")
    counts = AnnData(X=X, obs=pd.DataFrame(index=pd.Index(barcodes)), var=pd.DataFrame(index=pd.Index(gene_ids)))
    return io.read_visium(folder, dataset_id=sample, counts=counts, labels=labels)
