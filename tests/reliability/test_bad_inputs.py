"""Catalogue of bad inputs across io, pp, tl, models, train and the CLI.

Every case asserts three things: the error type; that the message names the problem *and* the fix (two regexes);
and that every input the user handed over (SpatialData, AnnData, DataFrames, arrays, files on disk) is unchanged,
by a deep before/after comparison (:mod:`_snapshot`). Inputs come from the real STUtility MOB1 section (loaded once)
and tiny synthetic tables. Odd inputs that stalign accepts on purpose are in ``test_accepted_odd_inputs``.
"""

from __future__ import annotations

import contextlib
import copy
import io as _stdio
import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import sparse

sys.path.insert(0, str(Path(__file__).parent))

from _snapshot import assert_unchanged, snapshot

import stalign as sta
from stalign import cli

# ------------------------------------------------------------------------------------------------------ harness


class CliFailed(Exception):
    """``stalign ...`` exited with a non-zero status; the message is its stderr."""


def run_cli(argv: list[str]) -> None:
    err, out = _stdio.StringIO(), _stdio.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = cli.main([str(a) for a in argv])
    if rc != 0:
        raise CliFailed(f"rc={rc}: {err.getvalue()}")


@dataclass
class Ctx:
    """What the cases build their inputs from."""

    mob: object  # SpatialData (real section, shared read-only elements)
    ad: object  # AnnData (squidpy Visium convention) of 60 MOB1 spots, with an image
    emb: object  # that AnnData with tiny-model embeddings
    model: object  # tiny STAlign over MOB1 genes
    tmp: Path

    def sdata(self, n: int = 60):
        from spatialdata import SpatialData

        t = self.mob.tables["table"]
        return SpatialData(images=dict(self.mob.images), shapes=dict(self.mob.shapes), tables={"table": t[:n].copy()})


@dataclass
class Case:
    build: Callable[[Ctx], tuple[list, Callable[[], object]]]  # → (inputs to snapshot, the failing call)
    exc: type | tuple
    problem: str  # regex the message must match: what is wrong
    fix: str  # regex the message must match: what to do


CASES: dict[str, Case] = {}


def case(name: str, exc, problem: str, fix: str):
    def deco(fn):
        assert name not in CASES, name
        CASES[name] = Case(fn, exc, problem, fix)
        return fn

    return deco


def _counts():
    return pd.DataFrame([[1, 0, 4], [2, 3, 0], [0, 5, 1]], index=["1x1", "2x1", "3x1"], columns=["Actb", "Gapdh", "X"])


def _spots():
    return pd.DataFrame({"x": [1, 2, 3], "y": [1, 1, 1], "pixel_x": [10.0, 30.0, 50.0], "pixel_y": [10.0, 10.0, 10.0]})


def _img(h=60, w=60, c=3, dtype=np.uint8):
    return np.random.default_rng(0).integers(0, 255, (h, w, c)).astype(dtype)


def _read_st(c, s, img=None, **kw):
    kw.setdefault("sample", "s")
    inputs = [x for x in (c, s, img) if x is not None]
    return inputs, lambda: sta.io.read_st(c, s, img, **kw)


# ------------------------------------------------------------------------------------------------- io: read_st


@case("io-positions-missing-pixel-columns", ValueError, r"lacks columns \['pixel_x'\]", r"needs pixel_x, pixel_y")
def _(ctx):
    return _read_st(_counts(), _spots().drop(columns="pixel_x"))


@case("io-counts-and-positions-do-not-join", ValueError, r"no counts spot id .* matches", r"must use the same")
def _(ctx):
    return _read_st(_counts().set_axis(["7x7", "8x8", "9x9"]), _spots())


@case("io-duplicate-spot-ids-in-counts", ValueError, r"duplicate spot ids \['1x1'\]", r"must appear once")
def _(ctx):
    return _read_st(_counts().set_axis(["1x1", "1x1", "3x1"]), _spots())


@case("io-duplicate-spot-ids-in-positions", ValueError, r"duplicate spot ids", r"must appear once")
def _(ctx):
    return _read_st(_counts(), pd.concat([_spots(), _spots().iloc[:1]], ignore_index=True))


@case("io-nan-counts", ValueError, r"NaN or infinite", r"raw counts must be finite")
def _(ctx):
    c = _counts().astype(float)
    c.iloc[1, 1] = np.nan
    return _read_st(c, _spots())


@case("io-infinite-counts", ValueError, r"NaN or infinite", r"raw counts must be finite")
def _(ctx):
    c = _counts().astype(float)
    c.iloc[0, 2] = np.inf
    return _read_st(c, _spots())


@case("io-negative-counts", ValueError, r"negative values", r"pass raw")
def _(ctx):
    c = _counts()
    c.iloc[2, 0] = -3
    return _read_st(c, _spots())


