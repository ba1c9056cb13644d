"""`io.read_image`: whole-slide and flat H&E images, µm/px from their own metadata, lazy pyramids, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

import stalign as sta

MOB_IMAGES = ("stahl_mob_splotch", "splotch", "tutorials", "olfactory_bulb_st", "images")


@pytest.fixture(scope="module")
def c3(data_dir):
    """her2st C3's full-resolution H&E and its µm/px (from the ST spot grid)."""
    from stalign._files import read_image_array

    jpg = next((data_dir / "her2st" / "data" / "ST-imgs" / "C" / "C3").glob("*.jpg"))
    sec = sta.datasets.her2st("C3", data_dir=data_dir, load_image=False)
    mpp = float(sec.tables["table"].uns["spatial"]["C3"]["scalefactors"]["microns_per_pixel"])
    return read_image_array(jpg), mpp


def write_pyramid(path, img, *, mpp=None, levels=3, resolution=None, unit=None, compression="jpeg"):
    """A tiled pyramidal (OME-)TIFF of ``img`` with tifffile (sub-resolutions in SubIFDs)."""
    import tifffile

    opts = {"photometric": "rgb", "tile": (256, 256), "compression": compression}
    meta = None if mpp is None else {"PhysicalSizeX": mpp, "PhysicalSizeY": mpp, "PhysicalSizeXUnit": "µm"}
    with tifffile.TiffWriter(path, bigtiff=True, ome=mpp is not None) as tw:
        tw.write(img, subifds=levels, metadata=meta, resolution=resolution, resolutionunit=unit, **opts)
        for _ in range(levels):
            img = img[::2, ::2]
            tw.write(img, subfiletype=1, **opts)
    return path


@pytest.fixture(scope="module")
def c3_ome(c3, tmp_path_factory):
    img, mpp = c3
    return write_pyramid(tmp_path_factory.mktemp("ome") / "C3.ome.tif", img, mpp=mpp), mpp


def test_ome_tiff_recovers_microns_per_pixel(c3, c3_ome):
    """Done-when: read_image recovers the µm/px of a tifffile-written OME-TIFF of her2st C3 within 1 %."""
    path, mpp = c3_ome
    sdata = sta.io.read_image(path)
    rec = sdata.attrs["stalign"]
    assert rec["microns_per_pixel"] == pytest.approx(mpp, rel=0.01)
    assert rec["microns_per_pixel_source"] == "OME PhysicalSizeX"
    assert rec["format"] == "ome-tiff" and rec["name"] == "C3" and list(sdata.images) == ["C3_image"]
    tree = sdata.images["C3_image"]
    # the file's 4 levels, then lazy factor-2 levels down to <= 512 px
    shapes = [tuple(tree[k]["image"].shape) for k in tree.children]
    assert shapes[0] == (3, *c3[0].shape[:2]) and max(shapes[-1][1:]) <= 512 and len(shapes) >= 5
    # lazy: a window of the full-resolution level reads the file's pixels (JPEG-compressed: close, not equal)
    lvl0 = tree["scale0"]["image"].data
    assert hasattr(lvl0, "dask")
    win = np.asarray(lvl0[:, 4000:4100, 3000:3100]).transpose(1, 2, 0).astype(float)
    assert np.abs(win - c3[0][4000:4100, 3000:3100]).mean() < 4
    # the section view sees every level with its true scale
    from anndata import AnnData

    from stalign._section import _levels_from_sdata

    levels = _levels_from_sdata(sdata, "C3_image", AnnData())
    assert [round(lv.fullres_per_px) for lv in levels[:4]] == [1, 2, 4, 8]


def test_tile_tissue_never_reads_full_resolution(c3_ome):
    """Tissue detection and tiling use a coarse level only: no task of the full-resolution level runs."""
    from dask.callbacks import Callback

    sdata = sta.io.read_image(c3_ome[0])
    lvl0 = sdata.images["C3_image"]["scale0"]["image"].data
    level0_layers = set(lvl0.dask.layers)
    seen = set()

    class Record(Callback):
        def _pretask(self, key, dsk, state):
            seen.add(key[0] if isinstance(key, tuple) else key)

    with Record():
        sta.pp.tile_tissue(sdata, spacing_um=100)
    assert seen, "no dask task ran"
    assert not seen & level0_layers
    assert sdata.tables["table"].n_obs > 300


