"""Helpers shared by the ``tl`` functions: normalised expression, prompt embeddings, embeddings on demand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse

from .._constants import Key
from .._utils import get_table

TARGET_SUM = 1e4


def log_normalize(X: Any, *, target_sum: float = TARGET_SUM) -> sparse.csr_matrix:
    """``log1p(normalize_total(X, target_sum))`` as CSR float32; all-zero rows stay zero."""
    X = sparse.csr_matrix(X, dtype=np.float32)
    totals = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    X = sparse.diags(scale.astype(np.float32)) @ X
    X.data = np.log1p(X.data)
    return X.tocsr()


def get_embedding(data: Any, *, use: str, model: Any, table_key: str, device=None, **embed_kwargs) -> np.ndarray:
    """``obsm`` embedding ``use`` ∈ {"image", "gene", "fused"}; computed with ``model`` (not stored) when absent."""
    table = get_table(data, table_key=table_key)
    key = {"fused": Key.X, "image": Key.X_image, "gene": Key.X_gene}[use]
    if key in table.obsm:
        return np.asarray(table.obsm[key], dtype=np.float32)
    from ._embed import embed_arrays, resolve_model

    m, _ = resolve_model(model, device=device)
    arrays = embed_arrays(data, m, table_key=table_key, show_progress_bar=False, **embed_kwargs)
    if use not in arrays:
        need = {"fused": "an image and expression", "image": "an image", "gene": "expression"}[use]
        msg = f"Cannot compute the {use} embedding: the section needs {need}."
        raise ValueError(msg)
    return arrays[use]


def model_name_from(table, default: Any) -> Any:
    """The model recorded by ``tl.embed`` in ``uns["stalign"]``, else ``default``."""
    rec = table.uns.get(Key.uns, {})
    name = rec.get("model") if isinstance(rec, dict) else None
    return name if isinstance(name, str) and name != "custom" else default


def prompt_embeddings(model, profiles: np.ndarray, *, device=None) -> np.ndarray:
    """Gene-encoder embeddings of expression profiles ``(n, V)`` on the model vocabulary (no image)."""
    import torch

    from .._batch import BatchKey

    dev = next(model.parameters()).device
    X = torch.as_tensor(np.asarray(profiles, dtype=np.float32), device=dev)
    n = X.shape[0]
    batch = {
        BatchKey.spot_expr: X,
        BatchKey.niche_expr: X,
        BatchKey.has_expr: torch.ones(n, dtype=torch.bool, device=dev),
        BatchKey.has_image: torch.zeros(n, dtype=torch.bool, device=dev),
    }
    with torch.inference_mode():
        out = model.embed(batch)
    return out["gene"].float().numpy(force=True)


def l2n(X: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(n, 1e-12)


def check_genes_in(genes: Sequence[str], available: Sequence[str], *, what: str) -> list[str]:
    """Genes of ``genes`` present in ``available`` (case-insensitive, returned as spelled in ``available``)."""
    from ..pp import normalize_symbol

    lut = dict(zip(normalize_symbol(available), available, strict=True))
    return [lut[g] for g in normalize_symbol(genes) if g in lut]


def check_positive(value: Any, *, name: str, integer: bool = False, allow_none: bool = False) -> Any:
    """``value`` if it is a finite positive number (an integer when ``integer``), else a clear error."""
    if value is None and allow_none:
        return value
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "a positive integer" if integer else "a positive number"
        msg = f"{name} must be {what}{' or None' if allow_none else ''}, got {type(value).__name__} {value!r}."
        raise TypeError(msg)
    if not (np.isfinite(value) and value > 0):
        msg = f"{name}={value!r}; it must be a finite positive {'integer' if integer else 'number'}."
        raise ValueError(msg)
    return value


def check_counts(X: Any, *, what: str) -> None:
    """Raise when counts hold NaN, infinite or negative values (they must be raw counts)."""
    data = X.data if sparse.issparse(X) else np.asarray(X)
    if data.size and not np.isfinite(data).all():
        msg = f"{what} contain NaN or infinite values; pass raw counts (finite, non-negative) in `X`."
        raise ValueError(msg)
    if data.size and (data < 0).any():
        msg = f"{what} contain negative values; pass raw counts (e.g. `adata.layers['counts']`) in `X`."
        raise ValueError(msg)
