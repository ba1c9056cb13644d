# %% [markdown]
# # Zero-shot annotation from marker genes
#
# Each label is described by a few marker genes. With expression, `tl.annotate` scores every label from its markers
# on expression averaged over 150 µm (z-scored per label, like `scanpy.tl.score_genes`), then spreads the scores over
# the nearest-neighbour graph of the spots' smoothed embedding, so spots with weak or noisy markers follow the spots
# they resemble. On an H&E-only section the markers become a pseudo-spot expression profile embedded by the gene
# encoder, and each spot is scored by how close its H&E embedding is. No label is used for training or tuning; the
# manual annotation only scores the result.

# %%
import os

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "agg"))
import matplotlib.pyplot as plt
from sklearn.metrics import accuracy_score, f1_score

import stalign as sta

out_dir = os.environ.get("STALIGN_TUTORIAL_OUT", ".")

# %% [markdown]
# ## DLPFC: grey matter vs white matter
# Markers from the literature: white matter is myelin (MBP, PLP1, MOBP); grey matter is neuronal (SNAP25, SYT1,
# NRGN).

# %%
sdata = sta.datasets.dlpfc("151674")
table = sdata.tables["table"]
markers = {
    "WM": ["MBP", "PLP1", "MOBP", "MAG"],
    "GM": ["SNAP25", "SYT1", "NRGN", "CALM1"],
}
sta.tl.embed(sdata, show_progress_bar=False)
sta.tl.annotate(sdata, markers=markers)
truth = table.obs["annotation"].astype(str).map(lambda s: "WM" if s == "WM" else "GM")
ok = table.obs["annotation"].notna().to_numpy()
pred = table.obs["stalign_label"].astype(str)
print(
    "DLPFC GM/WM accuracy",
    round(accuracy_score(truth[ok], pred[ok]), 3),
    "macro-F1",
    round(f1_score(truth[ok], pred[ok], average="macro"), 3),
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 6))
sta.pl.spatial(sdata, color="annotation", ax=axes[0], title="manual layers")
sta.pl.labels(sdata, ax=axes[1], title="marker prompts")
fig.tight_layout()
fig.savefig(os.path.join(out_dir, "02_dlpfc_labels.png"), dpi=80)

# %% [markdown]
# ## HER2+ breast cancer (her2st C6): tumour vs stroma from H&E alone
# The section's counts are dropped, as for a slide with no assay: the marker prompts are matched to the H&E
# embedding.

# %%
c6 = sta.datasets.her2st("C6")
c6.tables["table"] = c6.tables["table"][:, []].copy()  # H&E only: no genes
sta.tl.embed(c6, show_progress_bar=False)
tumour_markers = {
    "invasive cancer": ["ERBB2", "KRT19", "KRT8", "EPCAM"],
    "connective tissue": ["COL1A1", "COL1A2", "DCN", "LUM"],
    "immune infiltrate": ["PTPRC", "CD74", "IGKC", "CD3E"],
}
sta.tl.annotate(c6, markers=tumour_markers, use="image", key_added="he_label")
print(c6.tables["table"].obs["he_label"].value_counts())
ax = sta.pl.labels(c6, key="he_label", title="her2st C6: prompts on H&E only")
ax.figure.savefig(os.path.join(out_dir, "02_her2st_labels.png"), dpi=80)
