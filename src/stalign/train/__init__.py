"""Pretraining and fine-tuning: augmentation, AdamW + cosine schedules, AMP, checkpoints with exact resume, DDP."""

from ._api import finetune, pretrain, pretrain_from_config, read_config, resolve_sections, section_clusters
from ._augment import AugmentConfig, augment_batch
from ._checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from ._schedule import CosineSchedule

__all__ = [
    "AugmentConfig",
    "CosineSchedule",
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
