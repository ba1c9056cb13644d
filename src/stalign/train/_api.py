"""Public training API: :func:`pretrain`, :func:`finetune` and :func:`pretrain_from_config`."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils import resolve_device
from ._augment import AugmentConfig
from ._distributed import cleanup, init_distributed
from ._engine import FitOptions, fit

logger = logging.getLogger(__name__)

#: Base learning rate for a global batch of 256 (scaled linearly with the batch size).
BASE_LR = 5e-4
FINETUNE_LR = 1e-4


def _check_sections(sections: Any) -> list[Any]:
    """``sections`` as a list, each a SpatialData, an AnnData or a loader spec string; else a clear TypeError."""
    if sections is None:
        msg = (
            "`sections` is None; pass a list of SpatialData/AnnData sections or loader specs such as "
            "['dlpfc:151673', 'her2st:B1']."
        )
        raise TypeError(msg)
    if isinstance(sections, str | bytes) or not isinstance(sections, Sequence):
        sections = [sections]
    for i, s in enumerate(sections):
        if not (isinstance(s, str) or hasattr(s, "tables") or hasattr(s, "var_names")):
            msg = (
                f"sections[{i}] is a {type(s).__name__}; each section must be a SpatialData, an AnnData or a loader "
                "spec string such as 'dlpfc:151673'."
            )
            raise TypeError(msg)
    if not sections:
        msg = "`sections` is empty; pass at least one SpatialData/AnnData object or loader spec."
        raise ValueError(msg)
    return list(sections)


def _check_int(value: Any, name: str, *, minimum: int, allow_none: bool = False, why: str = "") -> None:
    """Refuse anything but an integer >= ``minimum`` (bools included: ``True`` is an int)."""
    if value is None and allow_none:
        return
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    what += " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{name}={value!r} ({type(value).__name__}); it must be {what}{why}."
        raise TypeError(msg)
    if value < minimum:
        msg = f"{name}={value!r}; it must be {what}{why}."
        raise ValueError(msg)


def _check_real(value: Any, name: str, *, positive: bool, allow_none: bool = False, example: str = "") -> None:
    """Refuse anything but a finite number > 0 (``positive``) or >= 0 (bools and strings included)."""
    if value is None and allow_none:
        return
    what = "a finite positive number" if positive else "a finite non-negative number"
    what += " or None" if allow_none else ""
    what += f" (e.g. {example})" if example else ""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        msg = f"{name}={value!r} ({type(value).__name__}); it must be {what}."
        raise TypeError(msg)
    if not (np.isfinite(value) and (value > 0 if positive else value >= 0)):
        msg = f"{name}={value!r}; it must be {what}."
        raise ValueError(msg)


def _check_output_dir(output_dir: Any) -> Path:
    """``output_dir`` as a Path, refused when it (or a parent) is an existing file; nothing is created."""
    if not isinstance(output_dir, str | os.PathLike) or not str(output_dir):
        msg = f"output_dir={output_dir!r}; pass the path of a folder for checkpoints, metrics and the model."
        raise TypeError(msg)
    path = Path(output_dir).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "output_dir" if p == path else f"{str(p)!r}, a parent of output_dir,"
                msg = (
                    f"output_dir {str(path)!r}: {what} exists and is not a directory; pass a directory path (an "
                    "existing folder, or a new one to be created)."
                )
                raise FileExistsError(msg)
            break
    return path


def _check_counts(sections: list[Any], dataset_kwargs: dict) -> None:
    """Raise, as tl.embed does, when a section's counts hold NaN, infinite or negative values."""
    from .._constants import Key
    from .._section import get_section

    for data in sections:
        sec = get_section(
            data,
            table_key=dataset_kwargs.get("table_key", Key.table),
            image_key=dataset_kwargs.get("image_key"),
            library_id=dataset_kwargs.get("library_id"),
        )
        sec.has_expression  # noqa: B018 - raises for counts that are not raw counts


