"""`TrainConfig`: one default and one check per option, and how pretrain/finetune/pretrain_from_config use it."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import stalign as sta
from stalign.train import AugmentConfig, TrainConfig, _engine
from stalign.train import _api as api
from stalign.train._config import make_config


def test_defaults_are_those_of_pretraining():
    cfg = TrainConfig()
    assert cfg.checkpoint_every == 200  # the public functions' default (FitOptions had 500)
    assert (cfg.epochs, cfg.base_lr, cfg.warmup_epochs, cfg.weight_decay) == (20, 5e-4, 2.0, (0.04, 0.4))
    assert cfg.augment == AugmentConfig() and cfg.gene_dropout is None
    assert cfg.peak_lr() == pytest.approx(5e-4 * 128 / 256)
    assert TrainConfig(lr=1e-3).peak_lr() == 1e-3


def test_finetune_defaults_differ_in_four_fields_only():
    ft, pre = TrainConfig.finetune_defaults(), TrainConfig()
    diff = {f.name for f in dataclasses.fields(TrainConfig) if getattr(ft, f.name) != getattr(pre, f.name)}
    assert diff == {"base_lr", "warmup_epochs", "weight_decay", "epochs"}
    assert (ft.base_lr, ft.warmup_epochs, ft.weight_decay, ft.epochs) == (1e-4, 0.5, (0.04, 0.04), 5)
    assert TrainConfig.finetune_defaults(epochs=2, weight_decay=(0.1, 0.2)).weight_decay == (0.1, 0.2)


def test_public_functions_take_the_config_and_no_copy_of_its_options():
    for func in (sta.train.pretrain, sta.train.finetune):
        params = inspect.signature(func).parameters
        assert {"output_dir", "train", "options"} <= set(params)
        assert not set(params) & {f.name for f in dataclasses.fields(TrainConfig)}, func.__name__
    assert not hasattr(_engine, "FitOptions")
    assert not hasattr(api, "_check_int") and not hasattr(api, "_check_real")


def test_make_config_merges_train_and_options():
    base = TrainConfig(epochs=3, seed=4)
    cfg = make_config(base, {"epochs": 7})
    assert (cfg.epochs, cfg.seed) == (7, 4) and base.epochs == 3  # the given config is not changed
    assert make_config({"epochs": 2}, {"lr": 1e-3}) == TrainConfig(epochs=2, lr=1e-3)
    assert make_config(None, {}, finetune=True) == TrainConfig.finetune_defaults()
    assert make_config({"seed": 1}, {}, finetune=True).base_lr == 1e-4  # a dict starts from the fine-tuning defaults
    assert make_config(base, {}, finetune=True).base_lr == 5e-4  # a TrainConfig is used as given
    with pytest.raises(TypeError, match=r"Unknown training option\(s\) \['epoch'\].*'epochs'"):
        make_config(None, {"epoch": 3})
    with pytest.raises(TypeError, match=r"Unknown training option\(s\) \['output_dir'\]"):
        make_config({"output_dir": "x"}, {})
    with pytest.raises(TypeError, match="pass a stalign.train.TrainConfig, a dict"):
        make_config("fast", {})


def test_validation_and_canonical_forms():
    cfg = TrainConfig(
        epochs=np.int64(3), weight_decay=[0.1, 0.2], device=torch.device("cpu"), lr=1, resume=np.bool_(False)
    )
    assert type(cfg.epochs) is int and cfg.weight_decay == (0.1, 0.2) and cfg.device == "cpu"
    assert cfg.lr == 1.0 and cfg.resume is False
    assert TrainConfig(weight_decay=0.05).weight_decay == (0.05, 0.05)
    with pytest.raises(ValueError, match=r"^epochs=0; it must be a positive integer\.$"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match=r"^lr=-1; it must be a finite positive number or None \(e\.g\. 5e-4\)\.$"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match=r"weight_decay\[1\]=-1"):
        TrainConfig(weight_decay=(0.1, -1))
    with pytest.raises(ValueError, match=r"amp='fp8'"):
        TrainConfig(amp="fp8")
    with pytest.raises(TypeError, match=r"resume=1 \(int\); it must be True or False"):
        TrainConfig(resume=1)
    with pytest.raises(TypeError, match=r"dataset_kwargs has unknown key\(s\) \['spot_size'\].*'spot_um'"):
        TrainConfig(dataset_kwargs={"spot_size": 32})
    with pytest.raises(ValueError, match=r"Unknown augmentation option"):
        TrainConfig(augment={"blur": 1})
    cfg = TrainConfig()
    cfg.epochs = -1  # assigned by hand: validate() catches it, and so does every run (make_config re-checks)
    with pytest.raises(ValueError, match="epochs=-1"):
        cfg.validate()
    with pytest.raises(ValueError, match="epochs=-1"):
        make_config(cfg, {})


def test_gene_dropout_replaces_that_of_augment_without_changing_the_callers_config():
    aug = AugmentConfig(hed=0.0)
    cfg = TrainConfig(augment=aug, gene_dropout=0.1)
    assert cfg.augment.gene_dropout == 0.1 and cfg.augment.hed == 0.0
    assert aug.gene_dropout == 0.25  # a copy was changed
    assert TrainConfig(augment={"gene_dropout": 0.05}).augment.gene_dropout == 0.05  # not overridden by a default
    assert TrainConfig(augment=False, gene_dropout=0.1).augment is None


def test_to_dict_is_json_and_builds_the_same_config(tmp_path):
    cfg = TrainConfig(data_dir=tmp_path, dataset_kwargs={"drop_last": True}, augment={"hed": 0.01}, max_steps=5)
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["data_dir"] == str(tmp_path) and d["augment"]["hed"] == 0.01 and d["weight_decay"] == [0.04, 0.4]
    assert set(d) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert TrainConfig(**d) == cfg.replace(data_dir=str(tmp_path))


def test_pretrain_refuses_unknown_options_before_any_work(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TypeError, match=r"Unknown training option\(s\) \['epoch'\]"):
        sta.train.pretrain(None, output_dir=out, epoch=1)  # the options are checked before the sections
    with pytest.raises(TypeError, match=r"Unknown training option\(s\) \['epoch'\]"):
        sta.train.finetune("not-a-model", ["x:y"], output_dir=out, epoch=1)  # and before the model is loaded
    assert not out.exists()


def test_pretrain_from_config_passes_the_train_table(tmp_path, monkeypatch):
    seen = {}

    def fake(sections, config, *, output_dir, train):
        seen.update(sections=sections, config=config, output_dir=output_dir, train=train)
        return "model"

    monkeypatch.setattr(api, "pretrain", fake)
    path = tmp_path / "r.toml"
    path.write_text(
        '[data]\nsections = ["stutility_mob:MOB1"]\ndata_dir = "/d"\n'
        '[train]\noutput_dir = "o"\nepochs = 3\nweight_decay = [0.1, 0.2]\n'
    )
    assert sta.train.pretrain_from_config(path, epochs=5, device=None) == "model"
    assert seen["output_dir"] == "o" and seen["config"] == {"preset": "base"}
    assert seen["train"] == {"epochs": 5, "weight_decay": [0.1, 0.2], "data_dir": "/d"}
    path.write_text('[data]\nsections = ["stutility_mob:MOB1"]\n[train]\noutput_dir = "o"\nepoch = 3\n')
    with pytest.raises(ValueError, match=r"Unknown \[train\] option\(s\) \['epoch'\]; valid options are"):
        sta.train.pretrain_from_config(path)


@pytest.mark.slow
def test_run_json_records_the_full_config(data_dir, tmp_path):
    torch.set_num_threads(1)
    sd = sta.datasets.stutility_mob("MOB1", data_dir=data_dir)
    genes = list(sd.tables["table"].var_names[:100])
    model_cfg = sta.models.STAlignConfig.base(genes, spot_size=16, niche_size=16, token_dim=32, gene_dim=32)
    train = TrainConfig(epochs=1, batch_size=32, max_steps=1, show_progress_bar=False, device="cpu")
    sta.train.pretrain([sd], model_cfg, output_dir=tmp_path, train=train, checkpoint_every=None)
    run = json.loads(Path(tmp_path, "run.json").read_text())
    assert run["train"] == train.replace(checkpoint_every=None).to_dict()
    assert run["mode"] == "pretrain" and run["lr"] == pytest.approx(5e-4 * 32 / 256) and run["world_size"] == 1
    assert run["config"]["spot_size"] == 16
