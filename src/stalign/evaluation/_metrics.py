"""Metrics on known inputs: clustering agreement, per-gene correlation, classification, cross-modal recall."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._utils import l2_normalize
from .._validators import renamed_arguments

logger = logging.getLogger(__name__)


def _labelled(labels_true: Sequence, labels_pred: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Both label vectors restricted to spots with a true label (NaN / None / empty string dropped)."""
    t = pd.Series(np.asarray(labels_true, dtype=object))
    p = np.asarray(labels_pred, dtype=object)
    if len(t) != len(p):
        msg = f"labels_true ({len(t)}) and labels_pred ({len(p)}) differ in length; pass one label per spot."
        raise ValueError(msg)
    keep = t.notna().to_numpy() & (t.astype(str).str.len() > 0).to_numpy()
    if not keep.any():
        msg = "No spot has a true label; pass manual labels (obs['annotation']) with at least one value."
        raise ValueError(msg)
    return t[keep].astype(str).to_numpy(), p[keep].astype(str)


def clustering_scores(labels_true: Sequence, labels_pred: Sequence) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information over the spots that have a true label.

    Parameters
    ----------
    labels_true
        Manual labels; missing values (NaN/None) are excluded.
    labels_pred
        Cluster labels, one per spot.

    Returns
    -------
    ``{"ari": ..., "nmi": ..., "n": number of labelled spots}``.

    Examples
    --------
    >>> from stalign import evaluation
    >>> # the unlabelled spot is not scored
    >>> evaluation.clustering_scores(["L1", "L1", "L2", None], [0, 0, 1, 1])
    {'ari': 1.0, 'nmi': 1.0, 'n': 3}
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    t, p = _labelled(labels_true, labels_pred)
    return {"ari": float(adjusted_rand_score(t, p)), "nmi": float(normalized_mutual_info_score(t, p)), "n": len(t)}


def classification_scores(labels_true: Sequence, labels_pred: Sequence) -> dict[str, float]:
    """Accuracy and macro-F1 (over the true classes) on the spots that have a true label.

    Examples
    --------
    >>> from stalign import evaluation
    >>> evaluation.classification_scores(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    {'accuracy': 0.75, 'macro_f1': 0.733..., 'n': 4}
    """
    from sklearn.metrics import accuracy_score, f1_score

    t, p = _labelled(labels_true, labels_pred)
    classes = sorted(np.unique(t).tolist())
    return {
        "accuracy": float(accuracy_score(t, p)),
        "macro_f1": float(f1_score(t, p, labels=classes, average="macro", zero_division=0)),
        "n": len(t),
    }


