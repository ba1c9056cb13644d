"""``benchmarks/gpu_check.py`` runs end to end (issue 25): on this machine its CPU half, on a GPU machine both halves.

The CUDA half is the same code with ``device=cuda``; this run proves every part (embedding, pretraining, torchrun,
the batch-size sweep) works and writes its table.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow  # about a minute on 2 cores: two real sections, two short trainings, a small sweep
def test_gpu_check_quick(data_dir, tmp_path):
    out = tmp_path / "gpu.md"
    env = {**os.environ, "STALIGN_DATA_DIR": str(data_dir)}
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True, text=True,
                         env=env, check=False, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    table = out.read_text()
    assert table in res.stdout  # the one table, printed and written
    for part in ("1 embed", "2 pretrain", "3 torchrun", "4 sweep"):
        assert f"| {part} |" in table, part
    data = json.loads(out.with_suffix(".json").read_text())
    cuda = torch.cuda.is_available()
    assert ("No GPU found" in res.stdout) is not cuda
    assert [r["section"] for r in data["embed"]] == ["dlpfc:151673", "her2st:C2"]
    for r in data["embed"]:
        assert r["cpu_spots_per_s"] > 0
        if cuda:
            assert r["cos_fused_median"] >= 0.99, r
    assert data["pretrain"]["steps"] == 2 and data["pretrain"]["losses_finite"]
    assert data["torchrun"]["ok"] and data["torchrun"]["world_size"] >= 2, data["torchrun"]
    assert data["torchrun"]["steps"] == 2 and data["torchrun"]["losses_finite"]
    assert [r["batch_size"] for r in data["sweep"]] == [64, 256]
    for r in data["sweep"]:
        for k in ("embed_spots_per_s", "read_spots_per_s", "model_spots_per_s"):
            assert math.isfinite(r[k]) and r[k] > 0, (k, r)
        assert r["bound_by"] in ("reading crops", "model")
