"""Process-group plumbing shared by pretraining and cohort embedding: detect ``torchrun``, join and leave the group.

torch is imported inside the functions, so that this core module stays importable without it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    """Where this process sits in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process writes the shared outputs (checkpoints, metrics, the final model, the cohort)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether the environment of ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) is present."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(
    device: Any, *, backend: str | None = None, timeout: timedelta | None = None
) -> tuple[DistInfo, Any]:
    """Join the process group when started by ``torchrun``; a no-op in one process.

    ``backend`` defaults to NCCL on CUDA and gloo on CPU; ``timeout`` is the process group's (how long a collective
    waits for the slowest rank; torch's default when ``None``). Returns the rank information and the device this
    rank uses (``cuda:LOCAL_RANK`` on CUDA, each rank its own GPU).
    """
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    elif launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_available():
            msg = "Launched by torchrun but this torch build has no torch.distributed; run one process instead."
            raise RuntimeError(msg)
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        local_rank = int(os.environ["LOCAL_RANK"])
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        kwargs = {"timeout": timeout} if timeout is not None else {}
        dist.init_process_group(backend=backend, **kwargs)
        info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)
        logger.info("Joined %s process group as rank %d of %d", backend, info.rank, info.world_size)
    else:
        return DistInfo(), device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    return info, device


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    import torch.distributed as dist

    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
