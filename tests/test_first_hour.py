"""What a new scanpy user meets first (issue 22): the data folder, messages in the user's words, a quiet run.

Fast tests on the synthetic section, plus a few on the real data; the whole first hour, run as a new user would
from another folder, is ``tests/test_new_user.py``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

import stalign as sta
from stalign._utils import write_data
from stalign.cli import cli_wording, main

# ---------------------------------------------------------------------------------------------- the data folder


def test_relative_data_dir_that_resolves_is_read(data_dir, monkeypatch):
    monkeypatch.chdir(data_dir.parent)
    monkeypatch.setenv("STALIGN_DATA_DIR", data_dir.name)  # relative to where the user stands
    sdata = sta.datasets.stutility_mob("MOB1")
    assert sdata.tables["table"].n_obs == 379


def test_relative_data_dir_from_another_folder_says_what_to_set(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STALIGN_DATA_DIR", "../shared/data")  # the README's old line, from another folder
    with pytest.raises(FileNotFoundError, match=r"relative path.*current folder.*set an absolute one") as e:
        sta.datasets.stutility_mob("MOB1")
    assert "$STALIGN_DATA_DIR" in str(e.value) and 'export STALIGN_DATA_DIR="$PWD/../shared/data"' in str(e.value)
    assert main(["info", "stutility_mob:MOB1"]) == 2
    assert "set an absolute one" in capsys.readouterr().err


def test_no_data_dir_says_what_to_set(monkeypatch):
    monkeypatch.delenv("STALIGN_DATA_DIR")
    with pytest.raises(ValueError, match=r"absolute path of the folder"):
        sta.datasets.stutility_mob("MOB1")


# ------------------------------------------------------------------------------- messages in the user's words


def test_cli_wording_names_flags_python_keeps_arguments():
    flags = {"data_dir": "--data-dir", "microns_per_pixel": "--microns-per-pixel"}
    assert cli_wording("pass microns_per_pixel= (e.g. 0.25)", flags) == "pass --microns-per-pixel (e.g. 0.25)"
    assert cli_wording("pass `data_dir=` or set stalign.settings.data_dir", flags) == (
        "pass `--data-dir` or set stalign.settings.data_dir"
    )
    assert (
        cli_wording("Unknown 'x' under data_dir='/d'; available", flags)
        == "Unknown 'x' under --data-dir '/d'; available"
    )
    assert cli_wording("tile_um=3 is fine", flags) == "tile_um=3 is fine"  # not a flag of this command


def test_jpeg_without_scale_names_the_flag_on_the_cli_and_the_argument_in_python(data_dir, capsys):
    jpg = data_dir / "stahl_mob_splotch" / "splotch" / "tutorials" / "olfactory_bulb_st" / "images" / "01.jpg"
    with pytest.raises(ValueError, match=r"pass microns_per_pixel="):
        sta.io.read_image(jpg)
    for cmd in ("embed", "info"):
        assert main([cmd, str(jpg)]) == 2
        err = capsys.readouterr().err
        assert "--microns-per-pixel" in err and "microns_per_pixel" not in err, err


def test_missing_data_folder_names_the_flag(tmp_path, capsys):
    assert main(["info", "dlpfc:151673", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "data_dir" not in err, err


# ----------------------------------------------------------------------------------------------- a quiet run


def test_writing_zarr_warns_nothing_and_keeps_a_users_sharding_choice(toy_sdata, tmp_path):
    import anndata

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # Python's default filters: only library deprecations stay hidden
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        write_data(toy_sdata, tmp_path / "toy.zarr")
    assert not [str(w.message) for w in caught], [str(w.message) for w in caught]
    assert sta.io.load(tmp_path / "toy.zarr").tables["table"].n_obs == toy_sdata.tables["table"].n_obs
    with anndata.settings.override(auto_shard_zarr_v3=False):  # a choice the user made stays theirs
        write_data(toy_sdata, tmp_path / "toy2.zarr")
        assert anndata.settings.auto_shard_zarr_v3 is False


def test_tissue_mask_reads_back_without_ome_zarr_notes(data_dir, tmp_path, caplog):
    jpg = data_dir / "stahl_mob_splotch" / "splotch" / "tutorials" / "olfactory_bulb_st" / "images" / "01.jpg"
    slide = sta.io.read_image(jpg, microns_per_pixel=6200 / 2318)
    sta.pp.tile_tissue(slide, spacing_um=400)
    write_data(slide, tmp_path / "slide.zarr")
    with caplog.at_level(logging.DEBUG):
        back = sta.io.load(tmp_path / "slide.zarr")
    assert list(back.labels) == ["01_tiles_tissue"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    other = logging.getLogger("ome_zarr.reader")
    with caplog.at_level(logging.WARNING):  # the filter is gone afterwards: ome-zarr's other notes still show
        other.warning("no parent found for %s", "x")
    assert "no parent found" in caplog.text


def test_progress_bar_is_the_text_bar_without_ipywidgets(monkeypatch):
    import importlib.util

    import tqdm.std

    from stalign._utils import progress_bar

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm.auto's "IProgress not found" would raise here
        bar = progress_bar(range(3), desc="x", disable=True)
    assert type(bar) is tqdm.std.tqdm


def test_verbosity_works_like_scanpys(caplog):
    logger = logging.getLogger("stalign.io._st")
    old = sta.settings.verbosity
    try:
        assert old == 1  # warnings only, as scanpy
        sta.settings.verbosity = "info"
        assert sta.settings.verbosity == 2
        logger.info("a fact")
        logger.debug("a detail")
        assert "a fact" in caplog.text and "a detail" not in caplog.text
        sta.settings.verbosity = 4
        assert logging.getLogger("stalign").getEffectiveLevel() == logging.DEBUG
        with pytest.raises(ValueError, match="verbosity"):
            sta.settings.verbosity = "chatty"
    finally:
        sta.settings.verbosity = old


def test_ensembl_ids_without_symbol_are_reported_once(caplog):
    ids = ["ENSG00000197971", "ENSG99999999999"]
    with caplog.at_level(logging.INFO, logger="stalign"):
        mapped = sta.pp.ensembl_to_symbol(ids)  # the reader's step: says it
        sta.pp.to_vocabulary_symbols(mapped)  # every later step: silent
        sta.pp.to_vocabulary_symbols(mapped)
    assert caplog.text.count("have no symbol") == 1


def test_a_real_warning_from_the_users_data_still_shows(toy_adata, toy_model):
    from scipy import sparse

    a = toy_adata.copy()
    X = a.X.toarray()
    X[:3] = 0  # three spots with no counts: the user's data, the user's warning
    a.X = sparse.csr_matrix(X)
    with pytest.warns(UserWarning, match="3 of 60 spots"):
        sta.tl.embed(a, model=toy_model, device="cpu", show_progress_bar=False)


# ------------------------------------------------------------------------------------------ what degrades


def test_no_image_warns_once_naming_the_element_and_the_skipped_embeddings(toy_adata, toy_sdata, toy_model):
    from spatialdata import SpatialData

    a = toy_adata.copy()
    a.uns["spatial"]["toy"]["images"] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sta.tl.embed(a, model=toy_model, device="cpu", show_progress_bar=False)
    msgs = [str(w.message) for w in caught if "no H&E image" in str(w.message)]
    assert len(msgs) == 1, [str(w.message) for w in caught]
    assert "uns['spatial']['toy']['images']" in msgs[0]
    assert "'X_stalign_image'" in msgs[0] and "'X_stalign_niche'" in msgs[0]
    assert "X_stalign_image" not in a.obsm and "X_stalign_gene" in a.obsm
    sd = SpatialData(shapes=dict(toy_sdata.shapes), tables={"table": toy_sdata.tables["table"].copy()})
    with pytest.warns(UserWarning, match=r"an image element in `sdata.images` is missing") as rec:
        sta.tl.embed(sd, model=toy_model, device="cpu", show_progress_bar=False, key_added="X_s")
    assert "'X_s_image'" in str(rec[0].message)


def test_no_coordinates_names_obsm_spatial_or_the_shapes_element(toy_adata, toy_sdata, toy_model):
    from spatialdata import SpatialData

    a = toy_adata.copy()
    del a.obsm["spatial"]
    with pytest.raises(KeyError, match=r"The AnnData has no `obsm\['spatial'\]`: no spot coordinates"):
        sta.tl.embed(a, model=toy_model, device="cpu", show_progress_bar=False)
    table = toy_sdata.tables["table"].copy()
    del table.obsm["spatial"]
    (region,) = toy_sdata.shapes
    sd = SpatialData(images=dict(toy_sdata.images), shapes=dict(toy_sdata.shapes), tables={"table": table})
    with pytest.raises(KeyError, match=rf"shapes element sdata.shapes\['{region}'\]"):
        sta.tl.embed(sd, model=toy_model, device="cpu", show_progress_bar=False)
    sd = SpatialData(images=dict(toy_sdata.images), tables={"table": table})
    with pytest.raises(KeyError, match=rf"the shapes element '{region}' it annotates is missing"):
        sta.tl.embed(sd, model=toy_model, device="cpu", show_progress_bar=False)
    assert "spatial" in toy_sdata.tables["table"].obsm  # the user's objects are left as they were


def test_tables_carry_images_from_every_writer(toy_sdata, toy_adata, toy_embedded):
    table = toy_sdata.tables["table"]  # the reader's
    for t in (table, toy_adata, toy_embedded):
        entry = t.uns["spatial"]["toy"]
        assert set(entry["images"]) == {"hires", "lowres"}
        for res in ("hires", "lowres"):
            h, w = entry["images"][res].shape[:2]
            assert h > 0 and w > 0
            assert f"tissue_{res}_scalef" in entry["scalefactors"]
    cohort = sta.io.concat([toy_sdata, toy_adata], keys=["a", "b"], counts=False)
    assert cohort.uns["spatial"]["a"]["images"] == {}  # images=False: scalefactors only, still plottable


@pytest.mark.parametrize("n", [3, 7])
def test_domain_colours_are_scanpys_default(toy_embedded, n):
    import scanpy as sc

    a = toy_embedded.copy()
    sta.tl.domains(a, n_domains=n, use_rep="X_stalign")
    ours = list(a.uns["stalign_domain_colors"])
    del a.uns["stalign_domain_colors"]
    sc.pl.embedding(a, basis="spatial", color="stalign_domain", show=False)  # scanpy chooses its default
    assert [c.lower() for c in a.uns["stalign_domain_colors"]] == ours


@pytest.mark.parametrize(("n", "palette"), [(15, "default_20"), (25, "default_28"), (60, "default_102")])
def test_many_categories_get_scanpys_larger_palettes(n, palette):
    from matplotlib.colors import to_hex
    from scanpy.plotting import palettes

    from stalign._utils import category_colors

    colours = category_colors(n)
    assert colours == [to_hex(c) for c in getattr(palettes, palette)[:n]]
    assert len(set(colours)) == n  # distinct colours


def test_readme_sets_an_absolute_data_folder():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.startswith("export STALIGN_DATA_DIR=")]
    assert lines == ['export STALIGN_DATA_DIR="$PWD/../shared/data"'], lines
