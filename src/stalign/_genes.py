"""Gene vocabulary: one vocabulary of upper-case human symbols that every panel maps onto.

Human symbols are used as they are (upper-cased). Mouse symbols map by upper-casing (``Mbp`` → ``MBP``), which
resolves most, not all, orthologs. Human and mouse Ensembl gene ids (``ENSG…`` / ``ENSMUSG…``, a version suffix
such as ``.1`` is stripped) map through Ensembl → symbol tables that ship inside the package (``stalign/_data``,
derived from the 10x GRCh38 and mm10 ``features.tsv.gz`` by ``recipes/gene_tables.py``), so the mapping is the same
on every machine, with or without a data folder, from any working directory.

A table's genes are read the way scanpy's readers store them (:func:`var_symbols`): ``var["gene_symbols"]`` when
present (``read_10x_h5(..., gen_ids)``-style tables indexed by Ensembl id), else ``var_names``, with
``var["gene_ids"]`` as the fallback for genes whose name is not a known symbol.

This module is part of the package's lowest floor: no torch, no I/O beyond the package data.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

logger = logging.getLogger(__name__)

#: Bundled Ensembl id → symbol table per species, in ``stalign/_data`` (two tab-separated columns, no header).
REFERENCE_FILES = {"human": "ensembl_human.txt.gz", "mouse": "ensembl_mouse.txt.gz"}
#: :func:`check_vocabulary` warns when the genes shared by a section and the model vocabulary are fewer than this
#: fraction of the smaller of the two gene sets.
MIN_VOCABULARY_OVERLAP = 0.5
_ENSEMBL = re.compile(r"^(ENSG|ENSMUSG)\d{11}(\.\d+)?$")
_VERSION = re.compile(r"\.\d+$")


def normalize_symbol(symbols: Sequence[str]) -> np.ndarray:
    """Upper-case, stripped symbols (mouse ``Mbp`` → ``MBP``).

    Parameters
    ----------
    symbols
        Gene symbols.

    Returns
    -------
    Object array of upper-case symbols.

    Examples
    --------
    >>> import stalign as sta
    >>> sta.pp.normalize_symbol(["Mbp", " plp1", "SNAP25"])
    array(['MBP', 'PLP1', 'SNAP25'], dtype=object)
    """
    return np.asarray([str(s).strip().upper() for s in symbols], dtype=object)


def strip_version(ids: Sequence[str]) -> np.ndarray:
    """Drop an Ensembl version suffix (``ENSMUSG00000064339.1`` → ``ENSMUSG00000064339``)."""
    return np.asarray([_VERSION.sub("", str(i).strip()) for i in ids], dtype=object)


def is_ensembl(ids: Sequence[str]) -> np.ndarray:
    """Boolean mask of the entries that are human or mouse Ensembl gene ids."""
    return np.asarray([bool(_ENSEMBL.match(str(i).strip().upper())) for i in ids], dtype=bool)


def _check_names(names: Any, *, arg: str, func: str) -> None:
    """Raise a clear TypeError unless ``names`` is a sequence (list, array, Index...) of gene names."""
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        if isinstance(names, str | bytes):
            got, fix = f"a single string {names!r}", "wrap a single name in a list"
        else:
            got, fix = f"{type(names).__name__} {names!r}", "pass e.g. list(adata.var_names)"
        msg = (
            f"{func}: `{arg}` must be a sequence of gene names (a list, array or pandas Index such as "
            f"adata.var_names), got {got}; {fix}."
        )
        raise TypeError(msg)


def _species_of(gene_id: str) -> str:
    return "mouse" if gene_id.upper().startswith("ENSMUSG") else "human"


@lru_cache(maxsize=2)
def reference_table(species: str) -> pd.Series:
    """Ensembl gene id (no version) → gene symbol for ``"human"`` (GRCh38) or ``"mouse"`` (mm10).

    The tables ship inside the package, so this works on any machine, with no data folder.

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"``.

    Returns
    -------
    Series indexed by Ensembl id with the symbols as values (symbols keep their original case).

    Examples
    --------
    >>> from stalign._genes import reference_table
    >>> reference_table("human")["ENSG00000197971"]
    'MBP'
    """
    if species not in REFERENCE_FILES:
        msg = f"Unknown species {species!r}; use one of {sorted(REFERENCE_FILES)}."
        raise ValueError(msg)
    res = resources.files("stalign._data").joinpath(REFERENCE_FILES[species])
    with res.open("rb") as raw, gzip.open(raw, "rt") as f:
        df = pd.read_csv(f, sep="\t", header=None, names=["gene_id", "symbol"], dtype=str, keep_default_na=False)
    return pd.Series(df["symbol"].to_numpy(), index=pd.Index(df["gene_id"].to_numpy(), name="gene_id"), name="symbol")


def ensembl_to_symbol(ids: Sequence[str]) -> np.ndarray:
    """Map Ensembl gene ids to symbols through the bundled tables; other entries are returned unchanged.

    Parameters
    ----------
    ids
        Gene ids; human (``ENSG…``) and mouse (``ENSMUSG…``) ids may be mixed, version suffixes are ignored.

    Returns
    -------
    Object array of symbols (original case); ids without an entry in the reference are kept as they are.

    Examples
    --------
    >>> import stalign as sta
    >>> sta.pp.ensembl_to_symbol(["ENSG00000197971", "ENSG00000132639", "MBP"])
    array(['MBP', 'SNAP25', 'MBP'], dtype=object)
    """
    _check_names(ids, arg="ids", func="ensembl_to_symbol")
    out, n_miss, n_ids = _map_ensembl(ids)
    if n_miss:
        logger.info("%d of %d Ensembl ids have no symbol in the reference; kept as ids.", n_miss, n_ids)
    return out


def _map_ensembl(ids: Sequence[str]) -> tuple[np.ndarray, int, int]:
    """:func:`ensembl_to_symbol`'s mapping, silent: ``(symbols, ids without a symbol, Ensembl ids)``."""
    ids = np.asarray([str(i) for i in ids], dtype=object)
    out = ids.copy()
    mask = is_ensembl(ids)
    if not mask.any():
        return out, 0, 0
    bare = strip_version(ids[mask])
    species = np.asarray([_species_of(i) for i in bare])
    mapped = np.empty(len(bare), dtype=object)
    for sp in np.unique(species):
        sel = species == sp
        mapped[sel] = reference_table(str(sp)).reindex(bare[sel]).to_numpy()
    keep = pd.isna(mapped)
    mapped[keep] = ids[mask][keep]
    out[mask] = mapped
    return out, int(keep.sum()), len(bare)


