"""Shared inputs of the reliability tests: small real sections (loaded once) and a tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

GENES_EXTRA = ["ERBB2", "KRT19", "COL1A1", "DCN"]


@pytest.fixture(scope="session")
def dlpfc_full(data_dir):
    import stalign as sta

    return sta.io.dlpfc("151673", data_dir=data_dir)


def subset_sdata(sdata, n, *, seed=0):
    """A SpatialData sharing the (read-only) image and shapes, with a copied table of ``n`` random spots."""
    from spatialdata import SpatialData

    t = sdata.tables["table"]
    keep = np.sort(np.random.default_rng(seed).choice(t.n_obs, size=n, replace=False))
    return SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": t[keep].copy()})


@pytest.fixture(scope="session")
def make_subset():
    """:func:`subset_sdata`, as a fixture (``--import-mode=importlib`` cannot import conftest)."""
    return subset_sdata


@pytest.fixture(scope="session")
def her2st_c2(data_dir):
    import stalign as sta

    return sta.io.her2st("C2", data_dir=data_dir)


@pytest.fixture(scope="session")
def mob1(data_dir):
    import stalign as sta

    return sta.io.stutility_mob("MOB1", data_dir=data_dir)


@pytest.fixture(scope="session")
def tiny_model(dlpfc_full):
    """A small random-init model over 300 DLPFC genes (fast on CPU)."""
    from stalign.models import STAlign, STAlignConfig

    torch.manual_seed(0)
    genes = list(dict.fromkeys([*dlpfc_full.tables["table"].var_names[:300], *GENES_EXTRA]))
    cfg = STAlignConfig.base(
        genes,
        spot_size=16,
        niche_size=16,
        spot_encoder_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8},
        niche_encoder_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8},
        n_tokens=2,
        token_dim=16,
        n_heads=2,
        gene_dim=16,
        embed_dim=16,
    )
    return STAlign(cfg).eval()
