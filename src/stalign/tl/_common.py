"""Helpers shared by the ``tl`` functions: the model of an embedding, prompt embeddings, embeddings on demand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._utils import l2_normalize as l2n
from ..models import DEFAULT_MODEL, resolve_model


def model_of(records: Sequence[dict | None], model: Any, *, device=None, need_model: bool = True):
    """The model that produced the embeddings in ``records``, checked against ``model`` when one is given.

    - ``model`` given: it must be the model the stored embeddings came from (same weights fingerprint), else raise.
    - ``model`` None: the recorded registry name or path is loaded (and must still hold the same weights); an
      embedding from an in-memory model needs that model passed again.
    - No stored embedding: ``model`` or the default model.

    Returns the model, or ``None`` when ``need_model`` is False and no model was given or needed.
    """
    from ..models import weights_fingerprint

    recs = [r for r in records if r is not None]
    fps = {r["weights_fingerprint"] for r in recs}
    if len(fps) > 1:
        names = sorted({str(r.get("model")) for r in recs})
        msg = (
            f"The embeddings were computed with different models ({', '.join(names)}; weights fingerprints "
            f"{', '.join(sorted(f[:12] for f in fps))}); their spaces are not comparable. Embed every section with "
            "the same model (tl.embed(..., model=...))."
        )
        raise ValueError(msg)
    if model is not None:
        m, _ = resolve_model(model, device=device)
        if fps and weights_fingerprint(m) not in fps:
            rec = recs[0]
            msg = (
                f"model={_describe(model)} is not the model the stored embeddings were computed with "
                f"({rec.get('model')}, weights fingerprint {rec['weights_fingerprint'][:12]}…); mixing two models' "
                "spaces gives meaningless results. Pass that model, or re-run tl.embed with this one."
            )
            raise ValueError(msg)
        return m
    if not recs:
        return resolve_model(DEFAULT_MODEL, device=device)[0] if need_model else None
    if not need_model:
        return None
    rec = recs[0]
    name = rec.get("model")
    if not isinstance(name, str) or name == "custom":
        msg = (
            "The stored embeddings were computed with an in-memory model (fine-tuned or built in this session, weights "
            f"fingerprint {rec['weights_fingerprint'][:12]}…), which stalign cannot load by itself; pass it again "
            "as model=."
        )
        raise ValueError(msg)
    try:
        m, _ = resolve_model(name, device=device)
    except (FileNotFoundError, ValueError) as e:
        msg = (
            f"The stored embeddings were computed with model {name!r}, which cannot be loaded here ({e}); pass that "
            "model as model=, or re-run tl.embed."
        )
        raise ValueError(msg) from e
    if weights_fingerprint(m) != rec["weights_fingerprint"]:
        msg = (
            f"The stored embeddings were computed with {name!r} (weights fingerprint {rec['weights_fingerprint'][:12]}…), "
            "but that name now loads other weights (a different stalign version or a rewritten folder); pass the "
            "original model as model=, or re-run tl.embed."
        )
        raise ValueError(msg)
    return m


def _describe(model: Any) -> str:
    return repr(str(model)) if isinstance(model, str) else type(model).__name__


def prompt_embeddings(model, profiles: np.ndarray) -> np.ndarray:
    """Gene-encoder embeddings of expression profiles ``(n, V)`` on the model vocabulary (no image), on its device."""
    import torch

    from .._batch import BatchKey

    dev = model.device
    X = torch.as_tensor(np.asarray(profiles, dtype=np.float32), device=dev)
    n = X.shape[0]
    batch = {  # masks on the host: read without a device sync
        BatchKey.spot_expr: X,
        BatchKey.niche_expr: X,
        BatchKey.has_expr: torch.ones(n, dtype=torch.bool),
        BatchKey.has_image: torch.zeros(n, dtype=torch.bool),
    }
    with torch.inference_mode():
        out = model.embed(batch)
    return out["gene"].float().numpy(force=True)


def knn_average(Q: np.ndarray, R: np.ndarray, values: np.ndarray, *, k: int, temperature: float, block: int = 2048):
    """Softmax-weighted mean of ``values`` over the ``k`` rows of ``R`` most similar to each row of ``Q``.

    Cosine similarity, weights ``softmax(similarity / temperature)``: BLEEP-style retrieval of expression, and label
    transfer with one-hot ``values``. Memory stays bounded: one ``(block, len(R))`` block of similarities at a time.
    """
    Qn, Rn = l2n(Q), l2n(R)
    values = np.asarray(values, dtype=np.float32)
    kk = min(int(k), len(Rn))
    out = np.empty((len(Qn), values.shape[1]), dtype=np.float32)
    for s in range(0, len(Qn), block):
        S = Qn[s : s + block] @ Rn.T
        idx = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        sim = np.take_along_axis(S, idx, axis=1)
        w = np.exp((sim - sim.max(axis=1, keepdims=True)) / temperature)
        w /= w.sum(axis=1, keepdims=True)
        out[s : s + block] = np.einsum("bk,bkg->bg", w, values[idx])
    return out
