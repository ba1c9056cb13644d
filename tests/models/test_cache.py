"""models.load(cache=True): a model given by name or path is verified once per process and reused while unchanged."""

from __future__ import annotations

import os

import pytest
import torch

from stalign.models import STAlign, STAlignConfig, clear_cache, load, save, weights_fingerprint
from stalign.models._io import _CACHE


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    cfg = STAlignConfig.base(["CD3E", "MS4A1", "KRT19"], spot_size=16, niche_size=16, token_dim=16, n_heads=2,
                             gene_dim=16, embed_dim=16)  # fmt: skip
    path = save(STAlign(cfg), tmp_path / "m")
    clear_cache()
    yield path
    clear_cache()


def test_same_path_reuses_the_verified_model(saved, monkeypatch):
    from stalign.models import _io

    a = load(saved, device="cpu", cache=True)
    assert load(saved, device="cpu") is not a  # without cache: the caller's own copy
    calls = []
    monkeypatch.setattr(_io, "_load_files", lambda *args, **kw: calls.append(args) or pytest.fail("reloaded"))
    b = load(str(saved), device="cpu", cache=True)
    assert b is a and calls == []
    assert a.weights_sha256 is not None


def test_rewritten_weights_are_loaded_and_verified_again(saved):
    load(saved, device="cpu", cache=True)
    weights = saved / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF  # tamper with the last tensor byte (file size unchanged)
    weights.write_bytes(bytes(raw))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(ValueError, match="sha256"):
        load(saved, device="cpu", cache=True)


def test_weights_modified_in_place_are_not_reused(saved):
    a = load(saved, device="cpu", cache=True)
    fp = weights_fingerprint(a)
    with torch.no_grad():
        next(a.parameters()).add_(1.0)  # e.g. someone fine-tuned the returned module
    assert weights_fingerprint(a) != fp  # the fingerprint follows the weights in memory
    b = load(saved, device="cpu", cache=True)
    assert b is not a and weights_fingerprint(b) == fp
    p_a, p_b = next(a.parameters()), next(b.parameters())
    torch.testing.assert_close(p_a - 1.0, p_b)  # b holds the weights of the file again


def test_module_passed_to_tl_is_used_as_is(saved):
    from stalign.models import resolve_model

    m = load(saved)
    got, dev = resolve_model(m, device="cpu")
    assert got is m and dev.type == "cpu"
    assert len(_CACHE) == 0
