"""Gene vocabulary: one vocabulary of upper-case human symbols that every panel maps onto.

Human symbols are used as they are (upper-cased). Mouse symbols map by upper-casing (``Mbp`` → ``MBP``), which
resolves most, not all, orthologs. Human and mouse Ensembl gene ids (``ENSG…`` / ``ENSMUSG…``, a version suffix
such as ``.1`` is stripped) map through the reference tables ``reference/human_grch38_features.tsv.gz`` and
``reference/mouse_mm10_features.tsv.gz`` of the data directory (``data_dir=`` or ``$STALIGN_DATA_DIR``).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Reference table per species, relative to the data directory.
REFERENCE_FILES = {
    "human": "reference/human_grch38_features.tsv.gz",
    "mouse": "reference/mouse_mm10_features.tsv.gz",
}
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


@lru_cache(maxsize=8)
def _read_reference(path: str) -> pd.Series:
    df = pd.read_csv(path, sep="\t", header=None, usecols=[0, 1], names=["gene_id", "symbol"], dtype=str)
    ids = strip_version(df["gene_id"].to_numpy())
    s = pd.Series(df["symbol"].to_numpy(), index=pd.Index(ids, name="gene_id"), name="symbol")
    return s[~s.index.duplicated()]


def reference_table(species: str, *, data_dir: str | os.PathLike | None = None) -> pd.Series:
    """Ensembl gene id (no version) → gene symbol for ``"human"`` (GRCh38) or ``"mouse"`` (mm10).

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"``.
    data_dir
        Folder that holds ``reference/``; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    Series indexed by Ensembl id with the symbols as values (symbols keep their original case).
    """
    from .._utils import data_dir as _data_dir

    if species not in REFERENCE_FILES:
        msg = f"Unknown species {species!r}; use one of {sorted(REFERENCE_FILES)}."
        raise ValueError(msg)
    root = _data_dir(data_dir)
    path = Path(root) / REFERENCE_FILES[species]
    if not path.is_file():
        msg = (
            f"Gene reference table {str(path)!r} not found (data_dir={str(root)!r}); the Ensembl id → symbol "
            f"mapping needs it: pass the data directory that holds {REFERENCE_FILES[species]!r}."
        )
        raise FileNotFoundError(msg)
    return _read_reference(str(path.resolve()))


def ensembl_to_symbol(ids: Sequence[str], *, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Map Ensembl gene ids to symbols through the reference tables; other entries are returned unchanged.

    Parameters
    ----------
    ids
        Gene ids; human (``ENSG…``) and mouse (``ENSMUSG…``) ids may be mixed, version suffixes are ignored.
    data_dir
        Folder that holds ``reference/``; defaults to ``$STALIGN_DATA_DIR``.

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
    ids = np.asarray([str(i) for i in ids], dtype=object)
    out = ids.copy()
    mask = is_ensembl(ids)
    if not mask.any():
        return out
    bare = strip_version(ids[mask])
    species = np.asarray([_species_of(i) for i in bare])
    mapped = np.empty(len(bare), dtype=object)
    for sp in np.unique(species):
        sel = species == sp
        ref = reference_table(str(sp), data_dir=data_dir)
        mapped[sel] = ref.reindex(bare[sel]).to_numpy()
    keep = pd.isna(mapped)
    mapped[keep] = ids[mask][keep]
    out[mask] = mapped
    n_miss = int(keep.sum())
    if n_miss:
        logger.info("%d of %d Ensembl ids have no symbol in the reference; kept as ids.", n_miss, len(bare))
    return out


def to_vocabulary_symbols(var_names: Sequence[str], *, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Upper-case human symbols for ``var_names`` (symbols, or Ensembl ids mapped through the reference).

    When ``var_names`` hold Ensembl ids and no reference table is reachable, a warning is issued and those genes
    stay unmapped (their upper-case id is returned, which matches no symbol).

    Parameters
    ----------
    var_names
        Gene symbols (any case) or Ensembl ids.
    data_dir
        Folder that holds ``reference/``, for Ensembl ids; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    Array of upper-case symbols, one per entry of ``var_names``.

    Examples
    --------
    >>> import stalign as sta
    >>> sta.pp.to_vocabulary_symbols(["Mbp", "ENSG00000132639"])
    array(['MBP', 'SNAP25'], dtype=object)
    """
    names = [str(v) for v in var_names]
    mask = is_ensembl(names)
    if mask.any():
        try:
            names = list(ensembl_to_symbol(names, data_dir=data_dir))
        except (FileNotFoundError, ValueError) as e:
            warnings.warn(
                f"{int(mask.sum())} var_names are Ensembl ids but no reference table is reachable ({e}); they stay "
                "unmapped. Set STALIGN_DATA_DIR (or pass data_dir=) to the folder that holds reference/.",
                UserWarning,
                stacklevel=3,
            )
    return normalize_symbol(names)


#: Recent :func:`gene_index` results for symbol-only panels: (names, vocabulary, data_dir, env) -> indices.
_INDEX_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()


