"""Evaluation tasks (domains, genes, annotate, retrieval) with their baselines computed in the same run."""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import Key
from .._section import get_section
from .._utils import get_table
from ..pp import reference_hvgs, spatial_smooth
from ..tl._common import l2n
from ._baselines import (
    SQUIDPY_FEATURES,
    expression_pca,
    log_expression,
    pixel_features,
    squidpy_features,
    standardized_pca,
)
from ._markers import MARKERS
from ._metrics import classification_scores, clustering_scores, expression_scores, recall_at_k

logger = logging.getLogger(__name__)

TASKS = ("domains", "genes", "annotate", "retrieval")
#: name of the main model in the results
MAIN = "stalign"
#: name of the untrained model of the same architecture (a baseline)
RANDOM = "random_init"


# ---------------------------------------------------------------------------------------------- inputs
def _dataset_of(name: str) -> str:
    return name.partition(":")[0]


def patient_of(name: str) -> str | None:
    """Patient / donor of a section spec when known: her2st letter, DLPFC donor (pairs of slices), else ``None``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> evaluation.patient_of("her2st:C6"), evaluation.patient_of("dlpfc:151674"), evaluation.patient_of("stahl_mob:11")
    ('her2st:C', 'dlpfc:donor3', None)
    """
    ds, _, sec = name.partition(":")
    sec = sec.split("[")[0]
    if ds == "her2st" and sec:
        return f"her2st:{sec[0].upper()}"
    if ds == "dlpfc":
        donors = {"15150": "1", "15166": "2", "15167": "3"}  # 151507-10, 151669-72, 151673-76 (Maynard et al.)
        d = donors.get(sec[:5])
        return f"dlpfc:donor{d}" if d else None
    return None


class _Sections:
    """Named sections: loaded on demand from specs (``io.load``) or given as objects; loaded once per run."""

    def __init__(self, data_dir: Any = None) -> None:
        self.data_dir = data_dir
        self._cache: dict[str, Any] = {}

    def add(self, items: Any) -> list[str]:
        if items is None:
            return []
        if isinstance(items, Mapping):
            for k, v in items.items():
                self._cache[str(k)] = v
            return [str(k) for k in items]
        if isinstance(items, str | os.PathLike):
            items = [items]
        names = []
        for it in items:
            if not isinstance(it, str | os.PathLike):
                msg = (
                    f"Sections must be specs ('dlpfc:151674'), paths, or a dict {{name: SpatialData/AnnData}}; "
                    f"got {type(it).__name__}."
                )
                raise TypeError(msg)
            names.append(str(it))
        return names

    def __getitem__(self, name: str):
        if name not in self._cache:
            from ..io import load

            logger.info("Loading %s", name)
            self._cache[name] = load(name, data_dir=self.data_dir)
        return self._cache[name]


class _Models:
    """The models of one run (main, ablations, random init) and a cache of their embeddings per section."""

    def __init__(self, model: Any, *, ablations: Mapping[str, Any] | None, random_init: bool, device: Any, seed: int):
        import torch

        from ..models import STAlign
        from ..tl._common import resolve_model

        self.device = device
        self.models: dict[str, Any] = {}
        self.info: dict[str, dict] = {}
        main, _ = resolve_model(model, device=device)
        self._add(MAIN, main, model)
        for name, spec in (ablations or {}).items():
            if name in (MAIN, RANDOM):
                msg = f"Ablation name {name!r} is reserved; choose another name."
                raise ValueError(msg)
            m, _ = resolve_model(spec, device=device)
            self._add(str(name), m, spec)
        if random_init:
            torch.manual_seed(seed)
            rnd = STAlign(main.config, load_encoder_weights=False)
            rnd, _ = resolve_model(rnd, device=device)
            self._add(RANDOM, rnd, "random initialisation of the main model's config")
        self._emb: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def _add(self, name: str, m, spec) -> None:
        from ..models import weights_fingerprint

        self.models[name] = m
        self.info[name] = {
            "spec": spec if isinstance(spec, str) else (str(spec) if isinstance(spec, os.PathLike) else "instance"),
            "name": getattr(m, "name", None),
            "weights_sha256": getattr(m, "weights_sha256", None),
            "weights_fingerprint": weights_fingerprint(m),
            "n_parameters": int(sum(p.numel() for p in m.parameters())),
            "n_genes": len(m.config.genes),
        }

    def embeddings(self, name: str, section: str, data) -> dict[str, np.ndarray]:
        key = (name, section)
        if key not in self._emb:
            from ..tl._embed import embed_arrays

            self._emb[key] = embed_arrays(
                data, self.models[name], device=self.device, show_progress_bar=False, fused_spot=True
            )
        return self._emb[key]


