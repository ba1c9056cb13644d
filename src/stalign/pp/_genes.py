"""Gene vocabulary: one vocabulary of upper-case human symbols that every panel maps onto."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def normalize_symbol(symbols: Sequence[str]) -> np.ndarray:
    """Upper-case, stripped symbols (mouse ``Mbp`` → ``MBP``)."""
    return np.asarray([str(s).strip().upper() for s in symbols], dtype=object)


def gene_index(var_names: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    """Position of each gene of ``var_names`` in ``vocabulary`` (``-1`` when absent)."""
    vocab = pd.Index(normalize_symbol(vocabulary))
    return vocab.get_indexer(normalize_symbol(var_names)).astype(np.int64)
