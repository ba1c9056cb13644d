from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData
from scipy import sparse

import stalign as sta
from stalign._constants import Key
from stalign._section import get_section


@pytest.fixture(scope="module")
def dlpfc_counts(data_dir):
    sdata = sta.datasets.dlpfc("151673", data_dir=data_dir)
    assert sdata.tables["table"].n_vars > 0
    return sdata


def _explicit_mean(table, coords, mpp, i, radius_um):
    d = np.hypot(*(coords - coords[i]).T) * mpp
    nb = np.flatnonzero(d <= radius_um)
    return np.asarray(table.X[nb].mean(axis=0)).ravel(), nb


def test_niche_mean_equals_explicit_mean_dlpfc(dlpfc_counts):
    sdata = dlpfc_counts
    table = sdata.tables["table"]
    obsp_before = set(table.obsp.keys())
    assert sta.pp.niche_expression(sdata, copy=True) is not None
    assert Key.niche_expr not in table.obsm  # copy=True left the input alone
    assert sta.pp.niche_expression(sdata) is None
    Xn = table.obsm[Key.niche_expr]
    assert sparse.isspmatrix_csr(Xn) and Xn.dtype == np.float32 and Xn.shape == table.shape
    assert set(table.obsp.keys()) == obsp_before  # the user's graph is untouched
    params = table.uns[Key.niche_expr]["params"]
    assert params["radius_um"] == pytest.approx(110)
    sec = get_section(sdata)
    rng = np.random.default_rng(0)
    sizes = []
    for i in rng.choice(table.n_obs, 25, replace=False):
        mean, nb = _explicit_mean(table, sec.coords, sec.microns_per_pixel, i, 110)
        np.testing.assert_allclose(Xn[i].toarray().ravel(), mean, rtol=1e-5, atol=1e-5)
        sizes.append(len(nb))
    # Visium: the spot and its six neighbours (fewer at the tissue edge)
    assert max(sizes) == 7 and np.median(sizes) == 7
    del table.obsm[Key.niche_expr], table.uns[Key.niche_expr]


def test_radius_and_key_added_anndata(toy_adata):
    adata = toy_adata.copy()
    out = sta.pp.niche_expression(adata, radius_um=250, key_added="nb250", copy=True)
    assert isinstance(out, AnnData) and "nb250" not in adata.obsm
    sec = get_section(adata)
    for i in (12, 25, 47):  # inner spots
        mean, nb = _explicit_mean(adata, sec.coords, sec.microns_per_pixel, i, 250)
        assert len(nb) > 7
        np.testing.assert_allclose(out.obsm["nb250"][i].toarray().ravel(), mean, rtol=1e-5, atol=1e-5)
    assert out.uns["nb250"]["params"]["radius_um"] == 250
    # radius 0: the spot alone
    out0 = sta.pp.niche_expression(adata, radius_um=0, copy=True)
    np.testing.assert_allclose(out0.obsm[Key.niche_expr].toarray(), adata.X.toarray())


def test_three_spots_by_hand():
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [30.0, 0.0]])
    X = sparse.csr_matrix(np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]]))
    adata = AnnData(X=X, obsm={"spatial": xy}, uns={"spatial": {"s": {"scalefactors": {"microns_per_pixel": 2.0}}}})
    sta.pp.niche_expression(adata, radius_um=20)  # 10 px
    np.testing.assert_allclose(adata.obsm[Key.niche_expr].toarray(), [[2, 1], [2, 1], [5, 4]])


@pytest.mark.parametrize("radius_um", [60.0, 110.0, 300.0])
def test_graph_equals_squidpy_radius_graph(dlpfc_counts, radius_um):
    """The KD-tree niche graph is squidpy's generic radius graph (plus the spot itself)."""
    import squidpy as sq

    from stalign.pp._niche import niche_graph

    sec = get_section(dlpfc_counts)
    ours = niche_graph(sec, radius_um=radius_um)
    tmp = AnnData(shape=(sec.table.n_obs, 0), obsm={"spatial": sec.coords.copy()})
    sq.gr.spatial_neighbors(tmp, coord_type="generic", radius=radius_um / sec.microns_per_pixel, set_diag=True)
    theirs = (tmp.obsp["spatial_connectivities"] > 0).astype(np.float32)
    theirs = sparse.diags(1.0 / np.asarray(theirs.sum(axis=1)).ravel()) @ theirs
    assert (ours != 0).nnz == (theirs != 0).nnz
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), atol=1e-7)


def test_default_radius_holds_the_first_ring_on_legacy_st(data_dir, dlpfc_counts):
    """Visium keeps 110 µm (the spot and its 6 neighbours); on legacy ST's ~200 µm grid the default radius grows to
    1.1 x the pitch, so the niche holds the spot's neighbours instead of being a copy of the spot."""
    from stalign.pp._niche import NICHE_RADIUS_UM, PITCH_FACTOR, default_radius_um, niche_graph, spot_pitch_um

    visium = get_section(dlpfc_counts)
    assert default_radius_um(visium) == pytest.approx(NICHE_RADIUS_UM)
    for sdata in (sta.datasets.stahl_mob("11", data_dir=data_dir), sta.datasets.her2st("C2", data_dir=data_dir)):
        sec = get_section(sdata)
        pitch = spot_pitch_um(sec)
        assert 170 < pitch < 230  # legacy ST: 200 µm centre-to-centre
        radius = default_radius_um(sec)
        assert radius == pytest.approx(PITCH_FACTOR * pitch)
        sizes = np.diff(niche_graph(sec).indptr)
        assert np.median(sizes) >= 4  # spot + its (4- or 6-)ring, minus the tissue edge
        assert np.diff(niche_graph(sec, radius_um=NICHE_RADIUS_UM).indptr).max() == 1  # 110 µm: the spot alone
        table = sdata.tables["table"]
        sta.pp.niche_expression(sdata)
        assert table.uns[Key.niche_expr]["params"]["radius_um"] == pytest.approx(radius)
        i = int(np.argmax(sizes))
        mean, nb = _explicit_mean(table, sec.coords, sec.microns_per_pixel, i, radius)
        np.testing.assert_allclose(table.obsm[Key.niche_expr][i].toarray().ravel(), mean, rtol=1e-5, atol=1e-6)
        assert len(nb) == sizes[i]
