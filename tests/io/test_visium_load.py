from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import io as sio
from scipy import sparse

from stalign import datasets, io
from stalign._section import get_section, visium_microns_per_pixel

SAMPLE = "151673"


@pytest.fixture(scope="module")
def dlpfc_sdata(data_dir):
    if not (data_dir / "dlpfc_humanpilot" / "10X" / SAMPLE).is_dir():
        pytest.skip("151673 not present")
    return datasets.dlpfc(SAMPLE, data_dir=data_dir)


def _write_h5(path, X_spots_genes, barcodes, gene_ids, symbols):
    from stalign.io._visium_hd import write_10x_h5

    write_10x_h5(path, X_spots_genes, barcodes=barcodes, gene_ids=gene_ids, gene_names=symbols)


def _spaceranger(tmp_path, data_dir, t, *, images=("lowres",), positions="v1", counts="h5"):
    src = data_dir / "dlpfc_humanpilot" / "10X" / SAMPLE
    outs = tmp_path / "run" / "outs"
    spatial = outs / "spatial"
    spatial.mkdir(parents=True)
    (spatial / "scalefactors_json.json").symlink_to(src / "scalefactors_json.json")
    if positions == "v1":
        (spatial / "tissue_positions_list.csv").symlink_to(src / "tissue_positions_list.txt")
    else:  # v2: with a header
        pos = pd.read_csv(src / "tissue_positions_list.txt", header=None)
        pos.columns = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
        pos.to_csv(spatial / "tissue_positions.csv", index=False)
    for res in images:
        if res == "lowres":
            (spatial / "tissue_lowres_image.png").symlink_to(src / "tissue_lowres_image.png")
        else:  # a stand-in hires PNG: the lowres upsampled to the hires scale factor
            from PIL import Image

            sf = json.loads((src / "scalefactors_json.json").read_text())
            im = Image.open(src / "tissue_lowres_image.png")
            side = round(im.size[0] * sf["tissue_hires_scalef"] / sf["tissue_lowres_scalef"])
            im.resize((side, side)).save(spatial / "tissue_hires_image.png")
    X = t.X[:200]
    ids, syms = list(t.var["gene_ids"]), list(t.var_names)
    if counts == "h5":
        _write_h5(outs / "filtered_feature_bc_matrix.h5", X, list(t.obs_names[:200]), ids, syms)
    elif counts == "mtx":
        d = outs / "filtered_feature_bc_matrix"
        d.mkdir()
        sio.mmwrite(d / "matrix.mtx", sparse.csr_matrix(X).T.astype(np.int32))
        for name, lines in (
            ("barcodes.tsv", list(t.obs_names[:200])),
            ("features.tsv", [f"{i}\t{s}\tGene Expression" for i, s in zip(ids, syms, strict=True)]),
        ):
            with gzip.open(d / f"{name}.gz", "wt") as fh:
                fh.write("\n".join(lines) + "\n")
        with open(d / "matrix.mtx", "rb") as fi, gzip.open(d / "matrix.mtx.gz", "wb") as fo:
            shutil.copyfileobj(fi, fo)
        (d / "matrix.mtx").unlink()
    return outs


@pytest.mark.parametrize(
    ("images", "positions", "counts"),
    [(("lowres",), "v1", "h5"), (("hires",), "v2", "mtx"), (("hires", "lowres"), "v1", None)],
)
def test_read_visium_layouts(tmp_path, data_dir, dlpfc_sdata, images, positions, counts):
    t = dlpfc_sdata.tables["table"]
    outs = _spaceranger(tmp_path, data_dir, t, images=images, positions=positions, counts=counts)
    if counts is None:
        with pytest.warns(UserWarning, match="0 genes"):
            sdata = io.read_visium(outs)
    else:
        sdata = io.read_visium(outs)
    r = sdata.tables["table"]
    assert r.obs["sample"].unique().tolist() == ["run"]  # the parent of outs
    sec = get_section(sdata, require_image=True)
    ref = get_section(dlpfc_sdata)
    # calibrated on the grid of the table's spots: 200 spots give the full section's value within 0.1 %
    assert sec.microns_per_pixel == pytest.approx(ref.microns_per_pixel, rel=1e-3)
    res = "hires" if "hires" in images else "lowres"
    assert r.uns["spatial"]["run"]["metadata"]["image_resolution"] == res
    if counts is None:
        assert r.n_vars == 0 and r.n_obs > 3000
    else:
        assert r.n_obs == 200 and list(r.obs_names) == list(t.obs_names[:200])
        np.testing.assert_array_equal(r.X.toarray(), t.X[:200].toarray())
        assert list(r.var["gene_ids"]) == list(t.var["gene_ids"])
        np.testing.assert_allclose(r.obsm["spatial"], t.obsm["spatial"][:200])