@case("io-empty-counts-table", ValueError, r"no spots \(0 rows\)", r"one row per spot")
def _(ctx):
    return _read_st(_counts().iloc[:0], _spots())


@case("io-counts-without-gene-columns", ValueError, r"no gene columns", r"tab-separated")
def _(ctx):
    return _read_st(_counts().iloc[:, :0], _spots())


@case("io-non-numeric-counts", ValueError, r"non-numeric count columns \['Gapdh'\]", r"numbers only")
def _(ctx):
    return _read_st(_counts().assign(Gapdh=["a", "b", "c"]), _spots())


@case("io-counts-of-wrong-type", TypeError, r"got list", r"a path, a spots × genes DataFrame or an AnnData")
def _(ctx):
    c = [[1, 2], [3, 4]]
    return _read_st(c, _spots())


@case("io-spots-outside-image", ValueError, r"3 of 3 spot centres lie outside the 20x20 image", r"scale factor")
def _(ctx):
    return _read_st(_counts(), _spots().assign(pixel_x=[100.0, 120.0, 140.0]), _img(20, 20))


@case("io-tiny-image", ValueError, r"outside the 4x4 image", r"check the image scale factor or drop")
def _(ctx):
    return _read_st(_counts(), _spots(), _img(4, 4))


@case("io-image-with-5-channels", ValueError, r"shape \(60, 60, 5\)", r"expected \(height, width\)")
def _(ctx):
    return _read_st(_counts(), _spots(), _img(c=5))


@case("io-image-nan-pixels", ValueError, r"NaN or infinite pixels", r"clean the image")
def _(ctx):
    img = _img().astype(np.float32) / 255
    img[3, 3, 0] = np.nan
    return _read_st(_counts(), _spots(), img)


@case("io-image-boolean-dtype", ValueError, r"unsupported dtype bool", r"convert it to uint8 RGB")
def _(ctx):
    return _read_st(_counts(), _spots(), np.ones((60, 60, 3), bool))


@case("io-nan-positions", ValueError, r"positions are NaN or infinite", r"fix or drop those rows")
def _(ctx):
    return _read_st(_counts(), _spots().assign(pixel_y=[10.0, np.nan, 10.0]))


@case("io-non-numeric-positions", ValueError, r"\['pixel_x'\] are not numeric", r"must hold numbers")
def _(ctx):
    return _read_st(_counts(), _spots().assign(pixel_x=["10", "30", "x"]))


@case("io-zero-microns-per-pixel", ValueError, r"microns_per_pixel=0", r"must be a finite positive number")
def _(ctx):
    return _read_st(_counts(), _spots(), microns_per_pixel=0)


@case("io-string-microns-per-pixel", TypeError, r"microns_per_pixel='0.5' \(str\)", r"must be a finite positive number")
def _(ctx):
    return _read_st(_counts(), _spots(), microns_per_pixel="0.5")


@case("io-zero-image-scale-factor", ValueError, r"image_scalef=0", r"must be a finite positive number")
def _(ctx):
    return _read_st(_counts(), _spots(), _img(), image_scalef=0)


@case("io-zero-spot-pitch", ValueError, r"pitch_um=0", r"must be a finite positive number")
def _(ctx):
    return _read_st(_counts(), _spots(), pitch_um=0)


@case("io-one-spot-without-scale", ValueError, r"fewer than 2 spots", r"pass microns_per_pixel=")
def _(ctx):
    return _read_st(_counts().iloc[:1], _spots().iloc[:1])


@case("io-no-selected-spot", ValueError, r"no spot of the spot table is selected", r"selected_only=False")
def _(ctx):
    return _read_st(_counts(), _spots().assign(selected=0))


@case("io-labels-not-a-series", TypeError, r"got list", r"pandas Series indexed by spot id")
def _(ctx):
    return _read_st(_counts(), _spots(), labels=["a", "b", "c"])


@case("io-sample-not-a-string", TypeError, r"got None", r"non-empty string naming the section")
def _(ctx):
    return _read_st(_counts(), _spots(), sample=None)


@case("io-counts-file-missing", FileNotFoundError, r"counts file .*nope.tsv.* not found", r"pass an existing")
def _(ctx):
    return _read_st(ctx.tmp / "nope.tsv", _spots())


@case("io-image-file-missing", FileNotFoundError, r"Image file .*nope.jpg.* not found", r"pass an existing")
def _(ctx):
    return _read_st(_counts(), _spots(), ctx.tmp / "nope.jpg")


# ------------------------------------------------------------------------------------- io: Space Ranger, load


def _visium_folder(tmp: Path, sf: dict | None, positions: str | None = "AAA-1,1,0,0,100,100\nCCC-1,1,0,2,100,300\n"):
    spatial = tmp / "sec" / "spatial"
    spatial.mkdir(parents=True)
    if positions is not None:
        (spatial / "tissue_positions_list.csv").write_text(positions)
    if sf is not None:
        (spatial / "scalefactors_json.json").write_text(json.dumps(sf))
    Image.fromarray(_img(50, 50)).save(spatial / "tissue_lowres_image.png")
    return tmp / "sec"