def to_vocabulary_symbols(var_names: Sequence[str]) -> np.ndarray:
    """Upper-case human symbols for ``var_names`` (symbols, or Ensembl ids mapped through the bundled tables).

    Parameters
    ----------
    var_names
        Gene symbols (any case) or Ensembl ids.

    Returns
    -------
    Array of upper-case symbols, one per entry of ``var_names`` (an id with no symbol stays an upper-case id).

    Examples
    --------
    >>> import stalign as sta
    >>> sta.pp.to_vocabulary_symbols(["Mbp", "ENSG00000132639"])
    array(['MBP', 'SNAP25'], dtype=object)
    """
    names = [str(v) for v in var_names]
    if is_ensembl(names).any():  # ids a reader kept (it said so once): mapped again in silence
        names = list(_map_ensembl(names)[0])
    return normalize_symbol(names)


def var_symbols(table: Any) -> np.ndarray:
    """Upper-case symbols of a table's genes, read the way scanpy's readers store them.

    ``var["gene_symbols"]`` when the table has it (tables indexed by Ensembl id), else ``var_names``; Ensembl ids are
    mapped through the bundled tables, and a gene whose name is still not a symbol takes the symbol of
    ``var["gene_ids"]`` when that column exists.

    Parameters
    ----------
    table
        An AnnData.

    Returns
    -------
    Object array of upper-case symbols, one per gene.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from stalign._genes import var_symbols
    >>> t = ad.AnnData(
    ...     np.zeros((1, 2)),
    ...     var=pd.DataFrame({"gene_symbols": ["Mbp", "SNAP25"]}, index=["a", "b"]),
    ... )
    >>> var_symbols(t)
    array(['MBP', 'SNAP25'], dtype=object)
    """
    var = table.var
    if "gene_symbols" in var.columns:
        sym = var["gene_symbols"].astype(object)
        names = np.where(sym.isna().to_numpy() | (sym.astype(str).str.strip() == "").to_numpy(),
                         np.asarray(table.var_names, dtype=object), sym.astype(str).to_numpy())  # fmt: skip
    else:
        names = np.asarray(table.var_names, dtype=object)
    out = to_vocabulary_symbols(names)
    if "gene_ids" in var.columns:
        still_id = is_ensembl(out)
        if still_id.any():
            ids = var["gene_ids"].astype(str).to_numpy()[still_id]
            out[still_id] = to_vocabulary_symbols(ids)
    return out


