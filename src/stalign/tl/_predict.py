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

_METHODS = ("ridge", "head", "retrieval")
#: At most this many principal components of the standardised features enter the ridge (HEST-Bench: 256).
RIDGE_COMPONENTS = 256


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
    method: Literal["ridge", "head", "retrieval"] = "ridge",
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

    The query's counts, if any, are ignored. Three methods:

    - ``"ridge"`` (default; the HEST-Bench protocol): the references' image embeddings are standardised, reduced to at
      most 256 principal components, and a ridge regression to their expression (alpha by generalised
      cross-validation) is applied to the query's. (Adding the prediction head's output to the features predicted
      held-out reference sections less well: ``MODEL_CARD.md``.)
    - ``"head"``: the prediction head alone, for the genes it predicts (``model.config.predict_genes``); its values,
      standardised within a section, are put on the references' scale (their mean and standard deviation per gene).
    - ``"retrieval"`` (BLEEP-style): for each query spot, the ``k`` reference spots whose embedding is closest to the
      query's image embedding in the aligned space (``match="gene"``: reference gene embeddings, cross-modal;
      ``"image"``: reference image embeddings), their expression averaged with weights
      ``softmax(similarity / temperature)``.

    Parameters
    ----------
    query
        SpatialData or AnnData with an H&E image (or precomputed ``obsm`` embeddings of :func:`~stalign.tl.embed`).
    reference
        One or several SpatialData/AnnData with raw counts (and an image for ``"ridge"``, ``"head"`` and
        ``match="image"``).
    genes
        Genes to predict; default the ``n_top_genes`` highly variable genes of the references
        (:func:`stalign.pp.reference_hvgs`, the genes the evaluation scores; with ``"head"``, among those it predicts).
    method
        ``"ridge"``, ``"head"`` or ``"retrieval"``.
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
    AnnData
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

    tables = [qtable, *ref_tables]
    records = [embedding_record(t, use_rep) for t in tables]
    # what each method reads: the query's image embedding (the head's output for "head") and, except for "head", which
    # needs only the references' expression, the references' image (or, cross-modal retrieval, gene) embeddings
    q_use = "pred" if method == "head" else "image"
    r_use = "gene" if (method == "retrieval" and match == "gene") else "image"
    needs = [(qtable, records[0], q_use)]
    if method != "head":
        needs += [(t, rec, r_use) for t, rec in zip(ref_tables, records[1:], strict=True)]
    stored = [embedding_keys(rec).get(u) in t.obsm for t, rec, u in needs]
    m = model_of(records, model, device=device, need_model=not all(stored))

    def features(data, rec, use) -> np.ndarray:
        return get_embedding(data, use=use, model=m, table_key=table_key, record=rec, device=device)

    if method == "head":
        out_genes, cols = _head_targets(ref_tables, genes, n_top_genes, _head_genes(records, m))
    else:
        out_genes = select_genes(ref_tables, genes, n_top_genes)
    Y = np.vstack([np.asarray(log_normalize(t.X)[:, t.var_names.get_indexer(out_genes)].todense()) for t in ref_tables])
    Q = features(query, records[0], q_use)
    if method == "head":
        pred = np.clip(Y.mean(axis=0) + Q[:, cols] * Y.std(axis=0), 0, None)
        params = {"method": method}
    else:
        R = np.vstack([features(r, rec, r_use) for r, rec in zip(refs, records[1:], strict=True)])
        if method == "retrieval":
            kk = min(int(k), len(R))
            pred = knn_average(Q, R, Y, k=kk, temperature=temperature)
            params = {"method": method, "k": kk, "match": match, "temperature": temperature}
        else:
            pred, alpha, n_comp = ridge_predict(R, Y, Q, alphas=alphas)
            params = {"method": method, "alpha": alpha, "n_components": n_comp}
    res = AnnData(
        X=np.asarray(pred, dtype=np.float32),
        obs=pd.DataFrame(index=qtable.obs_names.copy()),
        var=pd.DataFrame(index=pd.Index(out_genes, dtype=str)),
    )
    if Key.sample in qtable.obs:
        res.obs[Key.sample] = qtable.obs[Key.sample].to_numpy()
    if Key.spatial in qtable.obsm:
        res.obsm[Key.spatial] = np.asarray(qtable.obsm[Key.spatial]).copy()
    if Key.spatial in qtable.uns:
        res.uns[Key.spatial] = qtable.uns[Key.spatial]
    res.uns[Key.pred] = {"params": {**params, "n_reference_spots": int(len(Y)), "n_genes": len(out_genes)}}
    return res


