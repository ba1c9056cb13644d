"""The command line on real sections: info, embed (bundled weights), output writing and errors."""

from __future__ import annotations

import json

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
    assert table.obsm["X_stalign_image"].shape == table.obsm["X_stalign"].shape == (table.n_obs, 128)
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


# ---------------------------------------------------------------------------------------------- cohorts

#: three small real sections (two STUtility MOB sections and a Ståhl MOB replicate): under 30 s each run on 2 cores
COHORT = ["stutility_mob:MOB1", "stutility_mob:MOB2", "stahl_mob:11"]


def _env() -> dict:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(data_dir, tmp_path):
    """`torchrun --nproc-per-node 2 -m stalign embed <3 sections> --out DIR --domains 7` (gloo) equals one process."""
    import subprocess
    import sys

    args = [*COHORT, "--data-dir", str(data_dir), "--domains", "7"]
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, "-m", "stalign", "embed", *args, "--out", str(one)], env=_env(),
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r1.returncode == 0, r1.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    r2 = subprocess.run([*torchrun, "-m", "stalign", "embed", *args, "--out", str(two)], env=_env(),
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r2.returncode == 0, r2.stderr
    files = ["11.zarr", "MOB1.zarr", "MOB2.zarr", "cohort.h5ad", "manifest.json"]
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir()) == files
    # rank 0 alone prints: one line per section, the overall count, a summary
    lines = [line for line in r2.stdout.splitlines() if line.startswith("[")]
    assert sorted(line.split("]")[0] for line in lines) == ["[1/3", "[2/3", "[3/3"]
    assert {line.split("  ")[0].split("] ")[1] for line in lines} == set(COHORT)
    assert "3 of 3 sections, 1048 spots (3 embedded, 0 skipped, 0 failed)" in r2.stdout
    assert "on 2 processes; 7 joint domains" in r2.stdout

    a, b = ad.read_h5ad(one / "cohort.h5ad"), ad.read_h5ad(two / "cohort.h5ad")
    assert (a.obs_names == b.obs_names).all() and a.n_obs == 1048
    for key in ("X_stalign", "X_stalign_image", "X_stalign_gene", "X_stalign_niche"):
        np.testing.assert_allclose(b.obsm[key], a.obsm[key], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(a.obs["stalign_domain"].to_numpy(), b.obs["stalign_domain"].to_numpy())
    assert a.obs["stalign_domain"].nunique() == 7
    # joint: the two STUtility sections share their domain labels
    per_domain = a.obs.groupby("stalign_domain", observed=True)["sample"].nunique()
    assert (per_domain >= 2).sum() >= 3
    # each section's own file holds the same embeddings as its rows of the cohort
    from stalign.io import load

    sec = load(two / "MOB2.zarr").tables["table"]
    np.testing.assert_array_equal(sec.obsm["X_stalign"], b[b.obs["sample"] == "MOB2"].obsm["X_stalign"])
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (one, two))
    assert m1 == m2  # the manifest does not depend on the number of processes
    assert [(s["sample"], s["n_spots"]) for s in m1["sections"]] == [("MOB1", 379), ("MOB2", 407), ("11", 262)]
    assert m1["model"]["name"] == "stalign-base" and len(m1["model"]["weights_sha256"]) == 64


def test_embed_cohort_cli_reruns_keep_going_and_errors(data_dir, tmp_path, capsys):
    out = tmp_path / "cohort"
    bad = tmp_path / "broken.h5ad"
    bad.write_text("not an h5ad")
    base = ["embed", "--data-dir", str(data_dir), "--format", "h5ad", "--out", str(out)]
    # without --keep-going the bad section stops the run with its name
    assert main([*base, COHORT[0], str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stalign embed: error: Section") and "broken.h5ad" in err
    # with it the others finish, the failure is listed in manifest.json and the exit status says so
    assert main([*base, COHORT[0], str(bad), COHORT[1], "--keep-going"]) == 1
    captured = capsys.readouterr()
    assert "skipped: MOB1.h5ad exists, same model" in captured.out  # written by the first run
    assert "FAILED" in captured.out and "broken.h5ad failed" in captured.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["spec"] for f in manifest["failures"]] == [str(bad)]
    assert [s["sample"] for s in manifest["sections"]] == ["MOB1", "MOB2"]
    # usage errors, before any work
    for argv, message in [
        (["embed", *COHORT[:2]], "--out DIR"),
        (["embed", *COHORT[:2], "--out", str(tmp_path / "x.zarr")], "folder"),
        (["embed", COHORT[0], "--out", str(tmp_path / "y.h5ad"), "--format", "zarr"], "--format zarr"),
    ]:
        assert main([*argv, "--data-dir", str(data_dir)]) == 2
        assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- Visium HD, Xenium


@pytest.mark.slow  # writes the 3522x5789 DAPI pyramid into the .zarr
def test_embed_xenium_pseudospots(data_dir, tmp_path, capsys):
    """A Xenium folder (DAPI only: genes alone) embedded as pseudo-spots; the cells kept as table 'bins'.

    55 µm pseudo-spots every 30 µm overlap: every cell lies in at least one.
    """
    import spatialdata as sd

    xen = data_dir / "xenium_insitupy_ileum" / "tests" / "data" / "Xenium_Prime_Mouse_Ileum_tiny_outs"
    out = tmp_path / "ileum.zarr"
    with pytest.warns(UserWarning, match=r"genes alone"):
        rc = main(["embed", str(xen), "--pseudospot-um", "30", "--out", str(out), "--quiet"])
    assert rc == 0
    back = sd.read_zarr(out)
    ps, cells = back.tables["table"], back.tables["bins"]
    assert cells.n_obs == 23 and cells.obs["pseudospots"].notna().all()
    np.testing.assert_array_equal(ps.X.toarray(), cells.obsm["pseudospots"].T @ cells.X.toarray())
    assert ps.obsm["X_stalign"].shape == (ps.n_obs, 128) and "X_stalign_image" not in ps.obsm
    assert cells.obsm["pseudospots"].shape == (23, ps.n_obs)
    assert "spots          " in capsys.readouterr().out


def test_embed_hd_bin_um(data_dir, capsys):
    hd = data_dir / "visium_hd_visiumio" / "inst" / "extdata"
    assert main(["info", str(hd / "binned_outputs" / "square_002um")]) == 0
    assert "µm / full-res px 0.2738" in capsys.readouterr().out
    rc = main(["embed", str(hd), "--bin-um", "8", "--quiet"])
    assert rc == 2
    assert "bin_size_um=8.0 is not in" in capsys.readouterr().err
    rc = main(["embed", "stahl_mob:11", "--data-dir", str(data_dir), "--bin-um", "8", "--quiet"])
    assert rc == 2
    assert "--bin-um applies to a Visium HD output" in capsys.readouterr().err
