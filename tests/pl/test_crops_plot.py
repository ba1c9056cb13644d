from __future__ import annotations

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

import stalign as sta


@pytest.fixture(scope="module")
def sdata(toy_section):
    """The synthetic section (tests/_synthetic.py): the gallery's logic needs no real tissue."""
    return toy_section()


def test_gallery_both(sdata, tmp_path):
    fig = sta.pl.crops(sdata, n=6, which="both", out_px=32)
    assert isinstance(fig, matplotlib.figure.Figure)
    imgs = [a for a in fig.axes if a.images]
    assert len(imgs) == 12
    assert imgs[0].images[0].get_array().shape == (32, 32, 3)
    assert len(imgs[1].patches) == 1  # spot box outlined on the niche crop
    fig.savefig(tmp_path / "g.png")
    plt.close(fig)


def test_gallery_into_ax_and_names(sdata):
    fig, ax = plt.subplots()
    names = list(sdata.tables["table"].obs_names[:3])
    out = sta.pl.crops(sdata, obs_names=names, which="spot", ax=ax)
    assert out is fig
    titles = [a.get_title() for a in fig.axes if a.images]
    assert [t.split("\n")[0] for t in titles] == names
    plt.close(fig)


def test_gallery_errors(sdata):
    with pytest.raises(ValueError, match="which"):
        sta.pl.crops(sdata, which="cells")
    with pytest.raises(KeyError, match="obs_names"):
        sta.pl.crops(sdata, obs_names=["nope"])
    assert np.isfinite(sdata.tables["table"].obsm["spatial"]).all()
