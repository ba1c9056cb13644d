"""Zero-shot annotation: ``tl.annotate`` from marker prompts vs ``score_genes`` on expression smoothed alike."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import Key
from .._docs import inject
from .._section import get_section
from .._utils import get_table
from ..pp import gene_index, log_normalize, normalize_symbol, spatial_smooth
from ._aggregate import summarise
from ._markers import MARKERS
from ._metrics import classification_scores
from ._store import (
    MAIN,
    RANDOM,
    Run,
    check_smooth_um,
    dataset_of,
    labels_of,
    signature_default,
)

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)


def _default_smooth_um() -> float:
    from ..tl import annotate

    return float(signature_default(annotate, "smooth_um"))


def _markers_for(name: str, markers: Mapping | None) -> dict[str, list[str]]:
    if markers is not None:
        if isinstance(markers, Mapping) and markers and all(isinstance(v, Mapping) for v in markers.values()):
            mk = markers.get(dataset_of(name)) or markers.get(name)
        else:
            mk = markers
        if mk:
            return {str(k): list(v) for k, v in mk.items()}
    mk = MARKERS.get(dataset_of(name))
    if mk is None:
        msg = (
            f"No marker dictionary for section {name!r}; pass markers={{label: [genes]}} "
            f"(bundled ones: {', '.join(MARKERS)})."
        )
        raise ValueError(msg)
    return mk


def _present(genes: Sequence[str], available: Sequence[str]) -> list[str]:
    """Genes of ``genes`` present in ``available`` (case-insensitive, spelled as in ``available``)."""
    lut = dict(zip(normalize_symbol(list(available)), available, strict=True))
    return [lut[g] for g in normalize_symbol(list(genes)) if g in lut]


def score_genes_labels(
    data: AnnData | SpatialData,
    markers: Mapping[str, Sequence[str]],
    *,
    smooth_um: float | None = None,
    random_state: int = 0,
    table_key: str = Key.table,
) -> np.ndarray:
    """Baseline annotation: :func:`scanpy.tl.score_genes` per label, each score z-scored over spots, then argmax.

    The scores are computed on log-normalised expression (:func:`stalign.pp.log_normalize`) first averaged over
    ``smooth_um`` with :func:`stalign.pp.spatial_smooth`, the smoothing :func:`stalign.tl.annotate` gives its
    embeddings. Genes with no count in the section are left out (they would only fill the lowest expression bin of
    the control genes). A label with none of its markers measured is never chosen.

    Parameters
    ----------
    data
        SpatialData or AnnData with raw counts (and spot positions and µm/px unless ``smooth_um=0``).
    markers
        ``{label: [gene symbols]}``.
    smooth_um
        Smoothing radius in µm; default that of :func:`stalign.tl.annotate`. ``0``: no smoothing.
    random_state
        Seed of the control-gene sampling of :func:`scanpy.tl.score_genes`.
    table_key
        Table of a SpatialData.

    Returns
    -------
    Predicted label of every spot (object array).

    Examples
    --------
    >>> import stalign as sta
    >>> from stalign import evaluation
    >>> sdata = sta.datasets.dlpfc("151674")
    >>> pred = evaluation.score_genes_labels(sdata, evaluation.DLPFC_LAYER_MARKERS)
    >>> sorted(set(pred))
    ['L1', 'L2', 'L3', 'L4', 'L5', 'L6', 'WM']
    >>> 0.3 < evaluation.classification_scores(
    ...     sdata.tables["table"].obs["annotation"], pred
    ... )["accuracy"] < 0.9
    True
    """
    import scanpy as sc

    smooth = check_smooth_um(smooth_um, _default_smooth_um())
    table = get_table(data, table_key=table_key)
    if table.n_vars == 0:
        msg = "score_genes needs expression; the section has no genes (H&E-only sections have no such baseline)."
        raise ValueError(msg)
    keep = np.flatnonzero(np.asarray(table.X.sum(axis=0)).ravel() > 0)
    X = log_normalize(table.X)[:, keep]
    if smooth > 0:
        X = spatial_smooth(data, X, radius_um=smooth, table_key=table_key)
    tmp = AnnData(X, obs=pd.DataFrame(index=table.obs_names), var=pd.DataFrame(index=table.var_names[keep]))
    tmp.var_names_make_unique()
    S = np.full((tmp.n_obs, len(markers)), -np.inf)
    for j, genes in enumerate(markers.values()):
        present = _present(genes, tmp.var_names)
        if not present:
            continue
        sc.tl.score_genes(tmp, present, score_name="_s", random_state=random_state, ctrl_size=min(50, tmp.n_vars // 2))
        s = tmp.obs["_s"].to_numpy(dtype=np.float64)
        sd = s.std()
        S[:, j] = (s - s.mean()) / (sd if sd > 0 else 1.0)
    labels = np.asarray(list(markers), dtype=object)
    return labels[S.argmax(axis=1)]


def _in_vocabulary(markers: Mapping[str, Sequence[str]], vocabulary: Sequence[str]) -> dict[str, list[str]]:
    """The prompts a model can embed: each label's markers in its vocabulary; labels with none are dropped."""
    out = {}
    for label, genes in markers.items():
        known = [g for g, i in zip(genes, gene_index(list(genes), vocabulary), strict=True) if i >= 0]
        if known:
            out[label] = known
    return out


