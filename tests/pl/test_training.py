from __future__ import annotations

import json

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import stalign as sta

LOSSES = ["loss", "loss_spot", "loss_niche", "loss_ns", "loss_image_ns", "loss_gene_ns"]


def _rows(n=60):
    rng = np.random.default_rng(0)
    rows = []
    for step in range(1, n + 1):
        row = {"step": step, "epoch": step / 20, "lr": 1e-4 * min(1.0, step / 10), "weight_decay": 0.04}
        for i, k in enumerate(LOSSES):
            row[k] = 4.0 - 0.03 * step + 0.1 * i + 0.2 * rng.random()
        row["grad_norm"] = 1.0 + rng.random()
        row["pairs_per_s"] = 50.0
        rows.append(row)
    return rows


@pytest.fixture
def run_dir(tmp_path):
    rows = _rows()
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({**rows[-1], "loss": 99.0}) + "\n")  # step logged again after a resume: last row wins
        f.write('{"step": 61, "lo')  # a line being written while the run is in progress
    return tmp_path


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_from_run_folder(run_dir):
    ax = sta.pl.training_curves(run_dir, smooth=5)
    assert isinstance(ax, matplotlib.axes.Axes)
    assert len(ax.lines) == 2 * len(LOSSES)  # raw + rolling mean per loss
    raw, smoothed = ax.lines[0], ax.lines[1]
    assert raw.get_alpha() < 1 and smoothed.get_label() == "loss"
    x, y = raw.get_data()
    np.testing.assert_array_equal(x, np.arange(1, 61))  # duplicate step dropped, truncated line skipped
    assert y[-1] == 99.0  # the row logged last for step 60 wins
    np.testing.assert_allclose(smoothed.get_ydata()[4], np.mean(y[:5]))
    assert _labels(ax) == [*LOSSES, "lr"]
    twins = [a for a in ax.figure.axes if a is not ax]
    assert len(twins) == 1 and len(twins[0].lines) == 1
    np.testing.assert_allclose(twins[0].lines[0].get_ydata()[:3], [1e-5, 2e-5, 3e-5])
    assert ax.get_xlabel() == "step"


def test_from_file_and_dataframe(run_dir):
    fig = sta.pl.training_curves(run_dir / "metrics.jsonl", keys=["loss", "grad_norm"], return_fig=True, log_y=True)
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert _labels(ax) == ["loss", "grad_norm", "lr"]

    df = pd.DataFrame(_rows(30)).drop(columns=["lr"])
    fig, ax = plt.subplots()
    out = sta.pl.training_curves(df, smooth=1, ax=ax)
    assert out is ax
    assert len(ax.lines) == len(LOSSES)  # smooth=1: raw curves only
    assert len(fig.axes) == 1  # no lr column, no twin axis
    assert _labels(ax) == LOSSES


def test_show(run_dir, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    assert sta.pl.training_curves(run_dir, show=True) is None
    assert shown == [True]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder"):
        sta.pl.training_curves(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        sta.pl.training_curves(tmp_path)  # a folder without metrics
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no metrics rows"):
        sta.pl.training_curves(tmp_path)
    df = pd.DataFrame({"step": [1, 2], "lr": [0.1, 0.2]})
    with pytest.raises(ValueError, match="No loss column"):
        sta.pl.training_curves(df)
    with pytest.raises(KeyError, match="loss_typo"):
        sta.pl.training_curves(pd.DataFrame(_rows(5)), keys=["loss_typo"])
    with pytest.raises(ValueError, match="smooth"):
        sta.pl.training_curves(pd.DataFrame(_rows(5)), smooth=-1)
    with pytest.raises(TypeError, match="DataFrame"):
        sta.pl.training_curves([{"step": 1, "loss": 1.0}])
