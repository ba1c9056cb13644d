"""The ST-Align model: configuration, module, losses, save/load and the registry of bundled weights."""

from ._config import STAlignConfig
from ._io import load, save
from ._losses import LossOutput, contrastive_loss, gather_negatives, sample_negatives
from ._model import STAlign
from ._registry import available_models

__all__ = [
    "LossOutput",
    "STAlign",
    "STAlignConfig",
    "available_models",
    "contrastive_loss",
    "gather_negatives",
    "load",
    "sample_negatives",
    "save",
]