def _shell(table: AnnData, obsm: Mapping[str, np.ndarray] | None = None, *, counts: bool = True) -> AnnData:
    """A throw-away AnnData sharing the counts and obs names of ``table`` with chosen ``obsm`` (user data untouched)."""
    X = table.X if counts else np.zeros((table.n_obs, 0), dtype=np.float32)
    var = table.var[[]].copy() if counts else pd.DataFrame(index=pd.Index([], dtype=str))
    ad = AnnData(X=X, obs=pd.DataFrame(index=table.obs_names.copy()), var=var)
    for k, v in (obsm or {}).items():
        ad.obsm[k] = np.asarray(v, dtype=np.float32)
    return ad


def _labels(table: AnnData, labels_key: str, name: str) -> pd.Series:
    if labels_key not in table.obs:
        msg = (
            f"Section {name!r} has no obs[{labels_key!r}] (manual labels); evaluate labelled sections or pass "
            f"labels_key= (columns: {', '.join(map(str, table.obs.columns))})."
        )
        raise KeyError(msg)
    lab = table.obs[labels_key].astype(object)
    return lab.where(lab.notna() & (lab.astype(str) != ""), None)


def _pooled(per_section: Mapping[str, Mapping[str, Mapping[str, float]]], metrics: Sequence[str]) -> dict:
    """Mean of each metric over the sections where the method ran."""
    out: dict[str, dict[str, float]] = {}
    methods = dict.fromkeys(m for res in per_section.values() for m in res["methods"])
    for m in methods:
        vals = {k: [] for k in metrics}
        for res in per_section.values():
            r = res["methods"].get(m)
            if r is None:
                continue
            for k in metrics:
                if k in r and r[k] is not None and np.isfinite(r[k]):
                    vals[k].append(r[k])
        out[m] = {k: float(np.mean(v)) for k, v in vals.items() if v}
        out[m]["n_sections"] = max((len(v) for v in vals.values()), default=0)
    return out


def _use_for(emb: Mapping[str, np.ndarray], use: str) -> str | None:
    if use != "auto":
        return use if use in emb else None
    for u in ("fused", "image", "gene"):
        if u in emb:
            return u
    return None


