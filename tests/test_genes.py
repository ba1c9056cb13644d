from __future__ import annotations

import logging

import numpy as np
import pytest
from anndata import AnnData

from stalign.pp._genes import (
    build_vocabulary,
    ensembl_to_symbol,
    gene_coverage,
    gene_index,
    normalize_symbol,
    to_vocabulary_symbols,
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


def test_ensembl_human_and_mouse(data_dir):
    ids = ["ENSG00000123560", "ENSMUSG00000041607.3", "Mbp", "ENSG99999999999"]
    out = ensembl_to_symbol(ids, data_dir=data_dir)
    assert list(out) == ["PLP1", "Mbp", "Mbp", "ENSG99999999999"]
    assert list(to_vocabulary_symbols(ids, data_dir=data_dir))[:3] == ["PLP1", "MBP", "MBP"]
    assert list(gene_index(ids, ["MBP", "PLP1"], data_dir=data_dir)) == [1, 0, 0, -1]


def test_ensembl_without_reference_warns(tmp_path):
    for _ in range(2):  # Ensembl ids are never served from the cache: the warning comes every time
        with pytest.warns(UserWarning, match="no reference table is reachable"):
            idx = gene_index(["ENSG00000123560"], ["PLP1"], data_dir=tmp_path)
        assert list(idx) == [-1]


def test_coverage_and_vocabulary(data_dir, caplog):
    a = AnnData(np.zeros((1, 3), np.float32))
    a.var_names = ["Mbp", "Plp1", "Xist"]
    vocab = build_vocabulary([a, ["ENSG00000123560", "GFAP"]], data_dir=data_dir)
    assert vocab == ["GFAP", "MBP", "PLP1", "XIST"]
    assert build_vocabulary([a, ["ENSG00000123560", "GFAP"]], min_sections=2, data_dir=data_dir) == ["PLP1"]
    with caplog.at_level(logging.INFO, logger="stalign.pp._genes"):
        cov = gene_coverage(["MBP", "NOPE"], vocab, name="toy")
    assert cov == 0.5 and "toy" in caplog.text
    with pytest.raises(ValueError, match="duplicate"):
        gene_index(["A"], ["a", "A"])


def test_real_coverage_dlpfc_and_mob(data_dir):
    """≥ 95 % of the DLPFC and MOB Ensembl ids map into a vocabulary built from all sections' symbols."""
    import pandas as pd

    rda_genes = None
    try:
        from stalign.io._common import read_rdata

        obj = read_rdata(data_dir / "dlpfc_banksy_counts" / "data" / "dlpfc151673.rda")["dlpfc151673"]
        rda_genes = [str(g) for g in obj["expression"].coords["dim_0"].values]
    except FileNotFoundError:
        pytest.skip("DLPFC counts not present")
    mob = pd.read_csv(data_dir / "stutility_mob/inst/extdata/counts/MOB1.tsv", sep="\t", index_col=0, nrows=1)
    mob_genes = list(mob.columns)
    human = pd.read_csv(data_dir / "reference/human_grch38_features.tsv.gz", sep="\t", header=None)[1]
    mouse = pd.read_csv(data_dir / "reference/mouse_mm10_features.tsv.gz", sep="\t", header=None)[1]
    vocab = build_vocabulary([human, mouse])
    assert gene_coverage(rda_genes, vocab, data_dir=data_dir) >= 0.95
    # the stricter figure: ids whose reference name is a real symbol (GRCh38-2024 names ~6 % by their id)
    syms = to_vocabulary_symbols(rda_genes, data_dir=data_dir)
    assert np.mean([not s.startswith("ENSG") for s in syms]) >= 0.93
    assert gene_coverage(mob_genes, vocab, data_dir=data_dir) >= 0.95
