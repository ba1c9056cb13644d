from __future__ import annotations

import resource

import pytest
import torch

from stalign.models import STAlign, STAlignConfig

from .conftest import GENES, make_batch


@pytest.mark.slow
def test_large_preset_forward_backward_two_spots():
    cfg = STAlignConfig.large(GENES, spot_size=32, niche_size=32)
    torch.manual_seed(0)
    m = STAlign(cfg)
    assert m.niche_image_encoder.feat_dim == 1024  # ViT-L
    assert m.spot_image_encoder.feat_dim == 2048  # ResNet-50
    assert not any(p.requires_grad for p in m.niche_image_encoder.trunk.parameters())
    m.train()
    out = m.loss(make_batch(n=2))
    assert set(out.components) == {"spot", "niche", "ns", "image_ns", "gene_ns"}
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert m.spot_image_encoder.trunk.conv1.weight.grad is not None
    assert m.niche_gene_encoder.transformer.layers[5].linear1.weight.grad is not None
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    assert peak_gb < 6, peak_gb
