"""Attention-based fusion network (ABFN) and projection heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _CrossBranch(nn.Module):
    """Queries attend to a context (LayerNorm on queries and keys), then an FFN; both residual."""

    def __init__(self, dim: int, n_heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim * ffn_mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * ffn_mult, dim)
        )

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kvn = self.norm_kv(kv)
        h = q + self.attn(self.norm_q(q), kvn, kvn, need_weights=False)[0]
        return h + self.ffn(self.norm_ffn(h))


class ABFN(nn.Module):
    """Bidirectional cross-attention fusion of image and gene tokens.

    Image tokens attend to gene tokens and gene tokens attend to image tokens; each branch goes through an
    FFN; the two are concatenated along the feature axis and LayerNormed: ``(B, T, W)`` × 2 → ``(B, T, 2W)``.
    """

    def __init__(self, dim: int, *, n_heads: int, ffn_mult: int = 2, dropout: float = 0.0):
        super().__init__()
        self.image_branch = _CrossBranch(dim, n_heads, ffn_mult, dropout)
        self.gene_branch = _CrossBranch(dim, n_heads, ffn_mult, dropout)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, image_tokens: torch.Tensor, gene_tokens: torch.Tensor) -> torch.Tensor:
        """Fuse ``(B, T, W)`` image and gene tokens into ``(B, T, 2W)``."""
        if image_tokens.shape != gene_tokens.shape:
            msg = (
                f"Image tokens {tuple(image_tokens.shape)} and gene tokens {tuple(gene_tokens.shape)} differ in shape."
            )
            raise ValueError(msg)
        a = self.image_branch(image_tokens, gene_tokens)
        g = self.gene_branch(gene_tokens, image_tokens)
        return self.norm(torch.cat([a, g], dim=-1))


class ProjectionHead(nn.Module):
    """Mean-pool tokens ``(B, T, W)`` → MLP → L2-normalised ``(B, embed_dim)``."""

    def __init__(self, in_dim: int, embed_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Project tokens into the shared space."""
        return F.normalize(self.net(tokens.mean(dim=1)), dim=-1)


class PredictionHead(nn.Module):
    """Tokens ``(B, T, W)`` → LayerNorm → MLP → ``(B, n_out)`` unnormalised predictions (e.g. expression of genes)."""

    def __init__(self, in_dim: int, hidden: int, n_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, n_out))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Predict from the flattened tokens (their order carries information, unlike the pooled projection)."""
        return self.net(tokens.flatten(1))