#: Recent :func:`gene_index` results: (names, vocabulary) -> indices (the tables are bundled, so nothing else matters).
_INDEX_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()


def gene_index(var_names: Sequence[str] | Any, vocabulary: Sequence[str]) -> np.ndarray:
    """Position of each gene of ``var_names`` in ``vocabulary`` (``-1`` when absent).

    Parameters
    ----------
    var_names
        Gene symbols (any case) or Ensembl ids, or an AnnData (its genes as read by :func:`var_symbols`).
    vocabulary
        Vocabulary of symbols (upper-cased for the match).

    Returns
    -------
    ``int64`` array of length ``len(var_names)`` (or ``n_vars``).

    Examples
    --------
    >>> import stalign as sta
    >>> sta.pp.gene_index(
    ...     ["Mbp", "ENSG00000132639", "not-a-gene"], ["MBP", "PLP1", "SNAP25"]
    ... )
    array([ 0,  2, -1])
    """
    _check_names(vocabulary, arg="vocabulary", func="gene_index")
    names = tuple(_symbols_of(var_names, arg="var_names", func="gene_index"))
    key = (names, tuple(str(g) for g in vocabulary))
    if key in _INDEX_CACHE:  # tl.embed maps the same panel several times per call (~0.1 s each on 30k genes)
        _INDEX_CACHE.move_to_end(key)
        return _INDEX_CACHE[key].copy()
    vocab = pd.Index(normalize_symbol(key[1]))
    if vocab.has_duplicates:
        msg = "The vocabulary has duplicate symbols after upper-casing; deduplicate it (build_vocabulary does)."
        raise ValueError(msg)
    idx = vocab.get_indexer(np.asarray(names, dtype=object)).astype(np.int64)
    _INDEX_CACHE[key] = idx.copy()
    while len(_INDEX_CACHE) > 8:
        _INDEX_CACHE.popitem(last=False)
    return idx


def _symbols_of(obj: Any, *, arg: str = "tables", func: str = "build_vocabulary") -> np.ndarray:
    """Upper-case symbols of one section: AnnData, SpatialData (its ``"table"``) or a sequence of gene names."""
    from anndata import AnnData

    if isinstance(obj, AnnData):
        return var_symbols(obj)
    tables = getattr(obj, "tables", None)
    if tables is not None:
        from ._constants import Key

        if Key.table not in tables:
            msg = f"SpatialData has no table {Key.table!r}; available: {', '.join(tables) or 'none'}."
            raise KeyError(msg)
        return var_symbols(tables[Key.table])
    _check_names(obj, arg=arg, func=func)
    return to_vocabulary_symbols([str(v) for v in obj])


def gene_coverage(var_names: Sequence[str] | Any, vocabulary: Sequence[str], *, name: str | None = None) -> float:
    """Fraction of a section's genes that map onto ``vocabulary``; logged at INFO level.

    Parameters
    ----------
    var_names
        Gene names of one section (symbols or Ensembl ids), or an AnnData / SpatialData.
    vocabulary
        Vocabulary of symbols.
    name
        Section name for the log message.

    Returns
    -------
    Coverage in ``[0, 1]`` (``0.0`` for a section without genes).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.stutility_mob("MOB1")
    >>> model = sta.models.load("stalign-base")
    >>> coverage = sta.pp.gene_coverage(
    ...     sdata.tables["table"].var_names, model.genes, name="MOB1"
    ... )
    >>> coverage
    1.0
    """
    names = _symbols_of(var_names, arg="var_names", func="gene_coverage")
    if len(names) == 0:
        logger.info("Gene coverage of %s: no genes.", name or "section")
        return 0.0
    idx = gene_index(list(names), vocabulary)
    cov = float((idx >= 0).mean())
    logger.info(
        "Gene coverage of %s: %d / %d genes (%.1f%%) in the vocabulary.",
        name or "section",
        int((idx >= 0).sum()),
        len(names),
        100 * cov,
    )
    return cov


