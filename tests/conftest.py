from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests._bad_input")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "agg")
_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("STALIGN_DATA_DIR", str(_DEFAULT))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real shared data; CI always has it, so its absence (a missing or empty folder) fails there and skips elsewhere.

    Tests that request it (directly or through a fixture) need the real data; tests of pure logic use the
    synthetic ``toy_*`` fixtures below instead and run without it (``STALIGN_DATA_DIR=/an/empty/folder pytest``).
    """
    path = Path(os.environ["STALIGN_DATA_DIR"])
    if not path.is_dir() or not any(path.iterdir()):
        if os.environ.get("CI"):
            pytest.fail(f"STALIGN_DATA_DIR={path} does not exist or is empty in CI")
        pytest.skip(f"real data not found at {path}")
    return path


# ------------------------------------------------------------------------- synthetic inputs (no data folder)


@pytest.fixture(scope="session")
def toy_section():
    """The builder of synthetic sections (:func:`tests._synthetic.toy_sdata`): a fresh SpatialData per call."""
    from ._synthetic import toy_sdata

    return toy_sdata


@pytest.fixture(scope="session")
def toy_sdata(toy_section):
    """The synthetic section (60 spots on a hex grid, 30 genes, a 1438x792 image and its pyramid). Shared: read only."""
    return toy_section()


@pytest.fixture(scope="session")
def toy_adata(toy_sdata):
    """``toy_sdata`` as a squidpy-convention AnnData (:func:`stalign.io.to_anndata`). Shared: copy before changing."""
    import stalign as sta

    return sta.io.to_anndata(toy_sdata)


@pytest.fixture(scope="session")
def toy_model():
    """A tiny random-init STAlign over the synthetic genes (fast on CPU). Shared: do not train it in place."""
    from ._synthetic import toy_model

    return toy_model()


@pytest.fixture(scope="session")
def toy_embedded(toy_adata, toy_model):
    """``toy_adata`` with the tiny model's embeddings (``X_stalign*``). Shared: copy before changing."""
    import stalign as sta

    emb = toy_adata.copy()
    sta.tl.embed(emb, model=toy_model, device="cpu", show_progress_bar=False)
    return emb


@pytest.fixture
def bad_input_ctx(request, tmp_path):
    """What the bad-input cases build their inputs from (:class:`tests._bad_input.Ctx`); shared inputs load lazily."""
    from ._bad_input import Ctx

    return Ctx(request, tmp_path)
