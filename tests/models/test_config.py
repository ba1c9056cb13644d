from __future__ import annotations

import json

import pytest

from stalign.models import STAlignConfig

from .conftest import GENES, tiny_config


def test_json_round_trip(tmp_path):
    cfg = tiny_config(learn_temperature=True, w_gene_ns=0.25, share_image_encoder=True)
    s = cfg.to_json(tmp_path / "c.json")
    assert json.loads(s)["genes"] == GENES
    assert STAlignConfig.from_json(tmp_path / "c.json") == cfg
    assert STAlignConfig.from_json(s) == cfg
    assert STAlignConfig.from_dict(cfg.to_dict()) == cfg


def test_genes_are_upper_cased_and_deduplicated():
    assert STAlignConfig.base(["Mbp", "gfap"]).genes == ["MBP", "GFAP"]
    with pytest.raises(ValueError, match="duplicated"):
        STAlignConfig.base(["Mbp", "MBP"])
    with pytest.raises(TypeError, match="sequence"):
        STAlignConfig.base("MBP")
    with pytest.raises(ValueError, match="empty"):
        STAlignConfig.base([])


def test_presets():
    base = STAlignConfig.preset("base", GENES)
    large = STAlignConfig.preset("large", GENES, spot_size=32)
    assert (base.n_tokens, base.token_dim) == (4, 128)
    assert large.spot_encoder == "resnet50" and large.niche_encoder == "vit_large_patch16_224"
    assert (large.n_tokens, large.token_dim, large.niche_gene_layers) == (8, 512, 6)
    assert large.freeze_niche_encoder and large.spot_size == 32
    assert base.loss_weights["spot"] == 0.3 and base.loss_weights["ns"] == 0.4
    with pytest.raises(ValueError, match="preset"):
        STAlignConfig.preset("huge", GENES)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("token_dim", 31, "divisible"),
        ("temperature", 0, "temperature"),
        ("w_spot", -1, "w_spot"),
        ("n_tokens", 0, "n_tokens"),
    ],
)
def test_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**{field: value})


def test_unknown_field():
    d = tiny_config().to_dict()
    d["bogus"] = 1
    with pytest.raises(KeyError, match="bogus"):
        STAlignConfig.from_dict(d)


@pytest.mark.parametrize("bad", [0, -5.0, float("nan"), "110", True])
def test_niche_radius_must_be_positive_or_none(bad):
    with pytest.raises(ValueError, match="niche_radius_um"):
        STAlignConfig.base(["CD3E"], niche_radius_um=bad)


def test_niche_radius_round_trips_and_defaults_to_per_section():
    cfg = STAlignConfig.base(["CD3E"])
    assert cfg.niche_radius_um is None
    cfg = STAlignConfig.base(["CD3E"], niche_radius_um=150.0)
    assert STAlignConfig.from_dict(cfg.to_dict()).niche_radius_um == 150.0
