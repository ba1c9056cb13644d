"""Bad input: a clear error naming the problem and the fix; the user's objects stay unchanged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stalign import io
from stalign._section import get_section


def _counts():
    return pd.DataFrame([[1, 0], [2, 3]], index=["1x1", "2x1"], columns=["A", "B"])


def _spots():
    return pd.DataFrame({"x": [1, 2], "y": [1, 1], "pixel_x": [10.0, 30.0], "pixel_y": [10.0, 10.0]})


def test_counts_positions_do_not_join():
    c = _counts()
    c.index = ["7x7", "8x8"]
    with pytest.raises(ValueError, match="no counts spot id .* matches"):
        io.read_st(c, _spots(), sample="s")


def test_duplicate_spot_ids():
    c = _counts()
    c.index = ["1x1", "1x1"]
    before = c.copy()
    with pytest.raises(ValueError, match="duplicate spot ids"):
        io.read_st(c, _spots(), sample="s")
    pd.testing.assert_frame_equal(c, before)
    sp = pd.concat([_spots(), _spots().iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate spot ids"):
        io.read_st(_counts(), sp, sample="s")


@pytest.mark.parametrize(("value", "match"), [(-1, "negative"), (np.nan, "NaN")])
def test_negative_or_nan_counts(value, match):
    c = _counts().astype(float)
    c.iloc[0, 0] = value
    with pytest.raises(ValueError, match=match):
        io.read_st(c, _spots(), sample="s")


def test_spots_off_image():
    with pytest.raises(ValueError, match="outside the 20x20 image"):
        io.read_st(_counts(), _spots(), np.zeros((20, 20, 3), np.uint8), sample="s")


def test_missing_spot_columns_and_files(tmp_path):
    with pytest.raises(ValueError, match="pixel_x"):
        io.read_st(_counts(), _spots().drop(columns="pixel_x"), sample="s")
    with pytest.raises(FileNotFoundError, match="counts file"):
        io.read_st(tmp_path / "nope.tsv", _spots(), sample="s")
    with pytest.raises(FileNotFoundError, match="Image file"):
        io.read_st(_counts(), _spots(), tmp_path / "nope.jpg", sample="s")


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit", "palette"])
def test_non_rgb_images_convert(tmp_path, kind):
    rng = np.random.default_rng(0)
    if kind == "gray":
        im = Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8), mode="L")
    elif kind == "rgba":
        im = Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), mode="RGBA")
    elif kind == "16bit":
        im = Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("P")
    path = tmp_path / f"{kind}.png"
    im.save(path)
    sec = get_section(io.read_st(_counts(), _spots(), path, sample="s"), require_image=True)
    arr = np.asarray(sec.images[0].data)
    assert arr.shape == (3, 40, 40) and arr.dtype == np.uint8


def test_bad_image_shape_refused():
    with pytest.raises(ValueError, match="expected \\(height, width\\)"):
        io.read_st(_counts(), _spots(), np.zeros((40, 40, 5), np.uint8), sample="s")


def _visium_folder(tmp_path, sf):
    spatial = tmp_path / "sec" / "spatial"
    spatial.mkdir(parents=True)
    (spatial / "tissue_positions_list.csv").write_text(
        "AAA-1,1,0,0,100,100\nCCC-1,1,0,2,100,300\nGGG-1,0,1,1,200,200\n"
    )
    (spatial / "scalefactors_json.json").write_text(json.dumps(sf))
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(spatial / "tissue_lowres_image.png")
    return tmp_path / "sec"


@pytest.mark.parametrize(
    ("sf", "match"),
    [
        ({"tissue_lowres_scalef": 0.1}, "'spot_diameter_fullres' is missing"),
        ({"spot_diameter_fullres": 0, "tissue_lowres_scalef": 0.1}, "'spot_diameter_fullres' is 0"),
        ({"spot_diameter_fullres": 90.0, "tissue_lowres_scalef": 0}, "'tissue_lowres_scalef' is 0"),
        ({"spot_diameter_fullres": 90.0}, "'tissue_lowres_scalef' is missing"),
    ],
)
def test_scale_factors_missing_or_zero(tmp_path, sf, match):
    folder = _visium_folder(tmp_path, sf)
    with pytest.raises(ValueError, match=match), pytest.warns(UserWarning, match="0 genes"):
        io.read_visium(folder)


def test_visium_spaceranger1_no_counts_and_off_image(tmp_path):
    folder = _visium_folder(tmp_path, {"spot_diameter_fullres": 90.0, "tissue_lowres_scalef": 0.1})
    with pytest.warns(UserWarning, match="0 genes"):
        sdata = io.read_visium(folder, dataset_id="x")
    t = sdata.tables["table"]
    assert list(t.obs_names) == ["AAA-1", "CCC-1"]  # in tissue only
    np.testing.assert_allclose(t.obsm["spatial"], [[100, 100], [300, 100]])
    # calibrated on the array grid of the kept spots: CCC (row 0, col 2) is AAA's neighbour, 100 µm and 200 px away
    assert get_section(sdata).microns_per_pixel == pytest.approx(0.5)
    (folder / "spatial" / "scalefactors_json.json").write_text(
        json.dumps({"spot_diameter_fullres": 90.0, "tissue_lowres_scalef": 0.5})
    )
    with pytest.raises(ValueError, match="outside the 50x50 image"), pytest.warns(UserWarning):
        io.read_visium(folder)


def test_visium_duplicate_barcodes_and_missing_files(tmp_path):
    folder = _visium_folder(tmp_path, {"spot_diameter_fullres": 90.0, "tissue_lowres_scalef": 0.1})
    (folder / "spatial" / "tissue_positions_list.csv").write_text("AAA-1,1,0,0,100,100\nAAA-1,1,0,2,100,300\n")
    with pytest.raises(ValueError, match="duplicate barcodes"):
        io.read_visium(folder)
    (folder / "spatial" / "tissue_positions_list.csv").unlink()
    with pytest.raises(FileNotFoundError, match="No spot positions"):
        io.read_visium(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.read_visium(tmp_path / "absent")


def test_missing_file_names_data_dir(tmp_path):
    (tmp_path / "her2st" / "data" / "ST-cnts").mkdir(parents=True)
    (tmp_path / "her2st" / "data" / "ST-cnts" / "Z9.tsv.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=f"Z9_selection.tsv.*data_dir={str(tmp_path)!r}"):
        io.her2st("Z9", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("loader", "name"), [(io.her2st, "Q1"), (io.stutility_mob, "MOB9"), (io.stahl_mob, 99), (io.dlpfc, "1")]
)
def test_unknown_sections_list_available(data_dir, loader, name):
    with pytest.raises(ValueError, match="available: "):
        loader(name, data_dir=data_dir)
