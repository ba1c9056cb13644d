"""Tiles behave like the assay's own spots (issue 16, lighter than `benchmarks/tiles_quality.py`).

- Domains: on Ståhl MOB 01, image-only domains over 100 µm tiles, read at each labelled spot's nearest tile, score
  an ARI (mean of seeds 0–2) within 0.05 of the same `tl.domains` call on the spots (all of 01–08: the benchmark).
- Expression: her2st C5 predicted from its H&E with C2–C4 as reference, read at each spot's nearest 100 µm tile, has
  a mean Pearson r (references' top-50 HVGs) within 0.02 of predicting at the spots directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from threadpoolctl import threadpool_limits

import stalign as sta
from stalign.evaluation import clustering_scores, expression_scores
from stalign.pp import reference_hvgs

MOB_IMAGES = ("stahl_mob_splotch", "splotch", "tutorials", "olfactory_bulb_st", "images")


def _nearest(tiles_xy, spots_xy) -> np.ndarray:
    return cKDTree(np.asarray(tiles_xy)).query(np.asarray(spots_xy))[1]


def test_domains_from_tiles_match_spots(data_dir):
    diffs = []
    for rep in ("01",):
        spots = sta.datasets.stahl_mob(rep, data_dir=data_dir)
        st = spots.tables["table"]
        mpp = st.uns["spatial"][rep]["scalefactors"]["microns_per_pixel"]
        tiles = sta.io.read_image(data_dir.joinpath(*MOB_IMAGES, f"{rep}.jpg"), microns_per_pixel=mpp, name=rep)
        sta.pp.tile_tissue(tiles, spacing_um=100)
        tt = tiles.tables["table"]
        for sd in (spots, tiles):
            sta.tl.embed(sd, show_progress_bar=False)
        labels = st.obs["annotation"].to_numpy()
        k = st.obs["annotation"].nunique()
        j = _nearest(tt.obsm["spatial"], st.obsm["spatial"])
        ari_tiles, ari_spots = [], []
        for seed in (0, 1, 2):
            with threadpool_limits(1):  # a loaded 2-core machine makes multi-threaded BLAS crawl
                sta.tl.domains(tiles, n_domains=k, use_rep="X_stalign_image", random_state=seed)
                sta.tl.domains(spots, n_domains=k, use_rep="X_stalign_image", random_state=seed)
            ari_tiles.append(clustering_scores(labels, tt.obs["stalign_domain"].to_numpy()[j])["ari"])
            ari_spots.append(clustering_scores(labels, st.obs["stalign_domain"].to_numpy())["ari"])
        assert np.mean(ari_spots) > 0.1  # the comparison is not between two random labelings
        diffs.append(np.mean(ari_tiles) - np.mean(ari_spots))
    assert abs(np.mean(diffs)) <= 0.05, diffs


def test_expression_maps_from_tiles_match_spots(data_dir):
    from stalign.pp import log_normalize

    refs = [sta.datasets.her2st(s, data_dir=data_dir) for s in ("C2", "C3", "C4")]
    c5 = sta.datasets.her2st("C5", data_dir=data_dir)
    truth_table = c5.tables["table"]
    genes = reference_hvgs([r.tables["table"] for r in refs], n_top_genes=50, also_in=[truth_table])
    truth = np.asarray(log_normalize(truth_table.X)[:, truth_table.var_names.get_indexer(genes)].todense())
    # the tiles go beside the spots, on the same (already decoded) H&E; the spots' counts play no part
    sta.pp.tile_tissue(c5, spacing_um=100, table_key="tiles")
    sta.tl.embed(c5, table_key="tiles", show_progress_bar=False)
    tiles = c5.tables["tiles"]
    assert tiles.n_vars == 0 and "X_stalign_image" in tiles.obsm
    at_spots = sta.tl.predict_expression(c5, refs, genes=genes)
    at_tiles = sta.tl.predict_expression(tiles, refs, genes=genes)
    assert at_tiles.n_obs == tiles.n_obs > truth_table.n_obs
    j = _nearest(at_tiles.obsm["spatial"], truth_table.obsm["spatial"])
    r_spots = expression_scores(np.asarray(at_spots.X), truth)["pearson"]
    r_tiles = expression_scores(np.asarray(at_tiles.X)[j], truth)["pearson"]
    assert r_tiles == pytest.approx(r_spots, abs=0.02)
