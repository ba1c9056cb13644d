"""Bad input to the command line: it fails with a message naming the problem and the fix; files unchanged.

The cases run through the harness of ``tests/_bad_input.py`` (error type, two regexes, a deep before/after
snapshot of every input) on the synthetic section and tiny model of ``tests/conftest.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ._bad_input import Catalogue, CliFailed, run_cli

CASES = Catalogue()
case = CASES.case


def _h5ad(ctx) -> Path:
    p = ctx.tmp / "section.h5ad"
    ctx.ad.write_h5ad(p)
    return p


@case("cli-output-exists", CliFailed, r"Output .*out.h5ad' exists", r"pass --overwrite")
def _(ctx):
    src, out = _h5ad(ctx), ctx.tmp / "out.h5ad"
    out.write_text("earlier results")
    return [src, out], lambda: run_cli(["embed", src, "--out", out, "--model", ctx.saved_model(), "--quiet"])


@case("cli-output-folder-missing", CliFailed, r"Output folder .*absent' does not exist", r"create it first")
def _(ctx):
    src = _h5ad(ctx)
    return [src], lambda: run_cli(["embed", src, "--out", ctx.tmp / "absent" / "o.h5ad", "--quiet"])


@case("cli-output-inside-a-file", CliFailed, r"Output folder .*plain.txt' is not a folder", r"inside an existing")
def _(ctx):
    src, f = _h5ad(ctx), ctx.tmp / "plain.txt"
    f.write_text("x")
    return [src, f], lambda: run_cli(["embed", src, "--out", f / "o.h5ad", "--quiet"])


@case("cli-output-unwritable", CliFailed, r"Output folder .* is not writable", r"folder you can write to")
def _(ctx):
    src = _h5ad(ctx)
    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses new files even to root
        if not Path("/proc").is_dir():
            pytest.skip("no read-only folder to test with")
        out = Path("/proc/stalign-out.h5ad")
    else:
        ro = ctx.tmp / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out = ro / "o.h5ad"
    return [src], lambda: run_cli(["embed", src, "--out", out, "--quiet"])


@case("cli-output-wrong-suffix", CliFailed, r"must end in .h5ad .* or .zarr", r"\.h5ad \(the table\)")
def _(ctx):
    src = _h5ad(ctx)
    return [src], lambda: run_cli(["embed", src, "--out", ctx.tmp / "o.csv", "--quiet"])


@case("cli-anndata-to-zarr", CliFailed, r"AnnData input can only be written as .h5ad", r"use an .h5ad path")
def _(ctx):
    src = _h5ad(ctx)
    return [src], lambda: run_cli(["embed", src, "--out", ctx.tmp / "o.zarr", "--quiet"])


@case("cli-zero-domains", CliFailed, r"--domains 0", r"positive integer \(e.g. --domains 7\)")
def _(ctx):
    src = _h5ad(ctx)
    return [src], lambda: run_cli(["embed", src, "--domains", "0", "--quiet"])


@case("cli-unknown-input", CliFailed, r"Unknown DLPFC sample 'nope'", r"available:")
def _(ctx):
    empty = ctx.tmp / "data"  # a datasets folder without the dataset: "available: none", with or without real data
    empty.mkdir()
    return [empty], lambda: run_cli(["info", "dlpfc:nope", "--data-dir", empty])


@case("cli-pretrain-config-unparseable", CliFailed, r"Cannot parse .*bad.toml' as TOML", r"toml|TOML")
def _(ctx):
    cfg = ctx.tmp / "bad.toml"
    cfg.write_text("[[[ not toml")
    return [cfg], lambda: run_cli(["pretrain", "--config", cfg])


@case("cli-pretrain-unknown-train-option", CliFailed, r"Unknown \[train\] option\(s\) \['epoch'\]", r"TrainConfig")
def _(ctx):
    cfg = ctx.tmp / "typo.toml"
    cfg.write_text('[data]\nsections = ["stutility_mob:MOB1"]\n[train]\noutput_dir = "o"\nepoch = 3\n')
    return [cfg], lambda: run_cli(["pretrain", "--config", cfg])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, bad_input_ctx):
    CASES.check(name, bad_input_ctx)
