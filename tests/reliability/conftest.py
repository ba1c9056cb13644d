"""Shared inputs of the reliability tests: small real sections (loaded once) and a tiny random model over MOB1 genes."""

from __future__ import annotations

import numpy as np
import pytest

from .._synthetic import toy_model


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
def dlpfc_full(data_dir):
    """DLPFC 151673 (used by test_determinism)."""
    import stalign as sta

    return sta.datasets.dlpfc("151673", data_dir=data_dir)


@pytest.fixture(scope="session")
def her2st_c2(data_dir):
    """her2st C2 (used by test_determinism)."""
    import stalign as sta

    return sta.datasets.her2st("C2", data_dir=data_dir)


@pytest.fixture(scope="session")
def mob1(data_dir):
    """STUtility MOB1: 379 real ST spots, 1,000 genes, a 1905² H&E (fast to load)."""
    import stalign as sta

    return sta.datasets.stutility_mob("MOB1", data_dir=data_dir)


@pytest.fixture(scope="session")
def tiny_model(mob1):
    """A small random-init model over 300 MOB1 genes (fast on CPU)."""
    return toy_model(mob1.tables["table"].var_names[:300])
