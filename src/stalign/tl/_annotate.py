"""``tl.annotate``: zero-shot labels from marker-gene prompts, or label transfer from a labelled reference."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._constants import Key
from .._utils import copy_data, embedding_keys, embedding_record, get_table, save_data
from .._validators import check_int, check_key, check_number
from ..pp import log_normalize, spatial_smooth
from ._common import get_embedding, knn_average, l2n, model_of, prompt_embeddings
from ._domains import DEFAULT_SMOOTH_UM

logger = logging.getLogger(__name__)

_USES = ("auto", "image", "gene", "fused")


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
    allowed = {"image": sec.has_image, "gene": sec.has_expression, "fused": sec.has_image and sec.has_expression}
    for name in order:
        if allowed[name]:
            return name
    msg = "The section has neither an image nor expression to annotate; load one with stalign.io."
    raise ValueError(msg)


def marker_profiles(
    markers: Mapping[str, Sequence[str]],
    vocabulary: Sequence[str],
    *,
    background: np.ndarray | None = None,
    boost: float = 50.0,
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Pseudo-spot expression ``(n_labels, V)`` for marker prompts, on the log1p(normalize_total) scale.

    Each prompt is a background profile (the section's mean counts over the vocabulary, or flat) with the label's
    markers raised to ``boost`` × the background's mean count, then log-normalised like real spots.
    """
    from ..pp import gene_index

    if not isinstance(markers, Mapping) or not markers:
        msg = "markers must be a non-empty dict {label: [gene symbols]}."
        raise ValueError(msg)
    V = len(vocabulary)
    base = np.ones(V, dtype=np.float64) if background is None else np.asarray(background, dtype=np.float64)
    level = max(float(base.mean()), 1e-3) * boost
    profiles, used = [], {}
    for label, genes in markers.items():
        if isinstance(genes, str):
            genes = [genes]
        if not isinstance(genes, Sequence | np.ndarray | pd.Index | set) or not all(isinstance(g, str) for g in genes):
            msg = f"markers[{label!r}] must be a list of gene symbols (strings), got {genes!r}."
            raise TypeError(msg)
        genes = list(genes)
        idx = gene_index(genes, vocabulary)
        known = [g for g, i in zip(genes, idx, strict=True) if i >= 0]
        unknown = [g for g, i in zip(genes, idx, strict=True) if i < 0]
        if not known:
            msg = (
                f"None of the markers of {label!r} ({', '.join(genes) or 'none given'}) is in the model's gene "
                "vocabulary; use gene symbols (e.g. 'MBP') that the model knows (model.config.genes)."
            )
            raise ValueError(msg)
        if unknown:
            warnings.warn(
                f"Markers of {label!r} not in the model vocabulary, ignored: {', '.join(unknown)}",
                UserWarning,
                stacklevel=3,
            )
        p = base.copy()
        p[idx[idx >= 0]] += level
        profiles.append(p)
        used[str(label)] = known
    return np.asarray(log_normalize(np.vstack(profiles)).todense()), used


def _write_labels(target, table_key, key_added, labels, scores: pd.DataFrame, params) -> None:
    table = get_table(target, table_key=table_key)
    cats = list(scores.columns)
    save_data(table, attr="obs", key=key_added, data=pd.Categorical(np.asarray(labels), categories=cats))
    save_data(table, attr="obs", key=f"{key_added}_score", data=scores.max(axis=1).to_numpy(dtype=np.float32))
    save_data(table, attr="obsm", key=f"{key_added}_scores", data=scores)
    table.uns[key_added] = {"params": params}


