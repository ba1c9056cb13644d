"""Visium HD and Xenium readers on every shared folder (issue 24), their bad input, and the HD layout writer."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from stalign import io
from stalign._section import get_section
from stalign.io._visium_hd import write_visium_hd

HD_REL = ("visium_hd_visiumio", "inst", "extdata", "binned_outputs", "square_002um")
ILEUM_REL = ("xenium_insitupy_ileum", "tests", "data", "Xenium_Prime_Mouse_Ileum_tiny_outs")


@pytest.fixture(scope="module")
def hd_folder(data_dir):
    return data_dir.joinpath(*HD_REL)


@pytest.fixture(scope="module")
def ileum_folder(data_dir):
    return data_dir.joinpath(*ILEUM_REL)


# ------------------------------------------------------------------------------------------------------ Visium HD


def test_visiumio_square_folder(hd_folder):
    sdata = io.read_visium_hd(hd_folder, bin_size_um=2)
    t = sdata.tables["table"]
    assert t.shape == (10, 10)
    assert t.X.sum() == 0  # the shared folder's counts are all zero (SOURCES.md §7)
    pos = pd.read_parquet(hd_folder / "spatial" / "tissue_positions.parquet").set_index("barcode").loc[t.obs_names]
    np.testing.assert_allclose(t.obsm["spatial"], pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy())
    lib = t.obs["sample"].iloc[0]
    sf = t.uns["spatial"][lib]["scalefactors"]
    assert sf["microns_per_pixel"] == pytest.approx(0.27382, abs=1e-5)
    assert sf["bin_size_um"] == 2.0
    assert sf["spot_diameter_fullres"] * sf["microns_per_pixel"] == pytest.approx(2.0)
    assert t.uns["spatial"][lib]["metadata"]["technology"] == "visium_hd"
    sec = get_section(sdata)
    assert sec.microns_per_pixel == pytest.approx(0.27382, abs=1e-5)
    # the lowres H&E (10.9 µm/px): every bin lies on it
    assert sec.images and sec.images[0].fullres_per_px == pytest.approx(1 / 0.02505533)
    # bin_size_um=None reads the folder's own size
    assert io.read_visium_hd(hd_folder, bin_size_um=None).tables["table"].shape == (10, 10)


def test_visiumio_bin_size_it_lacks(hd_folder):
    with pytest.raises(ValueError, match=r"holds 2 µm bins, not bin_size_um=8"):
        io.read_visium_hd(hd_folder, bin_size_um=8)
    with pytest.raises(ValueError, match=r"bin_size_um=16 is not in .*holds 2 µm"):
        io.read_visium_hd(hd_folder.parent.parent, bin_size_um=16)


def test_hd_missing_spatial(hd_folder, tmp_path):
    dst = tmp_path / "binned_outputs" / "square_002um"
    shutil.copytree(hd_folder, dst)
    shutil.rmtree(dst / "spatial")
    before = sorted(p.name for p in dst.rglob("*"))
    with pytest.raises(FileNotFoundError, match=r"no spatial/ folder"):
        io.read_visium_hd(dst, bin_size_um=2)
    assert sorted(p.name for p in dst.rglob("*")) == before  # nothing written


def test_hd_bins_outside_image(hd_folder, tmp_path):
    dst = tmp_path / "square_002um"
    shutil.copytree(hd_folder, dst)
    pos = pd.read_parquet(dst / "spatial" / "tissue_positions.parquet")
    pos.loc[0, "pxl_col_in_fullres"] = 1e6  # far right of the 18,880 px wide full-resolution frame
    pos.to_parquet(dst / "spatial" / "tissue_positions.parquet", index=False)
    with pytest.raises(ValueError, match=r"1 of 10 spot centres lie outside the 473x600 image"):
        io.read_visium_hd(dst, bin_size_um=2)


def test_not_an_hd_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"neither a Space Ranger HD `outs` folder"):
        io.read_visium_hd(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        io.read_visium_hd(tmp_path / "nope")


def _toy_hd(outs, *, feature_slice, size=2, n=12):
    rng = np.random.default_rng(0)
    rows, cols = np.divmod(np.arange(n * n), n)
    mpp = 0.25
    xy = np.column_stack([(cols + 0.5) * size, (rows + 0.5) * size]) / mpp + 40
    counts = sparse.csr_matrix(rng.poisson(0.3, (n * n, 5)))
    image = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    write_visium_hd(outs, counts=counts, array_row=rows, array_col=cols, xy_fullres=xy, gene_ids=list("abcde"),
                    gene_names=list("ABCDE"), bin_size_um=size, microns_per_pixel=mpp, hires_image=image,
                    hires_scalef=0.5, feature_slice=feature_slice)  # fmt: skip
    return counts, xy


def test_spatialdata_io_and_lone_folder_agree(tmp_path):
    """A complete outs (feature_slice.h5: spatialdata-io's reader) and the same bins without it read the same."""
    counts, xy = _toy_hd(tmp_path / "a" / "outs", feature_slice=True)
    _toy_hd(tmp_path / "b" / "outs", feature_slice=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray warning from either path
        a = io.read_visium_hd(tmp_path / "a" / "outs", bin_size_um=2, dataset_id="s")
        b = io.read_visium_hd(tmp_path / "b" / "outs", bin_size_um=2, dataset_id="s")
    ta, tb = a.tables["table"], b.tables["table"]
    tb = tb[ta.obs_names]
    assert sorted(ta.var_names) == sorted(tb.var_names) == list("ABCDE")
    np.testing.assert_array_equal(ta[:, list("ABCDE")].X.toarray(), tb[:, list("ABCDE")].X.toarray())
    np.testing.assert_allclose(ta.obsm["spatial"], tb.obsm["spatial"])
    np.testing.assert_allclose(np.sort(tb.obsm["spatial"], axis=0), np.sort(xy, axis=0))
    assert ta.X.sum() == counts.sum()
    for s in (a, b):
        sec = get_section(s)
        assert sec.microns_per_pixel == 0.25
        assert [lv.fullres_per_px for lv in sec.images][0] == pytest.approx(2.0)
    assert "global" in a.coordinate_systems


# ---------------------------------------------------------------------------------------------------------- Xenium


def test_xenium_ileum_genes_only(ileum_folder):
    sdata = io.read_xenium(ileum_folder, dataset_id="ileum")
    t = sdata.tables["table"]
    assert t.shape == (23, 5006)  # the gene-expression features of the 5K panel
    assert t.X.sum() == 433  # SOURCES.md §8: 433 gene counts (+1 unassigned codeword, not a gene)
    cells = pd.read_parquet(ileum_folder / "cells.parquet").set_index("cell_id").loc[t.obs_names]
    np.testing.assert_allclose(t.obsm["spatial"], cells[["x_centroid", "y_centroid"]].to_numpy() / 0.2125, rtol=1e-6)
    assert t.uns["spatial"]["ileum"]["scalefactors"]["microns_per_pixel"] == 0.2125
    assert set(t.obs["sample"]) == {"ileum"}
    sec = get_section(sdata)
    assert sec.images == [] and sec.has_expression  # the DAPI image is never an H&E
    assert sec.other_images == ["morphology_focus"]
    with pytest.raises(ValueError, match=r"not an RGB H&E"):
        get_section(sdata, image_key="morphology_focus")
    import stalign as sta

    with pytest.warns(UserWarning, match=r"'morphology_focus' .* not RGB H&E .* genes alone") as rec:
        sta.tl.embed(sdata, show_progress_bar=False)
    assert sum("genes alone" in str(w.message) for w in rec) == 1  # one warning
    assert "X_stalign_image" not in t.obsm and t.obsm["X_stalign_gene"].shape == (23, 128)


def test_xenium_with_registered_he(ileum_folder):
    """An H&E at 4x the morphology pixel, mapped by a similarity: cells land in the H&E frame at 0.85 µm/px."""
    rng = np.random.default_rng(0)
    he = rng.integers(0, 255, (3522 // 4, 5789 // 4, 3), dtype=np.uint8)
    A = np.diag([4.0, 4.0, 1.0])  # H&E pixel → morphology pixel
    sdata = io.read_xenium(ileum_folder, he_image=he, he_affine=A, dataset_id="ileum")
    t = sdata.tables["table"]
    cells = pd.read_parquet(ileum_folder / "cells.parquet").set_index("cell_id").loc[t.obs_names]
    np.testing.assert_allclose(t.obsm["spatial"], cells[["x_centroid", "y_centroid"]].to_numpy() / 0.85, rtol=1e-6)
    sec = get_section(sdata)
    assert sec.microns_per_pixel == pytest.approx(0.85)
    assert [lv.name for lv in sec.images][0].startswith("ileum_he_image")
    with pytest.raises(ValueError, match=r"similarity"):
        io.read_xenium(ileum_folder, he_image=he, he_affine=np.diag([4.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"outside the .* H&E"):
        io.read_xenium(ileum_folder, he_image=he[:50, :50])
    with pytest.raises(ValueError, match=r"he_affine is given without he_image"):
        io.read_xenium(ileum_folder, he_affine=A)


def test_xenium_missing_experiment(ileum_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"experiment.xenium"):
        io.read_xenium(tmp_path)


def ncbi858_adata(data_dir):
    """NCBI858's 200 cells as a user builds them: scanpy's convention, the JPG at 2.125 µm/px (SOURCES.md §9)."""
    import anndata as ad
    from PIL import Image

    root = data_dir / "xenium_deepspot_ncbi858" / "example_data" / "data"
    adata = ad.read_h5ad(root / "h5ad" / "NCBI858.h5ad")
    adata.X = sparse.csr_matrix(adata.X.astype(np.float32))
    adata.obsm["spatial"] = adata.obs[["y_pixel", "x_pixel"]].to_numpy()  # x_pixel is the ROW
    img = np.asarray(Image.open(root / "image" / "NCBI858.jpg").convert("RGB"))
    adata.uns["spatial"] = {
        "NCBI858": {
            "images": {"hires": img},
            "scalefactors": {"tissue_hires_scalef": 1.0, "microns_per_pixel": 2.125, "spot_diameter_fullres": 20.0},
        }
    }
    return adata


def test_ncbi858_anndata_section(data_dir):
    adata = ncbi858_adata(data_dir)
    sec = get_section(adata)
    assert sec.microns_per_pixel == 2.125 and sec.has_image and sec.has_expression
    h, w = sec.images[0].shape
    assert (h, w) == (1249, 1431)
    assert (sec.coords[:, 0] < w).all() and (sec.coords[:, 1] < h).all()


def test_spaniel_visium(data_dir):
    """The other Visium layout (Space Ranger test run): v1 positions without a header, lowres only."""
    outs = data_dir / "visium_spaniel_mouse_brain" / "inst" / "extdata" / "outs"
    sdata = io.read_visium(outs)
    t = sdata.tables["table"]
    assert t.shape == (3352, 815) and t.X.sum() == 34895
    sf = t.uns["spatial"][t.obs["sample"].iloc[0]]["scalefactors"]
    assert sf["microns_per_pixel"] == pytest.approx(0.7246, rel=0.01)  # the 100 µm pitch; 55 µm / 89.5 px gives 0.61


def test_hd_fullres_image_read_lazily(tmp_path):
    """A full-resolution TIFF joins the PNGs through io.read_image (lazy); bins off that image are refused."""
    import tifffile

    _toy_hd(tmp_path / "outs", feature_slice=False)
    rng = np.random.default_rng(1)
    big = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "full.tif", big, photometric="rgb", tile=(64, 64))
    sdata = io.read_visium_hd(tmp_path / "outs", bin_size_um=2, dataset_id="s", fullres_image=tmp_path / "full.tif")
    assert "s_fullres_image" in sdata.images
    sec = get_section(sdata)
    assert sorted(lv.fullres_per_px for lv in sec.images)[0] == 1.0  # the finest level is the full resolution
    tifffile.imwrite(tmp_path / "small.tif", big[:60, :60], photometric="rgb")
    with pytest.raises(ValueError, match=r"bin centres lie outside the 60x60 full-resolution image"):
        io.read_visium_hd(tmp_path / "outs", bin_size_um=2, fullres_image=tmp_path / "small.tif")
