"""``tl.annotate``: labels from marker genes refined over the embedding and space, or label transfer from a reference.

Marker mode
-----------
1. **Marker scores.** With expression, each label's score is :func:`scanpy.tl.score_genes` (its markers' mean
   log-normalised expression minus that of matched control genes) on expression averaged over ``smooth_um``
   (:func:`stalign.pp.spatial_smooth`), z-scored over spots so that labels with strong and weak markers compete on one
   scale. Without expression (an H&E-only section), the score is the cosine similarity between each spot's smoothed
   image embedding and the embedding of the label's marker prompt (a pseudo-spot expressing the markers, embedded by
   the gene encoder), z-scored the same way.
2. **Refinement over the embedding.** The scores become probabilities ``P0 = softmax(z / 0.5)``, which are spread
   over the ``n_neighbors``-nearest-neighbour graph of the smoothed spot embedding (its expression embedding, or
   its H&E embedding on an H&E-only section; label spreading, Zhou et al. 2004):
   ``P ← (1 − α) P0 + α W P`` with ``α = propagate``. Spots whose markers are weak or noisy take the label of the
   spots their embedding resembles; ``propagate=0`` keeps the marker scores alone.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .._constants import Key
from .._docs import inject
from .._genes import to_vocabulary_symbols, var_symbols
from .._utils import copy_data, embedding_keys, embedding_record, get_table, save_data, set_category_colors
from .._validators import check_int, check_key, check_number, renamed_arguments
from ..pp import log_normalize, spatial_smooth
from ._common import knn_average, l2n, model_of, prompt_embeddings
from ._domains import DEFAULT_SMOOTH_UM
from ._embed import get_embedding

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

_USES = ("auto", "image", "gene", "fused")
#: Temperature of the softmax that turns z-scored marker scores into the prior probabilities.
SCORE_TEMPERATURE = 0.5
#: Iterations of label spreading (the spreading converges geometrically, as alpha ** iterations).
SPREAD_ITERATIONS = 30


def _pick_use(data, table, use: str, *, order: tuple[str, ...], table_key: str, record: dict | None) -> str:
    """Resolve ``use="auto"``: the first of ``order`` already in ``obsm``, else the first the section allows."""
    if use not in _USES:
        msg = f"use must be one of {_USES}, got {use!r}."
        raise ValueError(msg)
    if use != "auto":
        return use
    keys = embedding_keys(record)
    for name in order:
        if keys.get(name) in table.obsm:
            return name
    from .._section import get_section

    sec = get_section(data, table_key=table_key)
    allowed = {"image": sec.has_image, "gene": sec.has_expression, "fused": sec.has_image or sec.has_expression}
    for name in order:
        if allowed[name]:
            return name
    msg = "The section has neither an image nor expression to annotate; load one with stalign.io."
    raise ValueError(msg)


def _check_markers(markers: Any) -> dict[str, list[str]]:
    if not isinstance(markers, Mapping) or not markers:
        msg = "markers must be a non-empty dict {label: [gene symbols or Ensembl ids]}."
        raise ValueError(msg)
    out = {}
    for label, genes in markers.items():
        if isinstance(genes, str):
            genes = [genes]
        if not isinstance(genes, Sequence | np.ndarray | pd.Index | set) or not all(isinstance(g, str) for g in genes):
            msg = f"markers[{label!r}] must be a list of gene symbols or Ensembl ids (strings), got {genes!r}."
            raise TypeError(msg)
        out[str(label)] = list(genes)
    return out


def _match(markers: dict[str, list[str]], available: np.ndarray) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """Positions in ``available`` (upper-case symbols) of each label's markers (symbols or Ensembl ids), and misses."""
    available = np.asarray(available, dtype=object)
    found, missing = {}, {}
    for label, genes in markers.items():
        hits = [np.flatnonzero(available == s) for s in to_vocabulary_symbols(genes)]
        found[label] = sorted({int(i) for h in hits for i in h})
        missing[label] = [g for g, h in zip(genes, hits, strict=True) if len(h) == 0]
    return found, missing