def annotate(
    data: Any,
    *,
    markers: Mapping[str, Sequence[str]] | None = None,
    reference: Any = None,
    labels_key: str | None = None,
    use: Literal["auto", "image", "gene", "fused"] = "auto",
    model: Any = None,
    embed_key: str | None = None,
    smooth_um: float = DEFAULT_SMOOTH_UM,
    library_key: str | None = None,
    k: int = 15,
    temperature: float = 0.1,
    key_added: str = Key.label,
    table_key: str = Key.table,
    device: Any = None,
    copy: bool = False,
):
    """Zero-shot annotation from marker-gene prompts, or label transfer from a labelled reference.

    With ``markers``, each label's markers are turned into a pseudo-spot expression profile, embedded by the gene
    encoder into the aligned space and matched (cosine) to the spots' image, gene or fused embedding. With
    ``reference`` and ``labels_key``, labels are transferred by a similarity-weighted vote over the ``k`` nearest
    reference spots in the same embedding.

    Parameters
    ----------
    data
        SpatialData (its table) or AnnData; embeddings from :func:`stalign.tl.embed` are used when present and
        computed on the fly otherwise.
    markers
        ``{label: [gene symbols]}``.
    reference
        Labelled SpatialData/AnnData for label transfer.
    labels_key
        ``obs`` column of ``reference`` with the labels.
    use
        Embedding to match: ``"image"`` (H&E only), ``"gene"``, ``"fused"``; ``"auto"`` picks gene, else image for
        marker prompts, and fused, else image, else gene for label transfer.
    model
        Model for prompts and missing embeddings. Default: the model that computed the stored embeddings (recorded
        by :func:`~stalign.tl.embed` in ``uns``), else ``"stalign-base"``. A model other than the one that computed
        the stored embeddings is refused: two models' spaces cannot be mixed.
    embed_key
        ``key_added`` of the :func:`~stalign.tl.embed` call whose embeddings to use, when the table holds several;
        default the only one present.
    smooth_um
        Average each spot's embedding over every spot within this radius (µm) before matching
        (:func:`stalign.pp.spatial_smooth`, as :func:`~stalign.tl.domains` does); ``0`` turns it off.
    library_key
        ``obs`` column naming each spot's section, for an AnnData that holds several (smoothing stays within each).
    k
        Neighbours for label transfer.
    temperature
        Softmax temperature turning similarities into per-label scores.
    key_added
        ``obs`` key of the labels; the confidence goes to ``obs[key_added + "_score"]`` and per-label scores to
        ``obsm[key_added + "_scores"]``.
    table_key
        Table of a SpatialData.
    device
        Torch device (``None``: CUDA when present).
    copy
        Return a copy instead of writing into ``data``.

    Returns
    -------
    ``None`` or a copy; sets ``obs[key_added]`` (categorical), ``obs[key_added + "_score"]``,
    ``obsm[key_added + "_scores"]`` (DataFrame, one column per label) and ``uns[key_added]["params"]``.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.dlpfc("151673")
    >>> sta.tl.embed(sdata, show_progress_bar=False)
    >>> sta.tl.annotate(sdata, markers={"WM": ["MBP", "PLP1", "MOBP"], "GM": ["SNAP25", "SYT1", "NRGN"]})
    >>> sorted(sdata.tables["table"].obs["stalign_label"].cat.categories)
    ['GM', 'WM']
    """
    if (markers is None) == (reference is None):
        msg = "Pass exactly one of `markers` (zero-shot prompts) or `reference` (+ `labels_key`, label transfer)."
        raise ValueError(msg)
    check_number(temperature, "temperature", hint=" (e.g. 0.1)")
    smooth_um = check_number(smooth_um, "smooth_um", strict=False, hint=" (µm; 0 turns smoothing off)")
    check_key(key_added)
    if markers is None:
        check_int(k, "k", hint=" (reference neighbours that vote)")
    table = get_table(data, table_key=table_key)
    # prompts are gene profiles: match them to gene embeddings when there is expression, else to H&E
    order = ("gene", "image", "fused") if markers is not None else ("fused", "image", "gene")
    rec = embedding_record(table, embed_key)
    use_ = _pick_use(data, table, use, order=order, table_key=table_key, record=rec)

    if markers is not None:
        m = model_of([rec], model, device=device)
        Z = get_embedding(data, use=use_, model=m, table_key=table_key, record=rec, device=device)
        if smooth_um > 0:
            Z = spatial_smooth(data, Z, radius_um=smooth_um, library_key=library_key, table_key=table_key)
        Z = l2n(Z)
        from ..pp import gene_index

        genes = list(m.config.genes)
        background = None
        if table.n_vars:
            idx = gene_index(table, genes)
            ok = idx >= 0
            if ok.any():
                background = np.zeros(len(genes))
                background[idx[ok]] = np.asarray(table.X[:, np.flatnonzero(ok)].mean(axis=0)).ravel()
        profiles, used = marker_profiles(markers, genes, background=background)
        P = l2n(prompt_embeddings(m, profiles))
        logits = (Z @ P.T) / temperature
        prob = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        labels_ = list(used)
        params = {"mode": "markers", "markers": used, "use": use_, "temperature": temperature, "smooth_um": smooth_um}
    else:
        if labels_key is None:
            msg = "Label transfer needs `labels_key`: the obs column of `reference` holding the labels."
            raise ValueError(msg)
        ref_table = get_table(reference, table_key=table_key)
        if labels_key not in ref_table.obs:
            msg = f"labels_key {labels_key!r} not in reference.obs (columns: {', '.join(ref_table.obs.columns)})."
            raise KeyError(msg)
        ref_rec = embedding_record(ref_table, embed_key)
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
