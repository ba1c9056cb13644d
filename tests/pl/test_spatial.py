from __future__ import annotations

import matplotlib

matplotlib.use("agg")
import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba

import stalign as sta

N_SPOTS = 60


@pytest.fixture(scope="module")
def sdata(toy_section):
    """The synthetic section (tests/_synthetic.py), with an ``annotation`` (its zones, every 7th spot unlabelled)."""
    sd = toy_section()
    obs = sd.tables["table"].obs
    zones = obs["zone"].astype(str).to_numpy().astype(object)
    zones[::7] = None
    obs["annotation"] = pd.Categorical(zones, categories=["z0", "z1", "z2"])
    obs["in_tissue"] = 1
    assert sd.tables["table"].n_obs == N_SPOTS
    return sd


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _scatters(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def _colorbars(fig):
    return [a for a in fig.axes if a.get_label() == "<colorbar>"]


def test_categorical_annotation(sdata):
    table = sdata.tables["table"]
    cats = list(table.obs["annotation"].cat.categories)
    ax = sta.pl.spatial(sdata, color="annotation")
    assert isinstance(ax, matplotlib.axes.Axes)
    assert len(ax.images) == 1  # the H&E underneath
    assert len(_scatters(ax)) == len(cats)  # one collection per category
    n_drawn = sum(len(c.get_offsets()) for c in _scatters(ax))
    assert n_drawn == int(table.obs["annotation"].notna().sum())  # unlabelled spots are not drawn
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == cats
    assert not _colorbars(ax.figure)
    assert ax.get_title() == "annotation"


def test_palette_from_uns(sdata):
    from spatialdata import SpatialData

    table = sdata.tables["table"].copy()
    cats = list(table.obs["annotation"].cat.categories)
    colours = ["#ff0000", "#00ff00", "#0000ff", "#ffff00", "#00ffff", "#ff00ff", "#000000"][: len(cats)]
    table.uns["annotation_colors"] = colours
    sd = SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": table})
    ax = sta.pl.spatial(sd, color="annotation", img=False)
    assert len(ax.images) == 0
    faces = [tuple(c.get_facecolor()[0][:3]) for c in _scatters(ax) if len(c.get_offsets())]
    assert faces[0] == pytest.approx(to_rgba(colours[0])[:3])
    assert "annotation_colors" not in sdata.tables["table"].uns  # the fixture is untouched


def test_gene_continuous_into_ax(sdata):
    fig, ax = plt.subplots()
    gene = "Mbp"
    out = sta.pl.spatial(sdata, color=gene, ax=ax)
    assert out is ax
    scatters = _scatters(ax)
    assert len(scatters) == 1
    table = sdata.tables["table"]
    expected = np.asarray(table[:, gene].X.todense()).ravel()
    np.testing.assert_allclose(scatters[0].get_array(), expected)
    assert len(_colorbars(fig)) == 1
    assert ax.get_legend() is None


def test_return_fig_and_show(sdata, monkeypatch):
    fig = sta.pl.spatial(sdata, color="annotation", return_fig=True, show=False)
    assert isinstance(fig, matplotlib.figure.Figure)
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    assert sta.pl.spatial(sdata, show=True) is None
    assert shown == [True]


def test_bad_color(sdata):
    with pytest.raises(KeyError, match="neither an obs column nor a gene"):
        sta.pl.spatial(sdata, color="not_a_column")


def test_values_predicted_genes(sdata):
    table = sdata.tables["table"]
    names = table.obs_names[: N_SPOTS - 20]  # 20 spots without a prediction
    pred_vals = np.linspace(0.0, 1.0, len(names), dtype=np.float32)
    pred = ad.AnnData(
        X=pred_vals[::-1, None].copy(),
        obs=pd.DataFrame(index=names[::-1]),  # another order: values are matched by obs_names
        var=pd.DataFrame(index=["PRED_GENE"]),
    )
    ax = sta.pl.spatial(sdata, color="PRED_GENE", values=pred, title="predicted")
    scatters = _scatters(ax)
    assert len(scatters) == 1
    arr = np.ma.filled(scatters[0].get_array().astype(float), np.nan)
    np.testing.assert_allclose(arr[: len(names)], pred_vals, rtol=1e-6)
    assert np.isnan(arr[len(names) :]).all()
    assert len(_colorbars(ax.figure)) == 1
    assert ax.get_title() == "predicted"
    with pytest.raises(KeyError, match="not a gene of `values`"):
        sta.pl.spatial(sdata, color="Mbp", values=pred)


def test_domains_labels_embedding(sdata):
    from spatialdata import SpatialData

    table = sdata.tables["table"].copy()
    rng = np.random.default_rng(0)
    table.obs["stalign_domain"] = pd.Categorical(rng.integers(0, 3, table.n_obs).astype(str))
    table.obs["stalign_label"] = pd.Categorical(rng.choice(["a", "b"], table.n_obs))
    table.obsm["X_stalign"] = rng.normal(size=(table.n_obs, 8)).astype(np.float32)
    sd = SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": table})

    ax = sta.pl.domains(sd, img=False)
    assert len(_scatters(ax)) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]
    ax = sta.pl.labels(sd, img=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]

    ax = sta.pl.embedding(sd, color="stalign_label")
    assert len(_scatters(ax)) == 2
    assert ax.get_xlabel() == "X_stalign PC1"
    ax = sta.pl.embedding(sd, color="in_tissue", return_fig=False)
    assert len(_colorbars(ax.figure)) == 1
