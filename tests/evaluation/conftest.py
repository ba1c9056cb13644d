from __future__ import annotations

import numpy as np
import pytest
import torch


def subset(sdata, n, seed=0):
    """The first-level elements of ``sdata`` with a random subset of ``n`` spots in the table."""
    from spatialdata import SpatialData

    t = sdata.tables["table"]
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(t.n_obs, size=min(n, t.n_obs), replace=False))
    return SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": t[keep].copy()})


@pytest.fixture(scope="session")
def dlpfc73(data_dir):
    import stalign as sta

    return sta.datasets.dlpfc("151673", data_dir=data_dir)


@pytest.fixture(scope="session")
def her2st_c(data_dir):
    """her2st C2 and C3 (paired, full-resolution H&E), 120 spots each: reference and query of the genes task."""
    import stalign as sta

    return {f"her2st:{s}": subset(sta.datasets.her2st(s, data_dir=data_dir), 120) for s in ("C2", "C3")}


@pytest.fixture(scope="session")
def tiny_model(dlpfc73):
    """A small random-init model over the DLPFC genes plus the bundled marker genes."""
    from stalign.evaluation import DLPFC_LAYER_MARKERS, HER2ST_REGION_MARKERS
    from stalign.models import STAlign, STAlignConfig

    torch.manual_seed(0)
    markers = [g for d in (DLPFC_LAYER_MARKERS, HER2ST_REGION_MARKERS) for gs in d.values() for g in gs]
    genes = list(dict.fromkeys([*dlpfc73.tables["table"].var_names[:1500], *markers]))
    cfg = STAlignConfig.base(genes, spot_size=24, niche_size=24, token_dim=32, n_heads=2, gene_dim=32, embed_dim=32)
    return STAlign(cfg).eval()


@pytest.fixture(scope="session")
def dlpfc_small(dlpfc73):
    return {"dlpfc:151673[300]": subset(dlpfc73, 300)}
