"""Tiny stand-ins for the model and the spot dataset, so the engine is testable on its own (no real data)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from stalign._batch import BatchKey as K


@dataclass
class LossOutput:
    loss: torch.Tensor
    components: dict = field(default_factory=dict)


def _info_nce(a: torch.Tensor, b: torch.Tensor, t: float = 0.1) -> torch.Tensor:
    logits = a @ b.T / t
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ToyModel(nn.Module):
    """Three InfoNCE terms (spot, niche, fused spot ↔ fused niche) on tiny encoders."""

    def __init__(self, n_genes: int = 16, dim: int = 8):
        super().__init__()

        def img():
            return nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, dim)
            )

        self.spot_img, self.niche_img = img(), img()
        self.spot_gene, self.niche_gene = nn.Linear(n_genes, dim), nn.Linear(n_genes, dim)
        self.fuse_spot, self.fuse_niche = nn.Linear(2 * dim, dim), nn.Linear(2 * dim, dim)

    def loss(self, batch, gather=None):
        g = gather or (lambda x: x)
        si = F.normalize(self.spot_img(batch[K.spot_image].float() / 255), dim=-1)
        ni = F.normalize(self.niche_img(batch[K.niche_image].float() / 255), dim=-1)
        sg = F.normalize(self.spot_gene(batch[K.spot_expr]), dim=-1)
        ng = F.normalize(self.niche_gene(batch[K.niche_expr]), dim=-1)
        fs = F.normalize(self.fuse_spot(torch.cat([si, sg], -1)), dim=-1)
        fn = F.normalize(self.fuse_niche(torch.cat([ni, ng], -1)), dim=-1)
        si, sg, ni, ng, fs, fn = (g(x) for x in (si, sg, ni, ng, fs, fn))
        comps = {"spot": _info_nce(si, sg), "niche": _info_nce(ni, ng), "ns": _info_nce(fs, fn)}
        loss = 0.3 * comps["spot"] + 0.3 * comps["niche"] + 0.4 * comps["ns"]
        return LossOutput(loss, comps)


class ToySpots(torch.utils.data.IterableDataset):
    """Spots of ``n_types`` kinds: colour of the crops and expressed genes depend on the kind (learnable)."""

    shard_layout = "strided"

    def __init__(
        self,
        n: int = 256,
        batch_size: int = 32,
        *,
        n_genes: int = 16,
        size: int = 8,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        n_types: int = 8,
    ):
        g = torch.Generator().manual_seed(1234)
        kind = torch.randint(0, n_types, (n,), generator=g)
        colour = torch.rand(n_types, 3, generator=g)
        prof = torch.rand(n_types, n_genes, generator=g) ** 3 * 50
        noise = torch.rand(n, 3, size, size, generator=g) * 0.3
        self.spot_image = ((colour[kind][:, :, None, None] * 0.7 + noise) * 255).to(torch.uint8)
        self.niche_image = (
            ((colour[kind][:, :, None, None] * 0.6 + noise.flip(-1) + 0.05) * 255).clamp(0, 255).to(torch.uint8)
        )
        counts = torch.poisson(prof[kind], generator=g)
        self.spot_expr = torch.log1p(counts / counts.sum(1, keepdim=True).clamp_min(1) * 1e4)
        self.niche_expr = torch.log1p(prof[kind] / prof[kind].sum(1, keepdim=True) * 1e4)
        self.n, self.global_batch, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.epoch, self.start = rank, world_size, 0, 0
        self.local_batch = batch_size // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        for t in range(len(self)):
            glob = perm[t * self.global_batch : (t + 1) * self.global_batch]
            idx = glob[self.rank :: self.world_size]
            yield {
                K.spot_image: self.spot_image[idx],
                K.niche_image: self.niche_image[idx],
                K.spot_expr: self.spot_expr[idx],
                K.niche_expr: self.niche_expr[idx],
                K.has_image: torch.ones(len(idx), dtype=torch.bool),
                K.has_expr: torch.ones(len(idx), dtype=torch.bool),
                K.index: idx,
            }