def _read_visium(folder):
    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "0 genes" (no counts in these folders)
            return sta.io.read_visium(folder)

    return [folder], call


@case("io-visium-absent-spot-diameter", ValueError, r"'spot_diameter_fullres' is missing", r"scale")
def _(ctx):
    return _read_visium(_visium_folder(ctx.tmp, {"tissue_lowres_scalef": 0.1}))


@case("io-visium-zero-scale-factor", ValueError, r"'tissue_lowres_scalef' is 0", r"scale")
def _(ctx):
    return _read_visium(_visium_folder(ctx.tmp, {"spot_diameter_fullres": 90.0, "tissue_lowres_scalef": 0}))


@case("io-visium-missing-positions", FileNotFoundError, r"No spot positions", r"tissue_positions")
def _(ctx):
    return _read_visium(_visium_folder(ctx.tmp, {"spot_diameter_fullres": 90.0, "tissue_lowres_scalef": 0.1}, None))


@case("io-visium-duplicate-barcodes", ValueError, r"duplicate barcodes", r"once")
def _(ctx):
    pos = "AAA-1,1,0,0,100,100\nAAA-1,1,0,2,100,300\n"
    return _read_visium(_visium_folder(ctx.tmp, {"spot_diameter_fullres": 90.0, "tissue_lowres_scalef": 0.1}, pos))


@case("io-load-unknown-spec", ValueError, r"Cannot load 'foo:bar'", r"use one of dlpfc:<section>")
def _(ctx):
    return [], lambda: sta.io.load("foo:bar")


@case("io-load-spec-without-section", ValueError, r"has no section", r"use e.g. 'dlpfc:<section>'")
def _(ctx):
    return [], lambda: sta.io.load("dlpfc:")


@case("io-load-unsupported-file", ValueError, r"unsupported file type '.csv'", r"use a .zarr, a .h5ad")
def _(ctx):
    f = ctx.tmp / "table.csv"
    f.write_text("a,b\n1,2\n")
    return [f], lambda: sta.io.load(f)


@case("io-unknown-section", ValueError, r"Unknown STUtility MOB section 'MOB9'", r"available: MOB1")
def _(ctx):
    return [], lambda: sta.io.stutility_mob("MOB9")


@case("io-to-anndata-zero-max-side", ValueError, r"max_side=0", r"positive integer number of pixels")
def _(ctx):
    sd = ctx.sdata(20)
    return [sd], lambda: sta.io.to_anndata(sd, max_side=0)


# ---------------------------------------------------------------------------------------------------- pp


def _no_image(ctx):
    a = ctx.ad.copy()
    a.uns["spatial"]["MOB1"]["images"] = {}
    return a


@case("pp-crops-without-image", ValueError, r"Section 'MOB1' has no image", r"Pass a SpatialData with an image")
def _(ctx):
    a = _no_image(ctx)
    return [a], lambda: sta.pp.spot_crops(a, copy=True)


@case("pp-negative-crop-size", ValueError, r"size_um=-5", r"positive number of micrometres \(e.g. 100\)")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.niche_crops(a, size_um=-5, copy=True)


@case("pp-zero-crop-pixels", ValueError, r"out_px=0", r"positive integer number of pixels")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.crop_boxes(a, size_um=50, out_px=0)


@case("pp-negative-niche-radius", ValueError, r"radius_um=-1", r"non-negative number of micrometres")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.niche_expression(a, radius_um=-1, copy=True)


@case("pp-crop-size-bool", ValueError, r"size_um=True", r"positive number of micrometres")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.spot_crops(a, size_um=True, copy=True)


@case("pp-crop-key-added-not-a-string", TypeError, r"key_added=5", r"non-empty string .* e.g. key_added=")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.niche_crops(a, key_added=5)


@case("pp-crop-key-added-empty", ValueError, r"key_added=''", r"non-empty string")
def _(ctx):
    sd = ctx.sdata(20)
    return [sd], lambda: sta.pp.spot_crops(sd, key_added="")


@case("pp-niche-expression-without-genes", ValueError, r"has no expression: .* no genes \(0 columns\)", r"raw counts")
def _(ctx):
    a = ctx.ad[:, :0].copy()
    return [a], lambda: sta.pp.niche_expression(a)


@case("pp-niche-expression-nan-counts", ValueError, r"contain NaN or infinite values", r"raw counts")
def _(ctx):
    a = ctx.ad.copy()
    X = a.X.toarray()
    X[2, 3] = np.nan
    a.X = sparse.csr_matrix(X)
    return [a], lambda: sta.pp.niche_expression(a)


@case("pp-niche-expression-key-added-none", TypeError, r"key_added=None", r"non-empty string")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.niche_expression(a, key_added=None)


