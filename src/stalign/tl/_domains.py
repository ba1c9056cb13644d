"""``tl.domains``: zero-shot spatial domains by clustering an embedding."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._constants import Key
from .._utils import copy_data, get_table, save_data

logger = logging.getLogger(__name__)

_METHODS = ("gmm", "kmeans", "leiden")


def default_rep(table, use_rep: str | None, *, prefer: tuple[str, ...] = (Key.X, Key.X_image, Key.X_gene)) -> str:
    """``use_rep`` if given (checked), else the first of ``prefer`` present in ``obsm``."""
    if use_rep is not None:
        if use_rep not in table.obsm:
            msg = f"use_rep {use_rep!r} not in obsm (available: {', '.join(table.obsm.keys()) or 'none'}); run tl.embed first."
            raise KeyError(msg)
        return use_rep
    for key in prefer:
        if key in table.obsm:
            return key
    msg = f"No stalign embedding in obsm (looked for {', '.join(prefer)}); run stalign.tl.embed first or pass use_rep=."
    raise KeyError(msg)


def _natsorted_categorical(labels: np.ndarray) -> pd.Categorical:
    from natsort import natsorted

    values = np.asarray(labels).astype(str)
    return pd.Categorical(values, categories=natsorted(np.unique(values)))


def cluster_embedding(
    X: np.ndarray,
    *,
    n_domains: int | None,
    method: str,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    n_pcs: int | None = 30,
    random_state: int = 0,
) -> np.ndarray:
    """Cluster rows of ``X``: GMM / k-means with ``n_domains``, or Leiden at ``resolution``."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float64)
    if n_pcs is not None and X.shape[1] > n_pcs and X.shape[0] > n_pcs:
        X = PCA(n_components=n_pcs, random_state=random_state).fit_transform(X)
    if method == "leiden":
        import scanpy as sc
        from anndata import AnnData

        tmp = AnnData(np.zeros((X.shape[0], 0), dtype=np.float32))
        tmp.obsm["X_rep"] = X
        sc.pp.neighbors(tmp, use_rep="X_rep", n_neighbors=min(n_neighbors, X.shape[0] - 1), random_state=random_state)
        sc.tl.leiden(
            tmp, resolution=resolution, flavor="igraph", n_iterations=2, random_state=random_state, directed=False
        )
        return tmp.obs["leiden"].to_numpy().astype(int)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=n_domains, n_init=10, random_state=random_state).fit_predict(X)
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(
        n_components=n_domains, covariance_type="full", reg_covar=1e-4, n_init=3, random_state=random_state
    )
    return gmm.fit_predict(X)


def domains(
    data: Any,
    *,
    n_domains: int | None = None,
    use_rep: str | None = None,
    method: Literal["gmm", "kmeans", "leiden"] = "gmm",
    resolution: float = 1.0,
    n_pcs: int | None = 30,
    smooth_um: float | None = None,
    key_added: str = Key.domain,
    random_state: int = 0,
    table_key: str = Key.table,
    copy: bool = False,
):
    """Zero-shot spatial domains: cluster the (fused, else image) embedding.

    Parameters
    ----------
    data
        SpatialData (its table) or AnnData with an embedding from :func:`stalign.tl.embed`.
    n_domains
        Number of domains for ``"gmm"``/``"kmeans"``. With ``None``, Leiden is used at ``resolution``.
    use_rep
        ``obsm`` key to cluster; default ``X_stalign`` (fused), else ``X_stalign_image``, else ``X_stalign_gene``.
    method
        ``"gmm"`` (Gaussian mixture, full covariance), ``"kmeans"`` or ``"leiden"`` (igraph flavour).
    resolution
        Leiden resolution.
    n_pcs
        Reduce the embedding to this many principal components first (``None``: no reduction).
    smooth_um
        Average each spot's embedding with every spot within this radius (µm) before clustering, the way the
        niche-smoothed expression baseline does (``None``: no smoothing). Needs spot positions.
    key_added
        ``obs`` key of the labels; parameters go to ``uns[key_added]``.
    random_state
        Seed.
    table_key
        Table of a SpatialData.
    copy
        Return a copy instead of writing into ``data``.

    Returns
    -------
    ``None`` or a copy; sets ``obs[key_added]`` (natsorted categorical) and ``uns[key_added]["params"]``.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.dlpfc("151673")
    >>> sta.tl.embed(sdata, show_progress_bar=False)
    >>> sta.tl.domains(sdata, n_domains=7)
    >>> sdata.tables["table"].obs["stalign_domain"].cat.categories.size
    7
    >>> sta.tl.domains(sdata, n_domains=7, use_rep="X_stalign_image", key_added="image_domain")  # H&E only
    """
    from .._utils import check_key
    from ._common import check_positive

    if method not in _METHODS:
        msg = f"method must be one of {_METHODS}, got {method!r}."
        raise ValueError(msg)
    check_key(key_added)
    check_positive(resolution, name="resolution")
    check_positive(n_pcs, name="n_pcs", integer=True, allow_none=True)
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer) or random_state < 0:
        msg = f"random_state must be a non-negative integer seed, got {random_state!r}."
        raise ValueError(msg)
    table = get_table(data, table_key=table_key)
    rep = default_rep(table, use_rep)
    X = np.asarray(table.obsm[rep])
    if X.ndim != 2 or X.shape[0] == 0:
        msg = f"obsm[{rep!r}] has shape {X.shape}; clustering needs an (n_spots, d) embedding with at least one spot."
        raise ValueError(msg)
    if n_domains is None and method != "leiden":
        method = "leiden"
    if method == "leiden" and X.shape[0] < 3:
        msg = f"Leiden clustering needs at least 3 spots, got {X.shape[0]}; pass n_domains= with method='gmm'."
        raise ValueError(msg)
    if method != "leiden":
        if not isinstance(n_domains, int | np.integer) or isinstance(n_domains, bool) or n_domains < 1:
            msg = f"n_domains must be a positive integer, got {n_domains!r}."
            raise ValueError(msg)
        if n_domains > X.shape[0]:
            msg = f"n_domains={n_domains} exceeds the number of spots ({X.shape[0]}); choose at most {X.shape[0]}."
            raise ValueError(msg)
    if not np.isfinite(X).all():
        msg = f"obsm[{rep!r}] contains NaN/inf rows; re-run tl.embed or pass a complete use_rep."
        raise ValueError(msg)
    if smooth_um is not None:
        from .._section import get_section
        from ..pp._niche import niche_graph

        X = niche_graph(get_section(data, table_key=table_key), radius_um=smooth_um) @ X
    labels = cluster_embedding(
        X, n_domains=n_domains, method=method, resolution=resolution, n_pcs=n_pcs, random_state=random_state
    )
    target = copy_data(data, table_key=table_key) if copy else data
    table = get_table(target, table_key=table_key)
    save_data(table, attr="obs", key=key_added, data=_natsorted_categorical(labels))
    table.uns[key_added] = {
        "params": {
            "n_domains": n_domains,
            "use_rep": rep,
            "method": method,
            "resolution": resolution,
            "n_pcs": n_pcs,
            "smooth_um": smooth_um,
            "random_state": random_state,
        }
    }
    return target if copy else None
