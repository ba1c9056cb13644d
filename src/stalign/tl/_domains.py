"""``tl.domains``: zero-shot spatial domains by clustering an embedding."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .._constants import Key
from .._docs import inject
from .._utils import copy_data, default_rep, get_table, save_data, set_category_colors
from .._validators import check_int, check_key, check_number, renamed_arguments

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

_METHODS = ("gmm", "kmeans", "leiden")


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


#: Default smoothing radius (µm) of :func:`domains`, chosen on the development sections (``MODEL_CARD.md``).
DEFAULT_SMOOTH_UM = 150.0


@inject
@renamed_arguments(embed_key="use_rep")
def domains(
    data: AnnData | SpatialData,
    *,
    n_domains: int | None = None,
    method: Literal["gmm", "kmeans", "leiden"] = "gmm",
    use_rep: str | None = None,
    smooth_um: float = DEFAULT_SMOOTH_UM,
    library_key: str | None = None,
    resolution: float = 1.0,
    n_pcs: int | None = 30,
    key_added: str = Key.domain,
    random_state: int = 0,
    table_key: str = Key.table,
    copy: bool = False,
):
    """Zero-shot spatial domains: smooth an embedding over space, then cluster it.

    Each spot's embedding is averaged with every spot within ``smooth_um`` micrometres (the same tissue on Visium,
    legacy ST and any scan resolution; :func:`stalign.pp.spatial_smooth`), then clustered. With ``library_key``,
    smoothing stays within each section and the clustering is joint: domain 3 is the same tissue in every section.

    Parameters
    ----------
    data
        SpatialData (its table) or AnnData with an embedding from :func:`stalign.tl.embed`.
    n_domains
        Number of domains; required by ``"gmm"`` and ``"kmeans"``.
    method
        ``"gmm"`` (Gaussian mixture, full covariance), ``"kmeans"``, or ``"leiden"`` (igraph flavour, at
        ``resolution``; the number of domains follows from the data).
    use_rep
        ``obsm`` key to cluster (e.g. the ``key_added`` of a :func:`~stalign.tl.embed` call, its fused embedding);
        default the fused embedding of :func:`~stalign.tl.embed` (``X_stalign``), else its image embedding (H&E-only
        sections), else its gene embedding.
    smooth_um
        Smoothing radius in µm (default 150, chosen on the development sections, see ``MODEL_CARD.md``); ``0`` turns
        smoothing off. On legacy ST's 200 µm grid a radius below the pitch changes nothing.
    library_key
        ``obs`` column naming each spot's section, for an AnnData that holds several (squidpy's convention).
    resolution
        Leiden resolution.
    n_pcs
        Reduce the embedding to this many principal components first (``None``: no reduction).
    key_added
        ``obs`` key of the labels; parameters go to ``uns[key_added]``.
    random_state
        Seed.
    {table_key}
    copy
        Return a copy instead of writing into ``data``.

    Returns
    -------
    AnnData | SpatialData | None
        ``None`` or a copy; sets ``obs[key_added]`` (natsorted categorical), ``uns[f"{key_added}_colors"]`` (scanpy's
        default palette, shared by :func:`stalign.pl.domains`, ``sc.pl.spatial`` and ``sq.pl.spatial_scatter``) and
        ``uns[key_added]["params"]`` (the method, representation, ``smooth_um`` and the other settings used).

    Examples
    --------
    {dlpfc_embedded}
    >>> sta.tl.domains(sdata, n_domains=7)
    >>> table = sdata.tables["table"]
    >>> (
    ...     table.obs["stalign_domain"].cat.categories.size,
    ...     table.uns["stalign_domain"]["params"]["smooth_um"],
    ... )
    (7, 150.0)
    >>> sta.tl.domains(
    ...     sdata, n_domains=7, use_rep="X_stalign_image", key_added="image_domain"
    ... )  # H&E only
    """
    from ..pp import spatial_smooth

    if method not in _METHODS:
        msg = f"method must be one of {_METHODS}, got {method!r}."
        raise ValueError(msg)
    check_key(key_added)
    check_number(resolution, "resolution", hint=" (Leiden resolution, e.g. 1.0)")
    check_int(n_pcs, "n_pcs", allow_none=True)
    check_int(random_state, "random_state", minimum=0, hint=" (a seed)")
    smooth_um = check_number(smooth_um, "smooth_um", strict=False, hint=" (µm; 0 turns smoothing off)")
    table = get_table(data, table_key=table_key)
    rep = default_rep(table, use_rep)
    X = np.asarray(table.obsm[rep])
    if X.ndim != 2 or X.shape[0] == 0:
        msg = f"obsm[{rep!r}] has shape {X.shape}; clustering needs an (n_spots, d) embedding with at least one spot."
        raise ValueError(msg)
    if method == "leiden":
        if n_domains is not None:
            msg = (
                "method='leiden' sets the number of domains through `resolution`; drop n_domains= or use method='gmm'."
            )
            raise ValueError(msg)
        if X.shape[0] < 3:
            msg = f"Leiden clustering needs at least 3 spots, got {X.shape[0]}; pass n_domains= with method='gmm'."
            raise ValueError(msg)
    else:
        if n_domains is None:
            msg = (
                f"method={method!r} needs n_domains= (the number of domains, e.g. the number of tissue layers); or "
                "pass method='leiden' to let `resolution` set it."
            )
            raise ValueError(msg)
        check_int(n_domains, "n_domains")
        if n_domains > X.shape[0]:
            msg = f"n_domains={n_domains} exceeds the number of spots ({X.shape[0]}); choose at most {X.shape[0]}."
            raise ValueError(msg)
    if not np.isfinite(X).all():
        msg = f"obsm[{rep!r}] contains NaN/inf rows; re-run tl.embed or pass a complete use_rep."
        raise ValueError(msg)
    if smooth_um > 0:
        X = spatial_smooth(data, X, radius_um=smooth_um, library_key=library_key, table_key=table_key)
    labels = cluster_embedding(
        X, n_domains=n_domains, method=method, resolution=resolution, n_pcs=n_pcs, random_state=random_state
    )
    target = copy_data(data, table_key=table_key) if copy else data
    table = get_table(target, table_key=table_key)
    save_data(table, attr="obs", key=key_added, data=_natsorted_categorical(labels))
    set_category_colors(table, key_added)
    table.uns[key_added] = {
        "params": {
            "n_domains": n_domains,
            "use_rep": rep,
            "method": method,
            "smooth_um": smooth_um,
            "library_key": library_key,
            "resolution": resolution,
            "n_pcs": n_pcs,
            "random_state": random_state,
        }
    }
    return target if copy else None