@case("pp-vocabulary-of-nothing", ValueError, r"got no sections", r"pass at least one table")
def _(ctx):
    return [], lambda: sta.pp.build_vocabulary([])


@case("pp-vocabulary-min-sections-zero", ValueError, r"min_sections=0", r"must be a positive integer")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.build_vocabulary([a], min_sections=0)


@case("pp-vocabulary-min-sections-above-sections", ValueError, r"min_sections=3 exceeds .*\(2\)", r"between 1 and 2")
def _(ctx):
    a, b = ctx.ad.copy(), ctx.ad[:, :10].copy()
    return [a, b], lambda: sta.pp.build_vocabulary([a, b], min_sections=3)


@case("pp-vocabulary-min-sections-bool", TypeError, r"min_sections=True \(bool\)", r"must be a positive integer")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.build_vocabulary([a], min_sections=True)


@case("pp-ensembl-to-symbol-of-an-int", TypeError, r"`ids` .* got int 5", r"sequence of gene names.*list\(adata")
def _(ctx):
    return [], lambda: sta.pp.ensembl_to_symbol(5)


@case("pp-gene-index-of-none", TypeError, r"`var_names` .* got NoneType None", r"sequence of gene names")
def _(ctx):
    vocab = ["MBP", "PLP1"]
    return [vocab], lambda: sta.pp.gene_index(None, vocab)


@case("pp-gene-index-of-one-string", TypeError, r"got a single string 'Mbp'", r"wrap a single name in a list")
def _(ctx):
    vocab = ["MBP", "PLP1"]
    return [vocab], lambda: sta.pp.gene_index("Mbp", vocab)


@case("pp-dataset-zero-batch", ValueError, r"batch_size=0", r"positive integer")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.SpotDataset([a], genes=list(a.var_names[:10]), batch_size=0)


@case("pp-dataset-batch-size-bool", ValueError, r"batch_size=True", r"positive integer")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.SpotDataset([a], genes=list(a.var_names[:10]), batch_size=True)


@case("pp-dataset-empty-genes-with-expression", ValueError, r"genes is empty but use_expr=True", r"use_expr=False")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.SpotDataset([a], genes=[])


@case("pp-dataset-genes-none", TypeError, r"got NoneType None", r"sequence of gene symbols .*model.genes")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.SpotDataset([a], genes=None)


@case("pp-dataset-no-sections", ValueError, r"`sections` is empty", r"pass a list of SpatialData")
def _(ctx):
    return [], lambda: sta.pp.SpotDataset([], genes=["Actb"])


# ------------------------------------------------------------------------------------ sections given to tl


def _embed(ctx, data, **kw):
    kw = {"model": ctx.model, "device": "cpu", "show_progress_bar": False, **kw}
    return [data], lambda: sta.tl.embed(data, **kw)


def _ad(ctx):
    return ctx.ad.copy()


@case("tl-two-libraries-no-library-id", ValueError, r"holds 2 libraries \(MOB1, other\)", r"pass `library_id=`")
def _(ctx):
    a = _ad(ctx)
    a.uns["spatial"]["other"] = copy.deepcopy(a.uns["spatial"]["MOB1"])
    return _embed(ctx, a)


@case("tl-unknown-library-id", KeyError, r"library_id 'zzz' not found", r"available: MOB1")
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
    a.uns["spatial"]["MOB1"]["scalefactors"] = {}
    a.uns["spatial"]["MOB1"]["images"] = {}
    return _embed(ctx, a)


@case("tl-zero-spot-diameter", ValueError, r"'spot_diameter_fullres'\] of 'MOB1' is 0", r"must be a positive number")
def _(ctx):
    a = _ad(ctx)
    a.uns["spatial"]["MOB1"]["scalefactors"]["spot_diameter_fullres"] = 0.0
    return _embed(ctx, a)


@case("tl-non-numeric-scale-factor", ValueError, r"'microns_per_pixel'\] of 'MOB1' is 'x'", r"positive number")
def _(ctx):
    a = _ad(ctx)
    a.uns["spatial"]["MOB1"]["scalefactors"]["microns_per_pixel"] = "x"
    return _embed(ctx, a)


@case("tl-image-without-its-scale-factor", ValueError, r"no valid scalefactors\['tissue_hires_scalef'\]", r"set it")
def _(ctx):
    a = _ad(ctx)
    del a.uns["spatial"]["MOB1"]["scalefactors"]["tissue_hires_scalef"]
    return _embed(ctx, a)


@case("tl-uns-spatial-not-a-dict", ValueError, r"`uns\['spatial'\]` is a str", r"Fix or delete it")
def _(ctx):
    a = _ad(ctx)
    a.uns["spatial"] = "MOB1"
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
    a.uns["spatial"]["MOB1"]["images"] = {}
    return _embed(ctx, a)