# ---------------------------------------------------------------------------------------------- domains
def eval_domains(
    sections: Any,
    *,
    model: Any,
    baselines: bool = True,
    ablations: Mapping[str, Any] | None = None,
    use: str = "auto",
    labels_key: str = "annotation",
    n_domains: int | None = None,
    image_features: Sequence[str] = SQUIDPY_FEATURES,
    data_dir: Any = None,
    device: Any = None,
    random_state: int = 0,
    _models: _Models | None = None,
    _store: _Sections | None = None,
) -> dict:
    """Zero-shot spatial domains: ARI / NMI of GMM clusters (``tl.domains``) vs manual labels, with baselines.

    Parameters
    ----------
    sections
        Section specs (``"dlpfc:151674"``), paths, or ``{name: SpatialData/AnnData}``; each needs ``obs[labels_key]``.
    model
        Registry name, saved-model path or :class:`~stalign.models.STAlign`.
    baselines
        Also compute PCA and niche-smoothed PCA of expression, squidpy image features + PCA, the random-init
        model, and two inference-time ablations of ``model``: ``stalign_no_niche`` (the fused spot embedding
        alone) and ``stalign_no_fusion`` (image and gene embeddings averaged instead of ABFN-fused).
    ablations
        ``{name: model or path}`` evaluated like ``model`` (e.g. models trained with a loss term switched off).
    use
        Embedding clustered: ``"auto"`` (fused when the section has image and expression, else image, else gene),
        or ``"fused"``, ``"image"``, ``"gene"``.
    labels_key
        ``obs`` column with the manual labels (unlabelled spots are clustered but not scored).
    n_domains
        Clusters; default the number of labelled classes of each section.
    image_features
        squidpy feature groups of the image baseline (empty: no image baseline).
    data_dir
        Data folder for section specs.
    device
        Torch device.
    random_state
        Seed of the clustering.

    Returns
    -------
    dict
        ``{"sections": {name: {"n_spots", "n_labelled", "n_domains", "methods": {method: {"ari", "nmi", ...}}}},
        "pooled": {method: mean over sections}}``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.eval_domains(["stahl_mob:11"], model="stalign-base", baselines=False)
    >>> sec = res["sections"]["stahl_mob:11"]
    >>> sec["n_domains"], sorted(sec["methods"]), sec["methods"]["stalign"]["use"]
    (5, ['stalign'], 'fused')
    >>> 0 < res["pooled"]["stalign"]["ari"] <= 1
    True
    """
    from ..tl import domains as tl_domains

    store = _store or _Sections(data_dir)
    names = store.add(sections)
    models = _models or _Models(model, ablations=ablations, random_init=baselines, device=device, seed=random_state)
    out: dict[str, Any] = {}
    for name in names:
        data = store[name]
        table = get_table(data)
        sec = get_section(data)
        lab = _labels(table, labels_key, name)
        k = n_domains or int(lab.dropna().nunique())
        reps: dict[str, np.ndarray] = {}
        uses: dict[str, str] = {}
        for mname in models.models:
            emb = models.embeddings(mname, name, data)
            u = _use_for(emb, use)
            if u is None:
                continue
            reps[mname], uses[mname] = emb[u], u
        if baselines and use in ("auto", "fused"):
            # inference-time ablations of the main model (no retraining): the spot-level fused embedding alone
            # ("no niche"), and the unimodal image and gene embeddings averaged instead of ABFN-fused ("no fusion")
            emb = models.embeddings(MAIN, name, data)
            if "fused_spot" in emb:
                reps["stalign_no_niche"], uses["stalign_no_niche"] = emb["fused_spot"], "fused_spot"
            if "image" in emb and "gene" in emb:
                reps["stalign_no_fusion"] = l2n(emb["image"] + emb["gene"])
                uses["stalign_no_fusion"] = "image+gene"
        if baselines:
            if sec.has_expression:
                P = expression_pca(table, random_state=random_state)
                reps["pca"] = P
                reps["pca_niche"] = spatial_smooth(data, P, radius_um=None)
            if sec.has_image and image_features:
                F = squidpy_features(data, features=image_features)
                reps["squidpy"] = standardized_pca(F.to_numpy(), random_state=random_state)
        shell = _shell(table, {f"X_{m}": v for m, v in reps.items()}, counts=False)
        methods = {}
        for m in reps:
            tl_domains(shell, n_domains=k, use_rep=f"X_{m}", method="gmm", smooth_um=0, key_added=f"d_{m}",
                       random_state=random_state)  # fmt: skip
            scores = clustering_scores(lab.to_numpy(), shell.obs[f"d_{m}"].to_numpy())
            methods[m] = {"ari": scores["ari"], "nmi": scores["nmi"]}
            if m in uses:
                methods[m]["use"] = uses[m]
        out[name] = {
            "n_spots": int(table.n_obs),
            "n_labelled": int(lab.notna().sum()),
            "n_domains": k,
            "methods": methods,
        }
        logger.info("domains %s: %s", name, {m: round(v["ari"], 3) for m, v in methods.items()})
    return {"sections": out, "pooled": _pooled(out, ("ari", "nmi"))}