@inject
def eval_annotate(
    sections: Any,
    *,
    model: Any,
    markers: Mapping | None = None,
    baselines: bool = True,
    ablations: Mapping[str, Any] | None = None,
    labels_key: str = "annotation",
    smooth_um: float | None = None,
    seeds: int | Sequence[int] = 3,
    data_dir: Any = None,
    device: Any = None,
) -> dict:
    """Zero-shot annotation from marker prompts: accuracy and macro-F1 of ``tl.annotate`` vs manual labels.

    ``stalign`` is what a user gets after :func:`stalign.tl.embed`: ``tl.annotate(data, markers=..., model=...,
    smooth_um=..., random_state=seed)`` with its other defaults; ``stalign_image`` matches the prompts to the H&E
    embedding alone (sections with an image and expression). The baseline ``score_genes`` is
    :func:`score_genes_labels` on expression smoothed over the same radius. Spots whose manual label has no prompt
    (e.g. her2st "undetermined") are not scored; every method is scored on the same spots.

    Parameters
    ----------
    sections
        Labelled sections (specs, paths or ``{name: data}``).
    model
        Registry name, saved-model path or :class:`~stalign.models.STAlign`; a list of them are training seeds.
    markers
        ``{label: [genes]}`` for every section, or ``{dataset: {label: [genes]}}``; default the bundled
        literature dictionaries :data:`stalign.evaluation.MARKERS` (DLPFC layers, her2st regions, MOB layers).
    baselines
        Also score :func:`score_genes_labels` (sections with expression) and the random-init model.
    ablations
        ``{name: model or path}`` evaluated like ``model``.
    labels_key
        ``obs`` column of the manual labels.
    smooth_um
        Smoothing radius (µm) of ``tl.annotate`` and of the baseline's expression; default ``tl.annotate``'s.
    seeds
        Seeds of ``tl.annotate`` (when it takes ``random_state``) and of the baseline's control genes.
    {eval_params}

    Returns
    -------
    dict
        ``{"sections": {name: {"labels", "excluded_labels", "n_scored", "methods": {method: {"accuracy",
        "macro_f1", "sd", "values", "runs"}}}}, "pooled": {method: scores over all scored spots, run by run}}``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.eval_annotate(["her2st:A1"], model="stalign-base", seeds=1)
    >>> sec = res["sections"]["her2st:A1"]
    >>> sorted(sec["methods"])  # A1 has expression and no image
    ['random_init', 'score_genes', 'stalign']
    >>> sec["excluded_labels"]
    ['cancer in situ', 'undetermined']
    """
    from ..tl import annotate

    smooth = check_smooth_um(smooth_um, _default_smooth_um())
    run = Run.of_task(model, ablations=ablations, baselines=baselines, seeds=seeds, data_dir=data_dir, device=device)
    seeds_, store, models = run.seeds, run.store, run.models
    names = store.add(sections)
    out: dict[str, Any] = {}
    runs_of: dict[str, list] = {}  # method -> run labels (the same in every section)
    preds_of: dict[str, list[list[np.ndarray]]] = {}  # method -> per section, one prediction per run
    truth_of: dict[str, list[np.ndarray]] = {}
    for name in names:
        data = store[name]
        table = get_table(data)
        sec = get_section(data)
        mk = _markers_for(name, markers)
        lab = labels_of(table, labels_key, name)
        scored = lab.isin(list(mk)).to_numpy()
        excluded = sorted({str(v) for v in lab.dropna().unique()} - set(mk))
        preds: dict[str, list] = {}  # method -> [(run label, prediction)]
        for group, members in models.groups.items():
            if group == RANDOM and not baselines:
                continue
            for member in members:
                m = models.models[member]
                # with expression, tl.annotate matches the markers against the section's genes; H&E marker prompts
                # need them in the model's vocabulary (a label with none would be refused)
                mk_m = mk if sec.has_expression else _in_vocabulary(mk, m.config.genes)
                if not mk_m:
                    continue
                emb = models.embedded(member, name, data)
                variants = {group: {}}
                if group == MAIN and "image" in emb.arrays and "gene" in emb.arrays:
                    variants[f"{MAIN}_image"] = {"use": "image"}
                for method, kw in variants.items():
                    for s in seeds_:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", UserWarning)  # markers the section lacks
                            annotate(emb.view, markers=mk_m, model=m, smooth_um=smooth, device=models.device,
                                     random_state=s, **kw)  # fmt: skip
                        p = get_table(emb.view).obs[Key.label].astype(str).to_numpy()
                        preds.setdefault(method, []).append(((member, s), p))
        if baselines and sec.has_expression:
            for s in seeds_:
                p = score_genes_labels(data, mk, smooth_um=smooth, random_state=s)
                preds.setdefault("score_genes", []).append(((None, s), p))
        truth = lab.to_numpy()[scored]
        methods = {}
        for method, r in preds.items():
            scores = [{k: v for k, v in classification_scores(truth, p[scored]).items() if k != "n"} for _, p in r]
            methods[method] = summarise(scores, [x[0] for x in r])
            runs_of.setdefault(method, [x[0] for x in r])
            preds_of.setdefault(method, []).append([p[scored] for _, p in r])
            truth_of.setdefault(method, []).append(truth)
        out[name] = {
            "n_scored": int(scored.sum()),
            "labels": list(mk),
            "excluded_labels": excluded,
            "smooth_um": smooth,
            "methods": methods,
        }
        logger.info("annotate %s: %s", name, {m: round(v["accuracy"], 3) for m, v in methods.items()})
    pooled = {}
    for method, per_section in preds_of.items():
        n_runs = min(len(p) for p in per_section)
        truth = np.concatenate(truth_of[method])
        scores = []
        for i in range(n_runs):
            s = classification_scores(truth, np.concatenate([p[i] for p in per_section]))
            scores.append({"accuracy": s["accuracy"], "macro_f1": s["macro_f1"]})
        pooled[method] = summarise(scores, runs_of[method][:n_runs], n_spots=len(truth), n_sections=len(per_section))
    return {"sections": out, "pooled": pooled, "smooth_um": smooth, "seeds": seeds_}