def ridge_predict(
    R: np.ndarray, Y: np.ndarray, Q: np.ndarray, *, alphas: Sequence[float]
) -> tuple[np.ndarray, float, int]:
    """Ridge from reference features ``R`` to ``Y``, applied to ``Q`` (the HEST-Bench protocol).

    Features are standardised on the references and reduced to at most :data:`RIDGE_COMPONENTS` principal components;
    alpha is chosen among ``alphas`` by generalised (leave-one-out) cross-validation. Predictions are clipped at 0 (the
    log1p scale). Returns the predictions, the chosen alpha and the number of components.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV

    mu, sd = R.mean(axis=0), R.std(axis=0)
    sd[sd == 0] = 1.0
    Rs, Qs = (R - mu) / sd, (Q - mu) / sd
    n_comp = int(min(RIDGE_COMPONENTS, Rs.shape[1], max(len(Rs) - 1, 1)))
    if n_comp < Rs.shape[1]:
        pca = PCA(n_components=n_comp, random_state=0).fit(Rs)
        Rs, Qs = pca.transform(Rs), pca.transform(Qs)
    reg = RidgeCV(alphas=list(alphas)).fit(Rs, Y)
    return np.clip(reg.predict(Qs), 0, None).astype(np.float32), float(reg.alpha_), n_comp


def _head_genes(records: Sequence[dict | None], model) -> list[str]:
    """The genes of the prediction head that made the stored ``pred`` arrays (or of ``model``)."""
    if model is not None:
        if not model.config.predict_genes:
            msg = (
                "method='head' needs a model with a prediction head (config.predict_genes); this model has none. "
                "Use method='ridge' or 'retrieval'."
            )
            raise ValueError(msg)
        return list(model.config.predict_genes)
    rec = records[0]
    if rec is None or "pred_genes" not in rec:
        msg = "method='head' needs the prediction head's genes: re-run tl.embed with a model that has one."
        raise ValueError(msg)
    return [str(g) for g in rec["pred_genes"]]


def _head_targets(
    tables: Sequence[AnnData], genes: Sequence[str] | None, n_top_genes: int, pred_genes: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """Output genes of ``method="head"`` (reference ``var_names``) and their columns among ``pred_genes``."""
    from .._genes import gene_index

    if genes is None:
        common = tables[0].var_names
        for t in tables[1:]:
            common = common.intersection(t.var_names)
        ranked = reference_hvgs(tables, n_top_genes=len(common))
        idx = gene_index(ranked, pred_genes)
        chosen = [g for g, i in zip(ranked, idx, strict=True) if i >= 0][:n_top_genes]
        if not chosen:
            msg = "None of the references' genes is predicted by the model's head; use method='ridge'."
            raise ValueError(msg)
        out = chosen
    else:
        out = select_genes(tables, genes, n_top_genes)
        idx = gene_index(out, pred_genes)
        missing = [g for g, i in zip(out, idx, strict=True) if i < 0]
        if missing:
            msg = (
                f"{len(missing)} genes are not predicted by the model's head (e.g. {missing[:5]}); use method='ridge', "
                "which predicts any gene of the references."
            )
            raise ValueError(msg)
    return list(out), gene_index(out, pred_genes)
