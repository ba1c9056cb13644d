from __future__ import annotations

import json

import pytest
import torch

import stalign.models as sm
from stalign.models import STAlign, available_models, load, save

from .conftest import make_batch, tiny_config


def _outputs(model, batch):
    with torch.no_grad():
        return model.eval().embed(batch)


def test_save_load_exact(tmp_path, model, batch):
    with torch.no_grad():  # make BN running stats non-trivial
        model.train().embed(batch)
    path = model.save(tmp_path / "m")
    assert {p.name for p in path.iterdir()} == {"model.safetensors", "config.json"}
    meta = json.loads((path / "config.json").read_text())
    assert meta["config"]["genes"] == model.config.genes
    assert len(meta["weights_sha256"]) == 64 and "stalign_version" in meta
    loaded = load(path, device="cpu")
    assert loaded.config == model.config
    assert not loaded.training
    a, b = _outputs(model, batch), _outputs(loaded, batch)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # also by weights file or config path, and with an explicit sha256
    load(path / "model.safetensors", device="cpu", sha256=meta["weights_sha256"])
    load(path / "config.json", device="cpu")
    with pytest.raises(ValueError, match="sha256"):
        load(path, device="cpu", sha256="0" * 64)


def test_save_load_shared_trunk_learned_temperature(tmp_path):
    m = STAlign(tiny_config(share_image_encoder=True, learn_temperature=True))
    save(m, tmp_path / "m")
    loaded = load(tmp_path / "m", device="cpu")
    assert loaded.spot_image_encoder.trunk is loaded.niche_image_encoder.trunk
    b = make_batch()
    for k, v in _outputs(m, b).items():
        assert torch.equal(v, _outputs(loaded, b)[k])


def test_truncated_and_tampered(tmp_path, model):
    path = save(model, tmp_path / "m")
    w = path / "model.safetensors"
    raw = w.read_bytes()
    w.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load(path, device="cpu")
    tampered = bytearray(raw)
    tampered[-10] ^= 0xFF
    w.write_bytes(bytes(tampered))
    with pytest.raises(ValueError, match="sha256"):
        load(path, device="cpu")
    # a truncated file whose recorded hash was also changed is still refused (it does not parse)
    w.write_bytes(raw[: len(raw) // 2])
    meta = json.loads((path / "config.json").read_text())
    meta.pop("weights_sha256")
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="safetensors"):
        load(path, device="cpu")


def test_config_weights_mismatch(tmp_path, model):
    path = save(model, tmp_path / "m")
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["token_dim"] = 32
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not (fit|match)"):
        load(path, device="cpu")
    meta["config"]["token_dim"] = 16
    meta["config"]["niche_gene_layers"] = 2
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not match"):
        load(path, device="cpu")


def test_registry_and_missing(tmp_path, monkeypatch):
    assert "stalign-base" in available_models()
    # the bundled weights load offline and their sha256 is the registry's
    import stalign.models._io as io_mod

    m = load("stalign-base")
    assert m.weights_sha256 == io_mod.REGISTRY["stalign-base"]["sha256"]
    assert m.source == "stalign-base"
    # a registered name whose files are missing says so
    monkeypatch.setitem(io_mod.REGISTRY, "stalign-missing", {**io_mod.REGISTRY["stalign-base"], "sha256": None})
    with pytest.raises(FileNotFoundError, match="not bundled"):
        load("stalign-missing")
    with pytest.raises(FileNotFoundError, match="registered"):
        load(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(tmp_path)


def test_registry_load_verifies_sha(tmp_path, model, monkeypatch):
    path = save(model, tmp_path / "m")
    sha = json.loads((path / "config.json").read_text())["weights_sha256"]
    import stalign.models._io as io_mod

    class _Root:
        def joinpath(self, rel):
            return tmp_path / rel

    monkeypatch.setattr(io_mod.resources, "files", lambda pkg: _Root())
    entry = {"file": "m/model.safetensors", "config": "m/config.json", "sha256": sha, "version": "x", "description": ""}
    monkeypatch.setitem(io_mod.REGISTRY, "tiny-test", entry)
    assert isinstance(sm.load("tiny-test", device="cpu"), STAlign)
    monkeypatch.setitem(io_mod.REGISTRY, "tiny-test", {**entry, "sha256": "f" * 64})
    with pytest.raises(ValueError, match="sha256"):
        sm.load("tiny-test", device="cpu")


def test_format_1_weights_load_through_the_renamed_heads(tmp_path):
    """Files written before the ABFN heads were renamed (``fused``/``niche`` → ``joint``/``niche_joint``) still load."""
    import json

    from safetensors.torch import load_file, save_file

    from stalign.models import STAlign, STAlignConfig, load, save
    from stalign.models._io import sha256_file

    torch.manual_seed(0)
    cfg = STAlignConfig.base(
        ["A", "B"], spot_size=16, niche_size=16, token_dim=16, n_heads=2, gene_dim=16, embed_dim=16
    )
    m = STAlign(cfg)
    d = save(m, tmp_path / "m")
    state = load_file(str(d / "model.safetensors"))
    old = {k.replace("heads.joint.", "heads.fused.").replace("heads.niche_joint.", "heads.niche."): v
           for k, v in state.items()}  # fmt: skip
    save_file(old, str(d / "model.safetensors"))
    meta = json.loads((d / "config.json").read_text())
    meta.update(format_version=1, weights_sha256=sha256_file(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(meta))
    back = load(d)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)
