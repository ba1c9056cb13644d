"""Crash safety: outputs are written atomically, and a pretraining process killed mid-epoch resumes exactly.

(a) A writer that dies half-way (monkeypatched to write some bytes, then raise) leaves no partial target and the
previous file intact: training checkpoints, saved models, the CLI's ``--out`` and ``tl.embed`` results in memory.
(b) ``stalign.train.pretrain`` in a child process on real MOB1 spots is SIGKILLed mid-epoch (the parent polls the
checkpoint folder and ``metrics.jsonl``), restarted with ``resume=True``, and ends with weights identical
(``torch.equal``) to an uninterrupted run in another child.
"""

from __future__ import annotations

import contextlib
import io as _stdio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import stalign as sta
from stalign import cli
from stalign.train import _checkpoint

from .._bad_input import assert_unchanged, snapshot

HERE = Path(__file__).parent


class Crash(RuntimeError):
    """Stands for a kill, a full disk or a power cut in the middle of a write."""


def _half_write(path, n: int = 64) -> None:
    Path(path).write_bytes(b"\x00" * n)  # some bytes reach the disk ...
    raise Crash("died mid-write")  # ... then the writer dies


def _no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(".stalign-")]
    assert not left, f"temporary files left behind: {left}"


# ------------------------------------------------------------------------------------------ (a) atomic writes


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    tensors = {"model/w": torch.arange(6.0)}
    path = _checkpoint.checkpoint_path(tmp_path, 4)
    _checkpoint.save_checkpoint(path, tensors, {"step": 4})
    before = snapshot(path)

    monkeypatch.setattr(_checkpoint, "save_file", lambda t, p, metadata=None: _half_write(p))
    with pytest.raises(Crash):
        _checkpoint.save_checkpoint(path, {"model/w": torch.zeros(6)}, {"step": 4})  # overwrite the same step
    assert_unchanged(before, path)
    with pytest.raises(Crash):
        _checkpoint.save_checkpoint(_checkpoint.checkpoint_path(tmp_path, 8), tensors, {"step": 8})  # a new one
    assert [p.name for p in _checkpoint.list_checkpoints(tmp_path)] == ["step-00000004.safetensors"]
    loaded, state = _checkpoint.load_checkpoint(_checkpoint.latest_checkpoint(tmp_path))
    assert torch.equal(loaded["model/w"], torch.arange(6.0)) and state["step"] == 4
    _no_temporaries(tmp_path)


_KILLED_WRITER = """
import sys, time
from pathlib import Path
import torch
from stalign.train import _checkpoint

def stuck(tensors, path, metadata=None):
    Path(path).write_bytes(b"\\0" * 64)  # some bytes reach the disk, then the process is killed
    print("writing", flush=True)
    time.sleep(600)

_checkpoint.save_file = stuck
_checkpoint.save_checkpoint(_checkpoint.checkpoint_path(sys.argv[1], 8), {"model/w": torch.zeros(2)}, {"step": 8})
"""


def test_sigkilled_checkpoint_write_is_cleaned_by_the_next_save(tmp_path):
    """SIGKILL skips every ``finally``: the stray ``.tmp-PID`` file goes on the next save, a live writer's stays."""
    _checkpoint.save_checkpoint(_checkpoint.checkpoint_path(tmp_path, 4), {"model/w": torch.arange(2.0)}, {"step": 4})
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "writing", child.stderr.read()[-2000:]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    stray = tmp_path / f".step-00000008.safetensors.tmp-{child.pid}"
    assert child.returncode == -signal.SIGKILL and stray.is_file()
    assert [p.name for p in _checkpoint.list_checkpoints(tmp_path)] == ["step-00000004.safetensors"]
    # the temporary file of a write in progress (a live pid, newer than this process) is left alone
    live = tmp_path / f".step-00000012.safetensors.tmp-{os.getppid()}"
    live.write_bytes(b"\0")
    _checkpoint.save_checkpoint(_checkpoint.checkpoint_path(tmp_path, 16), {"model/w": torch.ones(2)}, {"step": 16})
    assert not stray.exists()
    assert live.exists()
    names = [p.name for p in _checkpoint.list_checkpoints(tmp_path)]
    assert names == ["step-00000004.safetensors", "step-00000016.safetensors"]
    # a stray file older than this process is stale whatever its pid (pids are reused, e.g. by a restarted container)
    os.utime(live, (0, 0))
    assert _checkpoint.remove_stale_temporaries(tmp_path) == [live]
    _no_temporaries(tmp_path)


