# %% [markdown]
# # Gene expression from H&E alone (her2st, patient C)
#
# Predict the expression of section C6 from its H&E image only, with sections C2–C5 of the same patient as the
# reference. The held-out section's counts are used only to score the prediction (Pearson r per gene over the
# reference's top-50 highly variable genes).

# %%
import os

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "agg"))
import numpy as np
import scanpy as sc

import stalign as sta

out_dir = os.environ.get("STALIGN_TUTORIAL_OUT", ".")

# %%
reference = [sta.datasets.her2st(s) for s in ("C2", "C3", "C4", "C5")]
query = sta.datasets.her2st("C6")
for sd in [*reference, query]:
    sta.tl.embed(sd, show_progress_bar=False)

# %%
pred = sta.tl.predict_expression(query, reference, n_top_genes=50)
print(pred)

# %% [markdown]
# Score against the measured (log-normalised) expression of C6.

# %%
truth = query.tables["table"].copy()
sc.pp.normalize_total(truth, target_sum=1e4)
sc.pp.log1p(truth)
genes = [g for g in pred.var_names if g in truth.var_names]
t = np.asarray(truth[pred.obs_names, genes].X.todense())
p = np.asarray(pred[:, genes].X)
r = [
    np.corrcoef(p[:, j], t[:, j])[0, 1]
    for j in range(len(genes))
    if t[:, j].std() > 0 and p[:, j].std() > 0
]
mse = np.mean((p - t) ** 2)
print(f"mean Pearson r over {len(r)} genes: {np.mean(r):.3f}; MSE {mse:.3f}")

# %%
best = genes[
    int(np.nanargmax([np.corrcoef(p[:, j], t[:, j])[0, 1] for j in range(len(genes))]))
]
ax = sta.pl.spatial(query, color=best, values=pred, title=f"{best}, predicted from H&E")
ax.figure.savefig(os.path.join(out_dir, "03_predicted_gene.png"), dpi=80)
