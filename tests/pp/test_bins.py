"""pp.bin and pp.pseudospots (issue 24): sums in µm over Visium HD bins and Xenium cells, and the map back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.spatial.distance import cdist

import stalign as sta
from stalign.io._visium_hd import split_into_bins, write_visium_as_hd, write_visium_hd


def _hd(tmp_path, *, size=2, n=40, genes=6, seed=0):
    """A square of n x n bins of ``size`` µm, Poisson counts, read back with io.read_visium_hd."""
    rng = np.random.default_rng(seed)
    rows, cols = np.divmod(np.arange(n * n), n)
    mpp = 0.5
    xy = np.column_stack([(cols + 0.5) * size, (rows + 0.5) * size]) / mpp
    counts = sparse.csr_matrix(rng.poisson(0.5, (n * n, genes)))
    img = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
    names = [f"G{i}" for i in range(genes)]
    write_visium_hd(tmp_path / "outs", counts=counts, array_row=rows, array_col=cols, xy_fullres=xy, gene_ids=names,
                    gene_names=names, bin_size_um=size, microns_per_pixel=mpp, hires_image=img, hires_scalef=0.5)  # fmt: skip
    return sta.io.read_visium_hd(tmp_path / "outs", bin_size_um=size, dataset_id="s")


def test_bin_sums_nested_blocks(tmp_path):
    sdata = _hd(tmp_path)
    fine = sdata.tables["table"]
    sta.pp.bin(sdata, bin_um=8)
    coarse = sdata.tables["square_008um"]
    assert coarse.n_obs == (40 // 4) ** 2 and (coarse.obs["n_bins"] == 16).all()
    # brute force: group the fine bins by their 4x4 block
    key = (fine.obs["array_row"] // 4).astype(str) + "_" + (fine.obs["array_col"] // 4).astype(str)
    expect = pd.DataFrame(fine.X.toarray(), index=key.to_numpy()).groupby(level=0).sum()
    got = pd.DataFrame(coarse.X.toarray(),
                       index=(coarse.obs["array_row"].astype(str) + "_" + coarse.obs["array_col"].astype(str)).to_numpy())  # fmt: skip
    np.testing.assert_array_equal(got.loc[expect.index].to_numpy(), expect.to_numpy())
    sf = coarse.uns["spatial"]["s"]["scalefactors"]
    assert sf["bin_size_um"] == 8 and sf["spot_diameter_fullres"] == pytest.approx(16.0)
    # a coarse bin's centre is the centre of its 4x4 block (8 µm grid, 0.5 µm/px)
    rc = coarse.obs[["array_col", "array_row"]].to_numpy()
    np.testing.assert_allclose(coarse.obsm["spatial"], (rc + 0.5) * 8 / 0.5)
    sta.pp.bin(sdata, bin_um=16, table_key="square_008um")  # 8 → 16 µm
    assert sdata.tables["square_016um"].X.sum() == fine.X.sum()


def test_bin_bad_input(tmp_path):
    sdata = _hd(tmp_path, n=8)
    with pytest.raises(ValueError, match=r"bin_um=5 is not a whole multiple of the 2 µm bins"):
        sta.pp.bin(sdata, bin_um=5)
    sta.pp.bin(sdata, bin_um=8)
    n_tables = len(sdata.tables)
    with pytest.raises(ValueError, match=r"already has a table 'square_008um'"):
        sta.pp.bin(sdata, bin_um=8)
    assert len(sdata.tables) == n_tables
    with pytest.raises(TypeError, match=r"needs a SpatialData"):
        sta.pp.bin(sdata.tables["table"], bin_um=8)


def test_pseudospots_match_brute_force(tmp_path):
    sdata = _hd(tmp_path, size=8, n=30)
    bins = sdata.tables["table"]
    sta.pp.pseudospots(sdata, spacing_um=60, spot_um=40)
    ps = sdata.tables["pseudospots"]
    mpp = 0.5
    d = cdist(ps.obsm["spatial"] * mpp, bins.obsm["spatial"] * mpp)
    inside = d <= 20
    M = bins.obsm["pseudospots"]
    assert sparse.issparse(M) and M.shape == (bins.n_obs, ps.n_obs)
    np.testing.assert_array_equal(M.T.toarray() > 0, inside)
    np.testing.assert_array_equal(ps.X.toarray(), inside.astype(np.float32) @ bins.X.toarray())
    np.testing.assert_array_equal(ps.obs["n_points"], inside.sum(1))
    # grid: the hexagonal grid of pp.tile_tissue (rows 60·√3/2 µm apart)
    ys = np.unique(np.round(ps.obsm["spatial"][:, 1] * mpp, 6))
    np.testing.assert_allclose(np.diff(ys), 60 * np.sqrt(3) / 2)
    # the map back: each bin's nearest pseudo-spot, within the grid's hexagonal cell (60/√3 µm > the 20 µm radius)
    lab = bins.obs["pseudospots"]
    near = d.min(0) <= 60 / np.sqrt(3)
    assert lab.notna().to_numpy().tolist() == near.tolist() and near.mean() > inside.any(0).mean()
    j = ps.obs_names.get_indexer(lab[near].astype(str))
    np.testing.assert_allclose(d[j, np.flatnonzero(near)], d.min(0)[near])  # nearest (ties: either)
    sf = ps.uns["spatial"]["s"]["scalefactors"]
    assert sf["spot_diameter_fullres"] * mpp == pytest.approx(40) and sf["spacing_um"] == 60
    with pytest.raises(ValueError, match=r"already has a table 'pseudospots'"):
        sta.pp.pseudospots(sdata)


def test_pseudospots_bad_centers(tmp_path):
    sdata = _hd(tmp_path, size=8, n=6)
    with pytest.raises(ValueError, match=r"centers has shape \(3,\)"):
        sta.pp.pseudospots(sdata, centers=np.zeros(3))
    with pytest.raises(ValueError, match=r"No bin/cell centre lies within"):
        sta.pp.pseudospots(sdata, centers=np.array([[1e5, 1e5]]))
    assert "pseudospots" not in sdata.tables and "pseudospots" not in sdata.tables["table"].obsm


@pytest.fixture(scope="module")
def dlpfc_as_hd(data_dir, tmp_path_factory):
    """DLPFC 151673 split into 8 µm bins in each 55 µm spot, written in the HD layout and read back (item 6)."""
    if not (data_dir / "dlpfc_humanpilot" / "10X" / "151673").is_dir():
        pytest.skip("151673 not present")
    vis = sta.datasets.dlpfc("151673", data_dir=data_dir)
    outs = write_visium_as_hd(vis, tmp_path_factory.mktemp("hd") / "outs", bin_um=8)
    return vis, sta.io.read_visium_hd(outs, bin_size_um=8, dataset_id="151673")


@pytest.mark.slow
def test_dlpfc_bins_back_into_spots(dlpfc_as_hd):
    """Item 6, the cheap part: pseudo-spots at the spot centres hold exactly the spots' counts, and embed the same.

    The full section (cosine, domain ARI and the 50 µm grid) is benchmarks/hd_consistency.py.
    """
    vis, hd = dlpfc_as_hd
    vt = vis.tables["table"]
    bins = hd.tables["table"]
    assert bins.X.sum() == vt.X.sum()
    sta.pp.pseudospots(hd, centers=vt.obsm["spatial"], spot_um=55, key_added="at_spots")
    at = hd.tables["at_spots"]
    order = at.obs["center_index"].to_numpy()
    assert at.n_obs == vt.n_obs and (order == np.arange(vt.n_obs)).all()
    assert abs(at.X - vt.X).max() == 0  # every count of every spot, back in its spot
    assert 30 <= np.median(at.obs["n_points"]) <= 40  # 8 µm bins in a 55 µm disc: π·27.5²/64 ≈ 37
    # the same spots embed the same (a 300-spot window, both from the same image and counts)
    idx = np.argsort(np.linalg.norm(vt.obsm["spatial"] - np.median(vt.obsm["spatial"], 0), axis=1))[:300]
    a = sta.io.to_anndata(vis)[idx].copy()
    b = sta.io.to_anndata(hd, table_key="at_spots")[idx].copy()
    for x in (a, b):
        sta.tl.embed(x, show_progress_bar=False)
    cos = np.sum(a.obsm["X_stalign"] * b.obsm["X_stalign"], 1) / (
        np.linalg.norm(a.obsm["X_stalign"], axis=1) * np.linalg.norm(b.obsm["X_stalign"], axis=1)
    )
    assert np.median(cos) >= 0.99


def test_split_into_bins_keeps_every_count():
    X = sparse.csr_matrix(np.array([[5, 0, 7], [0, 3, 0]]))
    xy = np.array([[100.0, 100.0], [300.0, 100.0]])
    B, rows, cols, spot = split_into_bins(X, xy, spot_um=55, bin_um=8)
    centres = np.column_stack([(cols + 0.5) * 8, (rows + 0.5) * 8])
    assert (np.linalg.norm(centres - xy[spot], axis=1) < 27.5).all()
    assert np.bincount(spot).min() > 30  # π·27.5²/64 ≈ 37 bins of 8 µm per 55 µm spot
    per_spot = sparse.csr_matrix((np.ones(len(spot)), (spot, np.arange(len(spot))))) @ B
    np.testing.assert_array_equal(per_spot.toarray(), X.toarray())
