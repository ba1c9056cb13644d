from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData
from scipy import ndimage

import stalign as sta
from stalign._constants import Key
from stalign._section import get_section
from stalign.pp._crops import read_crops, spatial_order


def _synthetic_adata(h=400, w=500, mpp=1.0):
    img = np.full((h, w, 3), 200, dtype=np.uint8)
    xy = np.array([[100.0, 100.0], [250.5, 300.25], [5.0, 5.0], [w - 2.0, h / 2]])
    for x, y in xy:
        img[int(y), int(x)] = 0  # a black pixel at every spot centre
    adata = AnnData(shape=(len(xy), 0))
    adata.obs_names = [f"s{i}" for i in range(len(xy))]
    adata.obsm["spatial"] = xy
    adata.uns["spatial"] = {"lib": {"images": {"fullres": img}, "scalefactors": {"microns_per_pixel": mpp}}}
    return adata


def test_box_centres_are_spot_centres_real(dlpfc_sdata, data_dir, helpers):
    pos, sf, _ = helpers.dlpfc_files(data_dir, "151673")
    boxes = sta.pp.crop_boxes(dlpfc_sdata, size_um=100)
    sec = get_section(dlpfc_sdata)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 * sec.images[0].fullres_per_px
    src = pos.loc[sec.table.obs_names, ["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    np.testing.assert_allclose(centres, src, atol=1e-6)
    # 100 µm at ~0.72 µm/full-res px = ~138 full-res px; on the lowres level: times the scale factor
    side = boxes[:, 2] - boxes[:, 0]
    np.testing.assert_allclose(side, 100 / sec.microns_per_pixel * sf["tissue_lowres_scalef"], rtol=1e-5)


def test_crop_is_centred_on_spot():
    adata = _synthetic_adata()
    sec = get_section(adata)
    # odd output size and 1 px per output px: the dark centre pixel lands in the middle
    crops = read_crops(sec, np.floor(sec.coords[:2]) + 0.5, size_um=31, out_px=31)
    for c in crops:
        iy, ix = np.unravel_index(np.argmin(c[0]), c[0].shape)
        assert (iy, ix) == (15, 15)


def test_border_fill_and_inside_fraction():
    adata = _synthetic_adata()
    sec = get_section(adata)
    crops, inside = read_crops(sec, np.array([[5.0, 5.0]]), size_um=40, out_px=40, return_inside=True)
    # box [-15, 25) x [-15, 25): 25 * 25 / 40 ** 2 inside
    assert inside[0] == pytest.approx(25 * 25 / 1600)
    c = crops[0]
    assert (c[:, :14, :] == 255).all() and (c[:, :, :14] == 255).all()  # outside: white glass
    assert (c[:, 16:, 16:] != 255).all()  # inside: the grey image
    crops, inside = read_crops(sec, sec.coords[:2], size_um=40, out_px=16, return_inside=True)
    np.testing.assert_allclose(inside, 1.0)


def test_border_real_her2st(her2st_c2, helpers):
    spots, img = her2st_c2
    adata = helpers.st_anndata(spots, img)
    sec = get_section(adata)
    crops, inside = read_crops(sec, np.array([[10.0, 10.0]]), size_um=100, out_px=50, return_inside=True)
    side = 100 / 0.7
    assert inside[0] == pytest.approx((side / 2 + 10) ** 2 / side**2, rel=1e-6)
    assert (crops[0][:, :15, :15] == 255).all()


def test_off_image_centre_is_an_error_naming_the_spot():
    adata = _synthetic_adata()
    adata.obsm["spatial"][1] = [-3.0, 10.0]
    with pytest.raises(ValueError, match="s1"):
        sta.pp.crop_boxes(adata, size_um=10)
    sec = get_section(adata)
    with pytest.raises(ValueError, match="outside"):
        read_crops(sec, sec.coords, size_um=10, out_px=8, names=adata.obs_names)


def test_bad_size():
    adata = _synthetic_adata()
    with pytest.raises(ValueError, match="size_um"):
        sta.pp.crop_boxes(adata, size_um=-1)
    with pytest.raises(ValueError, match="out_px"):
        read_crops(get_section(adata), np.zeros((1, 2)) + 50, size_um=10, out_px=0)


def test_resolution_independent_her2st(her2st_c2, helpers):
    """A 100 µm crop covers the same tissue on the full-res C2 image and on a 6x downsampled rebuild."""
    spots, img = her2st_c2
    full = get_section(helpers.st_anndata(spots, img))
    f = 6
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    small = img[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3)).astype(np.uint8)
    low = get_section(helpers.build_st(spots, small, scalef=1 / f))
    assert low.images[0].fullres_per_px == pytest.approx(f)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(spots), 24, replace=False)
    xy = full.coords[idx]
    a = read_crops(full, xy, size_um=100, out_px=24).astype(np.float64)
    b = read_crops(low, xy, size_um=100, out_px=24).astype(np.float64)
    a = ndimage.gaussian_filter(a, sigma=(0, 0, 1, 1))
    b = ndimage.gaussian_filter(b, sigma=(0, 0, 1, 1))
    r = [np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(len(idx))]
    assert np.median(r) > 0.9 and min(r) > 0.8
    # a crop shifted by half its side is clearly different (the test has power)
    c = read_crops(low, xy + 100 / 0.7 / 2, size_um=100, out_px=24).astype(np.float64)
    c = ndimage.gaussian_filter(c, sigma=(0, 0, 1, 1))
    r_shift = [np.corrcoef(a[i].ravel(), c[i].ravel())[0, 1] for i in range(len(idx))]
    assert np.median(r_shift) < np.median(r) - 0.2