def gene_index(
    var_names: Sequence[str], vocabulary: Sequence[str], *, data_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """Position of each gene of ``var_names`` in ``vocabulary`` (``-1`` when absent).

    Parameters
    ----------
    var_names
        Gene symbols (any case) or Ensembl ids (mapped through the reference tables when reachable).
    vocabulary
        Vocabulary of symbols (upper-cased for the match).
    data_dir
        Folder that holds ``reference/``, for Ensembl ids; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    ``int64`` array of length ``len(var_names)``.

    Examples
    --------
    >>> import stalign as sta
    >>> sta.pp.gene_index(["Mbp", "ENSG00000132639", "not-a-gene"], ["MBP", "PLP1", "SNAP25"])
    array([ 0,  2, -1])
    """
    _check_names(var_names, arg="var_names", func="gene_index")
    _check_names(vocabulary, arg="vocabulary", func="gene_index")
    names = tuple(str(v) for v in var_names)
    key = (names, tuple(str(g) for g in vocabulary), str(data_dir), os.environ.get("STALIGN_DATA_DIR"))
    if key in _INDEX_CACHE:  # tl.embed maps the same panel several times per call (~0.1 s each on 30k genes)
        _INDEX_CACHE.move_to_end(key)
        return _INDEX_CACHE[key].copy()
    vocab = pd.Index(normalize_symbol(key[1]))
    if vocab.has_duplicates:
        msg = "The vocabulary has duplicate symbols after upper-casing; deduplicate it (build_vocabulary does)."
        raise ValueError(msg)
    idx = vocab.get_indexer(to_vocabulary_symbols(names, data_dir=data_dir)).astype(np.int64)
    if not is_ensembl(names).any():  # symbols only: no reference lookup (nor its warning) that a cache would hide
        _INDEX_CACHE[key] = idx.copy()
        while len(_INDEX_CACHE) > 8:
            _INDEX_CACHE.popitem(last=False)
    return idx


def _var_names_of(obj: Any) -> list[str]:
    from anndata import AnnData

    if isinstance(obj, AnnData):
        return [str(v) for v in obj.var_names]
    try:
        from spatialdata import SpatialData
    except ImportError:  # pragma: no cover
        SpatialData = ()
    if isinstance(obj, SpatialData):
        from .._constants import Key

        if Key.table not in obj.tables:
            msg = f"SpatialData has no table {Key.table!r}; available: {', '.join(obj.tables) or 'none'}."
            raise KeyError(msg)
        return [str(v) for v in obj.tables[Key.table].var_names]
    if isinstance(obj, str | bytes) or not isinstance(obj, Iterable):
        got = "a single string" if isinstance(obj, str | bytes) else f"{type(obj).__name__} {obj!r}"
        msg = f"Expected AnnData, SpatialData or a sequence of gene names per section, got {got}."
        raise TypeError(msg)
    return [str(v) for v in obj]


def gene_coverage(
    var_names: Sequence[str] | Any,
    vocabulary: Sequence[str],
    *,
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> float:
    """Fraction of a section's genes that map onto ``vocabulary``; logged at INFO level.

    Parameters
    ----------
    var_names
        Gene names of one section (symbols or Ensembl ids), or an AnnData / SpatialData.
    vocabulary
        Vocabulary of symbols.
    name
        Section name for the log message.
    data_dir
        Folder that holds ``reference/``, for Ensembl ids; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    Coverage in ``[0, 1]`` (``0.0`` for a section without genes).

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.stutility_mob("MOB1")
    >>> model = sta.models.load("stalign-base")
    >>> coverage = sta.pp.gene_coverage(sdata.tables["table"].var_names, model.genes, name="MOB1")
    >>> coverage
    1.0
    """
    names = _var_names_of(var_names)
    if not names:
        logger.info("Gene coverage of %s: no genes.", name or "section")
        return 0.0
    idx = gene_index(names, vocabulary, data_dir=data_dir)
    cov = float((idx >= 0).mean())
    logger.info(
        "Gene coverage of %s: %d / %d genes (%.1f%%) in the vocabulary.",
        name or "section",
        int((idx >= 0).sum()),
        len(names),
        100 * cov,
    )
    return cov


def build_vocabulary(
    tables: Iterable[Any], *, min_sections: int = 1, data_dir: str | os.PathLike | None = None
) -> list[str]:
    """Sorted vocabulary of upper-case human symbols measured in at least ``min_sections`` sections.

    Parameters
    ----------
    tables
        One entry per section: AnnData, SpatialData, or a sequence of gene names (symbols or Ensembl ids).
    min_sections
        Keep symbols seen in at least this many sections.
    data_dir
        Folder that holds ``reference/``, for Ensembl ids; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    Sorted list of unique upper-case symbols. Genes the reference names by their Ensembl id (novel genes in
    GRCh38-2024) and ids absent from the reference keep the id as their token.

    Examples
    --------
    >>> import stalign as sta
    >>> sections = [sta.io.stutility_mob("MOB1"), sta.io.her2st("C2")]
    >>> genes = sta.pp.build_vocabulary(sections)  # mouse symbols upper-cased, union of both panels
    >>> len(genes)
    15821
    >>> "MBP" in genes and "ERBB2" in genes
    True
    """
    if isinstance(min_sections, bool) or not isinstance(min_sections, int | np.integer):
        msg = f"min_sections must be an integer (at least 1), got {type(min_sections).__name__} {min_sections!r}."
        raise TypeError(msg)
    if min_sections < 1:
        msg = f"min_sections must be at least 1, got {min_sections}."
        raise ValueError(msg)
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
        syms = set(to_vocabulary_symbols(_var_names_of(t), data_dir=data_dir))
        counts.update(s for s in syms if s)
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
