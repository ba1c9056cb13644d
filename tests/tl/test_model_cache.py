"""tl.resolve_model: a model given by name or path is verified once per process and reused while unchanged."""

from __future__ import annotations

import os

import pytest
import torch

from stalign.models import STAlign, STAlignConfig, save
from stalign.tl._embed import _MODEL_CACHE, clear_model_cache, resolve_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    cfg = STAlignConfig.base(["CD3E", "MS4A1", "KRT19"], spot_size=16, niche_size=16, token_dim=16, n_heads=2,
                             gene_dim=16, embed_dim=16)  # fmt: skip
    path = save(STAlign(cfg), tmp_path / "m")
    clear_model_cache()
    yield path
    clear_model_cache()


def test_same_path_reuses_the_verified_model(saved, monkeypatch):
    import stalign.models as models

    a, _ = resolve_model(saved, device="cpu")
    calls = []
    monkeypatch.setattr(models, "load", lambda *args, **kw: calls.append(args) or pytest.fail("reloaded"))
    b, _ = resolve_model(str(saved), device="cpu")
    assert b is a and calls == []
    assert a.weights_sha256 is not None


def test_rewritten_weights_are_loaded_and_verified_again(saved):
    a, _ = resolve_model(saved, device="cpu")
    weights = saved / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF  # tamper with the last tensor byte (file size unchanged)
    weights.write_bytes(bytes(raw))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(ValueError, match="sha256"):
        resolve_model(saved, device="cpu")


def test_weights_modified_in_place_are_not_reused(saved):
    a, _ = resolve_model(saved, device="cpu")
    with torch.no_grad():
        next(a.parameters()).add_(1.0)  # e.g. someone fine-tuned the returned module
    b, _ = resolve_model(saved, device="cpu")
    assert b is not a
    p_a, p_b = next(a.parameters()), next(b.parameters())
    torch.testing.assert_close(p_a - 1.0, p_b)  # b holds the weights of the file again


def test_module_passed_in_is_used_as_is(saved):
    from stalign.models import load

    m = load(saved)
    got, dev = resolve_model(m, device="cpu")
    assert got is m and dev.type == "cpu"
    assert len(_MODEL_CACHE) == 0
