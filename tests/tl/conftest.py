from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def dlpfc73(data_dir):
    import stalign as sta

    return sta.datasets.dlpfc("151673", data_dir=data_dir)


@pytest.fixture(scope="session")
def tiny_model(dlpfc73):
    """A small random-init model over the DLPFC genes (the tl API is exercised before real weights exist)."""
    from stalign.models import STAlign, STAlignConfig

    torch.manual_seed(0)
    genes = list(dict.fromkeys([*dlpfc73.tables["table"].var_names[:1500], "ERBB2", "KRT19", "COL1A1", "DCN"]))
    cfg = STAlignConfig.base(genes, spot_size=24, niche_size=24, token_dim=32, n_heads=2, gene_dim=32, embed_dim=32)
    return STAlign(cfg).eval()


@pytest.fixture(scope="session")
def embedded(dlpfc73, tiny_model):
    """151673 subset (600 spots) with embeddings, as SpatialData."""
    import stalign as sta

    sd = _subset(dlpfc73, 600)
    sta.tl.embed(sd, model=tiny_model, show_progress_bar=False)
    return sd


def _subset(sdata, n):
    from spatialdata import SpatialData

    t = sdata.tables["table"]
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(t.n_obs, size=n, replace=False))
    return SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": t[keep].copy()})
