"""`TrainConfig`: every option of a training run, with one default and one description each."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validators import check_int, check_number
from ._augment import AugmentConfig

#: Values of ``amp`` (mixed precision on CUDA); ``None``, ``False`` and the "off" spellings turn it off.
AMP_MODES = ("auto", "bf16", "bfloat16", "fp16", "float16", "off", "none", "no")

#: Global batch at which the learning rate equals ``base_lr`` (the authors' linear scaling rule).
LR_REFERENCE_BATCH = 256


@dataclass
class TrainConfig:
    """Every option of :func:`~stalign.train.pretrain` and :func:`~stalign.train.finetune`, checked on creation.

    Pass one as ``train=`` and/or any field as a keyword of those functions (a keyword overrides the config); a
    TOML/JSON recipe's ``[train]`` table holds the same fields (:func:`~stalign.train.pretrain_from_config`). The
    defaults are those of pretraining; :meth:`finetune_defaults` gives those of fine-tuning. ``run.json`` in the
    output folder records the config of the run (:meth:`to_dict`).

    Parameters
    ----------
    epochs
        Passes over the spots; the learning-rate schedule spans all of them.
    batch_size
        Global batch: spot–niche pairs per optimiser step, over all DDP processes (at least 2, for in-batch
        negatives; divisible by the number of processes).
    lr
        Peak learning rate; ``None``: ``base_lr * batch_size / 256`` (:meth:`peak_lr`).
    base_lr
        Learning rate of a global batch of 256 when ``lr`` is ``None`` (the authors' linear scaling rule).
    min_lr
        Final learning rate of the cosine schedule.
    weight_decay
        ``(start, end)`` of the cosine weight-decay schedule, or one constant value (stored as a pair).
    warmup_epochs
        Linear learning-rate warm-up, in epochs.
    device
        ``None``: CUDA when available, else CPU. Under ``torchrun`` each process uses ``cuda:LOCAL_RANK``. A
        :class:`torch.device` is stored as its string.
    num_workers
        DataLoader worker processes reading crops.
    seed
        Seed of the initial weights, the data order and every augmentation.
    resume
        Continue from the latest checkpoint in ``output_dir/checkpoints`` if there is one; the result is identical
        to an uninterrupted run. ``False`` starts over.
    checkpoint_every
        Write a checkpoint every this many steps (and always at the end of an epoch); ``None``: epoch ends only.
    keep_checkpoints
        How many recent checkpoints to keep (``0``: all).
    augment
        ``True`` (the defaults of :class:`~stalign.train.AugmentConfig`: flips, 90° turns, HED stain and colour
        jitter, resolution jitter, gene dropout), ``False``/``None`` (none), a dict of
        :class:`~stalign.train.AugmentConfig` fields or an instance. Stored as an
        :class:`~stalign.train.AugmentConfig` (or ``None``).
    gene_dropout
        Largest fraction of the measured genes zeroed per spot (augmentation); replaces ``augment``'s
        ``gene_dropout``. ``None``: keep that of ``augment`` (0.25 by default).
    cache_features
        Compute the features of frozen image trunks (``freeze_spot_encoder`` / ``freeze_niche_encoder``) once per
        crop before the first step and train on them, so that a heavy pretrained backbone costs one pass over the
        crops. Image augmentations would change those features: with both image trunks frozen they are switched off
        (gene dropout is kept). ``False``: every step runs the frozen trunks on the (augmented) crops.
    hard_negatives
        ``K`` hard negatives per anchor from other expression clusters of the same section (k-means on PCA,
        ``n_clusters`` per section), on top of the in-batch negatives. ``0``: in-batch negatives only.
    n_clusters
        Clusters per section for hard negatives.
    amp
        Mixed precision on CUDA: ``"auto"`` (bf16 when supported, else fp16 with a GradScaler), ``"bf16"``,
        ``"fp16"`` or ``None``. Ignored on CPU.
    grad_clip
        Clip the global gradient norm to this value (``None``: no clipping).
    show_progress_bar
        One ``tqdm`` bar over all steps with the loss in the postfix.
    max_steps
        Stop after this many optimiser steps in total (the schedule still spans ``epochs``); the run can be
        continued later with ``resume=True``.
    log_every
        Write a row of ``metrics.jsonl`` every this many steps.
    data_dir
        Folder of the shared datasets for loader specs (default ``$STALIGN_DATA_DIR``).
    dataset_kwargs
        Extra arguments of :class:`stalign.pp.SpotDataset` (e.g. ``spot_um``, ``niche_um``, ``drop_last``).

    Examples
    --------
    >>> import stalign as sta
    >>> cfg = sta.train.TrainConfig(epochs=10, batch_size=64)
    >>> cfg.checkpoint_every, cfg.weight_decay, cfg.peak_lr()  # 5e-4 * 64 / 256
    (200, (0.04, 0.4), 0.000125)
    >>> ft = sta.train.TrainConfig.finetune_defaults(epochs=2)
    >>> ft.base_lr, ft.warmup_epochs, ft.weight_decay, ft.epochs
    (0.0001, 0.5, (0.04, 0.04), 2)
    >>> cfg.replace(epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: epochs=0; it must be a positive integer.
    >>> # the JSON form of run.json builds the same config
    >>> sta.train.TrainConfig(**cfg.to_dict()) == cfg
    True
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float | None = None
    base_lr: float = 5e-4
    min_lr: float = 1e-6
    weight_decay: tuple[float, float] | float = (0.04, 0.4)
    warmup_epochs: float = 2.0
    device: str | None = None
    num_workers: int = 0
    seed: int = 0
    resume: bool = True
    checkpoint_every: int | None = 200
    keep_checkpoints: int = 2
    augment: bool | dict | AugmentConfig | None = True
    gene_dropout: float | None = None
    cache_features: bool = True
    hard_negatives: int = 0
    n_clusters: int = 8
    amp: str | bool | None = "auto"
    grad_clip: float | None = 3.0
    show_progress_bar: bool = True
    max_steps: int | None = None
    log_every: int = 1
    data_dir: str | os.PathLike | None = None
    dataset_kwargs: dict | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field, raising an error that names it and says what it must be; store the canonical form.

        Called on creation and by :meth:`replace`; call it again after assigning a field by hand.
        """
        self.epochs = check_int(self.epochs, "epochs")
        self.batch_size = check_int(
            self.batch_size, "batch_size", minimum=2, hint=" (in-batch negatives need several spots)"
        )
        self.lr = check_number(self.lr, "lr", allow_none=True, hint=" (e.g. 5e-4)")
        self.base_lr = check_number(self.base_lr, "base_lr", hint=" (e.g. 5e-4)")
        self.min_lr = check_number(self.min_lr, "min_lr", strict=False, hint=" (e.g. 1e-6)")
        self.weight_decay = _check_weight_decay(self.weight_decay)
        self.warmup_epochs = check_number(self.warmup_epochs, "warmup_epochs", strict=False, hint=" (e.g. 2.0)")
        self.device = _check_device(self.device)
        self.num_workers = check_int(self.num_workers, "num_workers", minimum=0)
        self.seed = check_int(self.seed, "seed", minimum=0)
        self.resume = _check_bool(self.resume, "resume")
        self.checkpoint_every = check_int(
            self.checkpoint_every, "checkpoint_every", allow_none=True, hint=" (None: epoch ends only)"
        )
        self.keep_checkpoints = check_int(self.keep_checkpoints, "keep_checkpoints", minimum=0, hint=" (0 keeps all)")
        self.gene_dropout = check_number(
            self.gene_dropout, "gene_dropout", strict=False, maximum=1.0, allow_none=True, hint=" (e.g. 0.25)"
        )
        aug = AugmentConfig.from_any(self.augment)
        if aug is not None:  # a copy: the caller's AugmentConfig is never changed
            gd = {} if self.gene_dropout is None else {"gene_dropout": self.gene_dropout}
            aug = dataclasses.replace(aug, **gd)
        self.augment = aug
        self.cache_features = _check_bool(self.cache_features, "cache_features")
        self.hard_negatives = check_int(self.hard_negatives, "hard_negatives", minimum=0)
        self.n_clusters = check_int(self.n_clusters, "n_clusters")
        if not (self.amp is None or isinstance(self.amp, bool) or self.amp in AMP_MODES):
            msg = f"amp={self.amp!r}; it must be one of {list(AMP_MODES)}, True, False or None (e.g. 'auto')."
            raise ValueError(msg)
        self.grad_clip = check_number(self.grad_clip, "grad_clip", allow_none=True, hint=" (e.g. 3.0)")
        self.show_progress_bar = _check_bool(self.show_progress_bar, "show_progress_bar")
        self.max_steps = check_int(self.max_steps, "max_steps", allow_none=True)
        self.log_every = check_int(self.log_every, "log_every")
        if self.data_dir is not None and not isinstance(self.data_dir, str | os.PathLike):
            msg = f"data_dir={self.data_dir!r} ({type(self.data_dir).__name__}); pass a folder path or None."
            raise TypeError(msg)
        self.dataset_kwargs = _check_dataset_kwargs(self.dataset_kwargs)

    def peak_lr(self) -> float:
        """The peak learning rate of the schedule: ``lr``, or ``base_lr * batch_size / 256`` when it is ``None``."""
        return self.lr if self.lr is not None else self.base_lr * self.batch_size / LR_REFERENCE_BATCH

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (checked again); unknown names raise a :class:`TypeError`."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON (what ``run.json`` records); ``TrainConfig(**d)`` builds the config again."""
        d = dataclasses.asdict(self)
        return json.loads(json.dumps(d, default=_json_default))

    @classmethod
    def finetune_defaults(cls, **overrides: Any) -> TrainConfig:
        """The defaults of :func:`~stalign.train.finetune`, with ``overrides`` applied.

        They differ from pretraining in four fields: ``base_lr=1e-4``, ``warmup_epochs=0.5``, a constant
        ``weight_decay=0.04`` and ``epochs=5``.
        """
        _check_names(overrides)
        return cls(**{"base_lr": 1e-4, "warmup_epochs": 0.5, "weight_decay": 0.04, "epochs": 5, **overrides})


#: Names of the :class:`TrainConfig` fields, in order.
FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def _check_names(options: dict[str, Any]) -> None:
    unknown = [k for k in options if k not in FIELDS]
    if unknown:
        msg = (
            f"Unknown training option(s) {unknown}; valid options are the fields of stalign.train.TrainConfig: "
            f"{list(FIELDS)}."
        )
        raise TypeError(msg)


def make_config(train: Any, options: dict[str, Any], *, finetune: bool = False) -> TrainConfig:
    """The config of a run: ``train`` (a :class:`TrainConfig`, a dict of fields or ``None``) with ``options`` applied.

    ``None`` and a dict start from the pretraining defaults, or from :meth:`TrainConfig.finetune_defaults` when
    ``finetune``; a :class:`TrainConfig` is used as given. The result is a new, checked config.
    """
    if isinstance(train, TrainConfig):
        return train.replace(**options)
    if train is not None and not isinstance(train, dict):
        msg = f"train={train!r}; pass a stalign.train.TrainConfig, a dict of its fields or None."
        raise TypeError(msg)
    fields = {**(train or {}), **options}
    _check_names(fields)
    return TrainConfig.finetune_defaults(**fields) if finetune else TrainConfig(**fields)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        msg = f"{name}={value!r} ({type(value).__name__}); it must be True or False."
        raise TypeError(msg)
    return bool(value)


def _check_weight_decay(value: Any) -> tuple[float, float]:
    if isinstance(value, list | tuple):
        if len(value) != 2:
            msg = f"weight_decay={value!r}; pass one number or a (start, end) pair, e.g. (0.04, 0.4)."
            raise ValueError(msg)
        start, end = (
            check_number(v, f"weight_decay[{i}]", strict=False, hint=" (e.g. 0.04)") for i, v in enumerate(value)
        )
        return (start, end)
    wd = check_number(value, "weight_decay", strict=False, hint=" (one number or a (start, end) pair, e.g. 0.04)")
    return (wd, wd)


def _check_device(device: Any) -> str | None:
    if device is None or isinstance(device, str):
        return device
    if isinstance(device, torch.device):
        return str(device)
    msg = f"device={device!r} ({type(device).__name__}); pass 'cpu', 'cuda', 'cuda:0', a torch.device or None."
    raise TypeError(msg)


def _check_dataset_kwargs(kwargs: Any) -> dict | None:
    if kwargs is None:
        return None
    if not isinstance(kwargs, dict):
        msg = f"dataset_kwargs must be a dict of SpotDataset arguments or None, got {type(kwargs).__name__}."
        raise TypeError(msg)
    import inspect

    from ..pp import SpotDataset

    valid = [p for p in inspect.signature(SpotDataset).parameters if p != "sections"]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        msg = f"dataset_kwargs has unknown key(s) {unknown}; valid keys are the arguments of stalign.pp.SpotDataset: {valid}."
        raise TypeError(msg)
    return dict(kwargs)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return os.fspath(x) if isinstance(x, os.PathLike) else str(x)