def test_anndata_and_sdata_give_same_crops(dlpfc_sdata, data_dir, helpers):
    adata = helpers.dlpfc_anndata(data_dir)
    s_sec, a_sec = get_section(dlpfc_sdata), get_section(adata)
    names = s_sec.table.obs_names[:64]
    xy_s = s_sec.coords[:64]
    xy_a = a_sec.coords[adata.obs_names.get_indexer(names)]
    np.testing.assert_allclose(xy_s, xy_a)
    for size in (100, 200):
        np.testing.assert_array_equal(
            read_crops(s_sec, xy_s, size_um=size, out_px=32), read_crops(a_sec, xy_a, size_um=size, out_px=32)
        )


def test_batch_read_equals_single_reads(toy_sdata):
    sec = get_section(toy_sdata)
    order = spatial_order(sec.coords)
    xy = sec.coords[order[:40]]
    batch = read_crops(sec, xy, size_um=200, out_px=32)
    single = np.concatenate([read_crops(sec, xy[i : i + 1], size_um=200, out_px=32) for i in range(len(xy))])
    # the resampling weights live in the level's absolute coordinates: the window a crop is read through is only
    # a cache, so the bytes are identical
    np.testing.assert_array_equal(batch, single)


@pytest.mark.parametrize("size_um", [100, 200])
def test_crops_do_not_depend_on_the_batch_her2st(her2st_c2, helpers, size_um):
    """Full-res C2 (downsampled k x k per output pixel): any batching, order or subset gives the same bytes."""
    spots, img = her2st_c2
    sec = get_section(helpers.st_anndata(spots, img))
    xy = sec.coords[spatial_order(sec.coords)][:96]
    ref = read_crops(sec, xy, size_um=size_um, out_px=32)
    for bs in (1, 5, 32):
        got = np.concatenate([read_crops(sec, xy[a : a + bs], size_um=size_um, out_px=32) for a in range(0, 96, bs)])
        np.testing.assert_array_equal(got, ref)
    perm = np.random.default_rng(0).permutation(96)
    np.testing.assert_array_equal(read_crops(sec, xy[perm], size_um=size_um, out_px=32), ref[perm])
    assert ref.std() > 5  # real tissue, not a flat image


def test_resampling_reproduces_a_linear_ramp():
    """Bilinear taps averaged k x k reproduce a linear image exactly (up to uint8 rounding) inside the image."""
    h, w = 300, 110  # slope 2 per pixel: a half-pixel misplacement of the samples would be off by 1
    ramp = np.ascontiguousarray(np.broadcast_to((2 * np.arange(w) + 20)[None, :, None], (h, w, 3)), dtype=np.uint8)
    adata = AnnData(shape=(1, 0))
    adata.obsm["spatial"] = np.array([[55.3, 150.7]])
    adata.uns["spatial"] = {"lib": {"images": {"fullres": ramp}, "scalefactors": {"microns_per_pixel": 1.0}}}
    sec = get_section(adata)
    for size, out in ((40, 16), (40, 40), (50, 25), (30, 64)):
        crop = read_crops(sec, sec.coords, size_um=size, out_px=out)[0, 0].astype(float)
        # output pixel j covers [x0 + j s, x0 + (j + 1) s) with s = size / out; pixel i has its centre at i + 0.5
        xs = sec.coords[0, 0] - size / 2 + (np.arange(out) + 0.5) * size / out - 0.5
        np.testing.assert_allclose(crop.mean(axis=0), 20 + 2 * xs, atol=0.51)
        assert np.ptp(crop, axis=0).max() == 0  # constant along y


def test_spatial_order_is_compact(dlpfc_sdata):
    sec = get_section(dlpfc_sdata)
    order = spatial_order(sec.coords)
    assert np.array_equal(np.sort(order), np.arange(len(order)))
    chunks = [sec.coords[order[a : a + 64]] for a in range(0, len(order) - 64, 64)]
    ext = np.median([np.ptp(c, axis=0).max() for c in chunks])
    rnd = np.random.default_rng(0).permutation(len(order))
    ext_rnd = np.median([np.ptp(sec.coords[rnd[a : a + 64]], axis=0).max() for a in range(0, len(order) - 64, 64)])
    assert ext < ext_rnd / 3


def test_spot_and_niche_crops_store_boxes(toy_sdata):
    sdata = sta.pp.spot_crops(toy_sdata, copy=True)
    assert Key.spot_bbox not in toy_sdata.tables["table"].obsm  # copy leaves the input alone
    t = sdata.tables["table"]
    assert t.obsm[Key.spot_bbox].shape == (t.n_obs, 4)
    assert t.uns[Key.spot_bbox]["params"]["size_um"] == 100
    ad = anndata_like(sdata)
    assert sta.pp.niche_crops(ad, key_added="nb") is None
    b = ad.obsm["nb"]
    np.testing.assert_allclose(b[:, 2] - b[:, 0], 2 * (t.obsm[Key.spot_bbox][:, 2] - t.obsm[Key.spot_bbox][:, 0]))


def anndata_like(sdata):
    sec = get_section(sdata)
    lv = sec.images[0]
    ad = AnnData(shape=(sec.table.n_obs, 0))
    ad.obsm["spatial"] = sec.coords.copy()
    ad.uns["spatial"] = {
        "lib": {
            "images": {"lowres": np.moveaxis(np.asarray(lv.data), 0, -1)},
            "scalefactors": {"microns_per_pixel": sec.microns_per_pixel, "tissue_lowres_scalef": 1 / lv.fullres_per_px},
        }
    }
    return ad