def _marker_profiles(found: Mapping[str, Sequence[int]], n_vocab: int, *, boost: float = 50.0) -> np.ndarray:
    """Pseudo-spot expression ``(n_labels, n_vocab)`` for marker prompts, on the log1p(normalize_total) scale.

    Each prompt is a flat profile (one count per vocabulary gene) with the label's markers (indices ``found`` in the
    model's vocabulary) raised by ``boost`` counts, then log-normalised like real spots.
    """
    profiles = np.ones((len(found), n_vocab), dtype=np.float64)
    for row, idx in enumerate(found.values()):
        profiles[row, list(idx)] += boost
    return np.asarray(log_normalize(profiles).todense())


def _zscore(S: np.ndarray) -> np.ndarray:
    sd = S.std(axis=0)
    return (S - S.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _expression_scores(table, found: dict[str, list[int]], *, smooth, random_state):
    """z-scored score_genes of every label on ``smooth``-ed log-normalised expression (``(n_spots, n_labels)``)."""
    import scanpy as sc
    from anndata import AnnData

    X = smooth(log_normalize(table.X))
    tmp = AnnData(
        X, obs=pd.DataFrame(index=table.obs_names.copy()), var=pd.DataFrame(index=pd.RangeIndex(X.shape[1]).astype(str))
    )
    S = np.empty((table.n_obs, len(found)), dtype=np.float64)
    # scanpy's defaults (25 expression bins, 50 control genes) on panels of >= 250 genes; a small panel gets bins of
    # about 10 genes, so that every marker's bin holds control genes (with 25 bins of ~1 gene, scanpy finds none)
    n_bins = min(25, max(tmp.n_vars // 10, 1))
    for j, idx in enumerate(found.values()):
        sc.tl.score_genes(tmp, [str(i) for i in idx], score_name="_s", random_state=random_state,
                          ctrl_size=min(50, max(tmp.n_vars // 2, 1)), n_bins=n_bins)  # fmt: skip
        S[:, j] = tmp.obs["_s"].to_numpy()
    return _zscore(S)


def _spread(P0: np.ndarray, Z: np.ndarray, *, alpha: float, n_neighbors: int) -> np.ndarray:
    """Label spreading of ``P0`` over the ``n_neighbors``-NN graph (cosine) of the embedding ``Z``."""
    from sklearn.neighbors import NearestNeighbors

    if alpha == 0 or len(Z) < 2:
        return P0
    k = min(int(n_neighbors), len(Z))
    idx = NearestNeighbors(n_neighbors=k).fit(Z).kneighbors(Z, return_distance=False)
    P = P0.copy()
    for _ in range(SPREAD_ITERATIONS):
        P = (1 - alpha) * P0 + alpha * P[idx].mean(axis=1)
    return P / P.sum(axis=1, keepdims=True)


def _write_labels(target, table_key, key_added, labels, scores: pd.DataFrame, params) -> None:
    table = get_table(target, table_key=table_key)
    cats = list(scores.columns)
    save_data(table, attr="obs", key=key_added, data=pd.Categorical(np.asarray(labels), categories=cats))
    set_category_colors(table, key_added)
    save_data(table, attr="obs", key=f"{key_added}_score", data=scores.max(axis=1).to_numpy(dtype=np.float32))
    save_data(table, attr="obsm", key=f"{key_added}_scores", data=scores)
    table.uns[key_added] = {"params": params}


@inject
@renamed_arguments(embed_key="use_rep")
def annotate(
    data: AnnData | SpatialData,
    *,
    markers: Mapping[str, Sequence[str]] | None = None,
    reference: Any = None,
    labels_key: str | None = None,
    use: Literal["auto", "image", "gene", "fused"] = "auto",
    model: Any = None,
    use_rep: str | None = None,
    smooth_um: float = DEFAULT_SMOOTH_UM,
    library_key: str | None = None,
    propagate: float = 0.8,
    n_neighbors: int = 15,
    k: int = 15,
    temperature: float = 0.1,
    random_state: int = 0,
    key_added: str = Key.label,
    table_key: str = Key.table,
    device: Any = None,
    copy: bool = False,
):
    """Labels from marker genes, refined over the embedding and space; or label transfer from a labelled reference.

    With ``markers``, each label is scored from its markers on spatially smoothed expression (an H&E-only section: from
    the similarity of its image embedding to the label's marker prompt), and the scores are spread over the
    nearest-neighbour graph of the smoothed embedding (details in :mod:`stalign.tl._annotate`). With ``reference`` and
    ``labels_key``, labels are transferred by a similarity-weighted vote over the ``k`` nearest reference spots in
    the same embedding.

    Parameters
    ----------
    data
        SpatialData (its table) or AnnData; embeddings from :func:`stalign.tl.embed` are used when present and
        computed on the fly otherwise.
    markers
        ``{label: [gene symbols or Ensembl ids]}``; markers the section (or, for an H&E-only section, the model)
        does not know are skipped, warned about and listed in ``uns``.
    reference
        Labelled SpatialData/AnnData for label transfer.
    labels_key
        ``obs`` column of ``reference`` with the labels.
    use
        Embedding used: ``"image"`` (H&E only), ``"gene"``, ``"fused"``; ``"auto"``: for markers, the spot's gene
        embedding, else (an H&E-only section) its image embedding; for label transfer, fused, else image, else gene.
    model
        Model for prompts and missing embeddings. Default: the model that computed the stored embeddings (recorded
        by :func:`~stalign.tl.embed` in ``uns``), else ``"stalign-base"``. A model other than the one that computed
        the stored embeddings is refused: two models' spaces cannot be mixed.
    use_rep
        The :func:`~stalign.tl.embed` embedding to use, named by its ``key_added`` (its fused ``obsm`` key, e.g.
        ``"X_stalign"``; its image and gene embeddings come with it), when a table holds several; default the only
        one present.
    smooth_um
        Radius (µm) over which expression and embeddings are averaged first (:func:`stalign.pp.spatial_smooth`, as in
        :func:`~stalign.tl.domains`); ``0`` turns it off.
    library_key
        ``obs`` column naming each spot's section, for an AnnData that holds several (smoothing stays within each).
    propagate
        Label-spreading weight ``α`` in ``[0, 1)``: how much a spot's label follows its embedding neighbours rather
        than its own marker scores (``0``: marker scores alone).
    n_neighbors
        Neighbours of each spot in the embedding graph of the spreading.
    k
        Neighbours for label transfer.
    temperature
        Softmax temperature of the label-transfer vote (on cosine similarities).
    random_state
        Seed of the control genes of the marker scores.
    key_added
        ``obs`` key of the labels; the confidence goes to ``obs[key_added + "_score"]`` and per-label scores to
        ``obsm[key_added + "_scores"]``.
    {table_key}
    device
        Torch device (``None``: CUDA when present).
    copy
        Return a copy instead of writing into ``data``.

    Returns
    -------
    AnnData | SpatialData | None
        ``None`` or a copy; sets ``obs[key_added]`` (categorical) with its colours in
        ``uns[f"{key_added}_colors"]`` (scanpy's default palette), ``obs[key_added + "_score"]`` (the probability
        of the chosen label), ``obsm[key_added + "_scores"]`` (DataFrame of per-label probabilities) and
        ``uns[key_added]["params"]`` (the method, the markers used and those not found).

    Examples
    --------
    {dlpfc_embedded}
    >>> sta.tl.annotate(
    ...     sdata,
    ...     markers={"WM": ["MBP", "PLP1", "MOBP"], "GM": ["SNAP25", "SYT1", "NRGN"]},
    ... )
    >>> table = sdata.tables["table"]
    >>> (
    ...     sorted(table.obs["stalign_label"].cat.categories),
    ...     table.obsm["stalign_label_scores"].shape,
    ... )
    (['GM', 'WM'], (3639, 2))
    """
    if (markers is None) == (reference is None):
        msg = "Pass exactly one of `markers` (zero-shot prompts) or `reference` (+ `labels_key`, label transfer)."
        raise ValueError(msg)
    check_number(temperature, "temperature", hint=" (e.g. 0.1)")
    smooth_um = check_number(smooth_um, "smooth_um", strict=False, hint=" (µm; 0 turns smoothing off)")
    propagate = check_number(propagate, "propagate", strict=False, maximum=1.0, hint=" (e.g. 0.8; 0: no spreading)")
    check_int(n_neighbors, "n_neighbors")
    check_int(random_state, "random_state", minimum=0, hint=" (a seed)")
    check_key(key_added)
    if markers is None:
        check_int(k, "k", hint=" (reference neighbours that vote)")
    else:
        markers = _check_markers(markers)
    table = get_table(data, table_key=table_key)
    # markers: the spot's own embedding (the fused one holds its niche too, a second smoothing that blurs thin layers)
    order = ("gene", "image", "fused") if markers is not None else ("fused", "image", "gene")
    rec = embedding_record(table, use_rep)
    use_ = _pick_use(data, table, use, order=order, table_key=table_key, record=rec)

    def smooth(X):
        return (
            spatial_smooth(data, X, radius_um=smooth_um, library_key=library_key, table_key=table_key)
            if smooth_um > 0
            else X
        )

    if markers is not None:
        from .._section import get_section

        has_expr = get_section(data, table_key=table_key).has_expression
        stored = embedding_keys(rec).get(use_) in table.obsm
        m = model_of([rec], model, device=device, need_model=not (stored and has_expr))
        Z = l2n(smooth(get_embedding(data, use=use_, model=m, table_key=table_key, record=rec, device=device)))
        if has_expr:
            found, missing = _match(markers, var_symbols(table))
            source = "expression"
        else:
            found, missing = _match(markers, np.asarray(to_vocabulary_symbols(m.config.genes), dtype=object))
            source = "prompts"
        empty = [label for label, idx in found.items() if not idx]
        if empty:
            where = "the section's genes" if has_expr else "the model's gene vocabulary"
            msg = (
                f"None of the markers of {', '.join(map(repr, empty))} is in {where} (given: "
                f"{', '.join(g for lab in empty for g in markers[lab])}); use gene symbols or Ensembl ids that it has."
            )
            raise ValueError(msg)
        missed = {lab: g for lab, g in missing.items() if g}
        if missed:
            warnings.warn(
                "Markers not found, ignored: " + "; ".join(f"{lab}: {', '.join(g)}" for lab, g in missed.items()),
                UserWarning,
                stacklevel=2,
            )
        if has_expr:
            S = _expression_scores(table, found, smooth=smooth, random_state=random_state)
        else:
            profiles = _marker_profiles(found, len(m.config.genes))
            S = _zscore(Z @ l2n(prompt_embeddings(m, profiles)).T)
        P0 = np.exp((S - S.max(axis=1, keepdims=True)) / SCORE_TEMPERATURE)
        P0 /= P0.sum(axis=1, keepdims=True)
        prob = _spread(P0, Z, alpha=propagate, n_neighbors=n_neighbors)
        labels_ = list(found)
        params = {
            "mode": "markers", "scores": source, "use": use_, "smooth_um": smooth_um, "propagate": propagate,
            "n_neighbors": n_neighbors, "random_state": random_state,
            "markers": {lab: [g for g in markers[lab] if g not in missing[lab]] for lab in labels_},
            "markers_not_found": missed,
        }  # fmt: skip
    else:
        if labels_key is None:
            msg = "Label transfer needs `labels_key`: the obs column of `reference` holding the labels."
            raise ValueError(msg)
        ref_table = get_table(reference, table_key=table_key)
        if labels_key not in ref_table.obs:
            msg = f"labels_key {labels_key!r} not in reference.obs (columns: {', '.join(ref_table.obs.columns)})."
            raise KeyError(msg)
        ref_rec = embedding_record(ref_table, use_rep)
        stored = [embedding_keys(r).get(use_) in t.obsm for r, t in ((rec, table), (ref_rec, ref_table))]
        m = model_of([rec, ref_rec], model, device=device, need_model=not all(stored))
        Z = get_embedding(data, use=use_, model=m, table_key=table_key, record=rec, device=device)
        R = get_embedding(reference, use=use_, model=m, table_key=table_key, record=ref_rec, device=device)
        lab = ref_table.obs[labels_key]
        keep = lab.notna().to_numpy()
        if not keep.any():
            msg = f"reference.obs[{labels_key!r}] has no labels (all missing)."
            raise ValueError(msg)
        R, lab = R[keep], lab[keep].astype(str).to_numpy()
        labels_ = sorted(np.unique(lab).tolist())
        kk = min(int(k), len(R))
        onehot = (lab[:, None] == np.asarray(labels_)[None, :]).astype(np.float32)
        prob = knn_average(Z, R, onehot, k=kk, temperature=temperature)
        params = {"mode": "reference", "labels_key": labels_key, "use": use_, "k": kk, "temperature": temperature}

    scores = pd.DataFrame(prob.astype(np.float32), index=table.obs_names, columns=labels_)
    labels = np.asarray(labels_, dtype=object)[prob.argmax(axis=1)]
    target = copy_data(data, table_key=table_key) if copy else data
    _write_labels(target, table_key, key_added, labels, scores, params)
    return target if copy else None
