"""H&E → genes: ``tl.predict_expression`` on held-out sections vs the reference mean, ridge and retrieval baselines."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._constants import Key
from .._docs import inject
from .._section import get_section
from .._utils import get_table
from ..pp import reference_hvgs
from ._aggregate import pooled, summarise
from ._baselines import SQUIDPY_FEATURES, log_expression, pixel_features, squidpy_features
from ._metrics import expression_scores
from ._store import RANDOM, Run, patient_of, shell

logger = logging.getLogger(__name__)


def _splits(query: list[str], reference: list[str], sections: list[str], split: str) -> list[tuple[str, list[str]]]:
    if query:
        if not reference:
            reference = [s for s in sections if s not in query]
        pairs = [(q, list(reference)) for q in query]
    else:
        if len(sections) < 2:
            msg = "Gene prediction needs a held-out query and reference sections: pass query= and reference=."
            raise ValueError(msg)
        pairs = [(q, [s for s in sections if s != q]) for q in sections]  # leave one section out
    out = []
    for q, refs in pairs:
        if q in refs:
            msg = f"Section {q!r} is both query and reference; splits must keep whole sections apart."
            raise ValueError(msg)
        pq = patient_of(q)
        if split == "patient" and pq is not None:
            refs = [r for r in refs if patient_of(r) != pq]
            if not refs:
                msg = f"No reference section from another patient than {q!r}; use split='section' or add references."
                raise ValueError(msg)
        if not refs:
            msg = f"No reference section for {q!r}."
            raise ValueError(msg)
        out.append((q, refs))
    return out


@inject
def eval_genes(
    query: Any = None,
    reference: Any = None,
    *,
    model: Any,
    sections: Any = None,
    baselines: bool = True,
    ablations: Mapping[str, Any] | None = None,
    split: str = "section",
    n_top_genes: int = 50,
    k: int = 50,
    image_features: Sequence[str] = SQUIDPY_FEATURES,
    seeds: int | Sequence[int] = 3,
    data_dir: Any = None,
    device: Any = None,
) -> dict:
    """H&E-only expression prediction of held-out sections: mean Pearson over the top HVGs and MSE, with baselines.

    The query's counts are used only as ground truth. Metrics are on ``log1p(normalize_total(1e4))`` values of the
    genes :func:`stalign.pp.reference_hvgs` picks (``n_top_genes`` of the references, measured in the query too),
    which is what :func:`stalign.tl.predict_expression` predicts by default. ``stalign`` is
    ``tl.predict_expression(query, references)`` with its defaults after :func:`stalign.tl.embed` (only the genes
    are passed, so that every method is scored on the same ones); ``stalign_retrieval``, ``stalign_ridge`` and
    ``stalign_head`` (models with a prediction head that covers the scored genes) are its methods named explicitly.

    Parameters
    ----------
    query, reference
        Held-out and reference sections (specs, paths or ``{name: data}``). Without ``query``, each of ``sections``
        is held out in turn with the others as reference.
    model
        Registry name, saved-model path or :class:`~stalign.models.STAlign`; a list of them are training seeds.
    sections
        Sections for leave-one-section-out.
    baselines
        Also compute the reference mean, ridge on squidpy image features, retrieval with raw pixel and colour-
        histogram features, and the random-init model.
    ablations
        ``{name: model or path}`` evaluated like ``model``.
    split
        ``"section"`` (sections apart; shared patients are recorded in the results) or ``"patient"`` (references
        of the query's patient are dropped; raises when none is left).
    n_top_genes
        HVGs scored.
    k
        Neighbours of the explicit ``stalign_retrieval`` and of the pixel / colour retrieval baselines.
    image_features
        squidpy feature groups of the ridge baseline.
    seeds
        Accepted for a uniform interface; prediction has no random step, so runs differ only by model.
    {eval_params}

    Returns
    -------
    dict
        ``{"sections": {query: {"reference", "patient_overlap", "genes", "methods": {method: {"pearson", "mse",
        "sd", "values", "runs"}}}}, "pooled": ...}``; methods ``stalign``, ``stalign_retrieval``, ``stalign_ridge``
        (and the same for the random-init model and ablations), ``ref_mean``, ``squidpy_ridge``,
        ``pixels_retrieval``, ``color_hist_retrieval``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.eval_genes(
    ...     "her2st:C6", ["her2st:C2"], model="stalign-base", baselines=False
    ... )
    >>> sec = res["sections"]["her2st:C6"]
    >>> len(sec["genes"]), sorted(sec["methods"])
    (50, ['stalign', 'stalign_retrieval', 'stalign_ridge'])
    >>> res["pooled"]["stalign_ridge"]["pearson"] > -1
    True
    """
    from ..tl import predict_expression

    if split not in ("section", "patient"):
        msg = f"split must be 'section' or 'patient', got {split!r}."
        raise ValueError(msg)
    run = Run.of_task(model, ablations=ablations, baselines=baselines, seeds=seeds, data_dir=data_dir, device=device)
    store, models = run.store, run.models
    qn, rn, sn = store.add(query), store.add(reference), store.add(sections)
    pairs = _splits(qn, rn, sn, split)
    feats: dict[tuple[str, str], np.ndarray] = {}

    def features(kind: str, name: str) -> np.ndarray:
        if (kind, name) not in feats:
            data = store[name]
            if kind == "squidpy":
                feats[(kind, name)] = squidpy_features(data, features=image_features).to_numpy(dtype=np.float32)
            else:
                feats.update({(kk, name): v for kk, v in pixel_features(data).items()})
        return feats[(kind, name)]

    out: dict[str, Any] = {}
    for q, refs in pairs:
        qdata, rdata = store[q], [store[r] for r in refs]
        qt, rts = get_table(qdata), [get_table(r) for r in rdata]
        if not get_section(qdata).has_image:
            msg = f"Query {q!r} has no image; H&E-only prediction needs the query's H&E."
            raise ValueError(msg)
        genes = reference_hvgs(rts, n_top_genes=n_top_genes, also_in=[qt])
        truth = log_expression(qt, genes)
        methods: dict[str, dict] = {}
        for group, members in models.groups.items():
            if group == RANDOM and not baselines:
                continue
            runs: dict[str, list] = {}
            for member in members:
                qe = models.embedded(member, q, qdata)
                res = [models.embedded(member, r, d) for r, d in zip(refs, rdata, strict=True)]
                if "image" not in qe.arrays or any("gene" not in e.arrays or "image" not in e.arrays for e in res):
                    continue
                views = [e.view for e in res]
                variants = {
                    group: {},  # the defaults
                    f"{group}_retrieval": {"method": "retrieval", "k": k, "match": "gene"},
                    f"{group}_ridge": {"method": "ridge"},
                }
                if "pred" in qe.arrays:
                    variants[f"{group}_head"] = {"method": "head"}
                for m, kw in variants.items():
                    try:
                        pred = predict_expression(qe.view, views, genes=genes, **kw)
                    except ValueError as e:  # the head predicts only its own genes: scored where it covers them all
                        if kw.get("method") != "head":
                            raise
                        logger.info("%s not scored on %s: %s", m, q, e)
                        continue
                    runs.setdefault(m, []).append((member, expression_scores(pred.X, truth)))
            for m, r in runs.items():
                methods[m] = summarise([x[1] for x in r], [(x[0], None) for x in r])
        if baselines:
            base: dict[str, dict] = {}
            Y = np.vstack([log_expression(t, genes) for t in rts])
            base["ref_mean"] = expression_scores(np.broadcast_to(Y.mean(axis=0), truth.shape), truth)
            for kind, method in (("squidpy", "ridge"), ("pixels", "retrieval"), ("color_hist", "retrieval")):
                F = [features(kind, r) for r in refs]
                mu = np.vstack(F).mean(axis=0)
                sd = np.vstack(F).std(axis=0)
                sd[sd == 0] = 1.0

                def z(a, mu=mu, sd=sd):
                    return np.nan_to_num((a - mu) / sd).astype(np.float32)

                qs = shell(qt, {Key.X_image: z(features(kind, q))}, counts=False)
                rs = [shell(t, {Key.X_image: z(f)}) for t, f in zip(rts, F, strict=True)]
                pred = predict_expression(qs, rs, genes=genes, method=method, k=k, match="image")
                base[f"{kind}_{method}"] = expression_scores(pred.X, truth)
            for m, v in base.items():
                methods[m] = summarise([v], [(None, None)])
        pq = patient_of(q)
        out[q] = {
            "reference": refs,
            "patient_overlap": bool(pq is not None and any(patient_of(r) == pq for r in refs)),
            "n_spots": int(qt.n_obs),
            "n_reference_spots": int(sum(t.n_obs for t in rts)),
            "genes": genes,
            "methods": methods,
        }
        logger.info("genes %s: %s", q, {m: round(v["pearson"], 3) for m, v in methods.items()})
    return {"sections": out, "pooled": pooled(out, ("pearson", "mse")), "split": split}
