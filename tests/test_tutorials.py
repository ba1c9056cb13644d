"""The tutorials run end to end on the real shared data with the bundled weights (issue: tutorials in CI)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9]*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, data_dir, tmp_path, monkeypatch):
    from stalign.models._registry import REGISTRY

    if REGISTRY["stalign-base"]["sha256"] is None:
        pytest.fail("stalign-base weights are not bundled; the tutorials need them")
    monkeypatch.setenv("STALIGN_TUTORIAL_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(path), run_name="__main__")
    pngs = list(tmp_path.glob("*.png"))
    assert pngs, "the tutorial saved no figure"
    assert all(p.stat().st_size > 10_000 for p in pngs)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_tutorials_exist():
    assert len(TUTORIALS) >= 3