def test_model_save_is_atomic(tmp_path, monkeypatch, toy_model):
    import safetensors.torch

    tiny_model = toy_model

    d = sta.models.save(tiny_model, tmp_path / "m")
    before = snapshot(d)
    other = sta.models.STAlign(tiny_model.config)  # different random weights
    monkeypatch.setattr(safetensors.torch, "save_file", lambda t, p, metadata=None: _half_write(p))
    with pytest.raises(Crash):
        sta.models.save(other, d)
    assert_unchanged(before, d)
    _no_temporaries(d)
    monkeypatch.undo()
    got = sta.models.load(d, device="cpu")  # the previous model still loads, verified
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k

    # dying after the weights are written but before config.json is: never a torn config.json
    real_write_text = Path.write_text

    def crash_on_config(self, *a, **k):
        if self.name.startswith(".config.json"):
            real_write_text(self, "{ torn")
            raise Crash("died mid-write")
        return real_write_text(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", crash_on_config)
    with pytest.raises(Crash):
        sta.models.save(other, d)
    monkeypatch.undo()
    assert_unchanged(before, d)
    _no_temporaries(d)


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_cli_output_is_atomic(tmp_path, monkeypatch, toy_section, toy_model, suffix):
    from anndata import AnnData
    from spatialdata import SpatialData

    section = toy_section(n_rows=3, n_cols=10)  # 30 synthetic spots
    src = tmp_path / f"section{suffix}"
    if suffix == ".h5ad":
        sta.io.to_anndata(section).write_h5ad(src)
    else:
        section.write(src)
    model_dir = sta.models.save(toy_model, tmp_path / "model")
    out = tmp_path / f"out{suffix}"
    argv = ["embed", str(src), "--model", str(model_dir), "--out", str(out), "--quiet", "--device", "cpu"]

    def run(extra=()):
        with contextlib.redirect_stdout(_stdio.StringIO()), contextlib.redirect_stderr(_stdio.StringIO()):
            return cli.main([*argv, *extra])

    assert run() == 0
    before = snapshot(out)
    writer = (AnnData, "write_h5ad") if suffix == ".h5ad" else (SpatialData, "write")

    def dying(self, path, *a, **k):
        Path(path).mkdir(parents=True, exist_ok=True) if suffix == ".zarr" else None
        _half_write(Path(path) / "zarr.json" if suffix == ".zarr" else path)

    monkeypatch.setattr(*writer, dying)
    with pytest.raises(Crash):
        run(["--overwrite"])
    assert_unchanged(before, out)  # the previous output, untouched
    _no_temporaries(tmp_path)
    monkeypatch.undo()
    assert run(["--overwrite"]) == 0  # and a clean rerun replaces it
    _no_temporaries(tmp_path)


def test_embed_interrupted_leaves_data_unchanged(toy_section, toy_model, monkeypatch):
    """An embedding that dies in its second batch writes nothing into the user's object."""
    sd, tiny_model = toy_section(n_rows=4, n_cols=10), toy_model  # 40 synthetic spots
    before = snapshot(sd)
    real = tiny_model.embed
    calls = {"n": 0}

    def dying(batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash("killed during the second batch")
        return real(batch)

    monkeypatch.setattr(tiny_model, "embed", dying)
    with pytest.raises(Crash):
        sta.tl.embed(sd, model=tiny_model, device="cpu", batch_size=16, show_progress_bar=False)
    assert calls["n"] == 2
    assert_unchanged(before, sd)


# ------------------------------------------------------------------------------------- (b) SIGKILL + resume

STEPS_PER_EPOCH = 6  # 192 spots / batch 32 (see _pretrain_child.py)


def _child(out: Path, delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, str(HERE / "_pretrain_child.py"), str(out), str(delay)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # the line being written
            rows.append(json.loads(line))
    return rows


def _wait(proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, f"{what} failed:\n{err[-3000:]}"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    ref = _child(ref_dir)  # the uninterrupted run, alongside the one we kill
    victim = _child(run_dir, delay=0.4)
    killed_at = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and victim.poll() is None:
            ckpt = sta.train.latest_checkpoint(run_dir / "checkpoints")
            rows = _rows(run_dir)
            if ckpt is not None and rows:
                step, ck_step = rows[-1]["step"], int(ckpt.stem.split("-")[1])
                # past a checkpoint, in the middle of the second epoch: steps after the checkpoint will be lost
                if step > ck_step and step % STEPS_PER_EPOCH and step > STEPS_PER_EPOCH:
                    victim.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.02)
    finally:
        if victim.poll() is None and killed_at is None:
            victim.kill()
    victim.wait(timeout=60)
    assert killed_at is not None, f"the run ended before it could be killed: {victim.stderr.read()[-2000:]}"
    assert victim.returncode == -signal.SIGKILL
    assert not (run_dir / "model").exists(), "the killed run must not have finished"
    lost = [
        r["step"]
        for r in _rows(run_dir)
        if r["step"] > int(sta.train.latest_checkpoint(run_dir / "checkpoints").stem[5:])
    ]
    assert lost, "some steps after the last checkpoint are redone on resume"

    _wait(_child(run_dir), "the resumed run")  # resume=True is set in the child
    _wait(ref, "the reference run")

    a = load_file(str(ref_dir / "model" / "model.safetensors"))
    b = load_file(str(run_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra, rb = _rows(ref_dir), _rows(run_dir)
    assert [r["step"] for r in rb] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    np.testing.assert_array_equal([r["loss"] for r in ra], [r["loss"] for r in rb])
    # the resumed model loads like any other (its sha256 verified)
    sta.models.load(run_dir / "model", device="cpu")
