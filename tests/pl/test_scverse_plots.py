"""Results plot as they are in scanpy, squidpy and spatialdata-plot (issue 22).

Real sections, the bundled weights: a Visium section (DLPFC 151673, 500 of its spots), a legacy ST section
(stutility MOB1) and an H&E-only slide (Splotch MOB 01, a JPEG tiled every 200 µm). Each is embedded and clustered,
then drawn (1) from its table by ``sc.pl.spatial`` and ``sq.pl.spatial_scatter``, in memory and after
``io.to_anndata``, and (2) from the SpatialData written as ``.zarr`` and read back, by spatialdata-plot. The domain
colours are scanpy's default palette, and every library draws them alike.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex

import stalign as sta
from stalign._section import get_section

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::PendingDeprecationWarning")

KEY = "stalign_domain"
#: a Visium section, a legacy ST section, an H&E-only slide tiled into pseudo-spots
SECTIONS = ("visium", "legacy_st", "he_tiles")


def _subset(sdata, n: int):
    """``n`` spots of a section, with the spot circles they annotate (a SpatialData spatialdata-plot can join)."""
    from spatialdata import SpatialData

    t = sdata.tables["table"]
    keep = np.sort(np.random.default_rng(0).choice(t.n_obs, size=n, replace=False))
    table = t[keep].copy()
    (region,) = table.obs["region"].unique()
    shapes = sdata.shapes[region]
    return SpatialData(
        images=dict(sdata.images),
        shapes={region: shapes.loc[table.obs["spot_id"].to_numpy()]},
        tables={"table": table},
    )


def _read(kind: str, data_dir):
    if kind == "visium":
        return _subset(sta.datasets.dlpfc("151673", data_dir=data_dir), 500)
    if kind == "legacy_st":
        return sta.datasets.stutility_mob("MOB1", data_dir=data_dir)
    jpg = data_dir / "stahl_mob_splotch" / "splotch" / "tutorials" / "olfactory_bulb_st" / "images" / "01.jpg"
    slide = sta.io.read_image(jpg, microns_per_pixel=6200 / 2318)
    sta.pp.tile_tissue(slide, spacing_um=200)
    return slide


@pytest.fixture(scope="module", params=SECTIONS)
def clustered(request, data_dir):
    """``(kind, sdata)``: a section embedded with the bundled weights and clustered into 5 domains."""
    sdata = _read(request.param, data_dir)
    sta.tl.embed(sdata, show_progress_bar=False)
    sta.tl.domains(sdata, n_domains=5)
    return request.param, sdata


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _hex(colours) -> list[str]:
    return [to_hex(c) for c in colours]


def _spot_colours(ax) -> set[str]:
    """The colours of the spots drawn in ``ax`` (whatever collection type the library draws them with)."""
    out = set()
    for c in ax.collections:
        out |= {to_hex(f, keep_alpha=False) for f in np.atleast_2d(c.get_facecolor()) if len(f) and f[3] > 0}
    return out


def test_table_in_memory_carries_images_matching_scalefactors(clustered):
    kind, sdata = clustered
    table = sdata.tables["table"]
    (lib,) = table.uns["spatial"]
    entry = table.uns["spatial"][lib]
    sec = sta.io.to_anndata(sdata)  # the same convention from the converter
    assert set(entry["images"]) == {"hires", "lowres"} == set(sec.uns["spatial"][lib]["images"])
    finest = get_section(sdata).images[0]
    full_h, full_w = (s * finest.fullres_per_px for s in finest.shape)  # the full-resolution frame
    for res, side in (("hires", 2000), ("lowres", 600)):
        img = entry["images"][res]
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert max(img.shape[:2]) <= side  # a small level, never a large full-resolution image
        scalef = entry["scalefactors"][f"tissue_{res}_scalef"]
        # the image spans the full-resolution frame at its scale factor, so the spots land where they are
        assert img.shape[0] == pytest.approx(full_h * scalef, abs=1.5)
        assert img.shape[1] == pytest.approx(full_w * scalef, abs=1.5)
    if kind == "he_tiles":  # a 2318x2483 JPEG: both images are downsampled pyramid levels
        assert max(entry["images"]["hires"].shape[:2]) < 2483 and max(entry["images"]["lowres"].shape[:2]) <= 600


def test_scanpy_and_squidpy_plot_the_table_as_it_is(clustered):
    import scanpy as sc
    import squidpy as sq

    _, sdata = clustered
    table = sdata.tables["table"]
    palette = list(table.uns[f"{KEY}_colors"])
    for adata in (table, sta.io.to_anndata(sdata)):
        ax = sc.pl.spatial(adata, color=KEY, show=False)[0]
        assert len(ax.images) == 1  # the H&E underneath
        assert _spot_colours(ax) <= set(palette) and len(_spot_colours(ax)) == len(palette)
        sq.pl.spatial_scatter(adata, color=KEY)
        ax = plt.gcf().axes[0]
        assert len(ax.images) == 1
        assert _spot_colours(ax) <= set(palette) and len(_spot_colours(ax)) == len(palette)
        plt.close("all")
    assert list(table.uns[f"{KEY}_colors"]) == palette  # neither library replaced stalign's colours


def test_squidpy_graph_and_scanpy_tools_run_on_the_table(clustered):
    import scanpy as sc
    import squidpy as sq

    _, sdata = clustered
    adata = sdata.tables["table"].copy()
    sq.gr.spatial_neighbors(adata)
    sq.gr.nhood_enrichment(adata, cluster_key=KEY, n_perms=10, seed=0, show_progress_bar=False)
    assert adata.uns[f"{KEY}_nhood_enrichment"]["zscore"].shape == (5, 5)
    sc.tl.dendrogram(adata, groupby=KEY, use_rep="X_stalign")
    assert adata.uns[f"dendrogram_{KEY}"]["categories_ordered"]


def test_stalign_scanpy_and_squidpy_share_the_domain_colours(clustered):
    import scanpy as sc

    _, sdata = clustered
    table = sdata.tables["table"]
    palette = _hex(table.uns[f"{KEY}_colors"])
    fresh = table.copy()
    del fresh.uns[f"{KEY}_colors"]
    sc.pl.spatial(fresh, color=KEY, show=False)  # scanpy picks its default palette when none is stored
    assert _hex(fresh.uns[f"{KEY}_colors"]) == palette
    ax = sta.pl.domains(sdata, show=False)
    legend = {t.get_text(): to_hex(h.get_color()) for t, h in zip(ax.get_legend().get_texts(),
                                                                  ax.get_legend().legend_handles, strict=True)}  # fmt: skip
    assert legend == dict(zip(table.obs[KEY].cat.categories, palette, strict=True))


def test_written_spatialdata_renders_in_spatialdata_plot(clustered, tmp_path):
    import spatialdata_plot  # noqa: F401 - registers the .pl accessor

    kind, sdata = clustered
    out = tmp_path / f"{kind}.zarr"
    from stalign._utils import write_data

    write_data(sdata, out)
    back = sta.io.load(out)
    palette = set(_hex(back.tables["table"].uns[f"{KEY}_colors"]))
    fig, ax = plt.subplots()
    back.pl.render_images().pl.render_shapes(color=KEY).pl.show(ax=ax)
    assert len(ax.images) >= 1  # the H&E
    assert _spot_colours(ax) and _spot_colours(ax) <= palette
    # the zarr's table is itself a scanpy/squidpy table
    import scanpy as sc

    ax = sc.pl.spatial(back.tables["table"], color=KEY, show=False)[0]
    assert len(ax.images) == 1