# ---------------------------------------------------------------------------------------------- genes
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
    data_dir: Any = None,
    device: Any = None,
    random_state: int = 0,
    _models: _Models | None = None,
    _store: _Sections | None = None,
) -> dict:
    """H&E-only expression prediction of held-out sections: mean Pearson over the top HVGs and MSE, with baselines.

    The query's counts are used only as ground truth. Metrics are on ``log1p(normalize_total(1e4))`` values of the
    ``n_top_genes`` HVGs of the references.

    Parameters
    ----------
    query, reference
        Held-out and reference sections (specs, paths or ``{name: data}``). Without ``query``, each of ``sections``
        is held out in turn with the others as reference.
    model
        Registry name, saved-model path or :class:`~stalign.models.STAlign`.
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
        Neighbours for retrieval.
    image_features
        squidpy feature groups of the ridge baseline.
    data_dir, device, random_state
        Data folder, torch device, seed.

    Returns
    -------
    dict
        ``{"sections": {query: {"reference", "patient_overlap", "genes", "methods": {method: {"pearson", "mse"}}}},
        "pooled": ...}``; methods ``<model>_retrieval``, ``<model>_ridge``, ``ref_mean``, ``squidpy_ridge``,
        ``pixels_retrieval``, ``color_hist_retrieval``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.eval_genes("her2st:C6", ["her2st:C2"], model="stalign-base", baselines=False)
    >>> sec = res["sections"]["her2st:C6"]
    >>> len(sec["genes"]), sorted(sec["methods"])
    (50, ['stalign_retrieval', 'stalign_ridge'])
    >>> sorted(res["pooled"]["stalign_ridge"])
    ['mse', 'n_sections', 'pearson']
    """
    from ..tl import predict_expression

    if split not in ("section", "patient"):
        msg = f"split must be 'section' or 'patient', got {split!r}."
        raise ValueError(msg)
    store = _store or _Sections(data_dir)
    qn, rn, sn = store.add(query), store.add(reference), store.add(sections)
    pairs = _splits(qn, rn, sn, split)
    models = _models or _Models(model, ablations=ablations, random_init=baselines, device=device, seed=random_state)
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
        for mname in models.models:
            qe = models.embeddings(mname, q, qdata)
            res = [models.embeddings(mname, r, d) for r, d in zip(refs, rdata, strict=True)]
            if "image" not in qe or any("gene" not in e or "image" not in e for e in res):
                continue
            qs = _shell(qt, {Key.X_image: qe["image"]}, counts=False)
            rs = [_shell(t, {Key.X_image: e["image"], Key.X_gene: e["gene"]}) for t, e in zip(rts, res, strict=True)]
            for method in ("retrieval", "ridge"):
                pred = predict_expression(qs, rs, genes=genes, method=method, k=k, match="gene")
                methods[f"{mname}_{method}"] = expression_scores(pred.X, truth)
        if baselines:
            Y = np.vstack([log_expression(t, genes) for t in rts])
            methods["ref_mean"] = expression_scores(np.broadcast_to(Y.mean(axis=0), truth.shape), truth)
            for kind, method in (("squidpy", "ridge"), ("pixels", "retrieval"), ("color_hist", "retrieval")):
                F = [features(kind, r) for r in refs]
                mu = np.vstack(F).mean(axis=0)
                sd = np.vstack(F).std(axis=0)
                sd[sd == 0] = 1.0

                def z(a, mu=mu, sd=sd):
                    return np.nan_to_num((a - mu) / sd).astype(np.float32)

                qs = _shell(qt, {Key.X_image: z(features(kind, q))}, counts=False)
                rs = [_shell(t, {Key.X_image: z(f)}) for t, f in zip(rts, F, strict=True)]
                pred = predict_expression(qs, rs, genes=genes, method=method, k=k, match="image")
                methods[f"{kind}_{method}"] = expression_scores(pred.X, truth)
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
    return {"sections": out, "pooled": _pooled(out, ("pearson", "mse")), "split": split}


# ---------------------------------------------------------------------------------------------- annotate
def _markers_for(name: str, markers: Mapping | None) -> dict[str, list[str]]:
    if markers is not None:
        if isinstance(markers, Mapping) and markers and all(isinstance(v, Mapping) for v in markers.values()):
            mk = markers.get(_dataset_of(name)) or markers.get(name)
        else:
            mk = markers
        if mk:
            return {str(k): list(v) for k, v in mk.items()}
    mk = MARKERS.get(_dataset_of(name))
    if mk is None:
        msg = (
            f"No marker dictionary for section {name!r}; pass markers={{label: [genes]}} "
            f"(bundled ones: {', '.join(MARKERS)})."
        )
        raise ValueError(msg)
    return mk


