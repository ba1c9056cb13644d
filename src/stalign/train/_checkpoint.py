"""Training checkpoints without pickle: one safetensors file holding every tensor, with the JSON state in its header.

Layout of ``checkpoints/step-XXXXXXXX.safetensors``:

- tensors ``model/<name>`` (the weights), ``optim/<param id>/<key>`` (optimiser state tensors),
  ``rng/torch/<rank>``, ``rng/cuda/<rank>``, ``rng/numpy`` (RNG states);
- metadata ``{"stalign_checkpoint": <JSON>}`` with the step counters, the optimiser's scalar structure,
  the GradScaler and schedule state, the python RNG state and the run arguments.

Files are written to a temporary name in the same folder and moved into place with :func:`os.replace`, so a
crash never leaves a half-written checkpoint behind. A process killed outright (SIGKILL, OOM killer) during a write
leaves its temporary file ``.step-XXXXXXXX.safetensors.tmp-<pid>``; the next :func:`save_checkpoint` in that folder
removes it (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .._docs import inject

logger = logging.getLogger(__name__)

FORMAT = "stalign-checkpoint"
VERSION = 1
_META_KEY = "stalign_checkpoint"
_NAME = re.compile(r"^step-(\d{8,})\.safetensors$")
_TMP = re.compile(r"^\.step-\d{8,}\.safetensors\.tmp-(\d+)$")
#: When this module was imported: no temporary file older than this was written by this process.
_IMPORTED_AT = time.time()


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """Path of the checkpoint written after ``step`` optimiser steps."""
    return Path(directory) / f"step-{step:08d}.safetensors"


@inject
def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``directory``, oldest first.

    Parameters
    ----------
    {checkpoint_dir}

    Returns
    -------
    Paths sorted by step (empty when ``directory`` does not exist or holds none).

    Examples
    --------
    {tiny_run}
    >>> [p.name for p in sta.train.list_checkpoints("run/checkpoints")]
    ['step-00000002.safetensors', 'step-00000004.safetensors']
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


@inject
def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The most recent checkpoint in ``directory`` (``None`` when there is none).

    Parameters
    ----------
    {checkpoint_dir}

    Returns
    -------
    Path of the checkpoint with the highest step, or ``None``.

    Examples
    --------
    {tiny_run}
    >>> sta.train.latest_checkpoint("run/checkpoints").name
    'step-00000004.safetensors'
    """
    ckpts = list_checkpoints(directory)
    return ckpts[-1] if ckpts else None


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # safetensors refuses shared or non-contiguous storage; a detached contiguous copy is always safe
    return t.detach().to("cpu").contiguous().clone()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float | int | str | bool) or x is None:
        return x
    msg = f"cannot store {type(x).__name__} in a checkpoint's JSON header"
    raise TypeError(msg)


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into tensors (for safetensors) and a JSON structure."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{pid}/{k}"] = _cpu(v)
                entry[k] = {"__tensor__": f"optim/{pid}/{k}"}
            else:
                entry[k] = _jsonable(v)
        state_json[str(pid)] = entry
    return tensors, {"state": state_json, "param_groups": _jsonable(sd["param_groups"])}


