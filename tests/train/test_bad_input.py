"""Bad input to train (pretrain, finetune): a clear error before any work, inputs unchanged, nothing written.

The cases run through the harness of ``tests/_bad_input.py`` (error type, two regexes, a deep before/after
snapshot of every input) on the synthetic section and tiny model of ``tests/conftest.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import stalign as sta

from .._bad_input import Catalogue

CASES = Catalogue()
case = CASES.case


def _pretrain(ctx, sections, **kw):
    kw = {"output_dir": ctx.tmp / "run", "device": "cpu", "show_progress_bar": False, "epochs": 1, **kw}
    return [*sections], lambda: sta.train.pretrain(sections, kw.pop("config", "base"), **kw)


@case("train-no-sections", ValueError, r"`sections` is empty", r"pass at least one")
def _(ctx):
    return _pretrain(ctx, [])


def _pretrain_nothing_written(ctx, sections, **kw):
    """:func:`_pretrain`, and the output folder must not have been created (validation comes before any work)."""
    inputs, call = _pretrain(ctx, [] if sections is None else sections, **kw)
    if sections is None:
        kw = {"output_dir": ctx.tmp / "run", "device": "cpu", "show_progress_bar": False, **kw}
        call = lambda: sta.train.pretrain(None, "base", **kw)  # noqa: E731
    out = Path(kw.get("output_dir", ctx.tmp / "run"))
    existed = out.exists()

    def checked():
        try:
            return call()
        finally:
            assert out.exists() == existed, f"{out} was created by a call that failed"

    return inputs, checked


def _bad_option(name, exc, problem, fix, **options):
    """A case: ``options`` refused for a 40-spot section before any work (no output folder is created)."""
    case(name, exc, problem, fix)(lambda ctx: _pretrain_nothing_written(ctx, [ctx.sdata(40)], **options))


_bad_option("train-zero-epochs", ValueError, r"epochs=0", r"positive integer", epochs=0)
_bad_option("train-batch-of-one", ValueError, r"batch_size=1", r"integer >= 2", batch_size=1)
_bad_option(
    "train-unknown-preset", ValueError, r"Unknown preset 'huge'", r"choose one of \['base', 'large'\]", config="huge"
)
_bad_option("train-gene-dropout-above-one", ValueError, r"gene_dropout=2", r"in \[0, 1\)", gene_dropout=2)
_bad_option("train-negative-lr", ValueError, r"lr=-1", r"finite positive number or None \(e.g. 5e-4\)", lr=-1)
_bad_option("train-nan-lr", ValueError, r"lr=nan", r"finite positive number", lr=float("nan"))
_bad_option(
    "train-negative-warmup",
    ValueError,
    r"warmup_epochs=-1",
    r"finite non-negative number \(e.g. 2.0\)",
    warmup_epochs=-1,
)
_bad_option(
    "train-checkpoint-every-zero", ValueError, r"checkpoint_every=0", r"positive integer or None", checkpoint_every=0
)
_bad_option("train-epochs-bool", TypeError, r"epochs=True \(bool\)", r"positive integer", epochs=True)
_bad_option("train-batch-size-float", TypeError, r"batch_size=64.0 \(float\)", r"integer >= 2", batch_size=64.0)
_bad_option(
    "train-unknown-option", TypeError, r"Unknown training option\(s\) \['epoch'\]", r"valid options .*'epochs'", epoch=2
)
_bad_option(
    "train-config-of-wrong-type", TypeError, r"train='fast'", r"pass a stalign.train.TrainConfig, a dict", train="fast"
)
_bad_option(
    "train-unknown-dataset-kwarg",
    TypeError,
    r"dataset_kwargs has unknown key\(s\) \['spot_size'\]",
    r"'spot_um'",
    dataset_kwargs={"spot_size": 32},
)


@case("train-sections-none", TypeError, r"`sections` is None", r"pass a list of SpatialData/AnnData sections")
def _(ctx):
    return _pretrain_nothing_written(ctx, None)


@case("train-section-of-wrong-type", TypeError, r"sections\[1\] is a int", r"SpatialData, an AnnData or a loader")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40), 5])


@case("train-output-dir-is-a-file", FileExistsError, r"run.txt'.* exists and is not a directory", r"directory path")
def _(ctx):
    f = ctx.tmp / "run.txt"
    f.write_text("keep me")
    sd = ctx.sdata(40)
    return [f, sd], _pretrain(ctx, [sd], output_dir=f)[1]


@case("train-output-dir-under-a-file", FileExistsError, r"a parent of output_dir", r"pass a directory path")
def _(ctx):
    f = ctx.tmp / "plain"
    f.write_text("keep me")
    sd = ctx.sdata(40)
    return [f, sd], _pretrain(ctx, [sd], output_dir=f / "run")[1]


@case("finetune-zero-epochs-in-config", ValueError, r"epochs=0", r"positive integer")
def _(ctx):
    cfg = sta.train.TrainConfig.finetune_defaults()
    cfg.epochs = 0  # assigned by hand after creation: the run checks the config again
    out = ctx.tmp / "ft"
    return [], lambda: sta.train.finetune(ctx.model, [ctx.sdata(40)], output_dir=out, train=cfg)


def _bad_counts(ctx, value):
    sd = ctx.sdata(40)
    t = sd.tables["table"]
    X = t.X.toarray()
    X[3, 5] = value
    t.X = sparse.csr_matrix(X)
    return sd


@case("train-nan-counts", ValueError, r"counts of section 'toy' contain NaN", r"put the raw counts in `X`")
def _(ctx):
    return _pretrain_nothing_written(ctx, [_bad_counts(ctx, np.nan)])


@case("train-negative-counts", ValueError, r"contain negative values", r"Put the raw counts")
def _(ctx):
    return _pretrain_nothing_written(ctx, [ctx.sdata(40), _bad_counts(ctx, -2.0)])


@case("finetune-nan-counts", ValueError, r"contain NaN or infinite values", r"raw counts")
def _(ctx):
    sd = _bad_counts(ctx, np.inf)
    out = ctx.tmp / "ft"
    kw = {"output_dir": out, "device": "cpu", "show_progress_bar": False, "epochs": 1}
    model = copy.deepcopy(ctx.model)  # finetune trains a given module in place
    return [sd], lambda: sta.train.finetune(model, [sd], **kw)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, bad_input_ctx):
    CASES.check(name, bad_input_ctx)