def resolve_sections(sections: Any, *, data_dir: str | os.PathLike | None = None) -> list[Any]:
    """Turn ``sections`` into a list of SpatialData / AnnData objects.

    Strings are loader specs ``"<dataset>:<section>"`` (e.g. ``"dlpfc:151673"``, ``"her2st:B1"``) resolved with
    :func:`stalign.io.load` when it exists, else with the reader of that name in :mod:`stalign.io`.

    Parameters
    ----------
    sections
        One or a sequence of SpatialData / AnnData objects and/or loader spec strings.
    data_dir
        Data folder passed to the readers; defaults to ``$STALIGN_DATA_DIR``.

    Returns
    -------
    List of SpatialData / AnnData objects, in the order given.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.stutility_mob("MOB1")
    >>> sections = sta.train.resolve_sections([sdata, "stutility_mob:MOB2"])
    >>> [s.tables["table"].obs["sample"].iloc[0] for s in sections]
    ['MOB1', 'MOB2']
    """
    from .. import io

    sections = _check_sections(sections)
    out = []
    for i, s in enumerate(sections):
        if not isinstance(s, str):
            out.append(s)
            continue
        if hasattr(io, "load"):
            out.append(io.load(s, data_dir=data_dir))
            continue
        name, sep, ident = s.partition(":")
        reader = getattr(io, name, None) if sep else None
        if reader is None or not callable(reader):
            msg = (
                f"sections[{i}]={s!r} is not a loader spec; use '<dataset>:<section>' with a dataset reader of "
                "stalign.io (e.g. 'dlpfc:151673', 'her2st:B1'), or pass SpatialData/AnnData objects."
            )
            raise ValueError(msg)
        out.append(reader(ident, data_dir=data_dir))
    if not out:
        msg = "`sections` is empty; pass at least one SpatialData/AnnData object or loader spec."
        raise ValueError(msg)
    return out


def _build_config(config: Any, sections: list[Any]):
    from .._genes import build_vocabulary
    from ..models import STAlignConfig

    if isinstance(config, STAlignConfig):
        return config
    overrides: dict[str, Any] = {}
    if isinstance(config, dict):
        overrides = dict(config)
        config = overrides.pop("preset", "base")
    if not isinstance(config, str):
        msg = f"`config` must be an STAlignConfig, a preset name ('base', 'large') or a dict, not {type(config).__name__}."
        raise TypeError(msg)
    genes = overrides.pop("genes", None) or build_vocabulary(sections)
    if not genes:
        logger.warning("The training sections measure no gene: the gene encoders will not train.")
    return STAlignConfig.preset(config, genes, **overrides)


