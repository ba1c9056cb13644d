"""Training curves from a run's ``metrics.jsonl``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._docs import inject
from ._spatial import _finish

logger = logging.getLogger(__name__)

#: File that :func:`stalign.train.pretrain` / :func:`stalign.train.finetune` write in their run folder.
METRICS_FILE = "metrics.jsonl"


def _read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        msg = (
            f"No metrics file at {str(path)!r}; pass a run folder (the `out_dir` of stalign.train.pretrain/finetune) "
            f"that holds {METRICS_FILE!r}, the path of that file, or a DataFrame."
        )
        raise FileNotFoundError(msg)
    rows = []
    bad = 0
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1  # e.g. a line being written while a run is in progress
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    if bad:
        logger.warning("Skipped %d unreadable line(s) of %s.", bad, path)
    if not rows:
        msg = f"{str(path)!r} holds no metrics rows; wait until the run has logged a step (see `log_every`)."
        raise ValueError(msg)
    return pd.DataFrame(rows)


@inject
def training_curves(
    metrics: str | os.PathLike | pd.DataFrame,
    *,
    keys: Sequence[str] | None = None,
    smooth: int = 20,
    log_y: bool = False,
    ax: Any = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Loss curves of a training run against the step, with the learning rate on a twin axis.

    Each loss is drawn raw (faint) and as a rolling mean over ``smooth`` logged steps (labelled). Rows logged twice
    for the same step (a resumed run) keep the last one.

    Parameters
    ----------
    metrics
        A run folder (the ``out_dir`` of :func:`stalign.train.pretrain` / :func:`stalign.train.finetune`), the
        path of its ``metrics.jsonl`` (one JSON object per logged step with ``step``, ``epoch``, ``lr``,
        ``weight_decay``, ``loss``, ``loss_spot``, …, ``grad_norm``, ``pairs_per_s``), or a DataFrame of those rows.
    keys
        Columns to plot; default every column whose name starts with ``loss``.
    smooth
        Window (logged steps) of the rolling mean; ``0`` or ``1`` draws the raw curves only.
    log_y
        Logarithmic loss axis.
    {plot_params}

    Returns
    -------
    The loss Axes (the learning rate is on its twin), the Figure (``return_fig=True``) or None (``show=True``).

    Examples
    --------
    {tiny_run}
    >>> ax = sta.pl.training_curves("run", smooth=2)
    >>> ax = sta.pl.training_curves("run", keys=["loss", "loss_spot"], log_y=True)
    """
    import matplotlib.pyplot as plt

    if isinstance(metrics, pd.DataFrame):
        df = metrics
    elif isinstance(metrics, str | os.PathLike):
        df = _read_metrics(metrics)
    else:
        msg = f"`metrics` must be a run folder, a metrics.jsonl path or a DataFrame, not {type(metrics).__name__}."
        raise TypeError(msg)
    if isinstance(smooth, bool) or not isinstance(smooth, int | np.integer) or smooth < 0:
        msg = f"`smooth` must be a non-negative integer (a number of logged steps), not {smooth!r}."
        raise ValueError(msg)
    if keys is None:
        keys = [c for c in df.columns if str(c).startswith("loss")]
        if not keys:
            msg = (
                f"No loss column in the metrics (columns: {list(map(str, df.columns))}); pass `keys=` with the "
                "columns to plot."
            )
            raise ValueError(msg)
    else:
        keys = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in keys if k not in df.columns]
        if missing or not keys:
            msg = f"keys {missing} are not metrics columns; choose among {list(map(str, df.columns))}."
            raise KeyError(msg)

    if "step" in df.columns:
        df = df.drop_duplicates("step", keep="last").sort_values("step", kind="stable")
        x = df["step"].to_numpy()
        xlabel = "step"
    else:
        x = np.arange(len(df))
        xlabel = "logged row"

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize or (7, 4))
    else:
        fig = ax.figure
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, k in enumerate(keys):
        y = pd.to_numeric(df[k], errors="coerce").astype(float)
        colour = cycle[i % len(cycle)]
        if smooth > 1:
            ax.plot(x, y.to_numpy(), color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(x, y.rolling(smooth, min_periods=1).mean().to_numpy(), color=colour, linewidth=1.5, label=k)
        else:
            ax.plot(x, y.to_numpy(), color=colour, linewidth=1.2, label=k)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss" if len(keys) > 1 or keys[0].startswith("loss") else keys[0])
    handles, labels = ax.get_legend_handles_labels()
    if "lr" in df.columns and "lr" not in keys:
        ax_lr = ax.twinx()
        ax_lr.plot(x, pd.to_numeric(df["lr"], errors="coerce").to_numpy(), color="0.4", ls="--", lw=1, label="lr")
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        h2, l2 = ax_lr.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
        ax.set_zorder(ax_lr.get_zorder() + 1)  # losses and their legend above the lr line
        ax.patch.set_visible(False)
    ax.legend(handles, labels, loc="best", framealpha=0.8, fontsize="small")
    return _finish(fig, ax, show=show, return_fig=return_fig)
