"""DDP plumbing: detect ``torchrun``, initialise/destroy the process group, gather embeddings with gradients."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

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
        """Whether this process writes checkpoints, metrics and the final model."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether the environment of ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) is present."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by ``torchrun`` (gloo on CPU, NCCL on CUDA).

    Returns the rank information and the device this rank trains on (``cuda:LOCAL_RANK`` on CUDA).
    """
    if dist.is_available() and dist.is_initialized():
        info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), False)
    elif launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_available():
            msg = "Launched by torchrun but this torch build has no torch.distributed; run one process instead."
            raise RuntimeError(msg)
        backend = "nccl" if device.type == "cuda" else "gloo"
        local_rank = int(os.environ["LOCAL_RANK"])
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)
        logger.info("Joined %s process group as rank %d of %d", backend, info.rank, info.world_size)
    else:
        return DistInfo(), device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    return info, device


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order), keeping the gradient path to each rank's rows.

    In one process this is the identity. All ranks must pass the same shape.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (no gradient); identity in one process."""
    if not info.enabled:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def gather_rng_states(info: DistInfo, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """CPU (and CUDA) torch RNG states of every rank, in rank order."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    if not info.enabled:
        return [cpu], ([cuda] if cuda is not None else None)
    comm_dev = device if device.type == "cuda" else torch.device("cpu")

    def _gather(t: torch.Tensor) -> list[torch.Tensor]:
        t = t.to(comm_dev)
        out = [torch.empty_like(t) for _ in range(info.world_size)]
        dist.all_gather(out, t)
        return [o.cpu() for o in out]

    return _gather(cpu), (_gather(cuda) if cuda is not None else None)