@case("tl-empty-table", ValueError, r"no spots \(0 observations\)", r"select at least one spot")
def _(ctx):
    return _embed(ctx, _ad(ctx)[:0].copy())


@case("tl-no-gene-in-vocabulary", ValueError, r"None of the 1000 genes .* vocabulary", r"ensembl_to_symbol")
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


@case("tl-image-key-absent", KeyError, r"image_key 'he' not in sdata.images", r"available: MOB1_image")
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


# ------------------------------------------------------------------------------------------- models: weights


def _saved(ctx) -> Path:
    d = ctx.tmp / "model"
    sta.models.save(ctx.model, d)
    return d


def _load(d, **kw):
    return [d], lambda: sta.models.load(d, device="cpu", **kw)


@case("models-truncated-weights", ValueError, r"not a readable safetensors file", r"truncated or corrupted")
def _(ctx):
    d = _saved(ctx)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return _load(d)


@case("models-tampered-weights", ValueError, r"sha256 of .* but config.json records", r"Re-save or re-download")
def _(ctx):
    d = _saved(ctx)
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[-5] ^= 0x10
    (d / "model.safetensors").write_bytes(bytes(raw))
    return _load(d)


@case("models-config-does-not-match-weights", ValueError, r"do not (fit|match) the config", r"shapes differ|together")
def _(ctx):
    d = _saved(ctx)
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["token_dim"] = 16
    (d / "config.json").write_text(json.dumps(meta))
    return _load(d)


@case("models-config-not-json", ValueError, r"Could not read .*config.json", r"written by stalign.models.save")
def _(ctx):
    d = _saved(ctx)
    (d / "config.json").write_text("{ not json")
    return _load(d)


@case("models-newer-format-version", ValueError, r"format version 99, newer than", r"upgrade stalign")
def _(ctx):
    d = _saved(ctx)
    meta = json.loads((d / "config.json").read_text())
    meta["format_version"] = 99
    (d / "config.json").write_text(json.dumps(meta))
    return _load(d)


@case("models-pickle-weights", ValueError, r"not a safetensors file", r"allow_torch_load=True")
def _(ctx):
    d = _saved(ctx)
    torch.save(ctx.model.state_dict(), d / "model.pt")
    return _load(d / "model.pt")


def _trunk_weights(ctx, name: str, corrupt: bytes) -> Path:
    """A trunk weights file of the tiny model's spot encoder, then overwritten by ``corrupt`` bytes."""
    f = ctx.tmp / name
    trunk = ctx.model.spot_image_encoder.trunk
    if f.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in trunk.state_dict().items()}, str(f))
    else:
        torch.save(trunk.state_dict(), f)
    raw = f.read_bytes()
    f.write_bytes(corrupt + raw[len(corrupt) : len(raw) // 2])
    return f


def _with_encoder_weights(ctx, f: Path, **kw):
    cfg = sta.models.STAlignConfig.from_dict({**ctx.model.config.to_dict(), "spot_encoder_weights": str(f), **kw})
    return [f], lambda: sta.models.STAlign(cfg)


@case("models-corrupt-encoder-safetensors", ValueError, r"trunk\.safetensors' is not a readable safetensors", r"re-")
def _(ctx):
    return _with_encoder_weights(ctx, _trunk_weights(ctx, "trunk.safetensors", b"\xff" * 8))


@case("models-truncated-encoder-pt", ValueError, r"trunk\.pt' could not be read", r"Convert trusted weights")
def _(ctx):
    return _with_encoder_weights(ctx, _trunk_weights(ctx, "trunk.pt", b""), allow_torch_load=True)


@case("models-corrupt-trunk-weights-direct", ValueError, r"bad\.safetensors' is not a readable", r"truncated or")
def _(ctx):
    f = ctx.tmp / "bad.safetensors"
    f.write_bytes(b"not a safetensors file at all")
    trunk = torch.nn.Linear(2, 2)
    return [f], lambda: sta.models.nn.load_trunk_weights(trunk, f)


@case("models-save-onto-a-file", FileExistsError, r"exists and is not a directory", r"pass a directory path")
def _(ctx):
    f = ctx.tmp / "taken"
    f.write_text("keep me")
    return [f], lambda: sta.models.save(ctx.model, f)


# ------------------------------------------------------------------------------------------------- train


def _pretrain(ctx, sections, **kw):
    kw = {"output_dir": ctx.tmp / "run", "device": "cpu", "show_progress_bar": False, "epochs": 1, **kw}
    return [*sections], lambda: sta.train.pretrain(sections, kw.pop("config", "base"), **kw)


@case("train-zero-epochs", ValueError, r"epochs=0", r"positive integer")
def _(ctx):
    return _pretrain(ctx, [ctx.sdata(40)], epochs=0)


@case("train-batch-of-one", ValueError, r"batch_size=1", r"integer >= 2")
def _(ctx):
    return _pretrain(ctx, [ctx.sdata(40)], batch_size=1)


@case("train-no-sections", ValueError, r"`sections` is empty", r"pass at least one")
def _(ctx):
    return _pretrain(ctx, [])


@case("train-unknown-preset", ValueError, r"Unknown preset 'huge'", r"choose one of \['base', 'large'\]")
def _(ctx):
    return _pretrain(ctx, [ctx.sdata(40)], config="huge")


@case("train-gene-dropout-above-one", ValueError, r"gene_dropout=2", r"in \[0, 1\)")
def _(ctx):
    return _pretrain(ctx, [ctx.sdata(40)], gene_dropout=2)


def _pretrain_nothing_written(ctx, sections, **kw):
    """:func:`_pretrain`, and the output folder must not have been created (validation comes before any work)."""
    inputs, call = _pretrain(ctx, [] if sections is None else sections, **kw)
    if sections is None:
        kw = {"output_dir": ctx.tmp / "run", "device": "cpu", "show_progress_bar": False, **kw}
        call = lambda: sta.train.pretrain(None, "base", **kw)  # noqa: E731
    out = Path(kw.get("output_dir", ctx.tmp / "run"))
    existed = out.exists()

    def checked():
        try:
            return call()
        finally:
            assert out.exists() == existed, f"{out} was created by a call that failed"

    return inputs, checked


@case("train-sections-none", TypeError, r"`sections` is None", r"pass a list of SpatialData/AnnData sections")
def _(ctx):
    return _pretrain_nothing_written(ctx, None)


@case("train-section-of-wrong-type", TypeError, r"sections\[1\] is a int", r"SpatialData, an AnnData or a loader")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40), 5])