def test_load_specs_and_paths(tmp_path, data_dir, dlpfc_sdata):
    sdata = datasets.load(f"dlpfc:{SAMPLE}", data_dir=data_dir)
    assert sdata.tables["table"].n_obs == dlpfc_sdata.tables["table"].n_obs
    sdata.write(tmp_path / "s.zarr")
    z = io.load(tmp_path / "s.zarr")
    assert z.tables["table"].n_obs == dlpfc_sdata.tables["table"].n_obs
    ad = io.to_anndata(dlpfc_sdata)
    ad.write_h5ad(tmp_path / "s.h5ad")
    assert io.load(str(tmp_path / "s.h5ad")).n_obs == ad.n_obs
    with pytest.raises(ValueError, match="Unknown DLPFC sample"):
        datasets.load("dlpfc:1", data_dir=data_dir)
    with pytest.raises(FileNotFoundError, match="dataset spec"):
        io.load(tmp_path / "nothing_here")


def test_to_anndata_squidpy_convention(dlpfc_sdata):
    own = dlpfc_sdata.tables["table"].uns["spatial"][SAMPLE]
    before = {k: dict(v) for k, v in own.items()}
    ad = io.to_anndata(dlpfc_sdata)
    lib = ad.uns["spatial"][SAMPLE]
    # the section is a 600 px lowres PNG: it is both images (squidpy looks for "hires" first)
    for res in ("hires", "lowres"):
        img = lib["images"][res]
        assert img.shape == (600, 600, 3) and img.dtype == np.uint8
        assert lib["scalefactors"][f"tissue_{res}_scalef"] == pytest.approx(0.045004502)
    sec = get_section(ad)
    assert sec.microns_per_pixel == pytest.approx(get_section(dlpfc_sdata).microns_per_pixel)
    assert {k: dict(v) for k, v in own.items()}.keys() == before.keys()  # the input is untouched
    assert own["images"]["hires"] is before["images"]["hires"] and lib is not own


def test_to_anndata_downsamples_large_images():
    counts = pd.DataFrame([[1, 2]], index=["1x1"], columns=["A", "B"])
    spots = pd.DataFrame({"x": [1, 2], "y": [1, 1], "pixel_x": [100.0, 400.0], "pixel_y": [100.0, 100.0]})
    img = np.random.default_rng(0).integers(0, 255, size=(4500, 700, 3), dtype=np.uint8)
    ad = io.to_anndata(io.read_st(counts, spots, img, sample="big"))
    lib = ad.uns["spatial"]["big"]
    for res, side in (("hires", 2000), ("lowres", 600)):
        assert max(lib["images"][res].shape[:2]) <= side
        h = lib["images"][res].shape[0]
        assert lib["scalefactors"][f"tissue_{res}_scalef"] == pytest.approx(h / 4500, rel=0.01)


# ---------------------------------------------------------------- calibration: µm per pixel from the array grid


