"""``tl.embed``: aligned image, gene and fused embeddings for every spot."""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .._constants import Key
from .._section import get_section
from .._utils import copy_data, get_table, resolve_device, save_data, track, uns_key

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "stalign-base"
#: model outputs kept: spot image, spot gene, fused (spot + niche, re-normalised) and fused niche; the fused spot
#: embedding alone is added by ``embed_arrays(fused_spot=True)`` for the evaluation's "no niche" ablation
_OUTPUTS = ("image", "gene", "fused", "niche")


#: Models loaded from a name or path in this process: key (files and their stat) -> (model, tensor fingerprint).
_MODEL_CACHE: OrderedDict[tuple, tuple[Any, tuple]] = OrderedDict()
#: Most models kept in :data:`_MODEL_CACHE` (least recently used dropped first).
MODEL_CACHE_SIZE = 4


def _file_stamp(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _cache_key(model: Any) -> tuple | None:
    """Key of a model given by name or path: its weights and config files, their stat and the registry sha256.

    ``None`` when the files cannot be located cheaply (then :func:`stalign.models.load` runs and reports why).
    A file that is replaced or rewritten changes its stamp, so it is loaded (and its sha256 verified) again.
    """
    from importlib import resources

    from ..models._io import _resolve_path
    from ..models._registry import REGISTRY

    name = str(model)
    try:
        if name in REGISTRY:
            entry = REGISTRY[name]
            root = resources.files("stalign.models")
            weights, config = root.joinpath(entry["file"]), root.joinpath(entry["config"])
            if not (isinstance(weights, Path) and isinstance(config, Path)):
                return None  # e.g. a zipped install: no stable file to stamp
            return ("registry", name, entry["sha256"], _file_stamp(weights), _file_stamp(config))
        path = Path(name).expanduser()
        if not path.exists():
            return None
        weights, config = _resolve_path(path)
        return ("path", _file_stamp(weights), _file_stamp(config))
    except (OSError, ValueError):
        return None


def _fingerprint(model) -> tuple:
    """Storage and in-place version counter of every tensor: changes if anyone modifies or moves the weights."""
    return tuple((t.data_ptr(), getattr(t, "_version", 0)) for t in model.state_dict(keep_vars=True).values())


def clear_model_cache() -> None:
    """Forget the models loaded by name or path in this process (see :func:`resolve_model`)."""
    _MODEL_CACHE.clear()


def _load_cached(model: Any):
    from ..models import load

    key = _cache_key(model)
    if key is not None and key in _MODEL_CACHE:
        m, fp = _MODEL_CACHE[key]
        if _fingerprint(m) == fp:
            _MODEL_CACHE.move_to_end(key)
            logger.debug("Model %s from the per-process cache (files unchanged since verified).", model)
            return m, key
        del _MODEL_CACHE[key]  # modified in place since it was verified: load it again
    return load(model), key


def resolve_model(model: Any = DEFAULT_MODEL, *, device=None):
    """A model instance from a registry name, a path, or an ``STAlign`` module (moved to ``device``, eval mode).

    A model given by name or path is loaded (and its sha256 verified) once per process and reused while its
    files are unchanged and its weights unmodified, so repeated calls skip the ~1 s of building and hashing.
    """
    import torch

    from ..models import STAlign

    dev = resolve_device(device)
    if isinstance(model, STAlign):
        return model.to(dev).eval(), dev
    if isinstance(model, torch.nn.Module):
        msg = f"model must be a stalign STAlign module, a registry name or a path, got {type(model).__name__}."
        raise TypeError(msg)
    m, key = _load_cached(model)
    m = m.to(dev).eval()
    if key is not None:
        _MODEL_CACHE[key] = (m, _fingerprint(m))
        _MODEL_CACHE.move_to_end(key)
        while len(_MODEL_CACHE) > MODEL_CACHE_SIZE:
            _MODEL_CACHE.popitem(last=False)
    return m, dev


def _model_info(model) -> dict[str, Any]:
    """What ``uns`` records about the model: its registry name or path, and the sha256 of its weights."""
    source = getattr(model, "source", None)
    return {
        "model": str(source) if source is not None else "custom",
        "weights_sha256": getattr(model, "weights_sha256", None),
    }


def embed_arrays(
    data: Any,
    model,
    *,
    device=None,
    batch_size: int = 256,
    num_workers: int = 0,
    table_key: str = Key.table,
    image_key: str | None = None,
    library_id: str | None = None,
    show_progress_bar: bool = True,
    fused_spot: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``model`` over every spot of one section; return ``{"image", "gene", "fused", ...}`` arrays (n_obs, d).

    ``fused_spot=True`` also returns the fused spot embedding alone (``"fused_spot"``, the evaluation's no-niche
    ablation); ``tl.embed`` does not store it, so it is off by default.
    """
    import torch

    from ..pp import SpotDataset

    sec = get_section(data, table_key=table_key, image_key=image_key, library_id=library_id)
    has_image, has_expr = sec.has_image, sec.has_expression
    if not has_image and not has_expr:
        msg = (
            f"Section {sec.library_id!r} has neither an image nor expression; embedding needs at least one. "
            "Load the H&E image with the stalign.io readers or add raw counts to the table."
        )
        raise ValueError(msg)
    cfg = model.config
    if has_expr:
        from ..models._io import check_vocabulary

        # logs the overlap, warns below models._io.MIN_VOCABULARY_OVERLAP, raises when no gene is known
        check_vocabulary(sec.table.var_names, cfg.genes, what=f"section {sec.library_id!r}")
    ds = SpotDataset(
        [data],
        genes=cfg.genes,
        spot_um=cfg.spot_um,
        niche_um=cfg.niche_um,
        niche_radius_um=cfg.niche_radius_um,
        spot_px=cfg.spot_size,
        niche_px=cfg.niche_size,
        batch_size=batch_size,
        inference=True,
        table_key=table_key,
        image_key=image_key,
        library_id=library_id,
    )
    loader = ds.dataloader(num_workers=num_workers)
    dev = next(model.parameters()).device
    n = sec.table.n_obs
    names = (*_OUTPUTS, "fused_spot") if fused_spot else _OUTPUTS
    out = {k: np.full((n, cfg.embed_dim), np.nan, dtype=np.float32) for k in names}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for batch in track(loader, desc="embedding", total=len(ds), disable=not show_progress_bar):
            idx = batch["index"].numpy()
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            emb = model.embed(batch)
            has_image = emb["has_image"].numpy(force=True)
            has_expr = emb["has_expr"].numpy(force=True)
            for k, need in (("image", has_image), ("gene", has_expr)):
                if k in emb and need.any():
                    out[k][idx[need]] = emb[k].float().numpy(force=True)[need]
            both = has_image & has_expr
            if "fused" in emb and "niche" in emb and both.any():
                # X_stalign: the fused spot and fused niche embeddings, averaged and re-normalised
                f = emb["fused"].float() + emb["niche"].float()
                f = torch.nn.functional.normalize(f, dim=-1).numpy(force=True)
                out["fused"][idx[both]] = f[both]
                out["niche"][idx[both]] = emb["niche"].float().numpy(force=True)[both]
                if fused_spot:
                    out["fused_spot"][idx[both]] = emb["fused"].float().numpy(force=True)[both]
    return {k: v for k, v in out.items() if not np.isnan(v).all()}


def embed(
    data: Any,
    *,
    model: Any = DEFAULT_MODEL,
    device: Any = None,
    batch_size: int = 256,
    num_workers: int = 0,
    key_added: str = Key.X,
    table_key: str = Key.table,
    image_key: str | None = None,
    library_id: str | None = None,
    show_progress_bar: bool = True,
    copy: bool = False,
):
    """Embed every spot with an ST-Align model: aligned image, gene and fused embeddings.

    Crops are read lazily from the best pyramid level for the model's crop size in µm, and niche expression is
    computed on the side when absent, so ``data`` gains only the keys listed below.

    Parameters
    ----------
    data
        A :class:`~spatialdata.SpatialData` (results go into ``data.tables[table_key]``) or an
        :class:`~anndata.AnnData` in the scanpy/squidpy Visium convention (``uns["spatial"]``, ``obsm["spatial"]``).
    model
        A registry name (``"stalign-base"``), a path to saved weights, or an :class:`~stalign.models.STAlign`.
    device
        ``None``: CUDA when present, else CPU. Mixed precision (bfloat16) is used on CUDA.
    batch_size
        Spots per forward pass.
    num_workers
        DataLoader worker processes reading crops.
    key_added
        Base ``obsm`` key; the image/gene/niche embeddings get the suffixes ``_image``/``_gene``/``_niche``, and
        parameters go to ``uns[key_added without "X_"]``.
    table_key
        Table of a SpatialData.
    image_key
        Image element of a SpatialData (default: all images of the section, best level chosen per crop size).
    library_id
        Library in ``uns["spatial"]`` when there are several.
    show_progress_bar
        Show a progress bar.
    copy
        Return a copy instead of writing into ``data``.

    Returns
    -------
    ``None``, or a copy of ``data`` when ``copy=True``; sets in the table:

    - ``obsm[key_added]``: fused spot + niche embedding, when the section has an image and expression;
    - ``obsm[key_added + "_image"]``: H&E-only embedding, whenever there is an image;
    - ``obsm[key_added + "_gene"]``: expression-only embedding, whenever there is expression;
    - ``obsm[key_added + "_niche"]``: fused niche embedding, when both modalities exist;
    - ``uns[...]["params"]``, model name, weights sha256 and package version.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.io.dlpfc("151673")
    >>> sta.tl.embed(sdata, show_progress_bar=False)
    >>> table = sdata.tables["table"]
    >>> table.obsm["X_stalign"].shape, table.obsm["X_stalign_image"].shape
    ((3639, 128), (3639, 128))
    >>> table.uns["stalign"]["model"]
    'stalign-base'
    """
    from .. import __version__
    from .._utils import check_key

    check_key(key_added)
    # checked before the model is loaded (a ~1 s first load): a typo fails at once
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        msg = f"batch_size={batch_size!r}; it must be a positive integer (spots per forward pass, e.g. 256)."
        raise ValueError(msg)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int | np.integer) or num_workers < 0:
        msg = f"num_workers={num_workers!r}; it must be an integer >= 0 (0 reads crops in the main process)."
        raise ValueError(msg)
    m, dev = resolve_model(model, device=device)
    arrays = embed_arrays(
        data,
        m,
        device=dev,
        batch_size=batch_size,
        num_workers=num_workers,
        table_key=table_key,
        image_key=image_key,
        library_id=library_id,
        show_progress_bar=show_progress_bar,
    )
    target = copy_data(data, table_key=table_key) if copy else data
    table = get_table(target, table_key=table_key)
    slots = {
        "fused": key_added,
        "image": f"{key_added}_image",
        "gene": f"{key_added}_gene",
        "niche": f"{key_added}_niche",
    }
    for name, key in slots.items():
        if name in arrays:
            save_data(table, attr="obsm", key=key, data=arrays[name])
    params = {
        "batch_size": batch_size,
        "device": str(dev),
        "table_key": table_key,
        "image_key": image_key,
        "library_id": library_id,
    }
    table.uns[uns_key(key_added)] = {
        "params": params,
        **_model_info(m),
        "stalign_version": __version__,
        "keys": {k: v for k, v in slots.items() if k in arrays},
    }
    logger.info("Embedded %d spots with %s (%s)", table.n_obs, _model_info(m)["model"], ", ".join(sorted(arrays)))
    return target if copy else None
