# %% [markdown]
# # Visium HD and Xenium: bins and cells through the same µm API
#
# stalign's geometry is in micrometres, so one model serves Visium spots, Visium HD bins and Xenium cells: a bin or
# a cell gets the 100 µm spot crop and the 200 µm niche around it, like a spot. What the model has *seen* are 55 µm
# Visium spots (and 100 µm legacy ST spots) with the counts of the whole spot, so bins and cells are first summed
# over a spot's disc: `pp.pseudospots` lays Visium-like pseudo-spots over them and keeps the map back.
#
# This tutorial reads a real Xenium output (DAPI only), embeds 200 real Xenium lung cells with their H&E, reads a
# real Visium HD folder, and maps a Visium HD slide made from a real Visium section (DLPFC 151673, whose counts are
# split into 8 µm bins) with pseudo-spots.

# %%
import os

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "agg"))
import anndata as ad
import numpy as np
from PIL import Image
from scipy import sparse

import stalign as sta

out_dir = os.environ.get("STALIGN_TUTORIAL_OUT", ".")
data_dir = os.environ.get("STALIGN_DATA_DIR", "../shared/data")

# %% [markdown]
# ## A Xenium output folder
#
# `io.read_xenium` reads the folder with spatialdata-io's `xenium` reader (cells, polygons, the morphology image)
# and records what stalign needs: each cell's centroid in image pixels and the µm per pixel from
# `experiment.xenium`. This tiny 10x test run of mouse ileum has 23 cells and a DAPI image only. DAPI is not H&E:
# the model's image encoder never reads it, and `tl.embed` says once that the cells are embedded from genes alone.

# %%
ileum = sta.io.read_xenium(
    os.path.join(
        data_dir,
        "xenium_insitupy_ileum",
        "tests",
        "data",
        "Xenium_Prime_Mouse_Ileum_tiny_outs",
    )
)
print(ileum)
sta.tl.embed(ileum, show_progress_bar=False)
print(sorted(ileum.tables["table"].obsm))

# %% [markdown]
# ## 200 Xenium cells with their H&E
#
# HEST sample NCBI858 (human lung, pulmonary fibrosis; CC BY-NC-SA 4.0) comes as an AnnData of 200 cells and a
# JPEG of the H&E at 2.125 µm per pixel (HEST's full resolution downsampled 10 times). In scanpy's convention,
# `obsm["spatial"]` holds each cell's (x, y) in image pixels (here `x_pixel` is the image *row*), and
# `uns["spatial"][library]` the image and its scale factors; `microns_per_pixel` tells stalign the µm scale.

# %%
root = os.path.join(data_dir, "xenium_deepspot_ncbi858", "example_data", "data")
cells = ad.read_h5ad(os.path.join(root, "h5ad", "NCBI858.h5ad"))
cells.X = sparse.csr_matrix(cells.X.astype(np.float32))
cells.obsm["spatial"] = cells.obs[["y_pixel", "x_pixel"]].to_numpy()  # (column, row)
he = np.asarray(Image.open(os.path.join(root, "image", "NCBI858.jpg")).convert("RGB"))
cells.uns["spatial"] = {
    "NCBI858": {
        "images": {"hires": he},
        "scalefactors": {"tissue_hires_scalef": 1.0, "microns_per_pixel": 2.125},
    }
}
print(cells)

# %% [markdown]
# Each cell is embedded like a spot: its 100 µm H&E crop and 200 µm niche, its counts and its neighbourhood's
# (every cell within 110 µm). The 338-gene panel covers a small part of the model's vocabulary, so the H&E carries
# much of the signal. Four domains, smoothed over 100 µm:

# %%
sta.tl.embed(cells, show_progress_bar=False)
sta.tl.domains(cells, n_domains=4, smooth_um=100)
print(cells.obs["stalign_domain"].value_counts())
print(
    cells.to_df()
    .groupby(cells.obs["stalign_domain"].to_numpy())[
        ["SFTPC", "COL1A1", "PTGDS", "HLA-DRA"]
    ]
    .mean()
)
ax = sta.pl.domains(cells, title="NCBI858: domains of 200 cells")
ax.figure.savefig(os.path.join(out_dir, "05_ncbi858_domains.png"), dpi=80)

# %% [markdown]
# ## A Visium HD folder
#
# `io.read_visium_hd` reads one bin size of a Space Ranger HD output: the `outs` folder (with spatialdata-io's
# `visium_hd` reader when `feature_slice.h5` is there) or one `binned_outputs/square_XXXum` folder on its own, like
# this real 2 µm folder of a mouse brain (10 bins, kept from 10x's public dataset with all-zero counts). The µm per
# pixel is Space Ranger's; `pp.bin` sums bins into coarser ones.

# %%
hd_outs = os.path.join(data_dir, "visium_hd_visiumio", "inst", "extdata")
tiny = sta.io.read_visium_hd(hd_outs, bin_size_um=2)
sta.pp.bin(tiny, bin_um=8)
print(tiny.tables["table"].uns["spatial"]["extdata"]["scalefactors"]["microns_per_pixel"])
print(tiny.tables["square_008um"].obs)

# %% [markdown]
# ## A Visium HD slide made from a real section
#
# For a whole slide we turn DLPFC 151673 (Visium, real counts, manual layers) into Visium HD: every count of a spot
# goes to one of the 8 µm bins inside its 55 µm disc, and the bins are written in the Space Ranger HD layout with
# the section's H&E. `benchmarks/hd_consistency.py` checks on this slide that pseudo-spots at the original spot
# centres embed exactly as the spots do.

# %%
import tempfile

from stalign.io._visium_hd import write_visium_as_hd

visium = sta.datasets.dlpfc("151673")
outs = write_visium_as_hd(visium, os.path.join(tempfile.mkdtemp(), "outs"), bin_um=8)
hd = sta.io.read_visium_hd(outs, bin_size_um=8, dataset_id="151673")
print(hd.tables["table"])

# %% [markdown]
# 100 µm pseudo-spots over the bins (55 µm discs, Visium's geometry) are a table like a Visium section's, and
# `tl.embed` / `tl.domains` work on it. Every bin keeps its nearest pseudo-spot (`obs["pseudospots"]`; the sparse
# map `obsm["pseudospots"]` says which bins each pseudo-spot sums), so the domains go back to the bins.

# %%
sta.pp.pseudospots(hd, spacing_um=100)
sta.tl.embed(hd, table_key="pseudospots", show_progress_bar=False)
ps = hd.tables["pseudospots"]
sta.tl.domains(ps, n_domains=7)
bins = hd.tables["table"]
bins.obs["stalign_domain"] = (
    ps.obs["stalign_domain"].reindex(bins.obs["pseudospots"].astype(str)).to_numpy()
)
summed = np.asarray(bins.obsm["pseudospots"].sum(1)).ravel() > 0
with_domain = bins.obs["stalign_domain"].notna().mean()
print(
    f"{ps.n_obs} pseudo-spots sum {summed.mean():.0%} of the bins; "
    f"{with_domain:.0%} get a domain"
)
ax = sta.pl.domains(
    hd, table_key="pseudospots", title="DLPFC 151673 as Visium HD: 100 µm pseudo-spots"
)
ax.figure.savefig(os.path.join(out_dir, "05_hd_pseudospot_domains.png"), dpi=80)