def _hex_grid(n_rows=6, n_cols=12, px_per_um=1.37, angle=0.2):
    """A Visium-like array: odd rows shifted by one column, 100 µm between neighbours, rotated and scaled."""
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    cols = 2 * cols + rows % 2
    um = np.stack([cols.ravel() * 50.0, rows.ravel() * 50.0 * np.sqrt(3)], 1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return rows.ravel(), cols.ravel(), um @ rot.T * px_per_um + 500.0


def test_grid_calibration_recovers_the_scale_of_a_rotated_hex_array():
    rows, cols, xy = _hex_grid()
    rng = np.random.default_rng(0)
    jittered = xy + rng.normal(0, 0.5, xy.shape)  # detection noise of ~0.5 px
    assert visium_microns_per_pixel(jittered, rows, cols) == pytest.approx(1 / 1.37, rel=0.01)
    assert visium_microns_per_pixel(xy[:1], rows[:1], cols[:1]) is None  # one spot: no pitch
    assert visium_microns_per_pixel(xy, ["a"] * len(rows), cols) is None  # not numeric


def test_anndata_without_microns_per_pixel_is_calibrated_on_its_array_grid():
    import anndata as ad

    rows, cols, xy = _hex_grid(px_per_um=2.0)
    a = ad.AnnData(np.ones((len(rows), 3), dtype=np.float32))
    a.obsm["spatial"] = xy
    a.obs["array_row"], a.obs["array_col"] = rows, cols
    a.uns["spatial"] = {"s": {"scalefactors": {"spot_diameter_fullres": 140.0}}}  # a ~70 µm diameter, as DLPFC's
    assert get_section(a, require_image=False).microns_per_pixel == pytest.approx(0.5, rel=1e-6)
    b = a.copy()
    del b.obs["array_row"]  # no grid: 55 µm / spot_diameter_fullres, the documented fallback
    assert get_section(b, require_image=False).microns_per_pixel == pytest.approx(55 / 140)
    assert "microns_per_pixel" not in a.uns["spatial"]["s"]["scalefactors"]  # the user's object is unchanged


def test_read_visium_microns_per_pixel_override_and_grid_default(tmp_path, data_dir, dlpfc_sdata):
    outs = _spaceranger(tmp_path, data_dir, dlpfc_sdata.tables["table"], counts=None)
    with pytest.warns(UserWarning, match="0 genes"):
        default = io.read_visium(outs)
    assert get_section(default).microns_per_pixel == pytest.approx(get_section(dlpfc_sdata).microns_per_pixel)
    with pytest.warns(UserWarning, match="0 genes"):
        given = io.read_visium(outs, microns_per_pixel=0.5)
    assert get_section(given).microns_per_pixel == 0.5
    for bad, err in ((0, ValueError), (float("nan"), ValueError), ("0.5", TypeError), (True, TypeError)):
        with pytest.raises(err, match="microns_per_pixel"):
            io.read_visium(outs, microns_per_pixel=bad)


def _spatialdata_io_like(sdata, data_dir):
    """The same section shaped as spatialdata-io's Visium reader builds it: no ``uns["spatial"]``, the lowres PNG
    only in a ``"downscaled_lowres"`` coordinate system, the spots in ``"global"`` and scaled into that system."""
    from PIL import Image
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    src = data_dir / "dlpfc_humanpilot" / "10X" / SAMPLE
    sf = json.loads((src / "scalefactors_json.json").read_text())
    t = sdata.tables["table"].copy()
    del t.uns["spatial"]
    t.uns.pop("spatialdata_attrs", None)
    t.obs = t.obs[["in_tissue", "array_row", "array_col"]].copy()
    t.obs["spot_id"] = np.arange(t.n_obs)
    t.obs["region"] = pd.Categorical([SAMPLE] * t.n_obs)
    lowres = Scale([sf["tissue_lowres_scalef"]] * 2, axes=("y", "x"))
    circles = ShapesModel.parse(
        t.obsm["spatial"],
        geometry=0,
        radius=sf["spot_diameter_fullres"] / 2,
        index=t.obs["spot_id"].copy(),
        transformations={"global": Identity(), "downscaled_lowres": lowres},
    )
    img = np.asarray(Image.open(src / "tissue_lowres_image.png").convert("RGB")).transpose(2, 0, 1)
    image = Image2DModel.parse(img, dims=("c", "y", "x"), transformations={"downscaled_lowres": Identity()})
    table = TableModel.parse(t, region=SAMPLE, region_key="region", instance_key="spot_id")
    return SpatialData(images={f"{SAMPLE}_lowres_image": image}, shapes={SAMPLE: circles}, tables={"table": table})


def test_spatialdata_io_layout_reads_like_ours(data_dir, dlpfc_sdata):
    """A Visium SpatialData from spatialdata-io (no uns['spatial'], images outside 'global') is read like ours."""
    from stalign.pp import read_crops

    other = _spatialdata_io_like(dlpfc_sdata, data_dir)
    ours, theirs = get_section(dlpfc_sdata), get_section(other, require_image=True)
    assert theirs.microns_per_pixel == ours.microns_per_pixel  # the same array grid
    assert theirs.images[0].fullres_per_px == pytest.approx(ours.images[0].fullres_per_px, rel=1e-6)
    xy = ours.coords[:32]
    np.testing.assert_array_equal(
        read_crops(theirs, xy, size_um=100, out_px=16), read_crops(ours, xy, size_um=100, out_px=16)
    )
    # the whole tl.embed: the same embeddings from either layout
    import stalign as sta

    a = sta.tl.embed(dlpfc_sdata, show_progress_bar=False, copy=True).tables["table"].obsm["X_stalign"]
    b = sta.tl.embed(other, show_progress_bar=False, copy=True).tables["table"].obsm["X_stalign"]
    np.testing.assert_allclose(a, b, atol=1e-5)
    # an image in no coordinate system of the spots is refused with the fix named
    from spatialdata.transformations import Identity, set_transformation

    img = other.images[f"{SAMPLE}_lowres_image"]
    set_transformation(img, {"elsewhere": Identity()}, set_all=True)
    with pytest.raises(ValueError, match="none of which holds the table's spots"):
        get_section(other)


def test_deprecated_io_dataset_names(data_dir):
    """``io.dlpfc``-style names and dataset specs in ``io.load``/``io.sample_name`` still work for one release."""
    with pytest.warns(FutureWarning, match="stalign.datasets.dlpfc"):
        loader = io.dlpfc
    assert loader is datasets.dlpfc
    with pytest.warns(FutureWarning, match="stalign.datasets.load"):
        sdata = io.load("stutility_mob:MOB1", data_dir=data_dir)
    assert sdata.tables["table"].n_obs == 379
    with pytest.warns(FutureWarning, match="stalign.datasets.sample_name"):
        assert io.sample_name("stahl_mob:1") == "01"
    assert "dlpfc" not in dir(io)
