"""Bad input to tl (embed, domains, annotate, predict_expression): a clear error, inputs unchanged.

The cases run through the harness of ``tests/_bad_input.py`` (error type, two regexes, a deep before/after
snapshot of every input) on the synthetic section and tiny model of ``tests/conftest.py``.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import stalign as sta

from .._bad_input import Catalogue

CASES = Catalogue()
case = CASES.case


# ------------------------------------------------------------------------------------ sections given to tl


def _embed(ctx, data, **kw):
    kw = {"model": ctx.model, "device": "cpu", "show_progress_bar": False, **kw}
    return [data], lambda: sta.tl.embed(data, **kw)


def _ad(ctx):
    return ctx.ad.copy()


@case("tl-two-libraries-no-library-id", ValueError, r"holds 2 libraries \(toy, other\)", r"pass `library_id=`")
def _(ctx):
    a = _ad(ctx)
    a.uns["spatial"]["other"] = copy.deepcopy(a.uns["spatial"]["toy"])
    return _embed(ctx, a)


@case("tl-unknown-library-id", KeyError, r"library_id 'zzz' not found", r"available: toy")
def _(ctx):
    return _embed(ctx, _ad(ctx), library_id="zzz")


@case("tl-missing-positions", KeyError, r"no `obsm\['spatial'\]`", r"read it with stalign.io")
def _(ctx):
    a = _ad(ctx)
    del a.obsm["spatial"]
    return _embed(ctx, a)


@case("tl-positions-one-column", ValueError, r"shape \(60, 1\)", r"must be \(n_spots, 2\)")
def _(ctx):
    a = _ad(ctx)
    a.obsm["spatial"] = a.obsm["spatial"][:, :1]
    return _embed(ctx, a)


@case("tl-absent-scale-factors", ValueError, r"records neither 'microns_per_pixel' nor", r"set one of them")
def _(ctx):
    a = _ad(ctx)
    a.uns["spatial"]["toy"]["scalefactors"] = {}
    a.uns["spatial"]["toy"]["images"] = {}
    return _embed(ctx, a)


@case("tl-zero-spot-diameter", ValueError, r"'spot_diameter_fullres'\] of 'toy' is 0", r"must be a positive number")
def _(ctx):
    a = _ad(ctx)
    a.uns["spatial"]["toy"]["scalefactors"]["spot_diameter_fullres"] = 0.0
    return _embed(ctx, a)


@case("tl-non-numeric-scale-factor", ValueError, r"'microns_per_pixel'\] of 'toy' is 'x'", r"positive number")
def _(ctx):
    a = _ad(ctx)
    a.uns["spatial"]["toy"]["scalefactors"]["microns_per_pixel"] = "x"
    return _embed(ctx, a)


@case("tl-image-without-its-scale-factor", ValueError, r"no valid scalefactors\['tissue_hires_scalef'\]", r"set it")
def _(ctx):
    a = _ad(ctx)
    del a.uns["spatial"]["toy"]["scalefactors"]["tissue_hires_scalef"]
    return _embed(ctx, a)


@case("tl-uns-spatial-not-a-dict", ValueError, r"`uns\['spatial'\]` is a str", r"Fix or delete it")
def _(ctx):
    a = _ad(ctx)
    a.uns["spatial"] = "toy"
    return _embed(ctx, a)


@case("tl-spots-outside-image", ValueError, r"60 spot centre\(s\) lie outside", r"drop those spots")
def _(ctx):
    a = _ad(ctx)
    a.obsm["spatial"] = a.obsm["spatial"] + 1e5
    return _embed(ctx, a)


@case("tl-nan-counts", ValueError, r"contain NaN or infinite values", r"raw counts")
def _(ctx):
    a = _ad(ctx)
    X = a.X.toarray()
    X[0, 0] = np.nan
    a.X = sparse.csr_matrix(X)
    return _embed(ctx, a)


@case("tl-negative-counts", ValueError, r"contain negative values", r"Put the raw counts")
def _(ctx):
    a = _ad(ctx)
    a.X = -a.X
    return _embed(ctx, a)


@case("tl-all-zero-counts-and-no-image", ValueError, r"neither an image nor expression", r"add raw counts")
def _(ctx):
    a = _ad(ctx)
    a.X = a.X * 0
    a.uns["spatial"]["toy"]["images"] = {}
    return _embed(ctx, a)


@case("tl-no-genes-and-no-image", ValueError, r"Section 'toy' has neither an image nor", r"add raw counts")
def _(ctx):
    from spatialdata import SpatialData

    sd = SpatialData(shapes=dict(ctx.section.shapes), tables={"table": ctx.section.tables["table"][:50, :0].copy()})
    return _embed(ctx, sd)


@case("tl-empty-table", ValueError, r"no spots \(0 observations\)", r"select at least one spot")
def _(ctx):
    return _embed(ctx, _ad(ctx)[:0].copy())


@case("tl-no-gene-in-vocabulary", ValueError, r"None of the 30 genes .* vocabulary", r"ensembl_to_symbol")
def _(ctx):
    a = _ad(ctx)
    a.var_names = [f"ENSFAKE{i:05d}X" for i in range(a.n_vars)]
    return _embed(ctx, a)


@case("tl-model-not-a-stalign-module", TypeError, r"got Linear", r"STAlign module, a registry name or a path")
def _(ctx):
    return _embed(ctx, _ad(ctx), model=torch.nn.Linear(2, 2))


@case("tl-model-path-missing", FileNotFoundError, r"neither a registered model", r"existing path")
def _(ctx):
    return _embed(ctx, _ad(ctx), model=str(ctx.tmp / "no-model"))


@case("tl-model-of-wrong-type", TypeError, r"got int", r"registered model name .* or the path")
def _(ctx):
    return _embed(ctx, _ad(ctx), model=5)


@case("tl-zero-batch-size", ValueError, r"batch_size=0", r"positive integer")
def _(ctx):
    return _embed(ctx, _ad(ctx), batch_size=0)


@case("tl-batch-size-bool", TypeError, r"batch_size=True", r"positive integer")
def _(ctx):
    return _embed(ctx, _ad(ctx), batch_size=True)


@case("tl-negative-num-workers", ValueError, r"num_workers=-1", r"integer >= 0")
def _(ctx):
    return _embed(ctx, _ad(ctx), num_workers=-1)


@case("tl-key-added-not-a-string", TypeError, r"got 3", r"non-empty string")
def _(ctx):
    return _embed(ctx, _ad(ctx), key_added=3)


@case("tl-table-key-absent", KeyError, r"table_key 'cells' not in sdata.tables", r"available: table")
def _(ctx):
    return _embed(ctx, ctx.sdata(20), table_key="cells")


@case("tl-image-key-absent", KeyError, r"image_key 'he' not in sdata.images", r"available: toy_image")
def _(ctx):
    return _embed(ctx, ctx.sdata(20), image_key="he")


@case("tl-cuda-requested-without-cuda", ValueError, r"CUDA is not available", r"device='cpu'")
def _(ctx):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    return _embed(ctx, _ad(ctx), device="cuda")


# --------------------------------------------------------------------------------------------- tl.domains


def _domains(data, **kw):
    return [data], lambda: sta.tl.domains(data, **kw)


@case("domains-more-domains-than-spots", ValueError, r"n_domains=61 exceeds the number of spots \(60\)", r"at most 60")
def _(ctx):
    return _domains(ctx.emb.copy(), n_domains=61)


@case("domains-zero-domains", ValueError, r"n_domains=0", r"positive integer")
def _(ctx):
    return _domains(ctx.emb.copy(), n_domains=0)


@case("domains-unknown-method", ValueError, r"got 'louvain'", r"one of \('gmm', 'kmeans', 'leiden'\)")
def _(ctx):
    return _domains(ctx.emb.copy(), n_domains=3, method="louvain")


@case("domains-unknown-rep", KeyError, r"use_rep 'X_nope' not in obsm \(available: spatial, X_stalign", r"run tl.embed")
def _(ctx):
    return _domains(ctx.emb.copy(), n_domains=3, use_rep="X_nope")


@case("domains-before-embedding", KeyError, r"No stalign embedding in obsm", r"run stalign.tl.embed first")
def _(ctx):
    return _domains(_ad(ctx), n_domains=3)


@case("domains-nan-embedding", ValueError, r"contains NaN/inf rows", r"re-run tl.embed")
def _(ctx):
    e = ctx.emb.copy()
    e.obsm["X_stalign"] = e.obsm["X_stalign"].copy()
    e.obsm["X_stalign"][4] = np.nan
    return _domains(e, n_domains=3)


@case("domains-negative-resolution", ValueError, r"resolution=-1", r"finite positive number")
def _(ctx):
    return _domains(ctx.emb.copy(), method="leiden", resolution=-1)


@case("domains-leiden-on-two-spots", ValueError, r"at least 3 spots, got 2", r"pass n_domains=")
def _(ctx):
    return _domains(ctx.emb[:2].copy(), method="leiden")


# --------------------------------------------------------------------------------------------- tl.annotate


def _annotate(ctx, data, **kw):
    kw = {"model": ctx.model, "device": "cpu", **kw}
    refs = [kw["reference"]] if kw.get("reference") is not None else []
    return [data, *refs], lambda: sta.tl.annotate(data, **kw)


@case("annotate-markers-absent-from-vocabulary", ValueError, r"None of the markers of 'x'", r"use gene symbols")
def _(ctx):
    return _annotate(ctx, ctx.emb.copy(), markers={"x": ["NOTAGENE1", "NOTAGENE2"]})


@case("annotate-markers-not-strings", TypeError, r"markers\['x'\] .* got 5", r"list of gene symbols")
def _(ctx):
    return _annotate(ctx, ctx.emb.copy(), markers={"x": 5})


@case("annotate-markers-and-reference", ValueError, r"exactly one of", r"`markers`.*or `reference`")
def _(ctx):
    return _annotate(ctx, ctx.emb.copy(), markers={"x": ["Actb"]}, reference=ctx.emb.copy(), labels_key="lab")


@case("annotate-neither-markers-nor-reference", ValueError, r"exactly one of", r"`markers`.*or `reference`")
def _(ctx):
    return _annotate(ctx, ctx.emb.copy())


@case("annotate-reference-without-labels-key", ValueError, r"needs `labels_key`", r"obs column of `reference`")
def _(ctx):
    return _annotate(ctx, ctx.emb.copy(), reference=ctx.emb.copy())


@case("annotate-reference-labels-key-absent", KeyError, r"labels_key 'cell_type' not in reference.obs", r"columns:")
def _(ctx):
    return _annotate(ctx, ctx.emb.copy(), reference=ctx.emb.copy(), labels_key="cell_type")


@case("annotate-reference-without-labels", ValueError, r"has no labels \(all missing\)", r"reference.obs\['lab'\]")
def _(ctx):
    ref = ctx.emb.copy()
    ref.obs["lab"] = pd.Categorical([np.nan] * ref.n_obs, categories=["a"])
    return _annotate(ctx, ctx.emb.copy(), reference=ref, labels_key="lab")


@case("annotate-infinite-temperature", ValueError, r"temperature=inf", r"finite positive number \(e.g. 0.1\)")
def _(ctx):
    return _annotate(ctx, ctx.emb.copy(), reference=ctx.emb.copy(), labels_key="lab", temperature=float("inf"))


@case("annotate-unknown-use", ValueError, r"got 'both'", r"use must be one of \('auto', 'image', 'gene', 'fused'\)")
def _(ctx):
    return _annotate(ctx, ctx.emb.copy(), markers={"x": ["Mbp"]}, use="both")


# ------------------------------------------------------------------------------------- tl.predict_expression


def _predict(ctx, query, reference, **kw):
    kw = {"model": ctx.model, "device": "cpu", **kw}
    refs = reference if isinstance(reference, list) else [reference]
    return [query, *refs], lambda: sta.tl.predict_expression(query, reference, **kw)


@case("predict-reference-without-expression", ValueError, r"reference\[0\] has no expression", r"need raw counts")
def _(ctx):
    ref = ctx.emb.copy()
    ref.X = ref.X * 0
    return _predict(ctx, ctx.emb.copy(), ref)


@case("predict-reference-without-genes", ValueError, r"reference\[0\] has no expression \(0 genes", r"need raw counts")
def _(ctx):
    return _predict(ctx, ctx.emb.copy(), ctx.emb[:, :0].copy())


@case("predict-unknown-method", ValueError, r"got 'mlp'", r"method must be one of \('ridge', 'head', 'retrieval'\)")
def _(ctx):
    return _predict(ctx, ctx.emb.copy(), ctx.emb.copy(), method="mlp")


@case("predict-reference-nan-counts", ValueError, r"reference\[0\] contain NaN", r"put the raw counts")
def _(ctx):
    ref = ctx.emb.copy()
    ref.X = ref.X.toarray()
    ref.X[1, 1] = np.nan
    return _predict(ctx, ctx.emb.copy(), ref)


@case("predict-genes-not-in-reference", ValueError, r"not measured in every reference \(e.g. \['NOPE'\]\)", r"choose")
def _(ctx):
    return _predict(ctx, ctx.emb.copy(), ctx.emb.copy(), genes=["NOPE"])


@case("predict-zero-temperature", ValueError, r"temperature=0", r"finite positive number")
def _(ctx):
    return _predict(ctx, ctx.emb.copy(), ctx.emb.copy(), temperature=0)


@case("predict-empty-ridge-penalties", ValueError, r"got \[\]", r"non-empty list of positive ridge penalties")
def _(ctx):
    return _predict(ctx, ctx.emb.copy(), ctx.emb.copy(), method="ridge", alphas=[])


@case("predict-empty-reference-list", ValueError, r"reference is empty", r"pass one or more sections")
def _(ctx):
    return _predict(ctx, ctx.emb.copy(), [])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, bad_input_ctx):
    CASES.check(name, bad_input_ctx)
