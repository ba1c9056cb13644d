"""Non-learned baselines of the evaluation protocol (DESIGN.md §4), computed on the same spots as the model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._constants import SPOT_UM, Key
from .._section import Section, get_section

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

#: squidpy feature sets used as image baselines
SQUIDPY_FEATURES = ("summary", "histogram", "texture")


def log_expression(table, genes: Sequence[str] | None = None) -> np.ndarray:
    """Dense ``log1p(normalize_total(1e4))`` expression of ``table`` (all genes, or ``genes`` in that order)."""
    from ..pp import log_normalize

    X = log_normalize(table.X)
    if genes is not None:
        idx = table.var_names.get_indexer(list(genes))
        if (idx < 0).any():
            missing = [g for g, i in zip(genes, idx, strict=True) if i < 0][:5]
            msg = f"Genes not measured in the section: {missing}; choose genes from its var_names."
            raise KeyError(msg)
        X = X[:, idx]
    return np.asarray(X.todense(), dtype=np.float32)


def expression_pca(table, *, n_comps: int = 30, n_top_genes: int = 3000, random_state: int = 0) -> np.ndarray:
    """PCA (``n_comps``) of log1p(normalize_total) expression over the top ``n_top_genes`` HVGs (seurat flavour).

    The standard scanpy pipeline: normalise, log1p, highly variable genes (skipped when the panel is already at most
    ``n_top_genes`` genes), centred PCA without scaling.

    Examples
    --------
    >>> import stalign as sta
    >>> from stalign import evaluation
    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> evaluation.expression_pca(sdata.tables["table"], n_comps=30).shape
    (379, 30)
    """
    import scanpy as sc
    from anndata import AnnData

    from ..pp import log_normalize

    if table.n_vars == 0:
        msg = "Expression PCA needs counts; the section has no genes."
        raise ValueError(msg)
    tmp = AnnData(
        log_normalize(table.X), obs=pd.DataFrame(index=table.obs_names), var=pd.DataFrame(index=table.var_names)
    )
    tmp.var_names_make_unique()
    if tmp.n_vars > n_top_genes:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat")
        tmp = tmp[:, tmp.var["highly_variable"].to_numpy()]
    n = int(min(n_comps, tmp.n_obs - 1, tmp.n_vars - 1))
    return sc.tl.pca(tmp.X, n_comps=n, random_state=random_state).astype(np.float32)


def standardized_pca(F: np.ndarray, *, n_comps: int = 30, random_state: int = 0) -> np.ndarray:
    """Standardise features (constant columns dropped) and reduce to ``n_comps`` principal components.

    Examples
    --------
    >>> import stalign as sta
    >>> from stalign import evaluation
    >>> features = evaluation.pixel_features(sta.datasets.stutility_mob("MOB1"))
    >>> evaluation.standardized_pca(features["color_hist"], n_comps=10).shape
    (379, 10)
    """
    from sklearn.decomposition import PCA

    F = np.nan_to_num(np.asarray(F, dtype=np.float64))
    sd = F.std(axis=0)
    F = (F[:, sd > 0] - F[:, sd > 0].mean(axis=0)) / sd[sd > 0]
    n = int(min(n_comps, F.shape[0] - 1, F.shape[1]))
    return PCA(n_components=n, random_state=random_state).fit_transform(F).astype(np.float32)


def _squidpy_inputs(section: Section, *, size_um: float, level: int | str, lazy: bool = False):
    """A squidpy ImageContainer of one level and a throw-away AnnData with centres and crop size in level px."""
    import squidpy as sq
    from anndata import AnnData

    if not section.has_image:
        msg = f"Section {section.library_id!r} has no image; squidpy image features need an H&E image."
        raise ValueError(msg)
    lv = section.images[0] if level == "finest" else section.images[int(level)]
    img = np.moveaxis(np.asarray(lv.data), 0, -1)
    lib = str(section.library_id)
    cont = sq.im.ImageContainer(img, layer="image", dims=("y", "x", "channels"), library_id=lib, lazy=lazy)
    size_px = size_um / section.microns_per_pixel / lv.fullres_per_px
    tmp = AnnData(
        shape=(section.table.n_obs, 0),
        obs=pd.DataFrame(index=section.table.obs_names.copy()),
        obsm={Key.spatial: section.coords / lv.fullres_per_px},
        uns={Key.spatial: {lib: {"scalefactors": {"spot_diameter_fullres": float(size_px)}}}},
    )
    return cont, tmp, lib


def squidpy_features(
    data: AnnData | SpatialData,
    *,
    features: Sequence[str] = SQUIDPY_FEATURES,
    size_um: float = SPOT_UM,
    level: int | str = "finest",
    n_jobs: int = 1,
    table_key: str = Key.table,
    show_progress_bar: bool = False,
) -> pd.DataFrame:
    """:func:`squidpy.im.calculate_image_features` on square crops of ``size_um`` around every spot.

    Parameters
    ----------
    data
        SpatialData or squidpy-convention AnnData with an image.
    features
        squidpy feature groups (``"summary"``, ``"histogram"``, ``"texture"``, ...).
    size_um
        Crop side in µm (the model's spot view is 100 µm).
    level
        Image level read: ``"finest"`` (full resolution when present) or an index into the pyramid.
    n_jobs
        squidpy worker processes.
    table_key
        Table of a SpatialData.
    show_progress_bar
        squidpy's progress bar.

    Returns
    -------
    DataFrame (spots × features), indexed like the table.

    Examples
    --------
    >>> import stalign as sta
    >>> from stalign import evaluation
    >>> sdata = sta.datasets.stahl_mob("11")
    >>> df = evaluation.squidpy_features(sdata, features=["summary"])
    >>> df.shape, df.index.equals(sdata.tables["table"].obs_names)
    ((262, 15), True)
    """
    import squidpy as sq

    sec = get_section(data, table_key=table_key, require_image=True)
    cont, tmp, lib = _squidpy_inputs(sec, size_um=size_um, level=level)
    df = sq.im.calculate_image_features(
        tmp,
        cont,
        layer="image",
        library_id=lib,
        features=list(features),
        copy=True,
        n_jobs=n_jobs,
        show_progress_bar=show_progress_bar,
    )
    return df.loc[sec.table.obs_names]


def pixel_features(
    data: AnnData | SpatialData,
    *,
    size_um: float = SPOT_UM,
    px: int = 8,
    hist_bins: int = 16,
    table_key: str = Key.table,
) -> dict[str, np.ndarray]:
    """Hand-crafted H&E features per spot: downsampled crop pixels and per-channel colour histograms.

    Returns
    -------
    ``{"pixels": (n, 3 * px * px) in [0, 1], "color_hist": (n, 3 * hist_bins) densities}``.

    Examples
    --------
    >>> import stalign as sta
    >>> from stalign import evaluation
    >>> features = evaluation.pixel_features(sta.datasets.stutility_mob("MOB1"))
    >>> {k: v.shape for k, v in features.items()}
    {'pixels': (379, 192), 'color_hist': (379, 48)}
    """
    from ..pp import read_crops, spatial_order

    sec = get_section(data, table_key=table_key, require_image=True)
    n = sec.table.n_obs
    pix = np.empty((n, 3 * px * px), dtype=np.float32)
    hist = np.empty((n, 3 * hist_bins), dtype=np.float32)
    order = spatial_order(sec.coords) if n > 1 else np.arange(n)
    for s in range(0, n, 512):
        idx = order[s : s + 512]
        small = read_crops(sec, sec.coords[idx], size_um=size_um, out_px=px)
        pix[idx] = small.reshape(len(idx), -1).astype(np.float32) / 255.0
        big = read_crops(sec, sec.coords[idx], size_um=size_um, out_px=32)
        for c in range(3):
            h = np.stack(
                [np.bincount(b[c].ravel().astype(np.int64) * hist_bins // 256, minlength=hist_bins) for b in big]
            )
            hist[idx, c * hist_bins : (c + 1) * hist_bins] = h / (32 * 32)
    return {"pixels": pix, "color_hist": hist}
