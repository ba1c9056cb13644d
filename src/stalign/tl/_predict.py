"""``tl.predict_expression``: gene expression of a query section predicted from its H&E image alone."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import Key
from .._section import check_raw_counts
from .._utils import embedding_keys, embedding_record, get_table
from .._validators import check_int, check_number, renamed_arguments
from ..pp import log_normalize, reference_hvgs
from ._common import knn_average, model_of
from ._embed import get_embedding

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
    """Output genes: ``genes`` (checked against every reference), else :func:`stalign.pp.reference_hvgs`."""
    if genes is None:
        return reference_hvgs(tables, n_top_genes=n_top_genes)
    common = pd.Index(tables[0].var_names)
    for t in tables[1:]:
        common = common.intersection(pd.Index(t.var_names))
    genes = [genes] if isinstance(genes, str) else list(genes)
    missing = [g for g in genes if g not in common]
    if missing:
        msg = (
            f"{len(missing)} requested genes are not measured in every reference (e.g. {missing[:5]}); "
            "choose genes from the references' var_names."
        )
        raise ValueError(msg)
    return genes


@renamed_arguments(embed_key="use_rep")
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
    use_rep: str | None = None,
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
        Genes to predict; default the ``n_top_genes`` highly variable genes of the references
        (:func:`stalign.pp.reference_hvgs`, the genes the evaluation scores).
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
        Model for embeddings not yet in ``obsm``. Default: the model that computed the stored embeddings (recorded by
        :func:`~stalign.tl.embed` in ``uns``), else ``"stalign-base"``. A model other than the one that computed the
        stored embeddings is refused: two models' spaces cannot be mixed.
    use_rep
        The :func:`~stalign.tl.embed` embedding to use, named by its ``key_added`` (its fused ``obsm`` key, e.g.
        ``"X_stalign"``; its image and gene embeddings come with it), when a table holds several; default the only
        one present.
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
    >>> reference = sta.datasets.stutility_mob("MOB1")  # H&E + expression
    >>> query = sta.datasets.stutility_mob("MOB2")  # its H&E is all the prediction uses
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
    check_int(k, "k", hint=" (reference spots averaged per query spot)")
    check_number(temperature, "temperature", hint=" (e.g. 0.1)")
    check_int(n_top_genes, "n_top_genes")
    alphas = [alphas] if isinstance(alphas, int | float) else alphas
    if not isinstance(alphas, Sequence | np.ndarray) or len(alphas) == 0:
        msg = f"alphas must be a non-empty list of positive ridge penalties, e.g. (0.1, 1, 10), got {alphas!r}."
        raise ValueError(msg)
    for a in alphas:
        check_number(a, "alphas[...]", hint=" (ridge penalties, e.g. (0.1, 1, 10))")
    if genes is not None and not isinstance(genes, str) and len(list(genes)) == 0:
        msg = "genes is empty; pass gene symbols to predict, or None for the references' highly variable genes."
        raise ValueError(msg)
    refs = _as_list(reference)
    qtable = get_table(query, table_key=table_key)
    ref_tables = [get_table(r, table_key=table_key) for r in refs]
    for i, t in enumerate(ref_tables):
        check_raw_counts(t.X, what=f"The counts of reference[{i}]")
        if t.n_vars == 0 or not float(t.X.sum()) > 0:
            msg = f"reference[{i}] has no expression (0 genes or all-zero counts); references need raw counts."
            raise ValueError(msg)
    out_genes = select_genes(ref_tables, genes, n_top_genes)

    ref_use = "image" if (method == "ridge" or match == "image") else "gene"
    records = [embedding_record(qtable, use_rep)] + [embedding_record(t, use_rep) for t in ref_tables]
    stored = [embedding_keys(r).get(u) in t.obsm
              for r, t, u in zip(records, [qtable, *ref_tables], ["image"] + [ref_use] * len(refs), strict=True)]  # fmt: skip
    m = model_of(records, model, device=device, need_model=not all(stored))
    Q = get_embedding(query, use="image", model=m, table_key=table_key, record=records[0], device=device)
    R = np.vstack(
        [
            get_embedding(r, use=ref_use, model=m, table_key=table_key, record=rec, device=device)
            for r, rec in zip(refs, records[1:], strict=True)
        ]
    )
    Y = np.vstack([np.asarray(log_normalize(t.X)[:, t.var_names.get_indexer(out_genes)].todense()) for t in ref_tables])

    if method == "retrieval":
        kk = min(int(k), len(R))
        pred = knn_average(Q, R, Y, k=kk, temperature=temperature)
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
