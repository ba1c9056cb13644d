"""Pretraining on a real section: every contrastive term falls, the run resumes, the config file path works."""

from __future__ import annotations

import json

import numpy as np
import pytest
from spatialdata import SpatialData

import stalign as sta


@pytest.fixture(scope="module")
def small_section(data_dir):
    sd = sta.datasets.dlpfc("151673", data_dir=data_dir)
    t = sd.tables["table"]
    keep = np.sort(np.random.default_rng(0).choice(t.n_obs, size=192, replace=False))
    return SpatialData(images=dict(sd.images), shapes=dict(sd.shapes), tables={"table": t[keep].copy()})


def _mean(rows, key, sl):
    vals = [r[key] for r in rows[sl] if key in r]
    return float(np.mean(vals))


@pytest.mark.slow
def test_short_real_run_lowers_each_loss(small_section, tmp_path):
    genes = list(small_section.tables["table"].var_names[:800])
    cfg = sta.models.STAlignConfig.base(genes, spot_size=24, niche_size=24, token_dim=64, gene_dim=64, embed_dim=64)
    sta.train.pretrain(
        [small_section], cfg, output_dir=tmp_path, epochs=16, batch_size=64, lr=2e-3, warmup_epochs=1,
        augment=False, gene_dropout=0.0, show_progress_bar=False, checkpoint_every=None, seed=0,
    )  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 48
    for key in ("loss_spot", "loss_niche", "loss_ns"):
        start, end = _mean(rows, key, slice(0, 3)), _mean(rows, key, slice(-3, None))
        assert end < 0.8 * start, f"{key}: {start:.3f} -> {end:.3f}"
    model = sta.models.load(tmp_path / "model")
    sta.tl.embed(small_section, model=model, show_progress_bar=False, copy=True)


@pytest.mark.slow
def test_real_run_stopped_and_resumed_matches_uninterrupted(small_section, tmp_path):
    """Stop after a checkpoint (max_steps), resume: the weights equal an uninterrupted run's, bit for bit."""
    import torch

    genes = list(small_section.tables["table"].var_names[:300])
    cfg = sta.models.STAlignConfig.base(genes, spot_size=16, niche_size=16, token_dim=32, gene_dim=32, embed_dim=32)
    kw = {"epochs": 2, "batch_size": 64, "show_progress_bar": False, "seed": 3, "checkpoint_every": 2}
    full = sta.train.pretrain([small_section], cfg, output_dir=tmp_path / "full", **kw)
    sta.train.pretrain([small_section], cfg, output_dir=tmp_path / "cut", max_steps=4, **kw)
    assert sta.train.latest_checkpoint(tmp_path / "cut" / "checkpoints") is not None
    resumed = sta.train.pretrain([small_section], cfg, output_dir=tmp_path / "cut", resume=True, **kw)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
