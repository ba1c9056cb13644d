"""One log-normalisation for every stage: ``log1p(normalize_total(counts, 1e4))``, optionally onto a vocabulary."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

#: Target sum of :func:`scanpy.pp.normalize_total` before ``log1p``.
TARGET_SUM = 1e4


def log_normalize(
    X: Any,
    *,
    totals: np.ndarray | None = None,
    vocab_map: sparse.spmatrix | None = None,
    target_sum: float = TARGET_SUM,
) -> sparse.csr_matrix:
    """``log1p(normalize_total(X, target_sum))`` as CSR float32, the scale of every expression input of stalign.

    Parameters
    ----------
    X
        Raw counts, spots × genes (dense or sparse).
    totals
        Library size of each spot; default the row sums of ``X``. Pass the totals over a whole panel when ``X``
        holds a subset of its genes.
    vocab_map
        Optional ``(genes, V)`` 0/1 matrix mapping the genes onto a vocabulary (counts of genes mapping to the same
        entry are summed) before scaling; the result is then ``(spots, V)``.
    target_sum
        Counts per spot after scaling.

    Returns
    -------
    CSR float32 matrix; rows of spots with no counts stay zero.

    Examples
    --------
    >>> import numpy as np
    >>> import stalign as sta
    >>> X = sta.pp.log_normalize(np.array([[1, 3], [0, 0]]))
    >>> np.round(X.toarray(), 3)
    array([[7.824, 8.923],
           [0.   , 0.   ]], dtype=float32)
    """
    Xc = sparse.csr_matrix(X, dtype=np.float32)
    if totals is None:
        totals = np.asarray(Xc.sum(axis=1)).ravel()
    totals = np.asarray(totals, dtype=np.float64).ravel()
    if totals.shape[0] != Xc.shape[0]:
        msg = f"totals has {totals.shape[0]} entries for {Xc.shape[0]} spots; pass one library size per spot."
        raise ValueError(msg)
    if vocab_map is not None:
        Xc = (Xc @ vocab_map).tocsr().astype(np.float32, copy=False)
    else:
        Xc = Xc.copy()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0).astype(np.float32)
    # row scaling in place on the stored values (a diagonal-matrix product builds a third matrix)
    Xc.data *= np.repeat(scale, np.diff(Xc.indptr))
    np.log1p(Xc.data, out=Xc.data)
    Xc.eliminate_zeros()
    return Xc
