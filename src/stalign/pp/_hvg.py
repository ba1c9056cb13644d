"""Genes to predict: the highly variable genes shared by a set of reference sections."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from anndata import AnnData

from ._normalize import log_normalize


def reference_hvgs(tables: Sequence[AnnData], *, n_top_genes: int = 50, also_in: Sequence[AnnData] = ()) -> list[str]:
    """Top ``n_top_genes`` highly variable genes of reference sections (seurat dispersion, one batch per section).

    What :func:`stalign.tl.predict_expression` predicts by default, and what the evaluation scores: only genes that
    every reference (and every table of ``also_in``) measures are candidates; genes variable in more references
    rank first, then by normalised dispersion.

    Parameters
    ----------
    tables
        Reference tables with raw counts.
    n_top_genes
        Number of genes returned.
    also_in
        Further tables that must measure the genes too (e.g. a held-out query scored against its counts).

    Returns
    -------
    Gene names (``var_names`` of the references), most variable first.

    Examples
    --------
    >>> import stalign as sta
    >>> c2, c3, c6 = (sta.datasets.her2st(s).tables["table"] for s in ("C2", "C3", "C6"))
    >>> genes = sta.pp.reference_hvgs([c2, c3], n_top_genes=50, also_in=[c6])
    >>> len(genes), all(g in c6.var_names and g in c2.var_names for g in genes)
    (50, True)
    """
    import anndata as ad
    import scanpy as sc

    from .._validators import check_int

    check_int(n_top_genes, "n_top_genes")
    tables = list(tables)
    if not tables:
        msg = "reference_hvgs needs at least one reference table with raw counts."
        raise ValueError(msg)
    common = pd.Index(tables[0].var_names)
    for t in [*tables[1:], *also_in]:
        common = common.intersection(pd.Index(t.var_names))
    if len(common) < n_top_genes:
        msg = (
            f"The sections share only {len(common)} genes (< n_top_genes={n_top_genes}); use sections measured on "
            "overlapping gene panels, or ask for fewer genes."
        )
        raise ValueError(msg)
    parts = []
    for i, t in enumerate(tables):
        sub = t[:, common]
        parts.append(
            AnnData(
                log_normalize(sub.X),
                obs=pd.DataFrame({"batch": str(i)}, index=[f"{i}_{o}" for o in sub.obs_names]),
                var=pd.DataFrame(index=common),
            )
        )
    tmp = ad.concat(parts) if len(parts) > 1 else parts[0]
    tmp.var_names = common
    kw = {"batch_key": "batch"} if len(parts) > 1 else {}
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat", **kw)
    var = tmp.var
    if "highly_variable_nbatches" in var:
        var = var.sort_values(["highly_variable_nbatches", "dispersions_norm"], ascending=False)
    else:
        var = var.sort_values("dispersions_norm", ascending=False)
    return list(var.index[:n_top_genes])
