from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

from stalign import datasets, io
from stalign._section import get_section
from stalign.datasets._st import rounded_ids

HER2ST = [
    "A1",
    "A2",
    "A3",
    "A4",
    "A5",
    "A6",
    "C1",
    "C2",
    "C3",
    "C4",
    "C5",
    "C6",
    "D1",
    "D2",
    "D3",
    "D4",
    "D5",
    "D6",
    "E2",
    "E3",
    "F2",
    "F3",
    "G1",
    "G3",
    "H2",
    "H3",
]


def _her2st_base(data_dir):
    return data_dir / "her2st" / "data"


@pytest.mark.parametrize(
    "section", [pytest.param(s, marks=() if s in ("A1", "C2", "E2") else pytest.mark.slow) for s in HER2ST]
)
def test_her2st_counts_sections(data_dir, section):
    base = _her2st_base(data_dir)
    if not (base / "ST-cnts" / f"{section}.tsv.gz").is_file():
        pytest.skip(f"{section} not present")
    sdata = datasets.her2st(section, data_dir=data_dir, load_image=False)
    t = sdata.tables["table"]
    spots = pd.read_csv(base / "ST-spotfiles" / f"{section}_selection.tsv", sep="\t")
    spots.index = [f"{x}x{y}" for x, y in zip(spots.x, spots.y, strict=True)]
    np.testing.assert_allclose(t.obsm["spatial"], spots.loc[t.obs_names, ["pixel_x", "pixel_y"]].to_numpy())
    assert t.n_vars > 10_000 and t.n_obs > 100
    sec = get_section(sdata)
    assert 0.5 < sec.microns_per_pixel < 1.2
    assert sec.spot_diameter_fullres == pytest.approx(100 / sec.microns_per_pixel)
    if (base / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv").is_file():
        assert t.obs["annotation"].notna().mean() > 0.95


def test_her2st_c2_image(data_dir):
    base = _her2st_base(data_dir)
    if not list((base / "ST-imgs" / "C" / "C2").glob("*.jpg")):
        pytest.skip("C2 image not present")
    sdata = datasets.her2st("C2", data_dir=data_dir)
    sec = get_section(sdata, require_image=True)
    assert sec.microns_per_pixel == pytest.approx(0.7, rel=0.05)  # data README
    assert sec.images[0].fullres_per_px == 1.0 and sec.images[0].shape == (9911, 9274)
    assert len(sec.images) > 3  # pyramid


def test_stutility_mob(data_dir):
    base = data_dir / "stutility_mob" / "inst" / "extdata" / "counts"
    for n, n_sel in zip(range(1, 5), (379, 407, 438, 403), strict=True):
        if not (base / f"MOB{n}.tsv").is_file():
            continue
        sdata = datasets.stutility_mob(f"MOB{n}", data_dir=data_dir)
        t = sdata.tables["table"]
        assert t.n_obs == n_sel and t.n_vars == 1000
        al = pd.read_csv(base / f"alignment_table_MOB{n}.tsv", sep="\t")
        al.index = [f"{x}x{y}" for x, y in zip(al.x, al.y, strict=True)]
        np.testing.assert_allclose(t.obsm["spatial"], al.loc[t.obs_names, ["pixel_x", "pixel_y"]].to_numpy())
        assert t.var["gene_ids"].str.startswith("ENSMUSG").all()
        ref = pd.read_csv(data_dir / "reference" / "mouse_mm10_features.tsv.gz", sep="\t", header=None)
        bare = t.var["gene_ids"].str.replace(r"\.\d+$", "", regex=True)
        assert bare.isin(ref[0]).mean() >= 0.95
        sec = get_section(sdata, require_image=True)
        assert sec.images[0].shape == (1905, 1905)
        # 2k array: 66 x-units of 100 µm span the 6.5 mm ST frame (~21.6 px/unit in x, ~24 in y here)
        assert 4.0 < sec.microns_per_pixel < 4.8


def test_stahl_mob_11(data_dir):
    splotch = data_dir / "stahl_mob_splotch" / "splotch" / "tutorials" / "olfactory_bulb_st"
    if not (splotch / "images" / "11.jpg").is_file():
        pytest.skip("replicate 11 not present")
    sdata = datasets.stahl_mob(11, data_dir=data_dir)
    t = sdata.tables["table"]
    assert t.n_obs == 262 and t.n_vars == 16218
    sec = get_section(sdata, require_image=True)
    assert sec.microns_per_pixel == pytest.approx(2.67, rel=0.05)
    counts = pd.read_csv(
        data_dir / "stahl_mob_splotch/sepal/data/real/mob.tsv.gz", sep="\t", index_col=0, usecols=[0, 1]
    )
    xy = np.array([[float(v) for v in i.lstrip("X").split("x")] for i in counts.index])
    W = sec.images[0].shape[1]
    expect = pd.DataFrame((xy - 1) * 194 * W / 6200, index=rounded_ids(xy[:, 0], xy[:, 1]))
    np.testing.assert_allclose(t.obsm["spatial"], expect.loc[t.obs_names].to_numpy())
    vc = t.obs["annotation"].value_counts()
    assert vc["Granular Cell Layer"] == 82 and vc["Glomerular layer"] == 92  # SOURCES.md


@pytest.mark.parametrize("rep", ["01", "02", "03", "04", "05", "06", "07", "08"])
def test_stahl_mob_image_only(data_dir, rep):
    splotch = data_dir / "stahl_mob_splotch" / "splotch" / "tutorials" / "olfactory_bulb_st"
    if not (splotch / "images" / f"{rep}.jpg").is_file():
        pytest.skip(f"{rep} not present")
    sdata = datasets.stahl_mob(rep, data_dir=data_dir)
    t = sdata.tables["table"]
    ann = pd.read_csv(splotch / "annotations" / f"{rep}_01.tsv", sep="\t", index_col=0)
    assert t.n_vars == 0 and t.n_obs == ann.shape[1]
    assert get_section(sdata).microns_per_pixel == pytest.approx(2.67, rel=0.05)


def test_stahl_rep12_structure(tmp_path, data_dir, monkeypatch):
    """Replicate 12 (spatialanno MOB_raw, dgCMatrix genes × spots, fractional ids) on a constructed structure."""
    from types import SimpleNamespace

    splotch = data_dir / "stahl_mob_splotch" / "splotch" / "tutorials" / "olfactory_bulb_st"
    if not (splotch / "images" / "11.jpg").is_file():
        pytest.skip("image 11 not present")
    root = tmp_path / "data"
    img_dir = root / "stahl_mob_splotch/splotch/tutorials/olfactory_bulb_st/images"
    img_dir.mkdir(parents=True)
    (img_dir / "12.jpg").symlink_to(splotch / "images" / "11.jpg")
    rd = root / "stahl_mob_splotch/spatialanno/inst/extdata/Rep12_MOB_count_matrix-1.RData"
    rd.parent.mkdir(parents=True)
    rd.write_bytes(b"placeholder")
    csc = sparse.csc_matrix(np.array([[1, 0, 2], [0, 5, 1]], dtype=float))
    mob_raw = SimpleNamespace(
        i=csc.indices,
        p=csc.indptr,
        x=csc.data,
        Dim=np.array([2, 3]),
        Dimnames=[np.array(["Mbp", "Plp1"]), np.array(["16.92x9.015", "17.5x10.2", "18x11"])],
    )
    monkeypatch.setattr("stalign.datasets._st.read_rdata", lambda p: {"MOB_raw": mob_raw})
    t = datasets.stahl_mob(12, data_dir=root).tables["table"]
    assert list(t.obs_names) == ["17x9", "18x10", "18x11"]
    np.testing.assert_array_equal(t.X.toarray(), csc.T.toarray())


def test_read_st_dataframes_and_ensembl():
    counts = pd.DataFrame([[1, 0], [2, 3], [0, 1]], index=["1x1", "2x1", "9x9"], columns=["Gene1", "Gene2"])
    spots = pd.DataFrame(
        {
            "x": [1, 2, 1, 2],
            "y": [1, 1, 2, 2],
            "pixel_x": [10.0, 30.0, 10.0, 30.0],
            "pixel_y": [10.0, 10.0, 30.0, 30.0],
            "selected": [1, 1, 1, 0],
        }
    )
    sdata = io.read_st(counts, spots, np.zeros((50, 50, 3), np.uint8), sample="toy")
    t = sdata.tables["table"]
    assert list(t.obs_names) == ["1x1", "2x1"]  # 9x9 has no position
    sec = get_section(sdata)
    assert sec.microns_per_pixel == pytest.approx(10.0)  # 200 µm over 20 px
    assert sec.spot_diameter_fullres == pytest.approx(10.0)


def test_read_st_anndata_input():
    ad = AnnData(X=sparse.csr_matrix(np.ones((2, 3), np.float32)))
    ad.obs_names, ad.var_names = ["1x1", "2x1"], ["A", "B", "C"]
    spots = pd.DataFrame({"x": [1, 2], "y": [1, 1], "pixel_x": [5.0, 25.0], "pixel_y": [5.0, 5.0]})
    t = io.read_st(ad, spots, sample="toy").tables["table"]
    assert t.shape == (2, 3)
