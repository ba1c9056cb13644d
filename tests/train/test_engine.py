from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))

from toy import ToyModel, ToySpots

from stalign.train import TrainConfig, _engine
from stalign.train._checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from stalign.train._distributed import DistInfo
from stalign.train._engine import fit

CPU = torch.device("cpu")


def _config(**kw):
    base = {
        "epochs": 3,
        "batch_size": 32,
        "lr": 5e-3,
        "warmup_epochs": 0.5,
        "show_progress_bar": False,
        "checkpoint_every": 3,
    }
    return TrainConfig(**{**base, **kw})


def _fit(model, ds, tmp_path, **kw):
    cfg = _config(**kw)
    return fit(model, ds, cfg, output_dir=tmp_path, lr=cfg.peak_lr(), device=CPU, info=DistInfo())


def _run(tmp_path, **kw):
    torch.manual_seed(0)
    return _fit(ToyModel(), ToySpots(n=256, batch_size=32, seed=0), tmp_path, **kw)


def _rows(path):
    return [json.loads(line) for line in Path(path, "metrics.jsonl").read_text().splitlines()]


def test_toy_run_lowers_each_loss(tmp_path):
    _run(
        tmp_path,
        epochs=12,
        lr=2e-2,
        augment=None,
    )
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 12 * 8 + 1))
    for key in ("loss", "loss_spot", "loss_niche", "loss_ns"):
        first = sum(r[key] for r in rows[:4]) / 4
        last = sum(r[key] for r in rows[-4:]) / 4
        assert last < 0.85 * first, (key, first, last)
    assert {"lr", "weight_decay", "epoch", "pairs_per_s", "grad_norm"} <= set(rows[0])
    # warm-up then cosine towards min_lr; weight decay rises
    lrs = [r["lr"] for r in rows]
    assert lrs[0] < lrs[3] and lrs[-1] < 1e-4
    assert rows[0]["weight_decay"] == pytest.approx(0.04) and rows[-1]["weight_decay"] == pytest.approx(0.4)
    # keep_checkpoints=2 by default; the last one is the end of the last epoch
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert len(ckpts) == 2 and ckpts[-1].name == "step-00000096.safetensors"


def test_checkpoint_has_no_pickle_and_full_state(tmp_path):
    _run(tmp_path, epochs=1, checkpoint_every=5)
    tensors, state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert state["step"] == 8 and state["epoch"] == 0 and state["step_in_epoch"] == 8
    assert any(k.startswith("model/") for k in tensors)
    assert any(k.startswith("optim/") and k.endswith("exp_avg") for k in tensors)
    assert "rng/torch/0" in tensors and "rng/numpy" in tensors
    assert state["optimizer"]["param_groups"][0]["apply_wd"] is True
    assert not list(tmp_path.glob("checkpoints/.*tmp*"))


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_crash_and_resume_gives_identical_weights(tmp_path, monkeypatch):
    ref = _weights(_run(tmp_path / "ref", epochs=2))

    # crash in the middle of step 6 (after the checkpoint of step 3; the partial step must be redone)
    calls = {"n": 0}
    real = _engine.augment_batch

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(_engine, "augment_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "crash", epochs=2)
    monkeypatch.setattr(_engine, "augment_batch", real)
    assert latest_checkpoint(tmp_path / "crash" / "checkpoints").name == "step-00000003.safetensors"
    assert [r["step"] for r in _rows(tmp_path / "crash")] == [1, 2, 3, 4, 5]

    # resume, with a different global RNG state before the call: the checkpoint restores it
    torch.manual_seed(999)
    resumed = _fit(ToyModel(), ToySpots(n=256, batch_size=32, seed=0), tmp_path / "crash", epochs=2)
    got = _weights(resumed)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert [r["step"] for r in _rows(tmp_path / "crash")] == list(range(1, 17))
    ref_loss = [r["loss"] for r in _rows(tmp_path / "ref")]
    got_loss = [r["loss"] for r in _rows(tmp_path / "crash")]
    assert ref_loss == got_loss


def test_max_steps_then_resume_across_epoch_boundary(tmp_path):
    ref = _weights(_run(tmp_path / "ref", epochs=2, checkpoint_every=None))
    _run(tmp_path / "part", epochs=2, checkpoint_every=None, max_steps=11)
    _, state = load_checkpoint(latest_checkpoint(tmp_path / "part" / "checkpoints"))
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (11, 1, 3)
    got = _weights(_run(tmp_path / "part", epochs=2, checkpoint_every=None))
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_resume_refuses_other_batch_size(tmp_path):
    _run(tmp_path, epochs=1, checkpoint_every=None, max_steps=2)
    with pytest.raises(ValueError, match="batch_size"):
        torch.manual_seed(0)
        _fit(ToyModel(), ToySpots(n=256, batch_size=16), tmp_path, epochs=1, batch_size=16)
    # resume=False starts over and rewrites the metrics
    _run(tmp_path, epochs=1, checkpoint_every=None, resume=False)
    assert [r["step"] for r in _rows(tmp_path)] == list(range(1, 9))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    """2-process gloo DDP (torchrun) vs 1 process with the same global batch: weights within 1e-5 (float32)."""
    augment = "1"  # augmentation on: parameters are drawn for the global batch, so ranks match one process
    worker = str(Path(__file__).parent / "_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    single, multi = tmp_path / "single", tmp_path / "ddp"
    subprocess.run([sys.executable, worker, str(single), "6", augment], check=True, env=env, timeout=120)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        worker,
        str(multi),
        "6",
        augment,
    ]
    subprocess.run(cmd, check=True, env=env, timeout=180)
    a, b = load_file(str(single / "final.safetensors")), load_file(str(multi / "final.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    la, lb = [r["loss"] for r in _rows(single)], [r["loss"] for r in _rows(multi)]
    assert len(la) == len(lb) == 6
    assert la == pytest.approx(lb, rel=1e-5, abs=1e-6)
    # the DDP run logs the global batch's throughput and keeps only rank 0's files
    assert len(list_checkpoints(multi / "checkpoints")) >= 1
