"""Gene vocabulary: symbols, the bundled Ensembl tables, scanpy's var columns, and mapping on any machine."""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from stalign._genes import (
    build_vocabulary,
    check_vocabulary,
    ensembl_to_symbol,
    gene_coverage,
    gene_index,
    normalize_symbol,
    reference_table,
    to_vocabulary_symbols,
    var_symbols,
)


def test_symbols_fast_path():
    assert list(normalize_symbol(["Mbp", " plp1 "])) == ["MBP", "PLP1"]
    assert list(gene_index(["Mbp", "Gfap", "XYZ"], ["GFAP", "MBP"])) == [1, 0, -1]


def test_gene_index_repeats_are_cached_copies():
    names, vocab = ["Mbp", "Gfap", "XYZ"], ["GFAP", "MBP", "PLP1"]
    first = gene_index(names, vocab)
    first[:] = 7  # the caller owns its array: the cached result is unaffected
    assert list(gene_index(names, vocab)) == [1, 0, -1]
    assert list(gene_index(names, ["MBP", "GFAP"])) == [0, 1, -1]  # another vocabulary, another result
    with pytest.raises(ValueError, match="duplicate"):
        gene_index(names, ["MBP", "mbp"])


def test_ensembl_human_and_mouse_from_the_bundled_tables():
    ids = ["ENSG00000123560", "ENSMUSG00000041607.3", "Mbp", "ENSG99999999999"]
    assert list(ensembl_to_symbol(ids)) == ["PLP1", "Mbp", "Mbp", "ENSG99999999999"]
    assert list(to_vocabulary_symbols(ids))[:3] == ["PLP1", "MBP", "MBP"]
    assert list(gene_index(ids, ["MBP", "PLP1"])) == [1, 0, 0, -1]


@pytest.mark.parametrize(
    ("species", "name"), [("human", "human_grch38_features.tsv.gz"), ("mouse", "mouse_mm10_features.tsv.gz")]
)
def test_bundled_tables_are_the_shared_reference(data_dir, species, name):
    """Every id of ../shared/data/reference maps to the symbol its first row gives (version stripped)."""
    with gzip.open(data_dir / "reference" / name, "rt") as f:
        ref = pd.read_csv(f, sep="\t", header=None, usecols=[0, 1], dtype=str)
    ids = ref[0].str.replace(r"\.\d+$", "", regex=True)
    first = pd.Series(ref[1].to_numpy(), index=ids)
    first = first[~first.index.duplicated()]
    bundled = reference_table(species)
    assert len(bundled) == len(first)
    pd.testing.assert_series_equal(bundled.reindex(first.index), first, check_names=False)


def test_var_symbols_follow_scanpys_columns():
    X = np.zeros((2, 3), np.float32)
    # read_10x_h5(gex_only, var_names="gene_ids"): Ensembl ids as names, symbols in var["gene_symbols"]
    t = AnnData(X, var=pd.DataFrame({"gene_symbols": ["Mbp", "PLP1", None]}, index=["x1", "x2", "ENSG00000132639"]))
    assert list(var_symbols(t)) == ["MBP", "PLP1", "SNAP25"]  # a missing symbol falls back to the (mapped) name
    # symbols as names but one unknown: var["gene_ids"] rescues it
    t = AnnData(X, var=pd.DataFrame({"gene_ids": ["ENSG00000197971", "ENSG00000123560", "ENSG00000132639"]},
                                    index=["MBP", "PLP1", "ENSG00000132639.5"]))  # fmt: skip
    assert list(var_symbols(t)) == ["MBP", "PLP1", "SNAP25"]
    assert list(gene_index(t, ["SNAP25", "MBP"])) == [1, -1, 0]


def test_coverage_and_vocabulary(caplog):
    a = AnnData(np.zeros((1, 3), np.float32))
    a.var_names = ["Mbp", "Plp1", "Xist"]
    vocab = build_vocabulary([a, ["ENSG00000123560", "GFAP"]])
    assert vocab == ["GFAP", "MBP", "PLP1", "XIST"]
    assert build_vocabulary([a, ["ENSG00000123560", "GFAP"]], min_sections=2) == ["PLP1"]
    with caplog.at_level(logging.INFO, logger="stalign._genes"):
        cov = gene_coverage(["MBP", "NOPE"], vocab, name="toy")
    assert cov == 0.5 and "toy" in caplog.text
    with pytest.raises(ValueError, match="duplicate"):
        gene_index(["A"], ["a", "A"])
    with pytest.raises(TypeError, match="min_sections=True"):
        build_vocabulary([a], min_sections=True)


