"""``io.concat`` and ``io.sample_name`` on real sections: one AnnData per cohort, each section's space kept apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import stalign as sta
from stalign._section import get_section
from stalign._utils import unique_names


@pytest.fixture(scope="module")
def mobs(data_dir):
    return [sta.datasets.stutility_mob(s, data_dir=data_dir) for s in ("MOB1", "MOB2")]


def test_concat_keeps_each_sections_spatial_metadata(mobs):
    a = sta.io.concat(mobs)
    n1, n2 = (m.tables["table"].n_obs for m in mobs)
    assert a.n_obs == n1 + n2 and a.obs_names.is_unique
    assert list(a.obs["sample"].cat.categories) == ["MOB1", "MOB2"]
    assert a.obs["sample"].value_counts().to_dict() == {"MOB1": n1, "MOB2": n2}
    for m in mobs:
        s = get_section(m)
        sf = a.uns["spatial"][s.library_id]["scalefactors"]
        assert sf["microns_per_pixel"] == pytest.approx(s.microns_per_pixel)
        rows = (a.obs["sample"] == s.library_id).to_numpy()
        np.testing.assert_array_equal(a.obsm["spatial"][rows], m.tables["table"].obsm["spatial"])
        assert get_section(a[rows], library_id=s.library_id).microns_per_pixel == pytest.approx(s.microns_per_pixel)
    assert a.uns["spatial"]["MOB1"]["images"] == {}  # images=False: scalefactors only
    with_img = sta.io.concat(mobs, images=True)
    assert with_img.uns["spatial"]["MOB2"]["images"]["hires"].ndim == 3


def test_smoothing_on_a_concatenation_stays_within_each_section(mobs):
    a = sta.io.concat(mobs)
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    joint = sta.pp.spatial_smooth(a, X, radius_um=250, library_key="sample")
    for m, name in zip(mobs, ("MOB1", "MOB2"), strict=True):
        rows = (a.obs["sample"] == name).to_numpy()
        alone = sta.io.to_anndata(m)[:, a.var_names].copy()  # the section on its own, same gene order
        own = sta.pp.spatial_smooth(alone, alone.X.toarray(), radius_um=250)
        np.testing.assert_allclose(joint[rows], own, rtol=1e-5, atol=1e-6)


def test_concat_names_and_records(mobs):
    twice = sta.io.concat([mobs[0], mobs[0], mobs[1]], counts=False)
    assert list(twice.obs["sample"].cat.categories) == ["MOB1", "MOB1-2", "MOB2"]
    assert twice.n_vars == 0 and "spatial" in twice.obsm
    named = sta.io.concat({"a": mobs[0], "b": mobs[1]})
    assert sorted(named.uns["spatial"]) == ["a", "b"]
    with pytest.raises(ValueError, match="unique names"):
        sta.io.concat(mobs, keys=["x", "x"])
    with pytest.raises(ValueError, match="at least one"):
        sta.io.concat([])


def test_concat_refuses_embeddings_of_two_models(mobs):
    a, b = (sta.io.to_anndata(m) for m in mobs)
    for t, fp in ((a, "aaaa"), (b, "bbbb")):
        t.obsm["X_stalign"] = np.zeros((t.n_obs, 4), dtype=np.float32)
        t.uns["stalign"] = {"model": fp, "weights_fingerprint": fp, "keys": {"fused": "X_stalign"}}
    with pytest.raises(ValueError, match="different models"):
        sta.io.concat([a, b])
    b.uns["stalign"]["weights_fingerprint"] = "aaaa"
    out = sta.io.concat([a, b])
    assert out.uns["stalign"]["weights_fingerprint"] == "aaaa" and out.obsm["X_stalign"].shape == (out.n_obs, 4)


def test_sample_name_matches_what_load_reads(data_dir, tmp_path):
    for spec in ("stutility_mob:MOB2", "stahl_mob:11", "her2st:C2"):
        name = sta.datasets.sample_name(spec)
        assert name == sta.datasets.load(spec, data_dir=data_dir).tables["table"].obs["sample"].astype(str).iloc[0]
    assert sta.datasets.sample_name("stahl_mob:1") == "01"
    adata = sta.io.to_anndata(sta.datasets.stutility_mob("MOB1", data_dir=data_dir))
    adata.write_h5ad(tmp_path / "renamed.h5ad")
    assert sta.datasets.sample_name(tmp_path / "renamed.h5ad") == "MOB1"  # obs["sample"], not the file name
    assert sta.datasets.sample_name(tmp_path / "absent.h5ad") == "absent"
    (tmp_path / "run7" / "outs").mkdir(parents=True)
    assert sta.datasets.sample_name(tmp_path / "run7" / "outs") == "run7"
    with pytest.raises(ValueError, match="no section"):
        sta.datasets.sample_name("her2st:")


def test_unique_names_is_deterministic():
    assert unique_names(["C2", "C2", "C2-2"]) == ["C2", "C2-3", "C2-2"]
    assert unique_names(["a", "b", "a", "a"]) == ["a", "b", "a-2", "a-3"]
    assert pd.Index(unique_names(["x"] * 5)).is_unique
