"""Determinism (#7.4): tl.embed gives the same embeddings across batch sizes, num_workers and repeated runs.

Real sections, the bundled weights: a 300-spot subset of DLPFC 151673 (dense Visium, lowres image) and her2st C2
(legacy ST on a 9,911 x 9,274 full-resolution JPG, crops supersampled from a pyramid level).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stalign as sta

TOL = 1e-5
KEYS = ("X_stalign", "X_stalign_image", "X_stalign_gene", "X_stalign_niche")


def _embed(sdata, *, batch_size, num_workers=0, seed=0):
    torch.manual_seed(seed)
    out = sta.tl.embed(
        sdata, model="stalign-base", batch_size=batch_size, num_workers=num_workers, show_progress_bar=False,
        copy=True, device="cpu",
    )  # fmt: skip
    return {k: out.tables["table"].obsm[k].copy() for k in KEYS}


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return {k: float(np.abs(a[k] - b[k]).max()) for k in a}


@pytest.fixture(scope="module", params=["dlpfc_151673_300", "her2st_c2"])
def section(request, dlpfc_full, her2st_c2, make_subset):
    if request.param == "her2st_c2":
        return her2st_c2
    return make_subset(dlpfc_full, 300, seed=1)


def test_embeddings_do_not_depend_on_batching_workers_or_reruns(section):
    n = section.tables["table"].n_obs
    ref = _embed(section, batch_size=100)
    for k in KEYS:  # the comparison has power: every spot embedded, embeddings differ between spots
        assert ref[k].shape == (n, 128) and np.isfinite(ref[k]).all()
        assert np.abs(ref[k] - ref[k].mean(axis=0)).max() > 0.05
    runs = {
        "batch_size=32": _embed(section, batch_size=32),
        "batch_size=256": _embed(section, batch_size=256),
        "num_workers=2": _embed(section, batch_size=100, num_workers=2),
        "same seed again": _embed(section, batch_size=100),
    }
    diffs = {name: _max_diff(ref, emb) for name, emb in runs.items()}
    worst = {name: max(d.values()) for name, d in diffs.items()}
    assert max(worst.values()) <= TOL, diffs