def section_clusters(sections: list[Any], *, n_clusters: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Per-section k-means clusters of expression (PCA of log-normalised counts) for hard negatives.

    Sections without expression get ``-1`` everywhere (no hard negatives).

    Parameters
    ----------
    sections
        SpatialData / AnnData objects.
    n_clusters
        Number of k-means clusters per section.
    seed
        Seed of the PCA and k-means.

    Returns
    -------
    One ``int64`` array of cluster labels per section (``-1`` for spots without counts).

    Examples
    --------
    >>> import stalign as sta
    >>> sections = [sta.io.stutility_mob("MOB1"), sta.io.her2st("A2")]
    >>> labels = sta.train.section_clusters(sections, n_clusters=4)
    >>> [sorted(set(lab.tolist())) for lab in labels]
    [[0, 1, 2, 3], [0, 1, 2, 3]]
    """
    from scipy import sparse
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from .._section import get_section
    from ..pp import log_normalize

    out = []
    for data in sections:
        table = get_section(data, require_image=False).table
        x = table.X
        n = table.n_obs
        if x is None or table.n_vars == 0 or n < 2 * n_clusters:
            out.append(np.full(n, -1, dtype=np.int64))
            continue
        x = sparse.csr_matrix(x, dtype=np.float32)
        tot = np.asarray(x.sum(1)).ravel()
        x = log_normalize(x, totals=tot)
        keep = np.asarray((x > 0).sum(0)).ravel() >= max(3, n // 100)
        dense = x[:, keep].toarray()
        if dense.shape[1] < 2:
            out.append(np.full(n, -1, dtype=np.int64))
            continue
        pcs = PCA(n_components=min(20, dense.shape[1] - 1), random_state=seed).fit_transform(dense)
        lab = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit_predict(pcs).astype(np.int64)
        lab[tot <= 0] = -1
        out.append(lab)
    return out


def _train_sections(
    model_factory,
    sections: Any,
    *,
    output_dir: str | os.PathLike,
    epochs: int,
    batch_size: int,
    lr: float | None,
    base_lr: float,
    min_lr: float,
    device: Any,
    num_workers: int,
    seed: int,
    resume: bool,
    checkpoint_every: int | None,
    keep_checkpoints: int,
    gene_dropout: float,
    augment: bool | dict | AugmentConfig,
    weight_decay: tuple[float, float] | float,
    warmup_epochs: float,
    hard_negatives: int,
    n_clusters: int,
    amp: str | bool | None,
    grad_clip: float | None,
    show_progress_bar: bool,
    max_steps: int | None,
    log_every: int,
    data_dir: str | os.PathLike | None,
    dataset_kwargs: dict | None,
    desc: str,
    run_info: dict,
):
    from ..pp import SpotDataset

    # every argument is checked before any work: no section is loaded and no folder is created for a bad call
    _check_int(epochs, "epochs", minimum=1)
    _check_int(batch_size, "batch_size", minimum=2, why=" (in-batch negatives need several spots)")
    _check_real(lr, "lr", positive=True, allow_none=True, example="5e-4")
    _check_real(min_lr, "min_lr", positive=False, example="1e-6")
    _check_int(num_workers, "num_workers", minimum=0)
    _check_int(seed, "seed", minimum=0)
    _check_int(checkpoint_every, "checkpoint_every", minimum=1, allow_none=True, why=" (None: epoch ends only)")
    _check_int(keep_checkpoints, "keep_checkpoints", minimum=0, why=" (0 keeps all)")
    _check_real(warmup_epochs, "warmup_epochs", positive=False, example="2.0")
    _check_int(hard_negatives, "hard_negatives", minimum=0)
    _check_int(n_clusters, "n_clusters", minimum=1)
    _check_real(grad_clip, "grad_clip", positive=True, allow_none=True, example="3.0")
    _check_int(max_steps, "max_steps", minimum=1, allow_none=True)
    _check_int(log_every, "log_every", minimum=1)
    if dataset_kwargs is not None and not isinstance(dataset_kwargs, dict):
        msg = f"dataset_kwargs must be a dict of SpotDataset arguments or None, got {type(dataset_kwargs).__name__}."
        raise TypeError(msg)
    if isinstance(weight_decay, int | float | np.integer | np.floating):
        weight_decay = (weight_decay, weight_decay)
    if not isinstance(weight_decay, list | tuple) or len(weight_decay) != 2:
        msg = f"weight_decay={weight_decay!r}; pass one float or a (start, end) pair."
        raise ValueError(msg)
    for wd in weight_decay:
        _check_real(wd, "weight_decay", positive=False, example="0.04")
    weight_decay = (float(weight_decay[0]), float(weight_decay[1]))
    if gene_dropout is not None:
        _check_real(gene_dropout, "gene_dropout", positive=False)
        if not 0 <= gene_dropout < 1:
            msg = f"gene_dropout={gene_dropout!r}; it must be in [0, 1)."
            raise ValueError(msg)
    sections = _check_sections(sections)
    _check_output_dir(output_dir)
    aug = AugmentConfig.from_any(augment)
    if aug is not None and gene_dropout is not None:
        aug = AugmentConfig(**{**aug.to_dict(), "gene_dropout": float(gene_dropout)})

    device = resolve_device(device)
    info, device = init_distributed(device)
    try:
        if batch_size % info.world_size:
            msg = (
                f"batch_size={batch_size} (the global batch) is not divisible by the {info.world_size} processes; "
                f"use a multiple of {info.world_size}."
            )
            raise ValueError(msg)
        sections = resolve_sections(sections, data_dir=data_dir)
        _check_counts(sections, dataset_kwargs or {})
        model = model_factory(sections)
        config = model.config
        clusters = section_clusters(sections, n_clusters=n_clusters, seed=seed) if hard_negatives > 0 else None
        kwargs = {
            "genes": config.genes,
            "spot_um": config.spot_um,
            "niche_um": config.niche_um,
            "niche_radius_um": config.niche_radius_um,
            "layout": "random",
            "cache_crops": True,
            "spot_px": config.spot_size,
            "niche_px": config.niche_size,
            "batch_size": batch_size // info.world_size,
            "shuffle": True,
            "seed": seed,
            "rank": info.rank,
            "world_size": info.world_size,
            "clusters": clusters,
        }
        kwargs.update(dataset_kwargs or {})
        dataset = SpotDataset(sections, **kwargs)
        lr = base_lr * batch_size / 256 if lr is None else float(lr)
        opts = FitOptions(
            output_dir=Path(output_dir),
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=lr,
            min_lr=min_lr,
            weight_decay=(float(weight_decay[0]), float(weight_decay[1])),
            warmup_epochs=float(warmup_epochs),
            num_workers=num_workers,
            seed=seed,
            resume=resume,
            checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints,
            augment=aug,
            amp=amp,
            grad_clip=grad_clip,
            show_progress_bar=show_progress_bar,
            max_steps=max_steps,
            log_every=log_every,
            hard_negatives=int(hard_negatives),
            desc=desc,
            run_info={**run_info, "lr": lr, "world_size": info.world_size},
        )
        if info.is_main:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            run = {
                "config": config.to_dict(),
                "train": {
                    k: (v if isinstance(v, int | float | str | bool | None) else str(v)) for k, v in vars(opts).items()
                },
                "augment": None if aug is None else aug.to_dict(),
                "n_spots": dataset.n_spots,
                "n_sections": len(sections),
            }
            (Path(output_dir) / "run.json").write_text(json.dumps(run, indent=1, default=str))
        logger.info(
            "Training on %d spots from %d sections, %d genes, global batch %d, lr %.3g, %d process(es), %s",
            dataset.n_spots, len(sections), len(config.genes), batch_size, lr, info.world_size, device,
        )  # fmt: skip

        def on_end(m):
            from ..models import save

            save(m, Path(output_dir) / "model")

        model = fit(model, dataset, opts, device=device, info=info, on_end=on_end)
    finally:
        cleanup(info)
    return model


def pretrain(
    sections: Any,
    config: Any = "base",
    *,
    output_dir: str | os.PathLike,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float | None = None,
    min_lr: float = 1e-6,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    seed: int = 0,
    resume: bool = True,
    checkpoint_every: int | None = 200,
    keep_checkpoints: int = 2,
    gene_dropout: float = 0.25,
    augment: bool | dict | AugmentConfig = True,
    weight_decay: tuple[float, float] | float = (0.04, 0.4),
    warmup_epochs: float = 2.0,
    hard_negatives: int = 0,
    n_clusters: int = 8,
    amp: str | bool | None = "auto",
    grad_clip: float | None = 3.0,
    show_progress_bar: bool = True,
    max_steps: int | None = None,
    log_every: int = 1,
    data_dir: str | os.PathLike | None = None,
    dataset_kwargs: dict | None = None,
):
    """Pretrain an ST-Align model from scratch on spatial transcriptomics sections.

    Self-supervised: no label is used. Works in one process (CPU or one GPU) and, started by
    ``torchrun --nproc_per_node N``, as a DDP job (gloo on CPU, NCCL on CUDA) whose in-batch negatives span the
    global batch of all ranks.

    Parameters
    ----------
    sections
        SpatialData objects and/or AnnData in the squidpy Visium convention, or loader specs such as
        ``"dlpfc:151673"`` (see :func:`resolve_sections`). They are not modified.
    config
        An :class:`~stalign.models.STAlignConfig`, a preset name (``"base"``, ``"large"``) or a dict
        ``{"preset": "base", **overrides}``. With a preset, the gene vocabulary is built from ``sections``
        (:func:`stalign.pp.build_vocabulary`).
    output_dir
        Folder for ``metrics.jsonl`` (one JSON row per step: step, epoch, lr, weight_decay, loss, each loss term,
        grad_norm, pairs_per_s), ``checkpoints/``, ``run.json`` and the final ``model/``
        (:func:`stalign.models.save`).
    epochs
        Passes over the spots; the learning-rate schedule spans all of them.
    batch_size
        Global batch (spot–niche pairs per optimiser step, over all DDP processes).
    lr
        Peak learning rate; default ``5e-4 * batch_size / 256`` (the authors' rule).
    min_lr
        Final learning rate of the cosine schedule.
    device
        ``None``: CUDA when available, else CPU. Under ``torchrun`` each process uses ``cuda:LOCAL_RANK``.
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
    gene_dropout
        Largest fraction of measured genes zeroed per spot (augmentation; spot and niche lose the same genes).
    augment
        ``True`` (defaults of :class:`~stalign.train.AugmentConfig`: flips, 90° turns, HED stain and colour jitter,
        resolution jitter), ``False``, or a dict of :class:`~stalign.train.AugmentConfig` fields.
    weight_decay
        ``(start, end)`` of the cosine weight-decay schedule, or one constant value.
    warmup_epochs
        Linear learning-rate warm-up, in epochs.
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
        Write a metrics row every this many steps.
    data_dir
        Folder of the shared datasets for loader specs and Ensembl id mapping (default ``$STALIGN_DATA_DIR``).
    dataset_kwargs
        Extra arguments of :class:`stalign.pp.SpotDataset` (e.g. ``spot_um``, ``niche_um``, ``drop_last``).

    Returns
    -------
    The trained :class:`~stalign.models.STAlign` (in eval mode), also saved to ``output_dir/model``.

    Examples
    --------
    >>> import stalign as sta
    >>> model = sta.train.pretrain(
    ...     ["dlpfc:151673", "her2st:B1"], "base", output_dir="runs/base", epochs=10
    ... )  # doctest: +SKIP

    A few steps on one small section, as a check that runs in seconds:

    >>> sdata = sta.io.stutility_mob("MOB1")
    >>> model = sta.train.pretrain(
    ...     [sdata],
    ...     {"preset": "base", "spot_size": 32, "niche_size": 32},
    ...     output_dir="run",
    ...     epochs=1,
    ...     max_steps=4,
    ...     batch_size=32,
    ...     show_progress_bar=False,
    ... )
    >>> sorted(p.name for p in __import__("pathlib").Path("run").iterdir())
    ['checkpoints', 'metrics.jsonl', 'model', 'run.json']
    >>> ax = sta.pl.training_curves("run", smooth=2)
    """

    def factory(secs):
        from ..models import STAlign

        cfg = _build_config(config, secs)
        torch.manual_seed(seed)  # identical initial weights on every rank
        return STAlign(cfg)

    return _train_sections(
        factory,
        sections,
        output_dir=output_dir,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        base_lr=BASE_LR,
        min_lr=min_lr,
        device=device,
        num_workers=num_workers,
        seed=seed,
        resume=resume,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        gene_dropout=gene_dropout,
        augment=augment,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        hard_negatives=hard_negatives,
        n_clusters=n_clusters,
        amp=amp,
        grad_clip=grad_clip,
        show_progress_bar=show_progress_bar,
        max_steps=max_steps,
        log_every=log_every,
        data_dir=data_dir,
        dataset_kwargs=dataset_kwargs,
        desc="pretrain",
        run_info={"mode": "pretrain"},
    )


def finetune(
    model: Any,
    sections: Any,
    *,
    output_dir: str | os.PathLike,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float | None = None,
    min_lr: float = 1e-6,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    seed: int = 0,
    resume: bool = True,
    checkpoint_every: int | None = 200,
    keep_checkpoints: int = 2,
    gene_dropout: float = 0.25,
    augment: bool | dict | AugmentConfig = True,
    weight_decay: tuple[float, float] | float = 0.04,
    warmup_epochs: float = 0.5,
    hard_negatives: int = 0,
    n_clusters: int = 8,
    amp: str | bool | None = "auto",
    grad_clip: float | None = 3.0,
    show_progress_bar: bool = True,
    max_steps: int | None = None,
    log_every: int = 1,
    data_dir: str | os.PathLike | None = None,
    dataset_kwargs: dict | None = None,
):
    """Continue training a model (e.g. ``stalign-base``) on your own sections with the same self-supervised losses.

    Same options and outputs as :func:`pretrain`; the model keeps its gene vocabulary (each section's genes are
    mapped onto it). Defaults differ: ``lr = 1e-4 * batch_size / 256``, 0.5 warm-up epochs, constant weight decay.

    Parameters
    ----------
    model
        An :class:`~stalign.models.STAlign`, or a registry name / saved folder for :func:`stalign.models.load`.
        A given module is trained in place and returned.
    sections
        As in :func:`pretrain`.
    output_dir, epochs, batch_size, lr, min_lr, device, num_workers, seed, resume, checkpoint_every, keep_checkpoints, gene_dropout, augment, weight_decay, warmup_epochs, hard_negatives, n_clusters, amp, grad_clip, show_progress_bar, max_steps, log_every, data_dir, dataset_kwargs
        As in :func:`pretrain`.

    Returns
    -------
    The fine-tuned model (in eval mode), also saved to ``output_dir/model``.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.stutility_mob("MOB1")
    >>> model = sta.train.finetune(
    ...     "stalign-base",
    ...     [sdata],
    ...     output_dir="finetuned",
    ...     epochs=1,
    ...     max_steps=4,
    ...     batch_size=32,
    ...     show_progress_bar=False,
    ... )
    >>> sta.tl.embed(sdata, model=model, show_progress_bar=False)
    >>> sta.models.load("finetuned/model").genes == model.genes  # the vocabulary is kept
    True
    """
    from ..models import load

    if isinstance(model, str | os.PathLike):
        model = load(model)
    if not hasattr(model, "config") or not hasattr(model, "loss"):
        msg = f"`model` must be an STAlign (or a name/path for stalign.models.load), not {type(model).__name__}."
        raise TypeError(msg)
    if getattr(model.config, "genes", None) is not None and len(model.config.genes) == 0:
        warnings.warn("The model has an empty gene vocabulary; only image terms train.", UserWarning, stacklevel=2)

    return _train_sections(
        lambda secs: model,
        sections,
        output_dir=output_dir,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        base_lr=FINETUNE_LR,
        min_lr=min_lr,
        device=device,
        num_workers=num_workers,
        seed=seed,
        resume=resume,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        gene_dropout=gene_dropout,
        augment=augment,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        hard_negatives=hard_negatives,
        n_clusters=n_clusters,
        amp=amp,
        grad_clip=grad_clip,
        show_progress_bar=show_progress_bar,
        max_steps=max_steps,
        log_every=log_every,
        data_dir=data_dir,
        dataset_kwargs=dataset_kwargs,
        desc="finetune",
        run_info={"mode": "finetune"},
    )


def read_config(path: str | os.PathLike) -> dict:
    """Read a TOML (``.toml``) or JSON training configuration into a dict with ``data``, ``model``, ``train``.

    Parameters
    ----------
    path
        A ``.toml`` or ``.json`` file.

    Returns
    -------
    The configuration dict (top-level keys among ``data``, ``model``, ``train``).

    Examples
    --------
    >>> import stalign as sta
    >>> _ = open("recipe.toml", "w").write('''
    ... [data]
    ... sections = ["dlpfc:151673", "her2st:C2"]
    ... [model]
    ... preset = "base"
    ... [train]
    ... output_dir = "runs/base"
    ... epochs = 10
    ... ''')
    >>> sta.train.read_config("recipe.toml")["data"]["sections"]
    ['dlpfc:151673', 'her2st:C2']
    """
    path = Path(path)
    if not path.is_file():
        msg = f"Config file {str(path)!r} does not exist; pass the path of a .toml or .json file."
        raise FileNotFoundError(msg)
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            cfg = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            msg = f"Cannot parse {str(path)!r} as TOML: {e}"
            raise ValueError(msg) from e
    elif path.suffix.lower() == ".json":
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            msg = f"Cannot parse {str(path)!r} as JSON: {e}"
            raise ValueError(msg) from e
    else:
        msg = f"Config file {str(path)!r} must end in .toml or .json."
        raise ValueError(msg)
    unknown = set(cfg) - {"data", "model", "train"}
    if unknown:
        msg = f"Unknown section(s) {sorted(unknown)} in {str(path)!r}; use [data], [model] and [train]."
        raise ValueError(msg)
    return cfg


def pretrain_from_config(path: str | os.PathLike, **overrides: Any):
    """Run :func:`pretrain` from a TOML or JSON file (what ``stalign pretrain --config FILE`` calls).

    The file has three tables::

        [data]
        sections = ["dlpfc:151673", "her2st:B1"]  # loader specs (see resolve_sections)
        data_dir = "../shared/data"  # optional

        [model]
        preset = "base"  # plus any STAlignConfig field to override
        embed_dim = 128

        [train]
        output_dir = "runs/base"  # plus any keyword of pretrain()
        epochs = 10
        batch_size = 128

    Parameters
    ----------
    path
        The configuration file. A relative ``output_dir`` is taken relative to the current directory.
    **overrides
        Keywords of :func:`pretrain` that replace the file's ``[train]`` values (``None`` values are ignored), e.g.
        ``output_dir`` or ``epochs`` from the command line.

    Returns
    -------
    The trained :class:`~stalign.models.STAlign`.

    Examples
    --------
    >>> import stalign as sta
    >>> _ = open("recipe.toml", "w").write('''
    ... [data]
    ... sections = ["stutility_mob:MOB1"]
    ... [model]
    ... preset = "base"
    ... spot_size = 32
    ... niche_size = 32
    ... [train]
    ... output_dir = "run"
    ... epochs = 1
    ... max_steps = 2
    ... batch_size = 32
    ... show_progress_bar = false
    ... ''')
    >>> model = sta.train.pretrain_from_config("recipe.toml")
    >>> model.config.spot_size
    32
    """
    import inspect

    cfg = read_config(path)
    data = dict(cfg.get("data", {}))
    sections = data.pop("sections", None)
    if not sections:
        msg = f'{str(path)!r} has no [data] sections; add e.g. sections = ["dlpfc:151673"].'
        raise ValueError(msg)
    data_dir = data.pop("data_dir", None)
    if data:
        msg = f"Unknown [data] key(s) {sorted(data)} in {str(path)!r}; use `sections` and `data_dir`."
        raise ValueError(msg)
    model_cfg = dict(cfg.get("model", {}))
    model_cfg.setdefault("preset", "base")
    train = dict(cfg.get("train", {}))
    train.update({k: v for k, v in overrides.items() if v is not None})
    valid = set(inspect.signature(pretrain).parameters) - {"sections", "config"}
    unknown = set(train) - valid
    if unknown:
        msg = f"Unknown [train] option(s) {sorted(unknown)}; valid options are {sorted(valid)}."
        raise ValueError(msg)
    if "output_dir" not in train:
        msg = f"{str(path)!r} has no [train] output_dir; add one or pass --output-dir."
        raise ValueError(msg)
    if isinstance(train.get("weight_decay"), list):
        train["weight_decay"] = tuple(train["weight_decay"])
    train.setdefault("data_dir", data_dir)
    return pretrain(sections, model_cfg, **train)
