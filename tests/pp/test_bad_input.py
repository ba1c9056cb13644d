"""Bad input to pp (crops, niche expression, gene vocabulary, SpotDataset): a clear error, inputs unchanged.

The cases run through the harness of ``tests/_bad_input.py`` (error type, two regexes, a deep before/after
snapshot of every input) on the synthetic section and tiny model of ``tests/conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import stalign as sta

from .._bad_input import Catalogue

CASES = Catalogue()
case = CASES.case


def _no_image(ctx):
    a = ctx.ad.copy()
    a.uns["spatial"]["toy"]["images"] = {}
    return a


@case("pp-crops-without-image", ValueError, r"Section 'toy' has no image", r"Pass a SpatialData with an image")
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


for _value, _what in [(float("nan"), "nan"), (float("inf"), "infinite"), ("110", "string"), (True, "bool")]:

    @case(f"pp-niche-radius-{_what}", ValueError, rf"radius_um={_value!r}", r"non-negative number of micrometres")
    def _(ctx, value=_value):
        a = ctx.ad.copy()  # in place: nothing may be written before the check
        return [a], lambda: sta.pp.niche_expression(a, radius_um=value, key_added="bad")


@case("pp-niche-expression-of-an-array", TypeError, r"got ndarray", r"Expected a SpatialData or an AnnData")
def _(ctx):
    x = np.zeros((3, 2))
    return [x], lambda: sta.pp.niche_expression(x)


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


def _bad_dataset(name, exc, problem, fix, **kw):
    """A case: SpotDataset over the section (10 genes) refuses ``kw``."""

    def build(ctx):
        a = ctx.ad.copy()
        opts = {"genes": list(a.var_names[:10]), **kw}
        return [a], lambda: sta.pp.SpotDataset([a], **opts)

    case(name, exc, problem, fix)(build)


_bad_dataset("pp-dataset-zero-batch", ValueError, r"batch_size=0", r"positive integer", batch_size=0)
_bad_dataset("pp-dataset-batch-size-bool", ValueError, r"batch_size=True", r"positive integer", batch_size=True)
_bad_dataset(
    "pp-dataset-empty-genes-with-expression",
    ValueError,
    r"genes is empty but use_expr=True",
    r"use_expr=False",
    genes=[],
)
_bad_dataset(
    "pp-dataset-genes-none", TypeError, r"got NoneType None", r"sequence of gene symbols .*model.genes", genes=None
)


@case("pp-dataset-no-sections", ValueError, r"`sections` is empty", r"pass a list of SpatialData")
def _(ctx):
    return [], lambda: sta.pp.SpotDataset([], genes=["Actb"])


@case("pp-dataset-section-of-wrong-type", TypeError, r"sections\[0\] is a ndarray", r"expected a SpatialData or an")
def _(ctx):
    x = np.zeros(3)
    return [x], lambda: sta.pp.SpotDataset([x], genes=["Actb"])


@case("pp-dataset-rank-outside-world", ValueError, r"rank=2, world_size=2", r"0 <= rank < world_size")
def _(ctx):
    a = ctx.ad.copy()
    return [a], lambda: sta.pp.SpotDataset([a], genes=list(a.var_names), rank=2, world_size=2)


@case(
    "pp-dataset-clusters-of-wrong-length", ValueError, r"clusters\[0\] has shape \(3,\)", r"one integer per spot \(60\)"
)
def _(ctx):
    a, cl = ctx.ad.copy(), np.zeros(3)
    return [a, cl], lambda: sta.pp.SpotDataset([a], genes=list(a.var_names), clusters=[cl])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, bad_input_ctx):
    CASES.check(name, bad_input_ctx)
