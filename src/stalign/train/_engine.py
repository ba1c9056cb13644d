"""The training loop shared by :func:`~stalign.train.pretrain` and :func:`~stalign.train.finetune`.

It only needs a model with ``loss(batch) -> LossOutput(loss, components)`` and a dataset that yields whole batches
(dicts keyed by :class:`stalign._batch.BatchKey`), knows its length in batches and, optionally, ``set_epoch``.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._batch import BatchKey
from ._augment import augment_batch
from ._checkpoint import (
    _cpu,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    prune_checkpoints,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from ._distributed import DistInfo, all_gather_with_grad, all_reduce_mean, gather_rng_states
from ._schedule import CosineSchedule

if TYPE_CHECKING:
    from ._config import TrainConfig

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


#: DDP settings that the training functions have never exposed: a parameter may get no gradient in a step (e.g. the
#: gene encoders on a batch of an image-only section), and on CUDA BatchNorm statistics span the global batch.
FIND_UNUSED_PARAMETERS = True
SYNC_BATCHNORM = True


class _LossModule(nn.Module):
    """Make the model's loss the forward of a module so DDP's hooks see it.

    In a DDP job with an :class:`~stalign.models.STAlign`-like model (``embed`` + ``loss_from_embeddings``), each rank
    embeds its shard, the embeddings are all-gathered with gradients, and each rank's anchors are contrasted with the
    candidates of the whole global batch (local rows at ``rank * B_local``). Other models get ``gather=`` when their
    ``loss`` accepts it.
    """

    def __init__(self, model: nn.Module, info: DistInfo):
        super().__init__()
        self.model = model
        self.info = info
        self._gathered = info.enabled and hasattr(model, "embed") and hasattr(model, "loss_from_embeddings")
        self._loss_kwargs = {} if self._gathered else _loss_kwargs(model, info)

    def forward(self, batch, negatives=None):
        m = self.model
        if self._gathered:
            emb = m.embed(batch)
            gathered = {k: _gather_any(v) for k, v in emb.items()}
            neg = None
            if negatives is not None:
                from ..models import gather_negatives

                neg = gather_negatives(emb, negatives, exclude_self=True)
            b_local = len(next(iter(emb.values())))
            out = m.loss_from_embeddings(emb, gathered, offset=self.info.rank * b_local, negatives=neg, batch=batch)
        else:
            kw = dict(self._loss_kwargs)
            if negatives is not None:
                kw["negatives"] = negatives
            out = m.loss(batch, **kw)
        comps = dict(getattr(out, "components", {}) or {})
        return out.loss, comps


def _gather_any(x: torch.Tensor) -> torch.Tensor:
    """All-gather float tensors with gradient, other dtypes (masks) without."""
    if x.is_floating_point():
        return all_gather_with_grad(x)
    import torch.distributed as dist

    y = x.to(torch.uint8) if x.dtype == torch.bool else x
    out = [torch.empty_like(y) for _ in range(dist.get_world_size())]
    dist.all_gather(out, y.contiguous())
    res = torch.cat(out, dim=0)
    return res.to(torch.bool) if x.dtype == torch.bool else res


def hard_negative_indices(batch: dict, k: int, generator: torch.Generator) -> torch.Tensor | None:
    """``(B, K)`` rows of ``batch`` from other clusters of the same section (``-1`` where there are too few).

    Uses ``batch["cluster"]`` (``-1`` = unknown, never a negative) and ``batch["section"]``; ``None`` without clusters.
    """
    cl = batch.get(BatchKey.cluster)
    if cl is None or k <= 0 or not bool((cl >= 0).any()):
        return None
    cl = cl.cpu()
    sec = batch.get(BatchKey.section)
    sec = torch.zeros_like(cl) if sec is None else sec.cpu()
    ok = (cl[:, None] != cl[None, :]) & (cl[:, None] >= 0) & (cl[None, :] >= 0) & (sec[:, None] == sec[None, :])
    score = torch.rand(ok.shape, generator=generator)
    score = torch.where(ok, score, torch.full_like(score, -1.0))
    kk = min(k, score.shape[1])
    top, idx = score.topk(kk, dim=1)
    idx = torch.where(top >= 0, idx, torch.full_like(idx, -1))
    if kk < k:
        idx = torch.cat([idx, torch.full((len(idx), k - kk), -1, dtype=idx.dtype)], dim=1)
    return idx.to(cl.device)


def _ssl_view(model: nn.Module, batch: dict, config: TrainConfig, step: int, rows, n_global: int):
    """A second augmentation of the spot crops for the self-supervised image term (``config.w_image_ssl > 0``).

    Drawn from its own generator, seeded by ``(seed, step)`` like the first view, so a resumed or DDP run replays it.
    """
    cfg = getattr(model, "config", None)
    if float(getattr(cfg, "w_image_ssl", 0.0) or 0.0) <= 0 or batch.get(BatchKey.spot_image) is None:
        return None
    gen = torch.Generator().manual_seed(_mix_seed(config.seed + 104729, step))
    skip = (BatchKey.niche_image, BatchKey.spot_expr, BatchKey.niche_expr)
    spot_only = {k: v for k, v in batch.items() if k not in skip}
    return augment_batch(spot_only, config.augment, generator=gen, rows=rows, n_global=n_global)[BatchKey.spot_image]


def _loss_kwargs(model: nn.Module, info: DistInfo) -> dict:
    """How a model without ``loss_from_embeddings`` is told to gather embeddings across ranks."""
    if not info.enabled:
        return {}
    params = inspect.signature(model.loss).parameters
    for name in ("gather", "gather_fn", "all_gather"):
        if name in params:
            return {name: all_gather_with_grad}
    logger.warning(
        "model.loss accepts no `gather` argument: in-batch negatives come from each rank's own batch only "
        "(a DDP run then differs from a one-process run with the same global batch)."
    )
    return {}


def _amp_dtype(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (a value that :attr:`TrainConfig.amp` accepts) on ``device``."""
    if device.type != "cuda" or amp in (None, False, "off", "none", "no"):
        return None
    if amp in (True, "auto"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[amp]


def param_groups(model: nn.Module) -> list[dict]:
    """Two AdamW groups: matrices and embeddings decay; biases, norms, scalars (e.g. temperatures) do not."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "apply_wd": True}]
    if no_decay:
        groups.append({"params": no_decay, "apply_wd": False, "weight_decay": 0.0})
    return groups


def _mix_seed(seed: int, step: int) -> int:
    # splitmix-style mixing: distinct, well-spread seeds per (seed, step)
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & ((1 << 64) - 1)
    z = ((z ^ (z >> 31)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 29)) & ((1 << 63) - 1)


def _rank_rows(dataset, b_local: int, info: DistInfo) -> tuple[torch.Tensor, int]:
    """Rows of the global batch held by this rank, following the dataset's sharding layout."""
    if not info.enabled:
        return torch.arange(b_local), b_local
    layout = getattr(dataset, "shard_layout", "strided")
    n = b_local * info.world_size
    if layout == "contiguous":
        return torch.arange(b_local) + info.rank * b_local, n
    return info.rank + info.world_size * torch.arange(b_local), n


def _batch_len(batch: dict) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return len(v)
    msg = "A batch holds no tensors; the dataset must yield dicts of tensors keyed by stalign._batch.BatchKey."
    raise ValueError(msg)


def _to_device(batch: dict, device: torch.device) -> dict:
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _metric_name(name: str) -> str:
    return name if name.startswith("loss") else f"loss_{name}"


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows written after ``step`` (steps that a resumed run will redo)."""
    if not path.is_file():
        return
    kept = []
    with path.open() as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def fit(
    model: nn.Module,
    dataset,
    config: TrainConfig,
    *,
    output_dir: str | os.PathLike,
    lr: float,
    device: torch.device,
    info: DistInfo,
    run_info: dict | None = None,
    on_end: Callable[[nn.Module], Any] | None = None,
) -> nn.Module:
    """Train ``model`` on ``dataset`` with the options of ``config``; returns the trained model.

    ``lr`` is the peak learning rate (:meth:`TrainConfig.peak_lr`), ``device`` the resolved device of this rank,
    and ``run_info`` is stored in every checkpoint (its ``"mode"`` names the progress bar). ``config.device``,
    ``data_dir``, ``dataset_kwargs``, ``n_clusters`` and the learning-rate fields are the caller's: they shape the
    dataset and ``lr`` before this is called.
    """
    from torch.utils.data import DataLoader

    run_info = dict(run_info or {})
    output_dir = Path(output_dir)
    ckpt_dir = output_dir / CHECKPOINT_DIR
    metrics_path = output_dir / METRICS_FILE
    if info.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)

    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        # a private generator: creating an iterator must not consume the global RNG (exact resume)
        generator=torch.Generator().manual_seed(config.seed),
    )
    try:
        steps_per_epoch = len(loader)
    except TypeError as e:
        msg = "The dataset must define __len__ (number of batches per epoch, per rank)."
        raise TypeError(msg) from e
    if steps_per_epoch <= 0:
        msg = (
            f"The dataset yields no batch at batch_size={config.batch_size}; use a smaller batch_size or more sections."
        )
        raise ValueError(msg)
    total_steps = config.epochs * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
    schedule = CosineSchedule(
        lr=float(lr),
        min_lr=float(config.min_lr),
        total_steps=total_steps,
        warmup_steps=warmup,
        wd_start=float(config.weight_decay[0]),
        wd_end=float(config.weight_decay[1]),
    )

    model.to(device)
    if info.enabled and SYNC_BATCHNORM and device.type == "cuda":
        # batch statistics over the global batch (SyncBatchNorm has no CPU kernel: on gloo each rank uses its own)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.AdamW(param_groups(model), lr=lr, weight_decay=config.weight_decay[0])
    amp_dtype = _amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_step, start_epoch, start_in_epoch = 0, 0, 0
    ckpt = latest_checkpoint(ckpt_dir) if config.resume else None
    if ckpt is not None:
        tensors, state = load_checkpoint(ckpt)
        for key, want in (("batch_size", config.batch_size), ("steps_per_epoch", steps_per_epoch)):
            if state.get(key) != want:
                msg = (
                    f"Cannot resume from {str(ckpt)!r}: it was written with {key}={state.get(key)} but this run has "
                    f"{key}={want}. Use the same data and batch size, pass resume=False, or choose a new output_dir."
                )
                raise ValueError(msg)
        if state.get("world_size", 1) != info.world_size:
            logger.warning(
                "Resuming a run written with world_size=%s on world_size=%d: the data order differs.",
                state.get("world_size"),
                info.world_size,
            )
        weights = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(optimizer_from_flat(state["optimizer"], tensors))
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_step, start_epoch, start_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        if start_in_epoch >= steps_per_epoch:
            start_epoch, start_in_epoch = start_epoch + 1, 0
        restore_rng(state["rng"], tensors, rank=info.rank)
        if info.is_main:
            _truncate_metrics(metrics_path, start_step)
        logger.info("Resuming from %s (step %d, epoch %d)", ckpt, start_step, start_epoch)
    else:
        torch.manual_seed(config.seed + info.rank)
        if info.is_main and metrics_path.exists() and not config.resume:
            metrics_path.unlink()

    loss_module: nn.Module = _LossModule(model, info)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        loss_module = DistributedDataParallel(
            loss_module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=FIND_UNUSED_PARAMETERS,
        )
    model.train()

    last_saved = start_step if ckpt is not None else -1
    stop_at = total_steps if config.max_steps is None else min(total_steps, int(config.max_steps))

    def save(step: int, epoch: int, step_in_epoch: int) -> None:
        nonlocal last_saved
        if step == last_saved:
            return
        rank_states, cuda_states = gather_rng_states(info, device)  # collective
        if info.is_main:
            tensors = {f"model/{k}": _cpu(v) for k, v in model.state_dict().items()}
            opt_t, opt_json = optimizer_to_flat(optimizer)
            rng_t, rng_json = rng_state(rank_states=rank_states, cuda_states=cuda_states)
            state = {
                "step": step,
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps,
                "batch_size": config.batch_size,
                "world_size": info.world_size,
                "seed": config.seed,
                "optimizer": opt_json,
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "schedule": schedule.state_dict(),
                "rng": rng_json,
                "run": run_info,
            }
            save_checkpoint(checkpoint_path(ckpt_dir, step), {**tensors, **opt_t, **rng_t}, state)
            prune_checkpoints(ckpt_dir, keep=config.keep_checkpoints)
        if info.enabled:
            torch.distributed.barrier()
        last_saved = step

    from .._utils import progress_bar

    bar = progress_bar(
        total=stop_at,
        initial=min(start_step, stop_at),
        desc=run_info.get("mode", "train"),
        disable=not (config.show_progress_bar and info.is_main),
        dynamic_ncols=True,
    )
    metrics_file = metrics_path.open("a") if info.is_main else None
    step = start_step
    autocast = (
        (lambda: torch.autocast(device_type="cuda", dtype=amp_dtype))
        if amp_dtype is not None
        else (lambda: nullcontext())
    )
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    try:
        epoch = start_epoch
        while epoch < config.epochs and step < stop_at:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            # batches of this epoch already trained before the checkpoint we resumed from
            i_epoch = start_in_epoch if epoch == start_epoch else 0
            skip = i_epoch
            if hasattr(dataset, "set_start"):
                dataset.set_start(i_epoch)  # the dataset skips those batches without reading crops
                skip = 0
            t_prev = time.perf_counter()
            for i, batch in enumerate(loader):
                if i < skip:
                    continue
                if i_epoch >= steps_per_epoch or step >= stop_at:
                    break
                batch = _to_device(batch, device)
                b_local = _batch_len(batch)
                if config.augment is not None:
                    rows, n_global = _rank_rows(dataset, b_local, info)
                    gen = torch.Generator().manual_seed(_mix_seed(config.seed, step))
                    view = _ssl_view(model, batch, config, step, rows, n_global)
                    batch = augment_batch(batch, config.augment, generator=gen, rows=rows, n_global=n_global)
                    if view is not None:
                        batch[BatchKey.spot_image_view] = view
                lr_t, wd_t = schedule.apply(optimizer, step)
                optimizer.zero_grad(set_to_none=True)
                negatives = None
                if config.hard_negatives > 0:
                    gneg = torch.Generator().manual_seed(_mix_seed(config.seed + 7919 * (info.rank + 1), step))
                    negatives = hard_negative_indices(batch, config.hard_negatives, gneg)
                with autocast():
                    loss, comps = loss_module(batch, negatives)
                if scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                gnorm = (
                    torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
                    if config.grad_clip
                    else torch.zeros((), device=device)
                )
                if scaler.is_enabled():
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                step += 1
                i_epoch += 1

                names = list(comps)
                vals = torch.stack(
                    [loss.detach().float()]
                    + [torch.as_tensor(comps[k], device=loss.device).detach().float() for k in names]
                    + [gnorm.detach().float().to(loss.device)]
                )
                vals = all_reduce_mean(vals, info).tolist()
                if not math.isfinite(vals[0]) and not scaler.is_enabled():
                    msg = (
                        f"The loss became {vals[0]} at step {step}; lower `lr` (now {lr_t:.3g}), keep `grad_clip`, "
                        "or check the data for empty spots."
                    )
                    raise FloatingPointError(msg)
                t_now = time.perf_counter()
                dt = max(t_now - t_prev, 1e-9)
                t_prev = t_now
                row = {
                    "step": step,
                    "epoch": epoch + i_epoch / steps_per_epoch,
                    "lr": lr_t,
                    "weight_decay": wd_t,
                    "loss": vals[0],
                    **{_metric_name(k): v for k, v in zip(names, vals[1:-1], strict=True)},
                    "grad_norm": vals[-1],
                    "pairs_per_s": b_local * info.world_size / dt,
                }
                if metrics_file is not None and (step % config.log_every == 0 or step == stop_at):
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{vals[0]:.4f}", epoch=epoch, refresh=False)
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    save(step, epoch, i_epoch)
                    t_prev = time.perf_counter()
            if step >= stop_at and i_epoch < steps_per_epoch:
                save(step, epoch, i_epoch)  # stopped early (max_steps): resumable mid-epoch
                break
            save(step, epoch, steps_per_epoch)
            epoch += 1
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    model.eval()
    if on_end is not None and info.is_main:
        on_end(model)
    if info.enabled:
        torch.distributed.barrier()
    return model
