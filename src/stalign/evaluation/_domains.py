"""Zero-shot spatial domains: ``tl.domains`` as a user calls it, and every baseline with the same smoothing."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._docs import inject
from .._section import get_section
from .._utils import get_table, l2_normalize
from ..pp import spatial_smooth
from ._aggregate import pooled, summarise
from ._baselines import SQUIDPY_FEATURES, expression_pca, squidpy_features, standardized_pca
from ._metrics import clustering_scores
from ._store import (
    MAIN,
    RANDOM,
    Run,
    check_smooth_um,
    default_smooth_um,
    labels_of,
    shell,
)

logger = logging.getLogger(__name__)

#: obs key the harness writes into its own views of the sections
_KEY = "eval_domain"
#: the parts of the fused embedding scored next to it
PARTS = ("gene", "image", "niche")


def cluster(data: Any, X: np.ndarray, *, n_domains: int, smooth_um: float, seeds: Sequence[int]) -> list[np.ndarray]:
    """Labels of ``tl.domains`` (GMM, its defaults) on ``X`` smoothed over ``smooth_um``, one array per seed.

    The representation is smoothed once with :func:`stalign.pp.spatial_smooth` (what ``tl.domains`` does inside)
    and clustered by ``tl.domains`` with ``smooth_um=0``, so baselines and stalign share every step.
    """
    from ..tl import domains

    table = get_table(data)
    if smooth_um > 0:
        X = spatial_smooth(data, X, radius_um=smooth_um)
    tmp = shell(table, {"X_rep": X}, counts=False)
    out = []
    for s in seeds:
        domains(tmp, n_domains=n_domains, use_rep="X_rep", smooth_um=0, random_state=s, key_added=_KEY)
        out.append(tmp.obs[_KEY].to_numpy())
    return out


def _score(lab, pred) -> dict[str, float]:
    s = clustering_scores(lab, np.asarray(pred))
    return {"ari": s["ari"], "nmi": s["nmi"]}


@inject
def eval_domains(
    sections: Any,
    *,
    model: Any,
    baselines: bool = True,
    parts: bool = True,
    ablations: Mapping[str, Any] | None = None,
    labels_key: str = "annotation",
    n_domains: int | None = None,
    smooth_um: float | None = None,
    seeds: int | Sequence[int] = 3,
    image_features: Sequence[str] = SQUIDPY_FEATURES,
    data_dir: Any = None,
    device: Any = None,
) -> dict:
    """Zero-shot spatial domains: ARI / NMI of ``tl.domains`` vs manual labels, next to baselines smoothed alike.

    ``stalign`` is what a user gets: :func:`stalign.tl.embed`, then ``tl.domains(data, n_domains=k,
    random_state=seed)`` with its default representation (fused when the section has an image and expression, else
    image, else gene) and the same ``smooth_um``. Every other representation is smoothed over the same radius with
    :func:`stalign.pp.spatial_smooth` and clustered by ``tl.domains`` too, so no comparison is easier than another.

    Parameters
    ----------
    sections
        Section specs (``"dlpfc:151674"``), paths, or ``{name: SpatialData/AnnData}``; each needs ``obs[labels_key]``.
    model
        Registry name, saved-model path or :class:`~stalign.models.STAlign`; a list of them are training seeds of one
        recipe (results aggregate over them).
    baselines
        Also score PCA of log-normalised expression, niche-smoothed PCA (PCA averaged over each spot's niche,
        :func:`stalign.pp.spatial_smooth` with ``radius_um=None``), squidpy image features (standardised, PCA),
        the random-init model, and ``stalign_image_gene`` (the spot's image and gene embeddings averaged: a cross-modal fusion, the ablation of the fused spot + niche embedding).
    parts
        Also score the parts of the fused embedding (``stalign_gene``, ``stalign_image``, ``stalign_niche``) where
        the default representation is the fused one.
    ablations
        ``{name: model or path}`` scored like ``model`` (e.g. models trained with a loss term switched off).
    labels_key
        ``obs`` column with the manual labels (unlabelled spots are clustered but not scored).
    n_domains
        Clusters; default the number of labelled classes of each section.
    smooth_um
        Smoothing radius (µm) of every method; default that of :func:`stalign.tl.domains`. ``0``: no smoothing.
    seeds
        Clustering seeds (``random_state`` of ``tl.domains``): a number (``3`` → 0, 1, 2) or a list.
    image_features
        squidpy feature groups of the image baseline (empty: no image baseline).
    {eval_params}

    Returns
    -------
    dict
        ``{"sections": {name: {"n_spots", "n_labelled", "n_domains", "smooth_um", "seeds", "methods": {method:
        {"ari", "nmi", "sd", "values", "runs", ...}}}}, "pooled": {method: mean over sections}}``. ``ari`` and
        ``nmi`` are means over runs (models × seeds), ``sd`` their standard deviations, ``values`` one per run.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.eval_domains(
    ...     ["stahl_mob:11"], model="stalign-base", baselines=False, seeds=2
    ... )
    >>> sec = res["sections"]["stahl_mob:11"]
    >>> sec["n_domains"], sorted(sec["methods"]), sec["methods"]["stalign"]["use_rep"]
    (5, ['stalign', 'stalign_gene', 'stalign_image', 'stalign_niche'], 'X_stalign')
    >>> (
    ...     len(sec["methods"]["stalign"]["values"]["ari"]),
    ...     0 < res["pooled"]["stalign"]["ari"] <= 1,
    ... )
    (2, True)
    """
    from ..tl import domains

    smooth = check_smooth_um(smooth_um, default_smooth_um())
    run = Run.of_task(model, ablations=ablations, baselines=baselines, seeds=seeds, data_dir=data_dir, device=device)
    seeds_, store, models = run.seeds, run.store, run.models
    names = store.add(sections)
    out: dict[str, Any] = {}
    for name in names:
        data = store[name]
        table = get_table(data)
        sec = get_section(data)
        lab = labels_of(table, labels_key, name).to_numpy()
        k = n_domains or int(len({v for v in lab if v is not None}))
        methods: dict[str, dict] = {}
        for group, members in models.groups.items():
            if group == RANDOM and not baselines:
                continue
            runs: dict[str, list] = {}  # method -> [(run label, scores)], in the order methods are reported
            reps: dict[str, str] = {}
            for member in members:
                emb = models.embedded(member, name, data)
                view = get_table(emb.view)
                for s in seeds_:
                    domains(emb.view, n_domains=k, smooth_um=smooth, random_state=s, key_added=_KEY)
                    runs.setdefault(group, []).append(((member, s), _score(lab, view.obs[_KEY])))
                reps[group] = view.uns[_KEY]["params"]["use_rep"]
                if group != MAIN:
                    continue
                if parts and reps[group] == emb.keys.get("fused"):
                    for kind in PARTS:
                        if kind not in emb.arrays:
                            continue
                        m = f"{MAIN}_{kind}"
                        reps[m] = emb.keys[kind]
                        for s in seeds_:
                            domains(emb.view, n_domains=k, use_rep=reps[m], smooth_um=smooth, random_state=s,
                                    key_added=_KEY)  # fmt: skip
                            runs.setdefault(m, []).append(((member, s), _score(lab, view.obs[_KEY])))
                if baselines and "image" in emb.arrays and "gene" in emb.arrays:
                    m = f"{MAIN}_image_gene"
                    reps[m] = "image+gene"
                    X = l2_normalize(emb.arrays["image"] + emb.arrays["gene"])
                    preds = cluster(data, X, n_domains=k, smooth_um=smooth, seeds=seeds_)
                    runs.setdefault(m, []).extend(
                        ((member, s), _score(lab, p)) for s, p in zip(seeds_, preds, strict=True)
                    )
            for m, r in runs.items():
                methods[m] = summarise([x[1] for x in r], [x[0] for x in r], use_rep=reps[m])
        if baselines:
            base: dict[str, np.ndarray] = {}
            if sec.has_expression:
                P = expression_pca(table)
                base["pca"] = P
                base["pca_niche"] = spatial_smooth(data, P, radius_um=None)
            if sec.has_image and image_features:
                F = squidpy_features(data, features=image_features)
                base["squidpy"] = standardized_pca(F.to_numpy())
            for m, X in base.items():
                preds = cluster(data, X, n_domains=k, smooth_um=smooth, seeds=seeds_)
                methods[m] = summarise([_score(lab, p) for p in preds], [(None, s) for s in seeds_])
        out[name] = {
            "n_spots": int(table.n_obs),
            "n_labelled": int(sum(v is not None for v in lab)),
            "n_domains": k,
            "smooth_um": smooth,
            "seeds": seeds_,
            "methods": methods,
        }
        logger.info("domains %s: %s", name, {m: round(v["ari"], 3) for m, v in methods.items()})
    return {"sections": out, "pooled": pooled(out, ("ari", "nmi")), "smooth_um": smooth, "seeds": seeds_}
