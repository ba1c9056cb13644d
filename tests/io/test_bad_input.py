"""Bad input to the readers: a clear error naming the problem and the fix; the user's objects stay unchanged.

The cases run through the harness of ``tests/_bad_input.py`` (error type, two regexes, a deep before/after
snapshot of every input). Odd inputs that stalign accepts on purpose are tested at the end of the file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import stalign as sta
from stalign._section import get_section

from .._bad_input import Catalogue

CASES = Catalogue()
case = CASES.case


def _counts():
    return pd.DataFrame([[1, 0, 4], [2, 3, 0], [0, 5, 1]], index=["1x1", "2x1", "3x1"], columns=["Actb", "Gapdh", "X"])


def _spots():
    return pd.DataFrame({"x": [1, 2, 3], "y": [1, 1, 1], "pixel_x": [10.0, 30.0, 50.0], "pixel_y": [10.0, 10.0, 10.0]})


def _img(h=60, w=60, c=3, dtype=np.uint8):
    return np.random.default_rng(0).integers(0, 255, (h, w, c)).astype(dtype)


def _read_st(c, s, img=None, **kw):
    kw.setdefault("sample", "s")
    inputs = [x for x in (c, s, img) if x is not None]
    return inputs, lambda: sta.io.read_st(c, s, img, **kw)


# ------------------------------------------------------------------------------------------------- io: read_st


@case("io-positions-missing-pixel-columns", ValueError, r"lacks columns \['pixel_x'\]", r"needs pixel_x, pixel_y")
def _(ctx):
    return _read_st(_counts(), _spots().drop(columns="pixel_x"))


@case("io-counts-and-positions-do-not-join", ValueError, r"no counts spot id .* matches", r"must use the same")
def _(ctx):
    return _read_st(_counts().set_axis(["7x7", "8x8", "9x9"]), _spots())


@case("io-duplicate-spot-ids-in-counts", ValueError, r"duplicate spot ids \['1x1'\]", r"must appear once")
def _(ctx):
    return _read_st(_counts().set_axis(["1x1", "1x1", "3x1"]), _spots())


@case("io-duplicate-spot-ids-in-positions", ValueError, r"duplicate spot ids", r"must appear once")
def _(ctx):
    return _read_st(_counts(), pd.concat([_spots(), _spots().iloc[:1]], ignore_index=True))


@case("io-nan-counts", ValueError, r"NaN or infinite", r"raw counts must be finite")
def _(ctx):
    c = _counts().astype(float)
    c.iloc[1, 1] = np.nan
    return _read_st(c, _spots())


@case("io-infinite-counts", ValueError, r"NaN or infinite", r"raw counts must be finite")
def _(ctx):
    c = _counts().astype(float)
    c.iloc[0, 2] = np.inf
    return _read_st(c, _spots())


@case("io-negative-counts", ValueError, r"negative values", r"pass raw")
def _(ctx):
    c = _counts()
    c.iloc[2, 0] = -3
    return _read_st(c, _spots())


@case("io-empty-counts-table", ValueError, r"no spots \(0 rows\)", r"one row per spot")
def _(ctx):
    return _read_st(_counts().iloc[:0], _spots())


@case("io-counts-without-gene-columns", ValueError, r"no gene columns", r"tab-separated")
def _(ctx):
    return _read_st(_counts().iloc[:, :0], _spots())


@case("io-non-numeric-counts", ValueError, r"non-numeric count columns \['Gapdh'\]", r"numbers only")
def _(ctx):
    return _read_st(_counts().assign(Gapdh=["a", "b", "c"]), _spots())


@case("io-counts-of-wrong-type", TypeError, r"got list", r"a path, a spots × genes DataFrame or an AnnData")
def _(ctx):
    c = [[1, 2], [3, 4]]
    return _read_st(c, _spots())


@case("io-spots-outside-image", ValueError, r"3 of 3 spot centres lie outside the 20x20 image", r"scale factor")
def _(ctx):
    return _read_st(_counts(), _spots().assign(pixel_x=[100.0, 120.0, 140.0]), _img(20, 20))


@case("io-tiny-image", ValueError, r"outside the 4x4 image", r"check the image scale factor or drop")
def _(ctx):
    return _read_st(_counts(), _spots(), _img(4, 4))


@case("io-image-with-5-channels", ValueError, r"shape \(60, 60, 5\)", r"expected \(height, width\)")
def _(ctx):
    return _read_st(_counts(), _spots(), _img(c=5))


@case("io-image-nan-pixels", ValueError, r"NaN or infinite pixels", r"clean the image")
def _(ctx):
    img = _img().astype(np.float32) / 255
    img[3, 3, 0] = np.nan
    return _read_st(_counts(), _spots(), img)


@case("io-image-boolean-dtype", ValueError, r"unsupported dtype bool", r"convert it to uint8 RGB")
def _(ctx):
    return _read_st(_counts(), _spots(), np.ones((60, 60, 3), bool))


@case("io-nan-positions", ValueError, r"positions are NaN or infinite", r"fix or drop those rows")
def _(ctx):
    return _read_st(_counts(), _spots().assign(pixel_y=[10.0, np.nan, 10.0]))


@case("io-non-numeric-positions", ValueError, r"\['pixel_x'\] are not numeric", r"must hold numbers")
def _(ctx):
    return _read_st(_counts(), _spots().assign(pixel_x=["10", "30", "x"]))


@case("io-zero-microns-per-pixel", ValueError, r"microns_per_pixel=0", r"must be a finite positive number")
def _(ctx):
    return _read_st(_counts(), _spots(), microns_per_pixel=0)


@case("io-string-microns-per-pixel", TypeError, r"microns_per_pixel='0.5' \(str\)", r"must be a finite positive number")
def _(ctx):
    return _read_st(_counts(), _spots(), microns_per_pixel="0.5")


@case("io-zero-image-scale-factor", ValueError, r"image_scalef=0", r"must be a finite positive number")
def _(ctx):
    return _read_st(_counts(), _spots(), _img(), image_scalef=0)


@case("io-zero-spot-pitch", ValueError, r"pitch_um=0", r"must be a finite positive number")
def _(ctx):
    return _read_st(_counts(), _spots(), pitch_um=0)


@case("io-one-spot-without-scale", ValueError, r"fewer than 2 spots", r"pass microns_per_pixel=")
def _(ctx):
    return _read_st(_counts().iloc[:1], _spots().iloc[:1])


@case("io-no-selected-spot", ValueError, r"no spot of the spot table is selected", r"selected_only=False")
def _(ctx):
    return _read_st(_counts(), _spots().assign(selected=0))


@case("io-labels-not-a-series", TypeError, r"got list", r"pandas Series indexed by spot id")
def _(ctx):
    return _read_st(_counts(), _spots(), labels=["a", "b", "c"])


@case("io-sample-not-a-string", TypeError, r"got None", r"non-empty string naming the section")
def _(ctx):
    return _read_st(_counts(), _spots(), sample=None)


@case("io-counts-file-missing", FileNotFoundError, r"counts file .*nope.tsv.* not found", r"pass an existing")
def _(ctx):
    return _read_st(ctx.tmp / "nope.tsv", _spots())


@case("io-image-file-missing", FileNotFoundError, r"Image file .*nope.jpg.* not found", r"pass an existing")
def _(ctx):
    return _read_st(_counts(), _spots(), ctx.tmp / "nope.jpg")


# ------------------------------------------------------------------------------------- io: Space Ranger, load


#: Space Ranger 1 positions (no header): barcode, in_tissue, array_row, array_col, pxl_row, pxl_col
_POSITIONS = "AAA-1,1,0,0,100,100\nCCC-1,1,0,2,100,300\nGGG-1,0,1,1,200,200\n"
_SF = {"spot_diameter_fullres": 90.0, "tissue_lowres_scalef": 0.1}


def _visium_folder(tmp: Path, sf: dict | None, positions: str | None = _POSITIONS) -> Path:
    """A Space Ranger 1 ``spatial/`` folder (positions, scale factors, a 50x50 lowres image) without counts."""
    spatial = tmp / "sec" / "spatial"
    spatial.mkdir(parents=True)
    if positions is not None:
        (spatial / "tissue_positions_list.csv").write_text(positions)
    if sf is not None:
        (spatial / "scalefactors_json.json").write_text(json.dumps(sf))
    Image.fromarray(_img(50, 50)).save(spatial / "tissue_lowres_image.png")
    return tmp / "sec"


def _read_visium(folder):
    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "0 genes" (no counts in these folders)
            return sta.io.read_visium(folder)

    return [folder], call


def _bad_scalefactors(name, problem, fix, sf):
    """A case: a Space Ranger folder whose ``scalefactors_json.json`` holds ``sf``."""
    case(name, ValueError, problem, fix)(lambda ctx: _read_visium(_visium_folder(ctx.tmp, sf)))


_bad_scalefactors(
    "io-visium-absent-spot-diameter", r"'spot_diameter_fullres' is missing", r"scale", {"tissue_lowres_scalef": 0.1}
)
_bad_scalefactors(
    "io-visium-zero-spot-diameter", r"'spot_diameter_fullres' is 0", r"scale", {**_SF, "spot_diameter_fullres": 0}
)
_bad_scalefactors(
    "io-visium-zero-scale-factor", r"'tissue_lowres_scalef' is 0", r"scale", {**_SF, "tissue_lowres_scalef": 0}
)
_bad_scalefactors(
    "io-visium-absent-scale-factor", r"'tissue_lowres_scalef' is missing", r"scale", {"spot_diameter_fullres": 90.0}
)
_bad_scalefactors(
    "io-visium-spots-outside-image",
    r"outside the 50x50 image",
    r"check the image scale factor",
    {**_SF, "tissue_lowres_scalef": 0.5},
)


@case("io-visium-missing-positions", FileNotFoundError, r"No spot positions", r"tissue_positions")
def _(ctx):
    return _read_visium(_visium_folder(ctx.tmp, _SF, None))


@case("io-visium-duplicate-barcodes", ValueError, r"duplicate barcodes", r"once")
def _(ctx):
    pos = "AAA-1,1,0,0,100,100\nAAA-1,1,0,2,100,300\n"
    return _read_visium(_visium_folder(ctx.tmp, _SF, pos))


@case("io-visium-folder-missing", FileNotFoundError, r"absent' does not exist", r"Space Ranger")
def _(ctx):
    return _read_visium(ctx.tmp / "absent")


@case("io-load-unknown-spec", ValueError, r"Cannot load 'foo:bar'", r"use one of dlpfc:<section>")
def _(ctx):
    return [], lambda: sta.datasets.load("foo:bar")


@case("io-load-spec-without-section", ValueError, r"has no section", r"use e.g. 'dlpfc:<section>'")
def _(ctx):
    return [], lambda: sta.datasets.load("dlpfc:")


@case("io-load-unsupported-file", ValueError, r"unsupported file type '.csv'", r"use a .zarr, a .h5ad")
def _(ctx):
    f = ctx.tmp / "table.csv"
    f.write_text("a,b\n1,2\n")
    return [f], lambda: sta.io.load(f)


@case("io-unknown-section", ValueError, r"Unknown STUtility MOB section 'MOB9'", r"available: MOB1")
def _(ctx):
    return [], lambda: sta.datasets.stutility_mob("MOB9", data_dir=ctx.data_dir)


@case("io-unknown-her2st-section", ValueError, r"Unknown her2st section 'Q1'", r"available: A1, ")
def _(ctx):
    return [], lambda: sta.datasets.her2st("Q1", data_dir=ctx.data_dir)


@case("io-unknown-stahl-replicate", ValueError, r"Unknown Ståhl MOB replicate 99", r"available: 01, ")
def _(ctx):
    return [], lambda: sta.datasets.stahl_mob(99, data_dir=ctx.data_dir)


@case("io-unknown-dlpfc-sample", ValueError, r"Unknown DLPFC sample '1'", r"available: 151507, ")
def _(ctx):
    return [], lambda: sta.datasets.dlpfc("1", data_dir=ctx.data_dir)


@case("io-to-anndata-zero-max-side", ValueError, r"max_side=0", r"positive integer number of pixels")
def _(ctx):
    sd = ctx.sdata(20)
    return [sd], lambda: sta.io.to_anndata(sd, max_side=0)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, bad_input_ctx):
    CASES.check(name, bad_input_ctx)


def test_missing_file_names_data_dir(tmp_path):
    (tmp_path / "her2st" / "data" / "ST-cnts").mkdir(parents=True)
    (tmp_path / "her2st" / "data" / "ST-cnts" / "Z9.tsv.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=f"Z9_selection.tsv.*data_dir={str(tmp_path)!r}"):
        sta.datasets.her2st("Z9", data_dir=tmp_path)


# ----------------------------------------------------------------------------------- accepted odd inputs


@pytest.mark.parametrize(
    ("kind", "image"),
    [
        ("grayscale", _img(60, 60, 1)[..., 0]),
        ("rgba", _img(60, 60, 4)),
        ("16-bit", _img(60, 60, 3).astype(np.uint16) * 257),
        ("float-0-1", _img(60, 60, 3).astype(np.float32) / 255),
    ],
    ids=["grayscale", "rgba", "16-bit", "float-0-1"],
)
def test_accepted_odd_images(kind, image):
    """Grayscale is replicated, RGBA drops alpha, 16-bit and float images are rescaled to uint8 RGB (documented)."""
    before = image.copy()
    sd = sta.io.read_st(_counts(), _spots(), image, sample="s")
    np.testing.assert_array_equal(image, before)
    lv = get_section(sd, require_image=True).images[0]
    arr = np.asarray(lv.data)
    assert arr.shape == (3, 60, 60) and arr.dtype == np.uint8
    ref = before[..., :3] if before.ndim == 3 else np.repeat(before[..., None], 3, -1)
    if kind == "16-bit":
        ref = ref >> 8
    elif kind == "float-0-1":
        ref = np.rint(ref * 255)
    np.testing.assert_array_equal(np.moveaxis(arr, 0, -1), ref.astype(np.uint8))


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"], ids=["gray", "rgba", "16bit", "palette"])
def test_accepted_odd_image_files(tmp_path, mode):
    """Image files in gray, RGBA, 16-bit and palette modes are read as uint8 RGB."""
    if mode == "I;16":
        im = Image.fromarray(np.random.default_rng(0).integers(0, 65535, (60, 60), dtype=np.uint16))
    else:
        im = Image.fromarray(_img(60, 60, 4 if mode == "RGBA" else 3)).convert(mode)
    path = tmp_path / "image.png"
    im.save(path)
    sec = get_section(sta.io.read_st(_counts(), _spots(), path, sample="s"), require_image=True)
    arr = np.asarray(sec.images[0].data)
    assert arr.shape == (3, 60, 60) and arr.dtype == np.uint8


def test_accepted_odd_counts_warn():
    """Non-integer (normalised?) and all-zero counts are read, with a warning that says what is odd."""
    with pytest.warns(UserWarning, match="not integers; stalign expects raw counts"):
        sd = sta.io.read_st(_counts() * 0.37, _spots(), sample="s")
    np.testing.assert_allclose(sd.tables["table"].X.toarray(), _counts().to_numpy() * 0.37, rtol=1e-6)
    with pytest.warns(UserWarning, match="every count is zero"):
        sd = sta.io.read_st(_counts() * 0, _spots(), sample="s")
    assert not get_section(sd).has_expression


def test_accepted_duplicate_gene_columns():
    """A counts table with a duplicated gene column reads (names made unique), it is not 'non-numeric'."""
    with pytest.warns(UserWarning, match="not unique"):
        sd = sta.io.read_st(_counts().set_axis(["Actb", "Actb", "X"], axis=1), _spots(), sample="s")
    assert list(sd.tables["table"].var_names) == ["Actb", "Actb-1", "X"]


def test_accepted_spaceranger1_folder_without_counts(tmp_path):
    """A Space Ranger 1 folder without counts: the in-tissue spots, calibrated on their array grid (0 genes)."""
    with pytest.warns(UserWarning, match="0 genes"):
        sdata = sta.io.read_visium(_visium_folder(tmp_path, _SF), dataset_id="x")
    t = sdata.tables["table"]
    assert list(t.obs_names) == ["AAA-1", "CCC-1"]  # in tissue only
    np.testing.assert_allclose(t.obsm["spatial"], [[100, 100], [300, 100]])
    # calibrated on the array grid of the kept spots: CCC (row 0, col 2) is AAA's neighbour, 100 µm and 200 px away
    assert get_section(sdata).microns_per_pixel == pytest.approx(0.5)
