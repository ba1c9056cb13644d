from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from stalign import datasets
from stalign._section import get_section
from stalign.datasets._dlpfc import counts_from_r_object

SAMPLES = ["151507", "151508", "151669", "151670", "151673", "151674"]


def _present(data_dir, s):
    return (data_dir / "dlpfc_humanpilot" / "10X" / s).is_dir()


@pytest.fixture(scope="module")
def s151673(data_dir):
    if not _present(data_dir, "151673"):
        pytest.skip("151673 not in data_dir")
    return datasets.dlpfc("151673", data_dir=data_dir)


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_sample_loads(data_dir, sample):
    if not _present(data_dir, sample):
        pytest.skip(f"{sample} not present")
    sdata = datasets.dlpfc(sample, data_dir=data_dir)
    t = sdata.tables["table"]
    folder = data_dir / "dlpfc_humanpilot" / "10X" / sample
    pos = pd.read_csv(folder / "tissue_positions_list.txt", header=None, index_col=0)
    sf = json.loads((folder / "scalefactors_json.json").read_text())
    # spot centres = the source pixel positions (x = col, y = row)
    np.testing.assert_allclose(t.obsm["spatial"][:, 0], pos.loc[t.obs_names, 5].to_numpy())
    np.testing.assert_allclose(t.obsm["spatial"][:, 1], pos.loc[t.obs_names, 4].to_numpy())
    assert (pos.loc[t.obs_names, 1] == 1).all()
    sec = get_section(sdata)
    # calibrated on the 100 µm array pitch: a least-squares fit of the pixel positions on the array grid gives the
    # pixels per 50 µm column step and per 86.6 µm row step; the calibration lies between the two directions' values
    pos = pos.loc[t.obs_names]
    A = np.column_stack([pos[3], pos[2], np.ones(len(pos))]).astype(float)  # array_col, array_row, 1
    coef = np.linalg.lstsq(A, pos[[5, 4]].to_numpy(float), rcond=None)[0]
    per_dir = [50 / np.linalg.norm(coef[0]), 50 * np.sqrt(3) / np.linalg.norm(coef[1])]
    assert min(per_dir) * 0.998 <= sec.microns_per_pixel <= max(per_dir) * 1.002
    assert sec.microns_per_pixel == pytest.approx(0.724, rel=0.01)
    # the nominal 55 µm spot_diameter_fullres would be 22 % off: that diameter spans ~70 µm
    assert sf["spot_diameter_fullres"] * sec.microns_per_pixel == pytest.approx(70, rel=0.03)
    # the lowres PNG is ~16 µm/px
    assert sec.images[0].fullres_per_px * sec.microns_per_pixel == pytest.approx(16.1, rel=0.03)
    assert t.obs["sample"].unique().tolist() == [sample]
    assert t.obs["annotation"].notna().sum() > 0.9 * t.n_obs
    assert set(t.obs["annotation"].dropna().unique()) <= {"L1", "L2", "L3", "L4", "L5", "L6", "WM"}
    has_counts = (data_dir / "dlpfc_banksy_counts" / "data" / f"dlpfc{sample}.rda").is_file()
    if has_counts:
        assert t.n_vars == 5000 and sparse.issparse(t.X)
    else:  # image + positions, 0 genes, every in-tissue spot
        assert t.n_vars == 0 and t.n_obs == int(pos[1].sum())


def test_151673_counts_labels_genes(s151673, data_dir):
    t = s151673.tables["table"]
    assert t.n_obs == 3639
    assert int(t.obs["annotation"].notna().sum()) == 3611  # SOURCES.md
    assert t.var["gene_ids"].str.startswith("ENSG").all()
    ref = pd.read_csv(data_dir / "reference" / "human_grch38_features.tsv.gz", sep="\t", header=None)
    assert t.var["gene_ids"].isin(ref[0]).mean() >= 0.95  # Ensembl ids found in the reference
    # names in the reference that are real symbols (GRCh38-2024 names some novel genes by their id)
    assert (t.var_names != t.var["gene_ids"]).mean() >= 0.93
    assert "MBP" in t.var_names
    assert float(t.X.sum()) > 0 and np.allclose(t.X.data, np.round(t.X.data))


