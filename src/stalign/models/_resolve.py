"""The model a tool uses (a registry name, a path or a module, loaded once) and what ``uns`` records about it.

Shared by :mod:`stalign.tl` and :mod:`stalign.cohort` (through the ``stalign.models`` namespace, not its public API).
"""

from __future__ import annotations

from typing import Any

from ._io import load, weights_fingerprint
from ._registry import DEFAULT_MODEL


def resolve_model(model: Any = DEFAULT_MODEL, *, device=None):
    """A model instance from a registry name, a path, or an ``STAlign`` module (moved to ``device``, eval mode).

    Names and paths go through :func:`stalign.models.load` with ``cache=True``: verified once per process and reused
    while the files and the weights are unchanged.
    """
    import torch

    from .._utils import resolve_device
    from ._model import STAlign

    dev = resolve_device(device)
    if isinstance(model, STAlign):
        return model.to(dev).eval(), dev
    if isinstance(model, torch.nn.Module):
        msg = f"model must be a stalign STAlign module, a registry name or a path, got {type(model).__name__}."
        raise TypeError(msg)
    return load(model, device=dev, cache=True), dev


def model_record(model) -> dict[str, Any]:
    """What ``uns`` records about the model of an embedding.

    ``weights_fingerprint`` (:func:`stalign.models.weights_fingerprint`) always; the registry name or path and the
    weights file's sha256 only while the weights in memory are still those of that file (a model fine-tuned in
    memory is ``"custom"``: its file no longer describes it).
    """
    fp = weights_fingerprint(model)
    source = getattr(model, "source", None)
    unchanged = source is not None and getattr(model, "loaded_fingerprint", None) == fp
    return {
        "model": str(source) if unchanged else "custom",
        "weights_sha256": getattr(model, "weights_sha256", None) if unchanged else None,
        "weights_fingerprint": fp,
    }