def build_vocabulary(tables: Iterable[Any], *, min_sections: int = 1) -> list[str]:
    """Sorted vocabulary of upper-case human symbols measured in at least ``min_sections`` sections.

    Parameters
    ----------
    tables
        One entry per section: AnnData, SpatialData, or a sequence of gene names (symbols or Ensembl ids).
    min_sections
        Keep symbols seen in at least this many sections.

    Returns
    -------
    list of str
        Sorted list of unique upper-case symbols. Genes the reference names by their Ensembl id (novel genes in
        GRCh38-2024) and ids absent from the reference keep the id as their token.

    Examples
    --------
    >>> import stalign as sta
    >>> sections = [sta.datasets.stutility_mob("MOB1"), sta.datasets.her2st("C2")]
    >>> genes = sta.pp.build_vocabulary(
    ...     sections
    ... )  # mouse symbols upper-cased, union of both panels
    >>> len(genes)
    15821
    >>> "MBP" in genes and "ERBB2" in genes
    True
    """
    from ._validators import check_int

    check_int(min_sections, "min_sections", hint=" (keep genes measured in at least that many sections)")
    if isinstance(tables, str | bytes) or not isinstance(tables, Iterable):
        msg = (
            f"build_vocabulary: `tables` must be a list with one entry per section (AnnData, SpatialData or a list "
            f"of gene names), got {type(tables).__name__} {tables!r}."
        )
        raise TypeError(msg)
    counts: Counter[str] = Counter()
    n = 0
    for t in tables:
        n += 1
        counts.update(s for s in set(_symbols_of(t)) if s)
    if n == 0:
        msg = "build_vocabulary got no sections; pass at least one table or gene list."
        raise ValueError(msg)
    if min_sections > n:
        msg = (
            f"min_sections={min_sections} exceeds the number of sections ({n}): no gene can be kept. "
            f"Pass min_sections between 1 and {n}."
        )
        raise ValueError(msg)
    return sorted(s for s, c in counts.items() if c >= min_sections)


def check_vocabulary(
    var_names: Sequence[str] | Any, genes: Sequence[str], *, what: str = "the section"
) -> tuple[int, float]:
    """Report how a section's genes overlap a model's gene vocabulary; warn when the overlap is small.

    The overlap is the number of vocabulary genes the section measures, as a fraction of the smaller of the two
    gene sets (a 1,000-gene panel fully inside a 19,000-gene vocabulary overlaps 100 %). It is logged at INFO
    level; a :class:`UserWarning` is raised below :data:`MIN_VOCABULARY_OVERLAP` (the gene-side embedding then
    rests on few genes: Ensembl ids that did not map, another species, misspelt symbols), and a
    :class:`ValueError` when no gene is shared.

    Parameters
    ----------
    var_names
        The section's gene names (symbols; Ensembl ids are mapped), or its AnnData (genes read by
        :func:`var_symbols`).
    genes
        The model's vocabulary (``model.config.genes``).
    what
        Name of the section for messages.

    Returns
    -------
    ``(number of shared genes, overlap fraction)``.
    """
    import warnings

    names = [str(v) for v in (var_symbols(var_names) if isinstance(var_names, AnnData) else var_names)]
    if not names:
        return 0, 0.0
    idx = gene_index(names, list(genes))
    n = len(np.unique(idx[idx >= 0]))
    denom = max(min(len(set(names)), len(genes)), 1)
    frac = n / denom
    logger.info(
        "Gene overlap of %s with the model vocabulary: %d shared genes (%.1f%% of the section's %d, %.1f%% of the "
        "vocabulary's %d).",
        what,
        n,
        100 * n / len(names),
        len(names),
        100 * n / max(len(genes), 1),
        len(genes),
    )
    if n == 0:
        msg = (
            f"None of the {len(names)} genes of {what} (e.g. {', '.join(names[:3])}) is in the model's gene "
            "vocabulary. Use gene symbols as var_names (Ensembl ids: stalign.pp.ensembl_to_symbol), or drop the genes "
            "to embed the H&E only."
        )
        raise ValueError(msg)
    if frac < MIN_VOCABULARY_OVERLAP:
        warnings.warn(
            f"{what} shares only {n} genes with the model's gene vocabulary ({100 * frac:.1f}% of the smaller gene "
            f"set; threshold {100 * MIN_VOCABULARY_OVERLAP:.0f}%), so its gene embedding rests on few genes. Check "
            "that var_names are gene symbols (Ensembl ids: stalign.pp.ensembl_to_symbol) of a species the model knows.",
            UserWarning,
            stacklevel=3,
        )
    return n, frac
