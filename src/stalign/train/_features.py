"""Feature cache of frozen image trunks: a heavy pretrained backbone costs one pass over the crops, not one per epoch.

A frozen trunk maps a crop to the same features in every epoch, so training computes them once per (section, spot,
crop kind) before the first step and adds them to each batch (:attr:`~stalign._batch.BatchKey.spot_features`,
``niche_features``); the model then runs only its trainable part (token maps, fusion, heads) on them. Image
augmentations would change a frozen trunk's features, so they are switched off for the cached crops.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import torch

from .._batch import BatchKey

logger = logging.getLogger(__name__)

#: Image augmentations of :class:`~stalign.train.AugmentConfig` and the value that turns each off.
_IMAGE_AUGMENT_OFF = {
    "flip": False,
    "rotate": False,
    "hed": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "hue": 0.0,
    "resolution": 1.0,
}


def frozen_levels(model) -> list[str]:
    """The crop kinds (``"spot"``, ``"niche"``) whose trunk is frozen in ``model`` (an STAlign)."""
    out = []
    for level in ("spot", "niche"):
        enc = getattr(model, f"{level}_image_encoder", None)
        if enc is not None and getattr(enc, "freeze", False):
            out.append(level)
    return out


#: :class:`~stalign.pp.SpotDataset` arguments that choose what is read of each section (kept for the feature pass).
_READ_KWARGS = ("table_key", "image_key", "library_id")


def compute_features(
    model, sections: list, *, levels: list[str], chunk: int = 64, dataset_kwargs: dict | None = None
) -> dict[tuple[int, str], torch.Tensor]:
    """``{(section, level): (n_spots, F) float32}`` trunk features of every spot of every section with an image.

    One pass over the crops: a :class:`~stalign.pp.SpotDataset` in inference mode (compact windows, nothing kept in
    memory but the features) of ``chunk`` spots per batch, through :meth:`STAlign.trunk_features
    <stalign.models.STAlign.trunk_features>` on the model's device.
    """
    from ..pp import SpotDataset

    K = BatchKey
    read = {k: v for k, v in (dataset_kwargs or {}).items() if k in _READ_KWARGS}
    ds = SpotDataset.from_config(sections, model.config, batch_size=chunk, inference=True, use_expr=False, **read)
    sizes = ds.section_sizes
    out: dict[tuple[int, str], torch.Tensor] = {}
    for i in range(len(ds)):
        batch = ds[i]
        if not bool(batch[K.has_image].any()):
            continue
        s, rows = int(batch[K.section][0]), batch[K.index]
        for level in levels:
            f = model.trunk_features(batch[K.spot_image if level == "spot" else K.niche_image], level=level).cpu()
            if (s, level) not in out:
                out[(s, level)] = torch.zeros(sizes[s], f.shape[1])
            out[(s, level)][rows] = f
    return out


def cached_levels(model, cache_features: bool) -> list[str]:
    """The crop kinds whose frozen-trunk features training caches (none without ``cache_features``)."""
    return frozen_levels(model) if cache_features else []


def cache_frozen_features(
    model, sections: list, augment, *, dataset_kwargs: dict | None = None, chunk: int = 64
) -> tuple[Callable[[dict], dict] | None, object]:
    """Compute the frozen trunks' features once; return the batch transform that adds them, and the augmentation.

    Parameters
    ----------
    model
        An :class:`~stalign.models.STAlign`, on the device that computes the features.
    sections
        The training sections (SpatialData / AnnData), in the order of the training dataset.
    augment
        The run's :class:`~stalign.train.AugmentConfig` (or ``None``).
    dataset_kwargs
        The run's :class:`~stalign.pp.SpotDataset` arguments (which table / image / library to read).
    chunk
        Spots per forward pass of the trunk.

    Returns
    -------
    ``(transform, augment)``: the transform to compose with the training dataset's (``None`` when no trunk is
    frozen) and the augmentation, with the image augmentations off when both crop kinds are cached (gene dropout is
    kept). When both are cached the training dataset need not read crops (``use_image=False``): the transform marks
    the spots of sections with an image as ``has_image`` again and adds their features.
    """
    levels = frozen_levels(model)
    if not levels:
        return None, augment
    was_training = model.training
    model.eval()
    try:
        cache = compute_features(model, sections, levels=levels, chunk=chunk, dataset_kwargs=dataset_kwargs)
    finally:
        model.train(was_training)
    n = sum(len(v) for v in cache.values())
    logger.info("Cached %d frozen-trunk features (%s crops) for training", n, " and ".join(levels))
    both = len(levels) == 2
    if augment is not None and both:
        on = [k for k, off in _IMAGE_AUGMENT_OFF.items() if getattr(augment, k) != off]
        if on:
            logger.warning(
                "Image augmentations %s are off: both image trunks are frozen and their features are computed once "
                "per crop (cache_features=True); gene dropout is kept.",
                on,
            )
            augment = dataclasses.replace(augment, **_IMAGE_AUGMENT_OFF)
    elif augment is not None:
        logger.warning(
            "The %s crops use cached frozen-trunk features: image augmentations do not reach them.", levels[0]
        )
    keys = {"spot": BatchKey.spot_features, "niche": BatchKey.niche_features}

    def add_features(batch: dict) -> dict:
        sec = int(batch[BatchKey.section][0])
        rows = batch[BatchKey.index]
        for level in levels:
            feats = cache.get((sec, level))
            if feats is not None:  # sections without an image have no features (has_image stays False)
                batch[keys[level]] = feats[rows]
                if both:
                    batch[BatchKey.has_image] = torch.ones_like(batch[BatchKey.has_image])
        return batch

    return add_features, augment


def compose(first: Callable[[dict], dict] | None, then: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """``then(first(batch))`` (``then`` alone when ``first`` is ``None``)."""
    if first is None:
        return then
    return lambda batch: then(first(batch))