def test_check_vocabulary_reads_the_table():
    t = AnnData(np.zeros((1, 2), np.float32), var=pd.DataFrame(index=["ENSG00000197971", "ENSG00000123560"]))
    assert check_vocabulary(t, ["MBP", "PLP1", "GFAP"]) == (2, 1.0)
    with pytest.raises(ValueError, match="None of the 2 genes"):
        check_vocabulary(["A1", "B2"], ["MBP"])


def test_real_coverage_dlpfc_and_mob(data_dir):
    """≥ 95 % of the DLPFC and MOB Ensembl ids map into a vocabulary built from all sections' symbols."""
    from stalign.datasets._rdata import read_rdata

    obj = read_rdata(data_dir / "dlpfc_banksy_counts" / "data" / "dlpfc151673.rda")["dlpfc151673"]
    rda_genes = [str(g) for g in obj["expression"].coords["dim_0"].values]
    mob = pd.read_csv(data_dir / "stutility_mob/inst/extdata/counts/MOB1.tsv", sep="\t", index_col=0, nrows=1)
    mob_genes = list(mob.columns)
    human = pd.read_csv(data_dir / "reference/human_grch38_features.tsv.gz", sep="\t", header=None)[1]
    mouse = pd.read_csv(data_dir / "reference/mouse_mm10_features.tsv.gz", sep="\t", header=None)[1]
    vocab = build_vocabulary([human, mouse])
    assert gene_coverage(rda_genes, vocab) >= 0.95
    # the stricter figure: ids whose reference name is a real symbol (GRCh38-2024 names ~6 % by their id)
    syms = to_vocabulary_symbols(rda_genes)
    assert np.mean([not s.startswith("ENSG") for s in syms]) >= 0.93
    assert gene_coverage(mob_genes, vocab) >= 0.95


_FOREIGN = textwrap.dedent(
    """
    import os, sys, warnings
    import anndata as ad, numpy as np
    assert "STALIGN_DATA_DIR" not in os.environ
    import stalign as sta
    sym, ens = ad.read_h5ad("symbols.h5ad"), ad.read_h5ad("ensembl.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: every id maps
        for a in (sym, ens):
            sta.tl.embed(a, show_progress_bar=False)
    diff = {k: float(np.abs(sym.obsm[k] - ens.obsm[k]).max()) for k in sym.obsm if k.startswith("X_stalign")}
    finite = all(np.isfinite(a.obsm[k]).all() for a in (sym, ens) for k in a.obsm if k.startswith("X_stalign"))
    print(len(diff), max(diff.values()), finite)
    """
)


def test_ensembl_twin_embeds_like_its_symbols_on_a_machine_without_data(data_dir, tmp_path):
    """From a folder outside the repository, with STALIGN_DATA_DIR unset: Ensembl ids embed like their symbols.

    The parent process writes the two ``.h5ad`` files from the real DLPFC 151674 (its counts are Ensembl-indexed in the
    source; the reader maps them to symbols and keeps the ids in ``var["gene_ids"]``). The child sees no data folder.
    """
    import stalign as sta

    ad = sta.io.to_anndata(sta.datasets.dlpfc("151674", data_dir=data_dir))
    ad = ad[:400].copy()
    ad.write_h5ad(tmp_path / "symbols.h5ad")
    ens = ad.copy()
    ens.var_names = ens.var["gene_ids"].astype(str).to_numpy()
    ens.var = ens.var.drop(columns=["gene_ids"])
    assert ens.var_names.str.startswith("ENSG").all()
    ens.write_h5ad(tmp_path / "ensembl.h5ad")
    env = {k: v for k, v in os.environ.items() if k != "STALIGN_DATA_DIR"}
    proc = subprocess.run([sys.executable, "-c", _FOREIGN], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    n, worst, finite = proc.stdout.split()
    assert int(n) == 4 and float(worst) <= 1e-5 and finite == "True", proc.stdout