def test_counts_from_seurat_structure():
    """The DR-SC 151510 Seurat object (assays$RNA@counts dgCMatrix genes × spots), as rdata converts it."""
    dense = np.array([[0, 3, 0], [1, 0, 2]], dtype=float)  # 2 genes × 3 spots
    csc = sparse.csc_matrix(dense)
    dgc = SimpleNamespace(
        i=csc.indices.astype(np.int32),
        p=csc.indptr.astype(np.int32),
        x=csc.data,
        Dim=np.array([2, 3]),
        Dimnames=[np.array(["ENSG00000123560", "ENSG00000122585"]), np.array(["AAA-1", "CCC-1", "GGG-1"])],
        factors=[],
    )
    seurat = SimpleNamespace(assays={"RNA": SimpleNamespace(counts=dgc, data=dgc)}, meta_data=None)
    X, barcodes, genes = counts_from_r_object(seurat, what="test")
    assert barcodes == ["AAA-1", "CCC-1", "GGG-1"] and genes == ["ENSG00000123560", "ENSG00000122585"]
    np.testing.assert_array_equal(X.toarray(), dense.T)
    # Seurat v5 Assay5: layers$counts without dimnames, names in LogMaps
    assay5 = SimpleNamespace(
        layers={"counts": SimpleNamespace(i=dgc.i, p=dgc.p, x=dgc.x, Dim=dgc.Dim, Dimnames=[None, None])},
        features=pd.DataFrame(index=["G1", "G2"]),
        cells=pd.DataFrame(index=["a", "b", "c"]),
    )
    X5, b5, g5 = counts_from_r_object(SimpleNamespace(assays={"RNA": assay5}), what="test")
    assert b5 == ["a", "b", "c"] and g5 == ["G1", "G2"]
    np.testing.assert_array_equal(X5.toarray(), dense.T)


def test_151510_layout(tmp_path, data_dir, monkeypatch):
    """A DR-SC-layout Seurat file is found and joined; the R parse is replaced by its converted structure."""
    src = data_dir / "dlpfc_humanpilot" / "10X" / "151673"
    if not src.is_dir():
        pytest.skip("151673 not present")
    root = tmp_path / "data"
    folder = root / "dlpfc_humanpilot" / "10X" / "151510"
    folder.mkdir(parents=True)
    for f in ("tissue_positions_list.txt", "scalefactors_json.json", "tissue_lowres_image.png"):
        (folder / f).symlink_to(src / f)
    (root / "reference").mkdir()
    (root / "reference" / "human_grch38_features.tsv.gz").symlink_to(
        data_dir / "reference" / "human_grch38_features.tsv.gz"
    )
    rda = root / "dlpfc_drsc_151510" / "data" / "dlpfc151510.rda"
    rda.parent.mkdir(parents=True)
    rda.write_bytes(b"placeholder")
    pos = pd.read_csv(src / "tissue_positions_list.txt", header=None, index_col=0)
    bcs = pos.index[pos[1] == 1][:50].to_numpy()
    rng = np.random.default_rng(0)
    csc = sparse.csc_matrix(rng.poisson(1.0, size=(3, 50)).astype(float))
    dgc = SimpleNamespace(
        i=csc.indices,
        p=csc.indptr,
        x=csc.data,
        Dim=np.array([3, 50]),
        Dimnames=[np.array(["ENSG00000123560", "ENSG00000122585", "ENSG00000211592"]), bcs],
    )
    seurat = SimpleNamespace(assays={"RNA": SimpleNamespace(counts=dgc)})
    monkeypatch.setattr("stalign.datasets._dlpfc.read_rdata", lambda p: {"dlpfc151510": seurat})
    sdata = datasets.dlpfc("151510", data_dir=root)
    t = sdata.tables["table"]
    assert t.n_obs == 50 and list(t.var_names) == ["PLP1", "NPY", "IGKC"]
    np.testing.assert_array_equal(t.X.toarray(), csc.T.toarray())


def test_unknown_sample_lists_available(data_dir):
    with pytest.raises(ValueError, match="available: .*151673"):
        datasets.dlpfc("999999", data_dir=data_dir)


def test_no_data_dir(monkeypatch, tmp_path):
    import stalign._utils as u

    monkeypatch.delenv("STALIGN_DATA_DIR", raising=False)
    if hasattr(u, "DEFAULT_DATA_DIR"):  # a ../shared/data fallback may exist; point it nowhere
        monkeypatch.setattr(u, "DEFAULT_DATA_DIR", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="STALIGN_DATA_DIR"):
        datasets.dlpfc("151673")
