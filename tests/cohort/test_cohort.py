"""``cohort.embed`` on real sections, in one process: files, manifest, joint domains, restarts and failures.

The multi-process run (``torchrun``) is checked against this one in ``tests/test_cli.py``.
"""

from __future__ import annotations

import json
import os

import anndata as ad
import numpy as np
import pytest

import stalign as sta

SPECS = ["stutility_mob:MOB1", "stutility_mob:MOB2"]


def _visible(folder) -> list[str]:
    return sorted(p for p in os.listdir(folder) if not p.startswith("."))


def test_cohort_files_manifest_joint_domains_and_restarts(data_dir, tmp_path):
    out = tmp_path / "cohort"
    lines: list[str] = []
    cohort = sta.cohort.embed(SPECS, out, n_domains=5, file_format="h5ad", data_dir=data_dir, progress=lines.append)
    assert _visible(out) == ["MOB1.h5ad", "MOB2.h5ad", "cohort.h5ad", "manifest.json"]
    assert sorted(os.listdir(out)) == _visible(out)  # no temporaries, no progress folder left
    assert lines[0].startswith("[1/2] stutility_mob:MOB1  379 spots")
    assert lines[1].startswith("[2/2] stutility_mob:MOB2  407 spots")
    assert lines[2].startswith("2 of 2 sections, 786 spots (2 embedded, 0 skipped, 0 failed)")

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == "stalign-base" and len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["stalign_version"] == sta.__version__ and manifest["failures"] == []
    assert [(s["sample"], s["n_spots"], s["status"]) for s in manifest["sections"]] == [
        ("MOB1", 379, "embedded"),
        ("MOB2", 407, "embedded"),
    ]

    disk = ad.read_h5ad(out / "cohort.h5ad")
    assert disk.n_vars == 0 and list(disk.obs["sample"].cat.categories) == ["MOB1", "MOB2"]
    np.testing.assert_array_equal(disk.obs["stalign_domain"].to_numpy(), cohort.obs["stalign_domain"].to_numpy())
    assert disk.uns["stalign_domain"]["params"]["library_key"] == "sample"
    # joint: one clustering for both sections, so labels recur across them
    per_domain = disk.obs.groupby("stalign_domain", observed=True)["sample"].nunique()
    assert disk.obs["stalign_domain"].nunique() == 5 and (per_domain == 2).sum() >= 2
    # the embeddings are those of tl.embed on each section, the same in its file and in the cohort
    for name in ("MOB1", "MOB2"):
        section = ad.read_h5ad(out / f"{name}.h5ad")
        rows = (disk.obs["sample"] == name).to_numpy()
        for key in ("X_stalign", "X_stalign_image", "X_stalign_gene", "X_stalign_niche"):
            np.testing.assert_array_equal(disk.obsm[key][rows], section.obsm[key])
        assert section.uns["stalign"]["weights_sha256"] == manifest["model"]["weights_sha256"]
    sd = sta.datasets.load(SPECS[0], data_dir=data_dir)
    sta.tl.embed(sd, show_progress_bar=False)
    rows = (disk.obs["sample"] == "MOB1").to_numpy()
    np.testing.assert_allclose(disk.obsm["X_stalign"][rows], sd.tables["table"].obsm["X_stalign"], atol=1e-5)

    # a rerun skips the sections already written by the same model, and rebuilds the cohort identically
    stamps = {p: os.stat(out / p).st_mtime_ns for p in ("MOB1.h5ad", "MOB2.h5ad")}
    lines.clear()
    again = sta.cohort.embed(SPECS, out, n_domains=5, file_format="h5ad", data_dir=data_dir, progress=lines.append)
    assert [line.split("  ")[1] for line in lines[:2]] == [f"skipped: MOB{i}.h5ad exists, same model" for i in (1, 2)]
    assert {p: os.stat(out / p).st_mtime_ns for p in stamps} == stamps
    np.testing.assert_array_equal(again.obs["stalign_domain"].to_numpy(), cohort.obs["stalign_domain"].to_numpy())
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["status"] for s in manifest["sections"]] == ["skipped", "skipped"]

    # --overwrite recomputes
    lines.clear()
    sta.cohort.embed(SPECS, out, file_format="h5ad", data_dir=data_dir, overwrite=True, progress=lines.append)
    assert "379 spots" in lines[0] and os.stat(out / "MOB1.h5ad").st_mtime_ns != stamps["MOB1.h5ad"]
    assert "stalign_domain" not in ad.read_h5ad(out / "cohort.h5ad").obs  # no --domains this time

    # an output recording another model is never silently replaced
    t = ad.read_h5ad(out / "MOB2.h5ad")
    t.uns["stalign"]["weights_fingerprint"] = "0" * 64
    t.write_h5ad(out / "MOB2.h5ad")
    with pytest.raises(FileExistsError, match=r"MOB2\.h5ad .*--overwrite"):
        sta.cohort.embed(SPECS, out, file_format="h5ad", data_dir=data_dir)