@case("train-negative-lr", ValueError, r"lr=-1", r"finite positive number or None \(e.g. 5e-4\)")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40)], lr=-1)


@case("train-nan-lr", ValueError, r"lr=nan", r"finite positive number")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40)], lr=float("nan"))


@case("train-output-dir-is-a-file", FileExistsError, r"run.txt'.* exists and is not a directory", r"directory path")
def _(ctx):
    f = ctx.tmp / "run.txt"
    f.write_text("keep me")
    sd = ctx.sdata(40)
    return [f, sd], _pretrain(ctx, [sd], output_dir=f)[1]


@case("train-output-dir-under-a-file", FileExistsError, r"a parent of output_dir", r"pass a directory path")
def _(ctx):
    f = ctx.tmp / "plain"
    f.write_text("keep me")
    sd = ctx.sdata(40)
    return [f, sd], _pretrain(ctx, [sd], output_dir=f / "run")[1]


@case("train-negative-warmup", ValueError, r"warmup_epochs=-1", r"finite non-negative number \(e.g. 2.0\)")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40)], warmup_epochs=-1)


@case("train-checkpoint-every-zero", ValueError, r"checkpoint_every=0", r"positive integer or None")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40)], checkpoint_every=0)


@case("train-epochs-bool", TypeError, r"epochs=True \(bool\)", r"positive integer")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40)], epochs=True)


@case("train-batch-size-float", TypeError, r"batch_size=64.0 \(float\)", r"integer >= 2")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40)], batch_size=64.0)


@case("train-unknown-option", TypeError, r"Unknown training option\(s\) \['epoch'\]", r"valid options .*'epochs'")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40)], epoch=2)


@case("train-config-of-wrong-type", TypeError, r"train='fast'", r"pass a stalign.train.TrainConfig, a dict")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40)], train="fast")


@case("train-unknown-dataset-kwarg", TypeError, r"dataset_kwargs has unknown key\(s\) \['spot_size'\]", r"'spot_um'")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40)], dataset_kwargs={"spot_size": 32})


@case("finetune-zero-epochs-in-config", ValueError, r"epochs=0", r"positive integer")
def _(ctx):
    cfg = sta.train.TrainConfig.finetune_defaults()
    cfg.epochs = 0  # assigned by hand after creation: the run checks the config again
    out = ctx.tmp / "ft"
    return [], lambda: sta.train.finetune(ctx.model, [ctx.sdata(40)], output_dir=out, train=cfg)


def _bad_counts(ctx, value):
    sd = ctx.sdata(40)
    t = sd.tables["table"]
    X = t.X.toarray()
    X[3, 5] = value
    t.X = sparse.csr_matrix(X)
    return sd


@case("train-nan-counts", ValueError, r"counts of section 'MOB1' contain NaN", r"put the raw counts in `X`")
def _(ctx):
    return _pretrain_nothing_written(ctx, [_bad_counts(ctx, np.nan)])


@case("train-negative-counts", ValueError, r"contain negative values", r"Put the raw counts")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40), _bad_counts(ctx, -2.0)])