def pearson_per_gene(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson r between predicted and measured values of each gene (column); NaN for constant columns.

    Examples
    --------
    >>> import numpy as np
    >>> from stalign import evaluation
    >>> # 3 spots x 2 genes; the second gene is constant
    >>> true = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    >>> evaluation.pearson_per_gene(2 * true + 1, true)
    array([ 1., nan])
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        msg = f"pred {pred.shape} and true {true.shape} differ in shape; pass spots × genes arrays of one gene order."
        raise ValueError(msg)
    pc = pred - pred.mean(axis=0)
    tc = true - true.mean(axis=0)
    den = np.sqrt((pc**2).sum(axis=0) * (tc**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * tc).sum(axis=0) / den
    r[den == 0] = np.nan
    return r


def expression_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean Pearson r over genes (constant genes ignored) and MSE over all values, on the scale given.

    Examples
    --------
    >>> import numpy as np
    >>> from stalign import evaluation
    >>> true = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    >>> evaluation.expression_scores(2 * true + 1, true)
    {'pearson': 1.0, 'mse': 5.333..., 'n_genes_scored': 1}
    """
    r = pearson_per_gene(pred, true)
    ok = np.isfinite(r)
    return {
        "pearson": float(np.nanmean(r)) if ok.any() else float("nan"),
        "mse": float(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2)),
        "n_genes_scored": int(ok.sum()),
    }


def recall_at_k(queries: np.ndarray, keys: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k of cross-modal retrieval: row ``i`` of ``queries`` should retrieve row ``i`` of ``keys`` (cosine).

    Ties count against the query: the true key must score strictly above a competitor to rank before it.

    Returns
    -------
    ``{"R@1": ..., "R@5": ..., "R@10": ...}`` (fractions in ``[0, 1]``).

    Examples
    --------
    >>> import numpy as np
    >>> from stalign import evaluation
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(size=(100, 16))
    >>> evaluation.recall_at_k(
    ...     image, image + 0.01 * rng.normal(size=image.shape), ks=(1, 5)
    ... )
    {'R@1': 1.0, 'R@5': 1.0}
    >>> # unrelated keys: about k / n
    >>> evaluation.recall_at_k(image, rng.normal(size=image.shape))["R@10"] < 0.3
    True
    """
    q = np.asarray(queries, dtype=np.float32)
    k_ = np.asarray(keys, dtype=np.float32)
    if q.shape != k_.shape or q.ndim != 2:
        msg = f"queries {q.shape} and keys {k_.shape} must be (n, d) arrays of paired rows."
        raise ValueError(msg)
    q, k_ = l2_normalize(q), l2_normalize(k_)
    ranks = np.empty(len(q), dtype=np.int64)
    for s in range(0, len(q), 2048):
        S = q[s : s + 2048] @ k_.T
        own = S[np.arange(len(S)), np.arange(s, s + len(S))]
        ranks[s : s + len(S)] = (S >= own[:, None]).sum(axis=1) - 1
    return {f"R@{k}": float(np.mean(ranks < k)) for k in ks}


@renamed_arguments(seed="random_state")
def spot_infonce(
    image: np.ndarray, gene: np.ndarray, *, logit_scale: float, batch_size: int = 128, random_state: int = 0
) -> float:
    """Held-out ``L_spot``: symmetric InfoNCE between spot image and spot gene embeddings on fixed batches.

    The spots are shuffled by ``numpy.random.default_rng(random_state)`` and cut into consecutive batches of ``batch_size``
    (the incomplete last batch is dropped). In each batch, every image must pick its own spot's gene embedding among
    the batch's (and every gene embedding its image): cross-entropy of ``logit_scale × cosine``, averaged over both
    directions, then over batches. Unrelated embeddings give about ``ln(batch_size)``.

    Parameters
    ----------
    image, gene
        ``(n, d)`` paired embeddings (row ``i`` of both is spot ``i``); rows are L2-normalised here.
    logit_scale
        ``1 / temperature`` of the model (``model.logit_scale``).
    batch_size
        Spots per batch (negatives: the other ``batch_size - 1`` spots).
    random_state
        Seed of the shuffling.

    Returns
    -------
    The mean loss over batches (NaN when there are fewer than ``batch_size`` spots).

    Examples
    --------
    >>> import numpy as np
    >>> from stalign import evaluation
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(size=(512, 16))
    >>> # perfectly aligned pairs
    >>> evaluation.spot_infonce(image, image, logit_scale=10.0) < 0.5
    True
    >>> round(
    ...     evaluation.spot_infonce(image, rng.normal(size=(512, 16)), logit_scale=1.0), 1
    ... )  # ln(128) = 4.85
    4.9
    """
    from scipy.special import logsumexp

    a = np.asarray(image, dtype=np.float64)
    b = np.asarray(gene, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        msg = f"image {a.shape} and gene {b.shape} must be (n, d) arrays of paired rows."
        raise ValueError(msg)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 2:
        msg = f"batch_size={batch_size!r}: pass an integer of at least 2 (spots per batch, e.g. 128)."
        raise ValueError(msg)
    a, b = l2_normalize(a).astype(np.float64), l2_normalize(b).astype(np.float64)
    perm = np.random.default_rng(random_state).permutation(len(a))
    n_batches = len(a) // batch_size
    if n_batches == 0:
        return float("nan")
    losses = []
    for i in range(n_batches):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        logits = float(logit_scale) * (a[idx] @ b[idx].T)
        diag = np.diag(logits)
        i2g = np.mean(logsumexp(logits, axis=1) - diag)
        g2i = np.mean(logsumexp(logits, axis=0) - diag)
        losses.append(0.5 * (i2g + g2i))
    return float(np.mean(losses))