def test_bad_section_is_named_and_keep_going_finishes_the_others(data_dir, tmp_path):
    bad = tmp_path / "broken.h5ad"
    bad.write_text("not an h5ad file")
    out = tmp_path / "cohort"
    specs = [SPECS[0], str(bad), "her2st:NOPE"]
    with pytest.raises(OSError, match=r"Section '.*broken\.h5ad' \(2 of 3\) failed"):
        sta.cohort.embed(specs, out, file_format="h5ad", data_dir=data_dir)
    # the section before the failure is complete; nothing else under a final name
    assert _visible(out) == ["MOB1.h5ad"]

    lines: list[str] = []
    with pytest.warns(UserWarning, match=r"2 of 3 sections failed \(broken, NOPE\)"):
        cohort = sta.cohort.embed(
            specs, out, file_format="h5ad", data_dir=data_dir, keep_going=True, n_domains=3, progress=lines.append
        )
    assert "skipped" in lines[0] and "FAILED" in lines[1] and "FAILED" in lines[2]
    assert _visible(out) == ["MOB1.h5ad", "cohort.h5ad", "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["sample"] for s in manifest["sections"]] == ["MOB1"]
    failures = {f["spec"]: f["error"] for f in manifest["failures"]}
    assert set(failures) == {str(bad), "her2st:NOPE"}
    assert "NOPE" in failures["her2st:NOPE"] and failures[str(bad)].startswith("OSError")
    assert cohort.n_obs == 379 and cohort.obs["stalign_domain"].nunique() == 3


def test_cohort_inputs_checked_before_any_work(data_dir, tmp_path):
    h5ad = tmp_path / "mob1.h5ad"
    sta.io.to_anndata(sta.datasets.stutility_mob("MOB1", data_dir=data_dir)).write_h5ad(h5ad)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"can only be written as \.h5ad.*--format h5ad"):
        sta.cohort.embed([SPECS[1], str(h5ad)], out, data_dir=data_dir)
    assert not out.exists()  # refused before anything is written
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        sta.cohort.embed(SPECS, tmp_path / "file", data_dir=data_dir)
    with pytest.raises(TypeError, match="wrap a single section in a list"):
        sta.cohort.embed(SPECS[0], out, data_dir=data_dir)
    with pytest.raises(ValueError, match="n_domains"):
        sta.cohort.embed(SPECS, out, n_domains=0, data_dir=data_dir)
    with pytest.raises(ValueError, match="format"):
        sta.cohort.embed(SPECS, out, file_format="csv", data_dir=data_dir)


def test_cohort_of_objects_leaves_them_unchanged(data_dir, tmp_path):
    sd = sta.datasets.stutility_mob("MOB2", data_dir=data_dir)
    adata = sta.io.to_anndata(sta.datasets.stutility_mob("MOB1", data_dir=data_dir))
    cohort = sta.cohort.embed({"left": adata, "right": sd}, tmp_path / "c", file_format="h5ad")
    assert list(cohort.obs["sample"].cat.categories) == ["left", "right"]
    assert _visible(tmp_path / "c") == ["cohort.h5ad", "left.h5ad", "manifest.json", "right.h5ad"]
    assert "X_stalign" not in sd.tables["table"].obsm and "X_stalign" not in adata.obsm
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["sections"][0]["spec"] is None
