# %% [markdown]
# # H&E only: domains and expression maps for a slide with no spots
#
# Most H&E slides in an archive never saw a spatial assay. This tutorial opens such a slide, finds its tissue, lays
# pseudo-spots over it in micrometres and gets spatial domains and predicted expression maps from the H&E alone.
#
# The slide is her2st section C5 (HER2+ breast cancer). Its scan is a JPEG; to start from what a scanner writes, we
# first save it as a pyramidal OME-TIFF that records its µm per pixel, as SVS or OME-TIFF files from a scanner do.
# The spots measured on C5 are used only at the end, to put the predicted map next to the measured one.

# %%
import os

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "agg"))
import matplotlib.pyplot as plt
import scanpy as sc
import tifffile

import stalign as sta
from stalign._files import read_image_array

out_dir = os.environ.get("STALIGN_TUTORIAL_OUT", ".")
data_dir = os.environ.get("STALIGN_DATA_DIR", "../shared/data")

# %% [markdown]
# ## A slide file with its scale
#
# C5's scale comes from its ST spot grid (200 µm pitch): about 0.69 µm per pixel. We write the JPEG's pixels as a
# JPEG-compressed, tiled OME-TIFF with three sub-resolutions and `PhysicalSizeX`, the way a scanner stores a slide.

# %%
c5_grid = sta.datasets.her2st(
    "C5", load_image=False
)  # positions and counts only, for the scale
mpp = c5_grid.tables["table"].uns["spatial"]["C5"]["scalefactors"]["microns_per_pixel"]
jpg = next(
    p for p in os.scandir(os.path.join(data_dir, "her2st", "data", "ST-imgs", "C", "C5"))
)
img = read_image_array(jpg.path)
slide = os.path.join(out_dir, "C5.ome.tif")
with tifffile.TiffWriter(slide, bigtiff=True) as tw:
    opts = {"photometric": "rgb", "tile": (512, 512), "compression": "jpeg"}
    tw.write(
        img, subifds=3, metadata={"PhysicalSizeX": mpp, "PhysicalSizeY": mpp}, **opts
    )
    for _ in range(3):
        img = img[::2, ::2]
        tw.write(img, subfiletype=1, **opts)
del img
print(f"{slide}: {os.path.getsize(slide) / 1e6:.0f} MB, {mpp:.4f} µm/px")

# %% [markdown]
# ## Read the slide and tile its tissue
#
# `io.read_image` reads the µm per pixel from the file (OME `PhysicalSizeX`, an SVS's `MPP`, or TIFF resolution tags)
# and keeps the pyramid lazy: only the tiles a window needs are ever decoded. `pp.tile_tissue` finds the tissue on a
# coarse level (Otsu's threshold on saturation, specks removed, holes filled) and keeps the points of a 100 µm
# hexagonal grid whose 100 µm disc is at least half tissue.

# %%
sdata = sta.io.read_image(slide)
print(
    sdata.attrs["stalign"]["microns_per_pixel"],
    sdata.attrs["stalign"]["microns_per_pixel_source"],
)
sta.pp.tile_tissue(sdata, spacing_um=100)
print(sdata)

# %%
ax = sta.pl.tissue_mask(sdata)
ax.figure.savefig(os.path.join(out_dir, "04_tissue_mask.png"), dpi=80)

# %% [markdown]
# ## Domains from the H&E
#
# The tiles form a table like a Visium section's spots, with no genes: `tl.embed` writes the image embedding
# `X_stalign_image` and `tl.domains` clusters it.

# %%
sta.tl.embed(sdata, show_progress_bar=False)
sta.tl.domains(sdata, n_domains=5)
ax = sta.pl.domains(sdata, title="C5: domains from H&E alone")
ax.figure.savefig(os.path.join(out_dir, "04_domains.png"), dpi=80)

# %% [markdown]
# ## Predicted expression maps
#
# Sections C2–C4 of the same patient, with their spots and counts, are the reference. For every tile,
# `tl.predict_expression` retrieves the reference spots closest in the aligned space and averages their expression.

# %%
reference = [sta.datasets.her2st(s) for s in ("C2", "C3", "C4")]
for ref in reference:
    sta.tl.embed(ref, show_progress_bar=False)
genes = ["ERBB2", "KRT19", "COL1A1", "MGP"]
pred = sta.tl.predict_expression(sdata, reference, genes=genes)
print(pred)

# %% [markdown]
# Next to it, the expression measured at C5's own spots (log-normalised), which the prediction never saw. With the
# small bundled model, the predicted maps are coarse; the spots score is in `benchmarks/tiles_quality.md`.

# %%
c5 = sta.datasets.her2st("C5")
measured = c5.tables["table"].copy()
sc.pp.normalize_total(measured, target_sum=1e4)
sc.pp.log1p(measured)
fig, axes = plt.subplots(2, 2, figsize=(10, 10))
for gene, row in zip(["ERBB2", "COL1A1"], axes, strict=True):
    sta.pl.spatial(
        sdata,
        color=gene,
        values=pred,
        cmap="magma",
        ax=row[0],
        title=f"{gene}, predicted on tiles",
    )
    sta.pl.spatial(
        c5,
        color=gene,
        values=measured,
        cmap="magma",
        ax=row[1],
        title=f"{gene}, measured at spots",
    )
fig.tight_layout()
fig.savefig(os.path.join(out_dir, "04_predicted_genes.png"), dpi=70)

# %% [markdown]
# ## A finer map than the assay
#
# Tiles closer than their own size overlap: at 50 µm the map has four times as many points as at 100 µm, finer than
# the 200 µm grid of the ST spots. A second table keeps both.

# %%
sta.pp.tile_tissue(sdata, spacing_um=50, table_key="tiles50")
sta.tl.embed(sdata, table_key="tiles50", show_progress_bar=False)
fine = sta.tl.predict_expression(
    sdata.tables["tiles50"], reference, genes=genes
)  # a table is a query too
print(
    sdata.tables["table"].n_obs,
    "tiles at 100 µm;",
    sdata.tables["tiles50"].n_obs,
    "tiles at 50 µm",
)
ax = sta.pl.spatial(
    sdata,
    color="ERBB2",
    values=fine,
    table_key="tiles50",
    cmap="magma",
    spot_scale=0.5,
    title="ERBB2 on 50 µm tiles",
)
ax.figure.savefig(os.path.join(out_dir, "04_erbb2_50um.png"), dpi=80)