@case("finetune-nan-counts", ValueError, r"contain NaN or infinite values", r"raw counts")
def _(ctx):
    sd = _bad_counts(ctx, np.inf)
    out = ctx.tmp / "ft"
    kw = {"output_dir": out, "device": "cpu", "show_progress_bar": False, "epochs": 1}
    model = copy.deepcopy(ctx.model)  # finetune trains a given module in place
    return [sd], lambda: sta.train.finetune(model, [sd], **kw)


# -------------------------------------------------------------------------------------------------- CLI


def _h5ad(ctx) -> Path:
    p = ctx.tmp / "section.h5ad"
    ctx.ad.write_h5ad(p)
    return p


@case("cli-output-exists", CliFailed, r"Output .*out.h5ad' exists", r"pass --overwrite")
def _(ctx):
    src, out = _h5ad(ctx), ctx.tmp / "out.h5ad"
    out.write_text("earlier results")
    return [src, out], lambda: run_cli(["embed", src, "--out", out, "--model", _saved(ctx), "--quiet"])


@case("cli-output-folder-missing", CliFailed, r"Output folder .*absent' does not exist", r"create it first")
def _(ctx):
    src = _h5ad(ctx)
    return [src], lambda: run_cli(["embed", src, "--out", ctx.tmp / "absent" / "o.h5ad", "--quiet"])


@case("cli-output-inside-a-file", CliFailed, r"Output folder .*plain.txt' is not a folder", r"inside an existing")
def _(ctx):
    src, f = _h5ad(ctx), ctx.tmp / "plain.txt"
    f.write_text("x")
    return [src, f], lambda: run_cli(["embed", src, "--out", f / "o.h5ad", "--quiet"])


@case("cli-output-unwritable", CliFailed, r"Output folder .* is not writable", r"folder you can write to")
def _(ctx):
    src = _h5ad(ctx)
    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses new files even to root
        if not Path("/proc").is_dir():
            pytest.skip("no read-only folder to test with")
        out = Path("/proc/stalign-out.h5ad")
    else:
        ro = ctx.tmp / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "o.h5ad"
    return [src], lambda: run_cli(["embed", src, "--out", out, "--quiet"])


@case("cli-output-wrong-suffix", CliFailed, r"must end in .h5ad .* or .zarr", r"\.h5ad \(the table\)")
def _(ctx):
    src = _h5ad(ctx)
    return [src], lambda: run_cli(["embed", src, "--out", ctx.tmp / "o.csv", "--quiet"])


@case("cli-anndata-to-zarr", CliFailed, r"AnnData input can only be written as .h5ad", r"use an .h5ad path")
def _(ctx):
    src = _h5ad(ctx)
    return [src], lambda: run_cli(["embed", src, "--out", ctx.tmp / "o.zarr", "--quiet"])


@case("cli-zero-domains", CliFailed, r"--domains 0", r"positive integer \(e.g. --domains 7\)")
def _(ctx):
    src = _h5ad(ctx)
    return [src], lambda: run_cli(["embed", src, "--domains", "0", "--quiet"])


@case("cli-unknown-input", CliFailed, r"Unknown DLPFC sample 'nope'", r"available:")
def _(ctx):
    return [], lambda: run_cli(["info", "dlpfc:nope"])


@case("cli-pretrain-config-unparseable", CliFailed, r"Cannot parse .*bad.toml' as TOML", r"toml|TOML")
def _(ctx):
    cfg = ctx.tmp / "bad.toml"
    cfg.write_text("[[[ not toml")
    return [cfg], lambda: run_cli(["pretrain", "--config", cfg])


@case("cli-pretrain-unknown-train-option", CliFailed, r"Unknown \[train\] option\(s\) \['epoch'\]", r"TrainConfig")
def _(ctx):
    cfg = ctx.tmp / "typo.toml"
    cfg.write_text('[data]\nsections = ["stutility_mob:MOB1"]\n[train]\noutput_dir = "o"\nepoch = 3\n')
    return [cfg], lambda: run_cli(["pretrain", "--config", cfg])


# ---------------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def ctx_base(mob1, tiny_model, make_subset):
    sd = make_subset(mob1, 60)
    ad = sta.io.to_anndata(sd)
    emb = ad.copy()
    sta.tl.embed(emb, model=tiny_model, device="cpu", show_progress_bar=False)
    emb.obs["lab"] = pd.Categorical(np.where(np.arange(emb.n_obs) % 2, "a", "b"))
    return {"mob": mob1, "ad": ad, "emb": emb, "model": tiny_model}


@pytest.fixture
def ctx(ctx_base, tmp_path):
    return Ctx(tmp=tmp_path, **ctx_base)


def test_catalogue_size():
    assert len(CASES) >= 40
    areas = {name.split("-")[0] for name in CASES}
    assert {"io", "pp", "tl", "domains", "annotate", "predict", "models", "train", "cli"} <= areas


