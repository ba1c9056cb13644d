# %% [markdown]
# # Zero-shot spatial domains on human DLPFC (Visium)
#
# Embed DLPFC section 151674 with the bundled `stalign-base` weights and cluster the fused embedding into seven
# domains, without any label or fine-tuning. The manual layer annotation (L1–L6, WM) is used only to score the
# result. 151674 is a development-evaluation section: the bundled model never saw it.
#
# Run as a script (`python tutorials/01_dlpfc_domains.py`) or open it as a notebook with jupytext.

# %%
import os

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "agg"))
import matplotlib.pyplot as plt
from sklearn.metrics import adjusted_rand_score

import stalign as sta

out_dir = os.environ.get("STALIGN_TUTORIAL_OUT", ".")

# %% [markdown]
# Read the section: Space Ranger positions and scale factors, the lowres H&E, raw counts (5,000 HVGs, Ensembl ids
# mapped to symbols) and the manual layers in `obs["annotation"]`.

# %%
sdata = sta.datasets.dlpfc("151674")
table = sdata.tables["table"]
print(table)

# %% [markdown]
# Embed every spot. Crops of 100 µm (spot) and 200 µm (niche) are cut from the image level closest to the model's
# resolution; niche expression is computed on the side.

# %%
sta.tl.embed(sdata, show_progress_bar=False)
print({k: v.shape for k, v in table.obsm.items() if k.startswith("X_stalign")})

# %% [markdown]
# Seven zero-shot domains from the fused embedding, and from the H&E-only embedding for comparison.

# %%
sta.tl.domains(sdata, n_domains=7)
sta.tl.domains(sdata, n_domains=7, use_rep="X_stalign_image", key_added="image_domain")
labelled = table.obs["annotation"].notna().to_numpy()
for key in ("stalign_domain", "image_domain"):
    ari = adjusted_rand_score(table.obs["annotation"][labelled], table.obs[key][labelled])
    print(f"{key}: ARI vs manual layers = {ari:.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(18, 6))
sta.pl.spatial(sdata, color="annotation", ax=axes[0], title="manual layers")
sta.pl.domains(sdata, ax=axes[1], title="stalign domains (fused)")
sta.pl.domains(sdata, key="image_domain", ax=axes[2], title="stalign domains (H&E only)")
fig.tight_layout()
fig.savefig(os.path.join(out_dir, "01_dlpfc_domains.png"), dpi=80)
