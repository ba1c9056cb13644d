"""The ST-Align model: configuration, module, losses, save/load and the registry of bundled weights.

The torch-backed members load on first use, so ``import stalign`` does not import torch.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ._config import STAlignConfig
from ._registry import DEFAULT_MODEL as DEFAULT_MODEL  # shared with tl and the cohort, not public API
from ._registry import available_models

if TYPE_CHECKING:  # pragma: no cover
    from ._backbones import BACKBONES, Backbone, backbone_config, efficientnet_lite0_state_dict
    from ._io import clear_cache, load, save, weights_fingerprint
    from ._losses import LossOutput, contrastive_loss, gather_negatives, sample_negatives
    from ._model import STAlign
    from ._resolve import model_record as model_record  # shared with tl and the cohort, not public API
    from ._resolve import resolve_model as resolve_model

__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "BACKBONES": "._backbones",
        "Backbone": "._backbones",
        "LossOutput": "._losses",
        "STAlign": "._model",
        "backbone_config": "._backbones",
        "clear_cache": "._io",
        "contrastive_loss": "._losses",
        "efficientnet_lite0_state_dict": "._backbones",
        "gather_negatives": "._losses",
        "load": "._io",
        "model_record": "._resolve",
        "resolve_model": "._resolve",
        "sample_negatives": "._losses",
        "save": "._io",
        "weights_fingerprint": "._io",
    },
)

__all__ = [
    "BACKBONES",
    "Backbone",
    "LossOutput",
    "STAlign",
    "STAlignConfig",
    "available_models",
    "backbone_config",
    "clear_cache",
    "contrastive_loss",
    "efficientnet_lite0_state_dict",
    "gather_negatives",
    "load",
    "sample_negatives",
    "save",
    "weights_fingerprint",
]
