"""DDP plumbing of training: gather embeddings with gradients, mean over ranks, RNG states of every rank.

Joining and leaving the process group (:func:`init_distributed`, :func:`cleanup`) is shared with cohort embedding
and lives in :mod:`stalign._distributed`; it is re-exported here.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .._distributed import DistInfo, cleanup, init_distributed, launched_by_torchrun

__all__ = [
    "DistInfo",
    "all_gather_with_grad",
    "all_reduce_mean",
    "cleanup",
    "gather_rng_states",
    "init_distributed",
    "launched_by_torchrun",
]


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
