"""Plots of H&E-only slides: the tissue-mask QC and predicted-gene maps over the H&E."""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection

import stalign as sta


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def dlpfc_tiles(data_dir):
    png = data_dir / "dlpfc_humanpilot" / "10X" / "151673" / "tissue_lowres_image.png"
    sdata = sta.io.read_image(png, microns_per_pixel=16.09, name="151673")
    sta.pp.tile_tissue(sdata, spacing_um=100)
    return sdata


@pytest.fixture(scope="module")
def mob_prediction(data_dir):
    """STUtility MOB2's H&E tiled (its spots unused), its expression predicted from MOB1."""
    reference = sta.datasets.stutility_mob("MOB1", data_dir=data_dir)
    mpp = sta.datasets.stutility_mob("MOB2", data_dir=data_dir).tables["table"].uns["spatial"]["MOB2"]["scalefactors"]
    jpg = data_dir / "stutility_mob" / "inst" / "extdata" / "counts" / "MOB2.jpg"
    query = sta.io.read_image(jpg, microns_per_pixel=mpp["microns_per_pixel"])
    sta.pp.tile_tissue(query, spacing_um=100)
    pred = sta.tl.predict_expression(query, [reference], n_top_genes=20)
    return query, pred


def test_tissue_mask_qc(dlpfc_tiles):
    table = dlpfc_tiles.tables["table"]
    ax = sta.pl.tissue_mask(dlpfc_tiles)
    assert isinstance(ax, matplotlib.axes.Axes)
    assert len(ax.images) == 2  # the H&E and the mask shading
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots) == 1 and len(dots[0].get_offsets()) == table.n_obs
    assert f"{table.n_obs} tiles at 100 µm" in ax.get_title()
    fig = sta.pl.tissue_mask(dlpfc_tiles, tiles=False, return_fig=True, title="QC")
    assert isinstance(fig, matplotlib.figure.Figure) and fig.axes[0].get_title() == "QC"


def test_tissue_mask_needs_tiles(data_dir):
    with pytest.raises(KeyError, match="tile_tissue"):
        sta.pl.tissue_mask(sta.datasets.stutility_mob("MOB1", data_dir=data_dir))


def test_predicted_gene_maps_over_the_he(mob_prediction):
    query, pred = mob_prediction
    table = query.tables["table"]
    assert pred.n_obs == table.n_obs and pred.n_vars == 20 and np.isfinite(pred.X).all()
    gene = pred.var_names[0]
    # values= an AnnData of predictions
    ax = sta.pl.spatial(query, color=gene, values=pred, cmap="magma")
    assert len(ax.images) == 1 and ax.get_title() == gene
    drawn = [c for c in ax.collections if isinstance(c, PathCollection)][0]
    np.testing.assert_allclose(np.asarray(drawn.get_array()), np.asarray(pred[:, gene].X).ravel(), rtol=1e-6)
    # or a column of obs
    table.obs[gene] = np.asarray(pred[:, gene].X).ravel()
    ax = sta.pl.spatial(query, color=gene)
    assert len(ax.images) == 1
    # the prediction AnnData alone carries positions, scale and the query's small H&E (uns["spatial"])
    ax = sta.pl.spatial(pred, color=gene)
    assert len(ax.images) == 1
