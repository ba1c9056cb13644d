"""Pretraining and fine-tuning: augmentation, AdamW + cosine schedules, AMP, checkpoints with exact resume, DDP.

Everything here loads on first use, so ``import stalign`` does not import torch.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from ._api import finetune, pretrain, pretrain_from_config, read_config, resolve_sections, section_clusters
    from ._augment import AugmentConfig, augment_batch
    from ._checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
    from ._config import TrainConfig
    from ._schedule import CosineSchedule

__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "AugmentConfig": "._augment",
        "CosineSchedule": "._schedule",
        "TrainConfig": "._config",
        "augment_batch": "._augment",
        "finetune": "._api",
        "latest_checkpoint": "._checkpoint",
        "list_checkpoints": "._checkpoint",
        "load_checkpoint": "._checkpoint",
        "pretrain": "._api",
        "pretrain_from_config": "._api",
        "read_config": "._api",
        "resolve_sections": "._api",
        "section_clusters": "._api",
    },
)

__all__ = [
    "AugmentConfig",
    "CosineSchedule",
    "TrainConfig",
    "augment_batch",
    "finetune",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "pretrain",
    "pretrain_from_config",
    "read_config",
    "resolve_sections",
    "section_clusters",
]