def test_resolution_tags_and_override(c3, tmp_path):
    img = c3[0][:1024, :1536]
    # TIFF XResolution in pixels per cm, no OME: 0.5 µm/px
    path = write_pyramid(tmp_path / "cm.tif", img, resolution=(2e4, 2e4), unit="CENTIMETER", levels=1)
    rec = sta.io.read_image(path).attrs["stalign"]
    assert rec["microns_per_pixel"] == pytest.approx(0.5) and rec["microns_per_pixel_source"].startswith("TIFF")
    assert sta.io.read_image(path, microns_per_pixel=0.25).attrs["stalign"]["microns_per_pixel"] == 0.25
    # 72 dpi is what image libraries write by default: a placeholder, not a calibration
    path = write_pyramid(tmp_path / "dpi72.tif", img, resolution=(72, 72), unit="INCH", levels=1)
    with pytest.raises(ValueError, match="does not record its scale.*microns_per_pixel="):
        sta.io.read_image(path)
    # a flat (non-pyramidal) tiled TIFF gets a lazy pyramid
    import tifffile

    flat = tmp_path / "flat.tiff"
    tifffile.imwrite(flat, img, photometric="rgb", tile=(256, 256), compression="zlib")
    tree = sta.io.read_image(flat, microns_per_pixel=0.7, name="flat").images["flat_image"]
    assert [tuple(tree[k]["image"].shape[1:]) for k in tree.children] == [(1024, 1536), (512, 768), (256, 384)]
    np.testing.assert_array_equal(np.asarray(tree["scale0"]["image"].data).transpose(1, 2, 0), img)
    from stalign._build import _block_mean

    np.testing.assert_array_equal(
        np.asarray(tree["scale1"]["image"].data).transpose(1, 2, 0), _block_mean(img, 512, 768)
    )


def test_jpeg_and_png(data_dir, tmp_path):
    from PIL import Image

    jpg = data_dir.joinpath(*MOB_IMAGES, "01.jpg")
    with pytest.raises(ValueError, match="does not record its scale"):  # its JFIF says 72 dpi
        sta.io.read_image(jpg)
    sdata = sta.io.read_image(jpg, microns_per_pixel=2.67)
    assert list(sdata.images) == ["01_image"] and sdata.attrs["stalign"]["format"] == "jpeg"
    # a PNG whose pHYs records 2 µm/px
    png = tmp_path / "small.png"
    Image.fromarray(np.asarray(Image.open(jpg))[:600, :800]).save(png, dpi=(25400 / 2.0, 25400 / 2.0))
    rec = sta.io.read_image(png, name="mob").attrs["stalign"]
    assert rec["microns_per_pixel"] == pytest.approx(2.0, rel=1e-3) and rec["name"] == "mob"
    # io.load recognises image files
    assert list(sta.io.load(png).images) == ["small_image"]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "error", "match"),
    [
        ("missing.svs", None, {}, FileNotFoundError, "not found"),
        ("garbage.svs", b"not a slide at all", {}, ValueError, "Cannot read .* TIFF-based slide"),
        ("garbage.jpg", b"\xff\xd8 truncated", {"microns_per_pixel": 1.0}, ValueError, "Cannot read .* JPEG/PNG"),
        ("table.csv", b"a,b\n1,2\n", {}, ValueError, "unsupported suffix"),
        ("ok.png", "png", {"microns_per_pixel": 0}, ValueError, "microns_per_pixel"),
        ("ok.png", "png", {"microns_per_pixel": -1.0}, ValueError, "microns_per_pixel"),
        ("ok.png", "png", {"name": ""}, ValueError, "name"),
    ],
)
def test_bad_inputs(tmp_path, name, content, kwargs, error, match):
    from PIL import Image

    path = tmp_path / name
    if content == "png":
        Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(path)
    elif content is not None:
        path.write_bytes(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(error, match=match):
        sta.io.read_image(path, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_single_block_levels(c3, tmp_path, monkeypatch, compression):
    """A level stored as one block is memory-mapped when uncompressed, else decoded once (not at every window)."""
    import tifffile

    from stalign.io import _image

    monkeypatch.setattr(_image, "MAX_CHUNK_PX", 1000)  # as if this 600 x 700 image were a huge single strip
    img = c3[0][:600, :700]
    path = tmp_path / "strip.tif"
    tifffile.imwrite(path, img, photometric="rgb", compression=compression, rowsperstrip=600)
    tree = sta.io.read_image(path, microns_per_pixel=1.0).images["strip_image"]
    np.testing.assert_array_equal(np.asarray(tree["scale0"]["image"].data).transpose(1, 2, 0), img)
    assert [tuple(tree[k]["image"].shape[1:]) for k in tree.children] == [(600, 700), (300, 350)]