def optimizer_from_flat(structure: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """Inverse of :func:`optimizer_to_flat`: an optimiser ``state_dict``."""
    state = {}
    for pid, entry in structure["state"].items():
        st = {}
        for k, v in entry.items():
            st[k] = tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v
        state[int(pid)] = st
    groups = []
    for g in structure["param_groups"]:
        g = dict(g)
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def rng_state(*, rank_states: list[torch.Tensor] | None = None, cuda_states: list[torch.Tensor] | None = None):
    """Current RNG states as (tensors, JSON).

    ``rank_states``/``cuda_states`` are the torch CPU/CUDA generator states of every DDP rank (rank order); by default
    only this process's states are stored (as rank 0).
    """
    tensors = {"rng/numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    cpu_states = rank_states if rank_states is not None else [torch.get_rng_state()]
    for r, s in enumerate(cpu_states):
        tensors[f"rng/torch/{r}"] = _cpu(s)
    if cuda_states is None and torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = [torch.cuda.get_rng_state()]
    for r, s in enumerate(cuda_states or []):
        tensors[f"rng/cuda/{r}"] = _cpu(s)
    np_state = np.random.get_state()
    py = random.getstate()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "kind": np_state[0],
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
    }
    return tensors, meta


def restore_rng(meta: dict, tensors: dict[str, torch.Tensor], *, rank: int = 0) -> None:
    """Restore python, numpy and torch (CPU and current CUDA device) RNG states for ``rank``."""
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npm = meta["numpy"]
    np.random.set_state(
        (npm["kind"], tensors["rng/numpy"].numpy().astype(np.uint32), npm["pos"], npm["has_gauss"], npm["gauss"])
    )
    key = f"rng/torch/{rank}" if f"rng/torch/{rank}" in tensors else "rng/torch/0"
    torch.set_rng_state(tensors[key].to(torch.uint8))
    ckey = f"rng/cuda/{rank}" if f"rng/cuda/{rank}" in tensors else "rng/cuda/0"
    if ckey in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[ckey].to(torch.uint8))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):  # alive under another user, or not a valid pid here
        return pid > 0
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of checkpoint writes that were killed before they could clean up.

    A temporary file ``.step-XXXXXXXX.safetensors.tmp-<pid>`` is stale when process ``<pid>`` is not alive, or when
    it is older than this process (the pid was reused, e.g. by a restarted container). Only the process that writes
    checkpoints (DDP rank 0, through :func:`save_checkpoint`) calls this, and it writes one checkpoint at a time, so
    no temporary file still being written is removed.

    Parameters
    ----------
    directory
        Folder of the checkpoints.

    Returns
    -------
    The paths removed (empty when ``directory`` does not exist or holds none).
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        m = _TMP.match(p.name)
        if m is None:
            continue
        try:
            old = p.stat().st_mtime < _IMPORTED_AT
        except FileNotFoundError:  # pragma: no cover - removed meanwhile
            continue
        if old or not _pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    if removed:
        logger.info("Removed %d stale temporary checkpoint file(s) of killed writes: %s", len(removed), removed)
    return removed


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """Write ``tensors`` and the JSON ``state`` atomically to ``path``.

    Temporary files left in the same folder by earlier writes that were killed are removed first
    (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    header = {"format": FORMAT, "version": VERSION, **state}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(_jsonable(header))})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("Saved checkpoint %s", path)
    return path


@inject
def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_checkpoint` (never unpickles).

    Parameters
    ----------
    path
        A ``.safetensors`` checkpoint file.

    Returns
    -------
    ``(tensors, state)``: the tensors by name, and the JSON training state stored in the header.

    Examples
    --------
    {tiny_run}
    >>> tensors, state = sta.train.load_checkpoint(
    ...     sta.train.latest_checkpoint("run/checkpoints")
    ... )
    >>> state["step"]
    4
    """
    path = Path(path)
    if not path.is_file():
        msg = f"Checkpoint {str(path)!r} does not exist; pass an existing file or set resume=False."
        raise FileNotFoundError(msg)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if _META_KEY not in meta:
            msg = f"{str(path)!r} is not a stalign training checkpoint (no {_META_KEY!r} header)."
            raise ValueError(msg)
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    state = json.loads(meta[_META_KEY])
    if state.get("format") != FORMAT or state.get("version", 0) > VERSION:
        msg = (
            f"{str(path)!r} has an unsupported checkpoint format/version {state.get('format')}/{state.get('version')}."
        )
        raise ValueError(msg)
    return tensors, state


def prune_checkpoints(directory: str | os.PathLike, *, keep: int) -> None:
    """Delete all but the ``keep`` most recent checkpoints (``keep <= 0`` keeps everything)."""
    if keep <= 0:
        return
    for p in list_checkpoints(directory)[:-keep]:
        try:
            p.unlink()
        except FileNotFoundError:  # pragma: no cover
            pass
