"""Names and layout of the tensors that flow from :mod:`stalign.pp` datasets into :mod:`stalign.models`.

A batch is a ``dict[str, torch.Tensor]``; ``B`` is the batch size, ``V`` the model's gene vocabulary size,
``S``/``N`` the spot/niche crop sizes in pixels.
"""

from __future__ import annotations


class BatchKey:
    """Keys of a batch dict."""

    #: uint8 ``(B, 3, S, S)`` spot crop (zeros where ``has_image`` is False)
    spot_image = "spot_image"
    #: uint8 ``(B, 3, S, S)`` a second augmented view of the spot crop (training with ``w_image_ssl > 0`` only)
    spot_image_view = "spot_image_view"
    #: uint8 ``(B, 3, N, N)`` niche crop centred on the spot
    niche_image = "niche_image"
    #: float32 ``(B, V)`` spot expression, ``log1p(normalize_total(1e4))`` on the model vocabulary (0 if unmeasured)
    spot_expr = "spot_expr"
    #: float32 ``(B, V)`` niche expression (mean of the neighbourhood's normalised profiles), same scale
    niche_expr = "niche_expr"
    #: bool ``(B,)``
    has_image = "has_image"
    #: bool ``(B,)``
    has_expr = "has_expr"
    #: int64 ``(B,)`` index of the section in the dataset
    section = "section"
    #: int64 ``(B,)`` cluster id within its section for hard negatives (-1 when unknown)
    cluster = "cluster"
    #: int64 ``(B,)`` row of the spot in its section's table
    index = "index"
    #: optional float32 ``(B, F)`` precomputed features of a frozen spot trunk (training's feature cache)
    spot_features = "spot_features"
    #: optional float32 ``(B, F)`` precomputed features of a frozen niche trunk
    niche_features = "niche_features"


#: The model inputs of a batch: what inference moves to the model's device. The masks and ids stay on the host,
#: where the model reads them without waiting for the device.
INPUT_KEYS = (
    BatchKey.spot_image,
    BatchKey.niche_image,
    BatchKey.spot_expr,
    BatchKey.niche_expr,
    BatchKey.spot_features,
    BatchKey.niche_features,
)


def inputs_to(batch: dict, device) -> dict:
    """``batch`` with its :data:`INPUT_KEYS` tensors copied to ``device`` (non-blocking: from pinned memory on CUDA)."""
    return {k: v.to(device, non_blocking=True) if k in INPUT_KEYS else v for k, v in batch.items()}
