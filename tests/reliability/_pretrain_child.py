"""Child process of test_crash_safety: a tiny pretraining run on 192 real MOB1 spots (killed and resumed there).

Usage: python _pretrain_child.py OUTPUT_DIR [STEP_DELAY_S]. ``STEP_DELAY_S`` slows each step (sleep before the
augmentation of a batch; the numbers do not change) so that the parent can SIGKILL the process mid-epoch.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

import stalign as sta  # noqa: E402
from stalign.train import _engine  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1]))
from _synthetic import toy_config  # noqa: E402  (the one tiny config of the tests)

out = sys.argv[1]
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
if delay:
    real = _engine.augment_batch

    def slow(*a, **k):
        time.sleep(delay)
        return real(*a, **k)

    _engine.augment_batch = slow

from spatialdata import SpatialData  # noqa: E402

mob = sta.datasets.stutility_mob("MOB1")
t = mob.tables["table"]
keep = np.sort(np.random.default_rng(0).choice(t.n_obs, size=192, replace=False))
section = SpatialData(images=dict(mob.images), shapes=dict(mob.shapes), tables={"table": t[keep].copy()})
cfg = toy_config(t.var_names[:200])
sta.train.pretrain(
    [section], cfg, output_dir=out, epochs=2, batch_size=32, seed=3, checkpoint_every=2, device="cpu",
    show_progress_bar=False, resume=True,
)  # fmt: skip