def score_genes_labels(table: AnnData, markers: Mapping[str, Sequence[str]], *, random_state: int = 0) -> np.ndarray:
    """Baseline annotation: :func:`scanpy.tl.score_genes` per label on log-normalised counts, then argmax.

    Examples
    --------
    >>> import stalign as sta
    >>> from stalign import evaluation
    >>> table = sta.io.dlpfc("151674").tables["table"]
    >>> pred = evaluation.score_genes_labels(table, evaluation.DLPFC_LAYER_MARKERS)
    >>> sorted(set(pred))
    ['L1', 'L2', 'L3', 'L4', 'L5', 'L6', 'WM']
    >>> 0.2 < evaluation.classification_scores(table.obs["annotation"], pred)["accuracy"] < 0.8
    True
    """
    import scanpy as sc

    from ..pp import log_normalize
    from ..tl._common import check_genes_in

    tmp = AnnData(
        log_normalize(table.X), obs=pd.DataFrame(index=table.obs_names), var=pd.DataFrame(index=table.var_names)
    )
    tmp.var_names_make_unique()
    S = np.full((tmp.n_obs, len(markers)), -np.inf)
    for j, (label, genes) in enumerate(markers.items()):
        present = check_genes_in(genes, tmp.var_names, what=label)
        if not present:
            continue
        sc.tl.score_genes(tmp, present, score_name="_s", random_state=random_state, ctrl_size=min(50, tmp.n_vars // 2))
        S[:, j] = tmp.obs["_s"].to_numpy()
    labels = np.asarray(list(markers), dtype=object)
    return labels[S.argmax(axis=1)]


def eval_annotate(
    sections: Any,
    *,
    model: Any,
    markers: Mapping | None = None,
    baselines: bool = True,
    ablations: Mapping[str, Any] | None = None,
    labels_key: str = "annotation",
    data_dir: Any = None,
    device: Any = None,
    random_state: int = 0,
    _models: _Models | None = None,
    _store: _Sections | None = None,
) -> dict:
    """Zero-shot annotation from marker prompts (``tl.annotate``): accuracy and macro-F1 vs manual labels.

    Spots whose manual label has no prompt (e.g. her2st "undetermined") are not scored. Each model is scored with
    every embedding the section allows (``<model>_gene`` with expression, ``<model>_image`` with an image).

    Parameters
    ----------
    sections
        Labelled sections (specs, paths or ``{name: data}``).
    model
        Registry name, saved-model path or :class:`~stalign.models.STAlign`.
    markers
        ``{label: [genes]}`` for every section, or ``{dataset: {label: [genes]}}``; default the bundled
        literature dictionaries of :mod:`stalign.evaluation` (DLPFC layers, her2st regions).
    baselines
        Also score :func:`scanpy.tl.score_genes` + argmax and the random-init model.
    ablations, labels_key, data_dir, device, random_state
        As in :func:`eval_domains`.

    Returns
    -------
    dict
        ``{"sections": {name: {"labels", "excluded_labels", "methods": {method: {"accuracy", "macro_f1"}}}},
        "pooled": {method: scores over all scored spots of all sections}}``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.eval_annotate(["her2st:A1"], model="stalign-base", baselines=False)
    >>> sec = res["sections"]["her2st:A1"]
    >>> sorted(sec["methods"])  # A1 has expression and no image: the gene embedding is scored
    ['stalign_gene']
    >>> 0 <= sec["methods"]["stalign_gene"]["accuracy"] <= 1
    True
    """
    from ..tl import annotate as tl_annotate

    store = _store or _Sections(data_dir)
    names = store.add(sections)
    models = _models or _Models(model, ablations=ablations, random_init=baselines, device=device, seed=random_state)
    out: dict[str, Any] = {}
    pooled_pred: dict[str, list] = {}
    pooled_true: dict[str, list] = {}
    for name in names:
        data = store[name]
        table = get_table(data)
        sec = get_section(data)
        mk = _markers_for(name, markers)
        lab = _labels(table, labels_key, name)
        scored = lab.isin(list(mk)).to_numpy()
        excluded = sorted({str(v) for v in lab.dropna().unique()} - set(mk))
        methods = {}
        preds: dict[str, np.ndarray] = {}
        for mname, m in models.models.items():
            emb = models.embeddings(mname, name, data)
            vocab = set(m.config.genes)
            mk_m = {lbl: [g for g in gs if g.upper() in vocab] for lbl, gs in mk.items()}
            mk_m = {lbl: gs for lbl, gs in mk_m.items() if gs}
            if not mk_m:
                continue
            for u in ("gene", "image"):
                if u not in emb:
                    continue
                key = {"gene": Key.X_gene, "image": Key.X_image}[u]
                shell = _shell(table, {key: emb[u]}, counts=sec.has_expression)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    tl_annotate(shell, markers=mk_m, use=u, model=m, device=models.device)
                preds[f"{mname}_{u}"] = shell.obs[Key.label].astype(str).to_numpy()
        if baselines and sec.has_expression:
            preds["score_genes"] = score_genes_labels(table, mk, random_state=random_state)
        truth = lab.to_numpy()[scored]
        for mth, p in preds.items():
            methods[mth] = {k: v for k, v in classification_scores(truth, p[scored]).items() if k != "n"}
            pooled_pred.setdefault(mth, []).append(p[scored])
            pooled_true.setdefault(mth, []).append(truth)
        out[name] = {
            "n_scored": int(scored.sum()),
            "labels": list(mk),
            "excluded_labels": excluded,
            "methods": methods,
        }
    pooled = {}
    for mth in pooled_pred:
        s = classification_scores(np.concatenate(pooled_true[mth]), np.concatenate(pooled_pred[mth]))
        pooled[mth] = {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "n_spots": s["n"]}
    return {"sections": out, "pooled": pooled}


# ---------------------------------------------------------------------------------------------- retrieval
def eval_retrieval(
    sections: Any,
    *,
    model: Any,
    baselines: bool = True,
    ablations: Mapping[str, Any] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    data_dir: Any = None,
    device: Any = None,
    random_state: int = 0,
    _models: _Models | None = None,
    _store: _Sections | None = None,
) -> dict:
    """Cross-modal retrieval within held-out sections: image→gene and gene→image Recall@k.

    Parameters
    ----------
    sections
        Sections with an image and expression (specs, paths or ``{name: data}``).
    model
        Registry name, saved-model path or :class:`~stalign.models.STAlign`.
    baselines
        Also the random-init model and chance (``k / n``).
    ablations, data_dir, device, random_state
        As in :func:`eval_domains`.
    ks
        Cut-offs.

    Returns
    -------
    dict
        ``{"sections": {name: {"n_spots", "methods": {method: {"i2g_R@1", ..., "g2i_R@10"}}}}, "pooled": ...}``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.eval_retrieval(["stahl_mob:11"], model="stalign-base", baselines=False)
    >>> sorted(res["pooled"]["stalign"])
    ['g2i_R@1', 'g2i_R@10', 'g2i_R@5', 'i2g_R@1', 'i2g_R@10', 'i2g_R@5', 'n_sections']
    """
    store = _store or _Sections(data_dir)
    names = store.add(sections)
    models = _models or _Models(model, ablations=ablations, random_init=baselines, device=device, seed=random_state)
    out: dict[str, Any] = {}
    metric_names = [f"{d}_R@{k}" for d in ("i2g", "g2i") for k in ks]
    for name in names:
        data = store[name]
        methods = {}
        n = get_table(data).n_obs
        for mname in models.models:
            emb = models.embeddings(mname, name, data)
            if "image" not in emb or "gene" not in emb:
                msg = f"Retrieval on {name!r} needs an image and expression; evaluate paired sections."
                raise ValueError(msg)
            i2g = recall_at_k(emb["image"], emb["gene"], ks)
            g2i = recall_at_k(emb["gene"], emb["image"], ks)
            methods[mname] = {**{f"i2g_{k}": v for k, v in i2g.items()}, **{f"g2i_{k}": v for k, v in g2i.items()}}
        if baselines:
            methods["chance"] = {m: min(1.0, int(m.split("@")[1]) / n) for m in metric_names}
        out[name] = {"n_spots": int(n), "methods": methods}
    return {"sections": out, "pooled": _pooled(out, metric_names)}


# ---------------------------------------------------------------------------------------------- entry point
def _meta(models: _Models) -> dict:
    import torch

    from .._utils import package_version

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "stalign_version": package_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "device": str(next(iter(models.models.values())).device),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "models": models.info,
    }


def evaluate(
    tasks: str | Sequence[str],
    *,
    model: Any,
    sections: Any = None,
    query: Any = None,
    reference: Any = None,
    baselines: bool = True,
    ablations: Mapping[str, Any] | None = None,
    markers: Mapping | None = None,
    labels_key: str = "annotation",
    split: str = "section",
    image_features: Sequence[str] = SQUIDPY_FEATURES,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    device: Any = None,
    random_state: int = 0,
) -> dict:
    """Evaluate a model on one or several tasks, with the baselines of the protocol computed in the same run.

    Parameters
    ----------
    tasks
        One or more of ``"domains"``, ``"genes"``, ``"annotate"``, ``"retrieval"``.
    model
        Registry name (``"stalign-base"``), saved-model path, or :class:`~stalign.models.STAlign`.
    sections
        Evaluated sections (specs such as ``"dlpfc:151674"``, paths, or ``{name: SpatialData/AnnData}``). For
        ``"genes"`` without ``query``: leave-one-section-out among them.
    query, reference
        Held-out and reference sections for ``"genes"`` (``query`` also serves ``"retrieval"`` when ``sections`` is
        not given).
    baselines
        Compute the baselines (and the random-init model of the same architecture).
    ablations
        ``{name: model or path}``: further models evaluated like ``model`` (e.g. spot-only loss, no niche).
    markers
        Marker prompts for ``"annotate"`` (default: the bundled dictionaries).
    labels_key
        ``obs`` column of manual labels.
    split
        ``"section"`` or ``"patient"`` (see :func:`eval_genes`).
    image_features
        squidpy feature groups of the image baselines (``summary``, ``histogram``, ``texture``; texture is slow,
        about 10 spots/s).
    data_dir
        Data folder for dataset specs (default ``$STALIGN_DATA_DIR``).
    out
        Write the results as JSON to this path and the markdown table next to it (``.md``).
    device
        Torch device (``None``: CUDA when present).
    random_state
        Seed of clustering and of the random-init model.

    Returns
    -------
    ``{"meta": {...}, "<task>": {"sections": {...}, "pooled": {...}}, ...}``.

    Examples
    --------
    The dev-evaluation table of the docs (all four tasks with every baseline, several minutes on a CPU):

    >>> import stalign as sta
    >>> res = sta.evaluation.evaluate("domains", model="stalign-base", sections=["dlpfc:151674"])  # doctest: +SKIP
    >>> print(sta.evaluation.format_markdown(res))  # doctest: +SKIP

    One task on one small held-out section, without the baselines:

    >>> from stalign import evaluation
    >>> res = evaluation.evaluate("retrieval", model="stalign-base", sections=["stahl_mob:11"], baselines=False)
    >>> list(res), res["meta"]["models"]["stalign"]["spec"]
    (['meta', 'retrieval'], 'stalign-base')
    """
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        msg = f"Unknown task(s) {bad}; choose from {TASKS}."
        raise ValueError(msg)
    if sections is None and query is None:
        msg = "Pass sections= (and query=/reference= for 'genes')."
        raise ValueError(msg)
    store = _Sections(data_dir)
    models = _Models(model, ablations=ablations, random_init=baselines, device=device, seed=random_state)
    common = {
        "baselines": baselines,
        "device": device,
        "random_state": random_state,
        "_models": models,
        "_store": store,
    }
    results: dict[str, Any] = {"meta": _meta(models)}
    evaluated = sections if sections is not None else query
    for task in tasks:
        logger.info("Evaluating %s", task)
        if task == "domains":
            results[task] = eval_domains(
                evaluated, model=None, labels_key=labels_key, image_features=image_features, **common
            )
        elif task == "genes":
            results[task] = eval_genes(
                query,
                reference,
                model=None,
                sections=sections if query is None else None,
                split=split,
                image_features=image_features,
                **common,
            )
        elif task == "annotate":
            results[task] = eval_annotate(evaluated, model=None, markers=markers, labels_key=labels_key, **common)
        else:
            results[task] = eval_retrieval(evaluated, model=None, **common)
    if out is not None:
        write_results(results, out)
    return results


def write_results(results: Mapping, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``results`` as JSON to ``out`` and the markdown tables to ``out`` with suffix ``.md``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.evaluate("retrieval", model="stalign-base", sections=["stahl_mob:11"], baselines=False)
    >>> evaluation.write_results(res, "retrieval.json")
    (PosixPath('retrieval.json'), PosixPath('retrieval.md'))
    """
    from ._report import format_markdown

    path = Path(out)
    if not path.parent.exists():
        msg = f"Output folder {str(path.parent)!r} does not exist; create it first."
        raise FileNotFoundError(msg)
    path.write_text(json.dumps(results, indent=1, default=_json_default))
    md = path.with_suffix(".md")
    md.write_text(format_markdown(results))
    logger.info("Wrote %s and %s", path, md)
    return path, md


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
