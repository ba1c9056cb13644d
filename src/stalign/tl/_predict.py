"""``tl.predict_expression``: gene expression of a query section predicted from its H&E image alone."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import Key
from .._utils import get_table
from ._common import get_embedding, l2n, log_normalize, model_name_from
from ._embed import DEFAULT_MODEL, resolve_model

logger = logging.getLogger(__name__)

_METHODS = ("retrieval", "ridge")


def _as_list(reference) -> list:
    if isinstance(reference, list | tuple):
        if not reference:
            msg = "reference is empty; pass one or more sections with expression."
            raise ValueError(msg)
        return list(reference)
    return [reference]


def select_genes(tables: Sequence[AnnData], genes: Sequence[str] | None, n_top_genes: int) -> list[str]:
    """Output genes: ``genes`` (checked against every reference), else the top HVGs shared by all references."""
    common = pd.Index(tables[0].var_names)
    for t in tables[1:]:
        common = common.intersection(pd.Index(t.var_names))
    if genes is not None:
        genes = [genes] if isinstance(genes, str) else list(genes)
        missing = [g for g in genes if g not in common]
        if missing:
            msg = (
                f"{len(missing)} requested genes are not measured in every reference (e.g. {missing[:5]}); "
                "choose genes from the references' var_names."
            )
            raise ValueError(msg)
        return genes
    if len(common) == 0:
        msg = "The references share no genes; pass references measured on overlapping gene panels."
        raise ValueError(msg)
    import scanpy as sc

    ref = tables[0][:, common]
    tmp = AnnData(log_normalize(ref.X), obs=pd.DataFrame(index=ref.obs_names), var=pd.DataFrame(index=common))
    n = min(n_top_genes, len(common))
    sc.pp.highly_variable_genes(tmp, n_top_genes=n, flavor="seurat")
    hv = tmp.var.sort_values("dispersions_norm", ascending=False).index[:n]
    return list(hv)


def predict_expression(
    query: Any,
    reference: Any,
    *,
    genes: Sequence[str] | None = None,
    method: Literal["retrieval", "ridge"] = "retrieval",
    k: int = 50,
    match: Literal["gene", "image"] = "gene",
    n_top_genes: int = 1000,
    alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0),
    temperature: float = 0.1,
    model: Any = None,
    table_key: str = Key.table,
    device: Any = None,
) -> AnnData:
    """Predict expression for ``query`` from its H&E image alone, using reference sections with expression.

    The query's counts, if any, are ignored. ``"retrieval"`` (BLEEP-style) finds, for each query spot, the ``k``
    reference spots whose embedding is closest to the query's image embedding in the aligned space (``match=
    "gene"``: reference gene embeddings, cross-modal; ``"image"``: reference image embeddings) and averages their
    expression weighted by ``softmax(similarity / temperature)``. ``"ridge"`` fits a ridge regression from the
    references' image embeddings to their expression (alpha by generalised cross-validation) and applies it.

    Parameters
    ----------
    query
        SpatialData or AnnData with an H&E image (or a precomputed ``obsm["X_stalign_image"]``).
    reference
        One or several SpatialData/AnnData with raw counts (and an image for ``match="image"``/``"ridge"``).
    genes
        Genes to predict; default the ``n_top_genes`` highly variable genes of the first reference that all
        references measure.
    method
        ``"retrieval"`` or ``"ridge"``.
    k
        Neighbours for retrieval.
    match
        Reference embedding for retrieval: ``"gene"`` (cross-modal) or ``"image"``.
    n_top_genes
        Number of HVGs when ``genes`` is None.
    alphas
        Ridge penalties tried.
    temperature
        Softmax temperature of the retrieval weights.
    model
        Model for embeddings not yet in ``obsm``; default the one recorded by ``tl.embed``, else ``"stalign-base"``.
    table_key
        Table of SpatialData inputs.
    device
        Torch device (``None``: CUDA when present).

    Returns
    -------
    AnnData with the query's ``obs_names``, the genes as ``var_names`` and predicted values on the
    ``log1p(normalize_total(1e4))`` scale in ``X``; parameters in ``uns["stalign_pred"]``.

    Examples
    --------
    >>> import stalign as sta
    >>> reference = sta.io.stutility_mob("MOB1")  # H&E + expression
    >>> query = sta.io.stutility_mob("MOB2")  # its H&E is all the prediction uses
    >>> pred = sta.tl.predict_expression(query, [reference], n_top_genes=50)
    >>> pred.shape  # query spots x genes, log1p-normalised scale
    (..., 50)
    """
    if method not in _METHODS:
        msg = f"method must be one of {_METHODS}, got {method!r}."
        raise ValueError(msg)
    if match not in ("gene", "image"):
        msg = f"match must be 'gene' or 'image', got {match!r}."
        raise ValueError(msg)
    if isinstance(k, bool) or not (isinstance(k, int | np.integer) and k >= 1):
        msg = f"k must be a positive integer, got {k!r}."
        raise ValueError(msg)
    from ._common import check_counts, check_positive

    check_positive(temperature, name="temperature")
    check_positive(n_top_genes, name="n_top_genes", integer=True)
    alphas = [alphas] if isinstance(alphas, int | float) else alphas
    if (
        not isinstance(alphas, Sequence | np.ndarray)
        or len(alphas) == 0
        or not all(isinstance(a, int | float | np.integer | np.floating) and np.isfinite(a) and a > 0 for a in alphas)
    ):
        msg = f"alphas must be a non-empty list of positive ridge penalties, e.g. (0.1, 1, 10), got {alphas!r}."
        raise ValueError(msg)
    if genes is not None and not isinstance(genes, str) and len(list(genes)) == 0:
        msg = "genes is empty; pass gene symbols to predict, or None for the references' highly variable genes."
        raise ValueError(msg)
    refs = _as_list(reference)
    qtable = get_table(query, table_key=table_key)
    ref_tables = [get_table(r, table_key=table_key) for r in refs]
    for i, t in enumerate(ref_tables):
        check_counts(t.X, what=f"The counts of reference[{i}]")
        if t.n_vars == 0 or not float(t.X.sum()) > 0:
            msg = f"reference[{i}] has no expression (0 genes or all-zero counts); references need raw counts."
            raise ValueError(msg)
    out_genes = select_genes(ref_tables, genes, n_top_genes)

    model_spec = model if model is not None else model_name_from(qtable, DEFAULT_MODEL)
    m = None
    need = [(query, "image")] + [(r, "image" if (method == "ridge" or match == "image") else "gene") for r in refs]
    keys = {"image": Key.X_image, "gene": Key.X_gene}
    if any(keys[u] not in get_table(d, table_key=table_key).obsm for d, u in need):
        m, _ = resolve_model(model_spec, device=device)
    Q = get_embedding(query, use="image", model=m, table_key=table_key, device=device)
    ref_use = need[1][1]
    R = np.vstack([get_embedding(r, use=ref_use, model=m, table_key=table_key, device=device) for r in refs])
    Y = np.vstack([np.asarray(log_normalize(t.X)[:, t.var_names.get_indexer(out_genes)].todense()) for t in ref_tables])

    if method == "retrieval":
        Qn, Rn = l2n(Q), l2n(R)
        kk = min(int(k), len(Rn))
        pred = np.empty((len(Qn), len(out_genes)), dtype=np.float32)
        for s in range(0, len(Qn), 2048):  # bounded memory: one block of similarities at a time
            S = Qn[s : s + 2048] @ Rn.T
            idx = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
            sim = np.take_along_axis(S, idx, axis=1)
            w = np.exp((sim - sim.max(axis=1, keepdims=True)) / temperature)
            w /= w.sum(axis=1, keepdims=True)
            pred[s : s + 2048] = np.einsum("bk,bkg->bg", w, Y[idx])
        params = {"method": method, "k": kk, "match": match, "temperature": temperature}
    else:
        from sklearn.linear_model import RidgeCV

        reg = RidgeCV(alphas=list(alphas)).fit(R, Y)
        pred = np.clip(reg.predict(Q), 0, None).astype(np.float32)
        params = {"method": method, "alpha": float(reg.alpha_)}
    res = AnnData(
        X=pred.astype(np.float32),
        obs=pd.DataFrame(index=qtable.obs_names.copy()),
        var=pd.DataFrame(index=pd.Index(out_genes, dtype=str)),
    )
    if Key.sample in qtable.obs:
        res.obs[Key.sample] = qtable.obs[Key.sample].to_numpy()
    if Key.spatial in qtable.obsm:
        res.obsm[Key.spatial] = np.asarray(qtable.obsm[Key.spatial]).copy()
    if Key.spatial in qtable.uns:
        res.uns[Key.spatial] = qtable.uns[Key.spatial]
    res.uns[Key.pred] = {"params": {**params, "n_reference_spots": int(len(R)), "n_genes": len(out_genes)}}
    return res
