from __future__ import annotations

import pytest
import torch

from stalign._batch import BatchKey as K
from stalign.models import STAlign, STAlignConfig

from .._synthetic import toy_config

GENES = [f"GENE{i}" for i in range(64)]


def tiny_config(**overrides) -> STAlignConfig:
    """The tests' tiny config (:func:`tests._synthetic.toy_config`) with 32 px crops and 16-dimensional embeddings."""
    encoder = {"channels": [8, 8, 16, 16], "stem_width": 8}
    params = {"spot_size": 32, "niche_size": 32, "token_dim": 16, "gene_dim": 16, "embed_dim": 16}
    params |= {"spot_encoder_kwargs": encoder, "niche_encoder_kwargs": dict(encoder)}
    return toy_config(GENES, **{**params, **overrides})


def make_batch(n: int = 8, *, n_genes: int = len(GENES), seed: int = 0, image=True, expr=True) -> dict:
    g = torch.Generator().manual_seed(seed)
    expr_spot = torch.rand(n, n_genes, generator=g) * (torch.rand(n, n_genes, generator=g) < 0.3)
    return {
        K.spot_image: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
        K.niche_image: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
        K.spot_expr: torch.log1p(expr_spot * 10),
        K.niche_expr: torch.log1p(torch.rand(n, n_genes, generator=g) * 5),
        K.has_image: torch.full((n,), bool(image)),
        K.has_expr: torch.full((n,), bool(expr)),
        K.section: torch.zeros(n, dtype=torch.long),
        K.cluster: torch.arange(n) % 3,
        K.index: torch.arange(n),
    }


@pytest.fixture
def config() -> STAlignConfig:
    return tiny_config()


@pytest.fixture
def model(config) -> STAlign:
    torch.manual_seed(0)
    return STAlign(config)


@pytest.fixture
def batch() -> dict:
    return make_batch()