def _message(e: BaseException) -> str:
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, ctx):
    c = CASES[name]
    inputs, call = c.build(ctx)
    before = [snapshot(x) for x in inputs]
    with pytest.raises(c.exc) as info:
        call()
    msg = _message(info.value)
    assert re.search(c.problem, msg, re.S), f"the message does not name the problem: {msg!r}"
    assert re.search(c.fix, msg, re.S), f"the message does not name the fix: {msg!r}"
    assert "Traceback" not in msg
    for i, (b, x) in enumerate(zip(before, inputs, strict=True)):
        assert_unchanged(b, x, name=f"input[{i}]")
    # the shared real section is read-only for every case
    assert sorted(ctx.mob.images) == ["MOB1_image"] and ctx.mob.tables["table"].n_obs == 379


def test_snapshot_helper_sees_changes(ctx):
    """The deep comparison is not vacuous: each kind of change is reported."""
    edits = {
        "X": lambda a: a.X.__setitem__((0, 0), 99.0),
        "obs": lambda a: a.obs.__setitem__("new", 1),
        "obsm": lambda a: a.obsm["spatial"].__setitem__((0, 0), -1.0),
        "uns": lambda a: a.uns["spatial"]["MOB1"]["scalefactors"].__setitem__("microns_per_pixel", 9.0),
        "uns image": lambda a: a.uns["spatial"]["MOB1"]["images"]["hires"].__setitem__((0, 0, 0), 7),
        "var": lambda a: a.var.__setitem__("flag", True),
    }
    for what, edit in edits.items():
        a = ctx.ad.copy()
        snap = snapshot(a)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's SparseEfficiencyWarning
            edit(a)
        with pytest.raises(AssertionError):
            assert_unchanged(snap, a)
        assert what
    sd = ctx.sdata(20)
    snap = snapshot(sd)
    sd.tables["table"].obs["sample"] = sd.tables["table"].obs["sample"].cat.rename_categories(["other"])
    with pytest.raises(AssertionError, match="obs"):
        assert_unchanged(snap, sd)
    sd = ctx.sdata(20)
    snap = snapshot(sd)
    del sd.images["MOB1_image"]
    with pytest.raises(AssertionError, match="images"):
        assert_unchanged(snap, sd)
    f = ctx.tmp / "f.txt"
    f.write_text("a")
    snap = snapshot(f)
    f.write_text("b")
    with pytest.raises(AssertionError):
        assert_unchanged(snap, f)


# ----------------------------------------------------------------------------------- accepted odd inputs


@pytest.mark.parametrize(
    ("kind", "image"),
    [
        ("grayscale", _img(60, 60, 1)[..., 0]),
        ("rgba", _img(60, 60, 4)),
        ("16-bit", _img(60, 60, 3).astype(np.uint16) * 257),
        ("float-0-1", _img(60, 60, 3).astype(np.float32) / 255),
    ],
    ids=["grayscale", "rgba", "16-bit", "float-0-1"],
)
def test_accepted_odd_images(kind, image):
    """Grayscale is replicated, RGBA drops alpha, 16-bit and float images are rescaled to uint8 RGB (documented)."""
    from stalign._section import get_section

    before = image.copy()
    sd = sta.io.read_st(_counts(), _spots(), image, sample="s")
    np.testing.assert_array_equal(image, before)
    lv = get_section(sd, require_image=True).images[0]
    arr = np.asarray(lv.data)
    assert arr.shape == (3, 60, 60) and arr.dtype == np.uint8
    ref = before[..., :3] if before.ndim == 3 else np.repeat(before[..., None], 3, -1)
    if kind == "16-bit":
        ref = ref >> 8
    elif kind == "float-0-1":
        ref = np.rint(ref * 255)
    np.testing.assert_array_equal(np.moveaxis(arr, 0, -1), ref.astype(np.uint8))


def test_accepted_odd_counts_warn():
    """Non-integer (normalised?) and all-zero counts are read, with a warning that says what is odd."""
    with pytest.warns(UserWarning, match="not integers; stalign expects raw counts"):
        sd = sta.io.read_st(_counts() * 0.37, _spots(), sample="s")
    np.testing.assert_allclose(sd.tables["table"].X.toarray(), _counts().to_numpy() * 0.37, rtol=1e-6)
    with pytest.warns(UserWarning, match="every count is zero"):
        sd = sta.io.read_st(_counts() * 0, _spots(), sample="s")
    from stalign._section import get_section

    assert not get_section(sd).has_expression


def test_accepted_duplicate_gene_columns():
    """A counts table with a duplicated gene column reads (names made unique), it is not 'non-numeric'."""
    with pytest.warns(UserWarning, match="not unique"):
        sd = sta.io.read_st(_counts().set_axis(["Actb", "Actb", "X"], axis=1), _spots(), sample="s")
    assert list(sd.tables["table"].var_names) == ["Actb", "Actb-1", "X"]
