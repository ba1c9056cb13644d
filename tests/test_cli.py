"""The command line on real sections: info, embed (bundled weights), output writing and errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from stalign.cli import main


def test_info_real_section(data_dir, capsys):
    assert main(["info", "stahl_mob:11", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "section        11" in out and "spots          262" in out
    assert "GL: 92" in out.replace("Glomerular layer", "GL")


def test_embed_writes_h5ad_atomically(data_dir, tmp_path, capsys):
    out = tmp_path / "mob11.h5ad"
    rc = main(["embed", "stahl_mob:11", "--data-dir", str(data_dir), "--out", str(out), "--domains", "5", "--quiet"])
    assert rc == 0
    table = ad.read_h5ad(out)
    assert table.n_obs == 262
    for key in ("X_stalign", "X_stalign_image", "X_stalign_gene"):
        assert table.obsm[key].shape == (262, 128) and np.isfinite(table.obsm[key]).all()
    assert table.obs["stalign_domain"].nunique() == 5
    assert table.uns["stalign"]["model"] == "stalign-base"
    assert len(table.uns["stalign"]["weights_sha256"]) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["mob11.h5ad"]  # no temporary leftovers
    text = capsys.readouterr().out
    assert "domains" in text and "written" in text
    # an existing output is refused unless --overwrite
    rc = main(["embed", "stahl_mob:11", "--data-dir", str(data_dir), "--out", str(out), "--quiet"])
    assert rc == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "dlpfc:999999"], "available"),
        (["info", "nosuchdataset:1"], "nosuchdataset"),
        (["embed", "stahl_mob:11", "--out", "/nonexistent-dir/x.h5ad", "--quiet"], "does not exist"),
        (["embed", "stahl_mob:11", "--out", "OUT.csv", "--quiet"], ".h5ad"),
        (["embed", "stahl_mob:11", "--model", "/no/such/model", "--quiet"], "model"),
    ],
)
def test_cli_errors_are_clear(data_dir, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main([*argv[:2], "--data-dir", str(data_dir), *argv[2:]])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith(f"stalign {argv[0]}: error:")
    assert message in err


def _png(data_dir, tmp_path, *, dpi=None):
    """DLPFC 151673's lowres H&E copied as a PNG (with a pHYs calibration when ``dpi`` is given)."""
    from PIL import Image

    src = data_dir / "dlpfc_humanpilot" / "10X" / "151673" / "tissue_lowres_image.png"
    path = tmp_path / "slide.png"
    with Image.open(src) as im:
        im.convert("RGB").save(path, **({"dpi": (dpi, dpi)} if dpi else {}))
    return path


def test_embed_image_file_tiles_and_writes_zarr(data_dir, tmp_path, capsys):
    import spatialdata as sd

    png = _png(data_dir, tmp_path, dpi=25400 / 16.09)  # the file records 16.09 µm/px
    out = tmp_path / "slide.zarr"
    rc = main(["embed", str(png), "--tile-um", "200", "--out", str(out), "--domains", "4", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    back = sd.read_zarr(out)
    table = back.tables["table"]
    assert table.n_vars == 0 and table.n_obs > 500
    assert table.obsm["X_stalign_image"].shape == (table.n_obs, 128) and "X_stalign" not in table.obsm
    assert table.obs["stalign_domain"].nunique() == 4
    assert back.attrs["stalign"]["microns_per_pixel"] == pytest.approx(16.09, rel=1e-3)
    assert "(tiles every 200 µm)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.png", "slide.zarr"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "does not record its scale"),  # no pHYs: the file has no µm/px
        (["--microns-per-pixel", "16", "--tile-um", "0"], "--tile-um 0.0"),
        (["--microns-per-pixel", "-1"], "--microns-per-pixel -1.0"),
    ],
)
def test_embed_image_file_errors_leave_nothing(data_dir, tmp_path, capsys, extra, message):
    png = _png(data_dir, tmp_path)
    rc = main(["embed", str(png), "--out", str(tmp_path / "x.zarr"), "--quiet", *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["slide.png"]


def test_info_image_file(data_dir, tmp_path, capsys):
    png = _png(data_dir, tmp_path, dpi=25400 / 16.09)
    assert main(["info", str(png)]) == 0
    out = capsys.readouterr().out
    assert "section        slide" in out and "(tiles every 100 µm)" in out and "genes          0" in out


def test_tile_um_needs_an_image(data_dir, capsys):
    rc = main(["embed", "stahl_mob:11", "--data-dir", str(data_dir), "--tile-um", "100", "--quiet"])
    assert rc == 2
    assert "apply to an H&E image file" in capsys.readouterr().err
