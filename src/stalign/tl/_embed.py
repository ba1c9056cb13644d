"""``tl.embed``: aligned image, gene and fused embeddings for every spot."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._batch import BatchKey, inputs_to
from .._constants import Key
from .._docs import inject
from .._genes import check_vocabulary
from .._section import get_section, write_library_entry
from .._utils import copy_data, embedding_keys, get_table, package_version, resolve_device, save_data, track, uns_key
from .._validators import check_int, check_key
from ..models import DEFAULT_MODEL, model_record, resolve_model

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

#: What tl.embed keeps: the spot image and spot gene embeddings, the fused (spot + niche) embedding, the joint
#: (ABFN) niche embedding, and the spot prediction head's expression (models with ``predict_genes``).
_OUTPUTS = ("image", "gene", "fused", "niche", "pred")


def fuse(emb: dict) -> dict:
    """The outputs of :data:`_OUTPUTS` from one batch of :meth:`~stalign.models.STAlign.embed`.

    ``"fused"`` is the spot's fused spot + niche embedding: its spot and niche embeddings averaged in the shared space
    and re-normalised, from expression when the section has it (the spot's profile and its neighbourhood's), from
    the H&E otherwise. The image and the joint (ABFN) embeddings are not averaged in: on sections the model has not
    seen, its image ↔ expression alignment is weak, and mixing them in lowers domain quality (ablation in
    ``MODEL_CARD.md``). ``"niche"`` is the joint ABFN niche embedding ``f_niche``; ``"pred"`` the spot prediction
    head's output (the expression of ``config.predict_genes`` from the H&E, standardised within a section).
    """
    import torch

    out = {k: emb[k] for k in ("image", "gene") if k in emb}
    if "image_pred" in emb:
        out["pred"] = emb["image_pred"]
    if "niche_joint" in emb:
        out["niche"] = emb["niche_joint"]
    spot, niche = ("gene", "niche_gene") if "gene" in emb else ("image", "niche_image")
    if spot in emb and niche in emb:
        out["fused"] = torch.nn.functional.normalize(emb[spot].float() + emb[niche].float(), dim=-1)
    return out


#: Spots per forward pass when ``batch_size=None``, by device type: a GPU needs large batches to be kept busy.
BATCH_SIZES = {"cpu": 256, "cuda": 1024}


def default_batch_size(device) -> int:
    """Spots per forward pass on ``device`` when the user gives none (:data:`BATCH_SIZES`)."""
    return BATCH_SIZES.get(device.type, BATCH_SIZES["cpu"])


def embed_arrays(
    data: Any,
    model,
    *,
    device=None,
    batch_size: int | None = None,
    num_workers: int = 0,
    table_key: str = Key.table,
    image_key: str | None = None,
    library_id: str | None = None,
    show_progress_bar: bool = True,
    outputs: Sequence[str] | None = _OUTPUTS,
    key_added: str = Key.X,
) -> dict[str, np.ndarray]:
    """Run ``model`` over every spot of one section; return ``{"image", "gene", "fused", "niche"}`` arrays (n_obs, d).

    ``outputs=None`` returns every per-spot output of ``model.embed`` (``"joint"``, ``"niche_gene"``, ...) as well.
    A section without an H&E gets one warning, naming the embeddings not computed by their keys (``key_added``'s).
    ``device=None`` runs on the model's device; otherwise the model is moved to ``device`` first.
    ``batch_size=None`` picks :func:`default_batch_size` of the device.

    On CUDA, crops are read (in ``num_workers`` DataLoader workers) into pinned memory, copied without blocking,
    embedded in bfloat16, and the outputs gathered on the device: the loop never waits for the GPU, which reads
    the next batch while this one runs. On the CPU the same loop runs in float32.
    """
    import torch

    from ..pp import SpotDataset

    dev = model.device if device is None else resolve_device(device)
    model = model.to(dev)
    if batch_size is None:
        batch_size = default_batch_size(dev)

    sec = get_section(data, table_key=table_key, image_key=image_key, library_id=library_id)
    has_image, has_expr = sec.has_image, sec.has_expression
    if not has_image and not has_expr:
        msg = (
            f"Section {sec.library_id!r} has neither an image nor expression; embedding needs at least one. "
            "Load the H&E image with the stalign.io readers or add raw counts to the table."
        )
        raise ValueError(msg)
    if not has_image:
        _warn_no_image(data, sec, key_added)
    cfg = model.config
    if has_expr:
        # logs the overlap, warns below _genes.MIN_VOCABULARY_OVERLAP, raises when no gene is known
        check_vocabulary(sec.table, cfg.genes, what=f"section {sec.library_id!r}")
    # the view built above is passed on: the section is read once per call
    ds = SpotDataset.from_config(
        [sec],
        cfg,
        batch_size=batch_size,
        inference=True,
        # a section small enough to be its own statistics sample is read once, for both passes
        cache_crops=model.adapts_norm_statistics and sec.table.n_obs <= SECTION_STATISTICS_SPOTS,
    )
    if ds.n_empty_spots:
        warnings.warn(
            f"{ds.n_empty_spots} of {sec.table.n_obs} spots of section {sec.library_id!r} have no count on the model's "
            "gene vocabulary (all-zero spots, or only unmapped genes); their gene and fused embeddings are those of an "
            "empty expression profile. Filter them out (e.g. sc.pp.filter_cells(adata, min_counts=1)) if unwanted.",
            UserWarning,
            stacklevel=3,
        )
    loader = ds.dataloader(num_workers=num_workers, pin_memory=dev.type == "cuda")
    n = sec.table.n_obs
    gathered: dict[str, torch.Tensor] = {}  # on the model's device, copied to the host once at the end
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    with _normalisation(model, ds, device=dev), torch.inference_mode(), autocast:
        for batch in track(loader, desc="embedding", total=len(ds), disable=not show_progress_bar):
            idx = batch[BatchKey.index].to(dev, non_blocking=True)
            raw = model.embed(inputs_to(batch, dev))
            emb = {**raw, **fuse(raw)}
            for k in outputs if outputs is not None else [k for k, v in emb.items() if v.ndim == 2]:
                if k in emb:
                    if k not in gathered:
                        gathered[k] = torch.zeros((n, emb[k].shape[1]), dtype=torch.float32, device=dev)
                    gathered[k].index_copy_(0, idx, emb[k].float())
    out = {k: v.numpy(force=True) for k, v in gathered.items()}
    # every spot of a section has an image when the section has one, and expression when the section has any
    # (empty spots are encoded as empty profiles), so every row is set; a non-finite value is a model failure
    bad = [k for k, v in out.items() if not np.isfinite(v).all()]
    if bad:
        msg = (
            f"The model produced non-finite {', '.join(bad)} embeddings for section {sec.library_id!r}; its weights "
            "are corrupted or it diverged in training. Use another model (e.g. 'stalign-base')."
        )
        raise FloatingPointError(msg)
    return out


def _warn_no_image(data: Any, sec: Any, key_added: str) -> None:
    """The one warning of a section embedded without an H&E: the element missing, the embeddings not computed."""
    from anndata import AnnData

    lib = sec.library_id
    if sec.other_images:
        where = (
            f"image(s) {', '.join(map(repr, sec.other_images))} are not RGB H&E (fluorescence such as Xenium's DAPI) "
            "and are never read by the model's H&E encoder; add an H&E, e.g. stalign.io.read_xenium(path, "
            "he_image=...)"
        )
    elif isinstance(data, AnnData):
        where = f"`uns['spatial'][{lib!r}]['images']` is missing"
    else:
        where = "an image element in `sdata.images` is missing"
    warnings.warn(
        f"Section {lib!r} has no H&E image ({where}): the spots are embedded from their genes alone. "
        f"obsm[{key_added + '_image'!r}] and obsm[{key_added + '_niche'!r}] (image and joint niche embeddings) are "
        f"not computed, and obsm[{key_added!r}] is the expression-only fused embedding.",
        UserWarning,
        stacklevel=4,
    )


def get_embedding(
    data: Any, *, use: str, model: Any, table_key: str, record: dict | None, device=None, **embed_kwargs
) -> np.ndarray:
    """Embedding ``use`` ∈ {"image", "gene", "fused", "pred"}: from ``obsm`` (``record``'s keys), else computed.

    A computed embedding is not stored.
    """
    table = get_table(data, table_key=table_key)
    key = embedding_keys(record).get(use)
    if key is not None and key in table.obsm:
        return np.asarray(table.obsm[key], dtype=np.float32)
    m, dev = resolve_model(model, device=device)
    arrays = embed_arrays(data, m, device=dev, table_key=table_key, show_progress_bar=False, **embed_kwargs)
    if use not in arrays:
        need = {
            "fused": "an image or expression", "image": "an image", "gene": "expression",
            "pred": "an image and a model with a prediction head",
        }[use]  # fmt: skip
        msg = f"Cannot compute the {use} embedding: the section needs {need}."
        raise ValueError(msg)
    return arrays[use]


#: Spots sampled from a section to compute its normalisation statistics (``norm_statistics="section"``).
SECTION_STATISTICS_SPOTS = 1024
#: Below this many spots the section's own statistics are too noisy: the running statistics are used.
MIN_SECTION_SPOTS = 32
#: Spots per forward pass of the statistics (fixed, so the statistics do not depend on ``batch_size``).
STATISTICS_CHUNK = 256


def _normalisation(model, ds, *, device) -> contextlib.AbstractContextManager:
    """The model's normalisation for this section: its own statistics (``norm_statistics="section"``) or running ones.

    The statistics come from a fixed random sample of up to :data:`SECTION_STATISTICS_SPOTS` spots, read in batches
    like the embedding, so they do not depend on the batch size or the order of the spots.
    """
    n = ds.n_spots
    if not model.adapts_norm_statistics:
        return contextlib.nullcontext(model)
    if n < MIN_SECTION_SPOTS:
        logger.info("Section of %d spots (< %d): running normalisation statistics are used.", n, MIN_SECTION_SPOTS)
        return contextlib.nullcontext(model)
    rows = np.sort(np.random.default_rng(0).choice(n, size=min(n, SECTION_STATISTICS_SPOTS), replace=False))
    # chunks of (nearly) equal size: the statistics are the plain average of the chunks' statistics
    chunks = np.array_split(rows, -(-len(rows) // STATISTICS_CHUNK))

    def batches():
        for r in chunks:
            yield inputs_to(ds.make_batch(0, r), device)

    return model.section_statistics(batches())


@inject
def embed(
    data: AnnData | SpatialData,
    *,
    model: Any = DEFAULT_MODEL,
    device: Any = None,
    batch_size: int | None = None,
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
        Spots per forward pass; ``None``: 256 on the CPU, 1024 on CUDA. The embeddings do not depend on it.
    num_workers
        DataLoader worker processes reading crops (on a GPU, a few keep it busy: crops are read while it computes).
    key_added
        Base ``obsm`` key; the image/gene/niche embeddings get the suffixes ``_image``/``_gene``/``_niche``, and
        parameters go to ``uns[key_added without "X_"]``.
    {table_key}
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
    AnnData | SpatialData | None
        ``None``, or a copy of ``data`` when ``copy=True``; sets in the table:

        - ``obsm[key_added]``: the fused spot + niche embedding (each spot's own embedding and its neighbourhood's,
          averaged: from expression when the section has it, else from the H&E; see :func:`fuse`), the default of
          :func:`~stalign.tl.domains` and :func:`~stalign.tl.annotate`;
        - ``obsm[key_added + "_image"]``: the spot's H&E embedding, whenever there is an image;
        - ``obsm[key_added + "_gene"]``: the spot's expression embedding, whenever there is expression;
        - ``obsm[key_added + "_niche"]``: the joint image + expression (ABFN) niche embedding, when both exist;
        - ``uns[...]``: ``params``, the model name, its weights sha256 and fingerprint, the stalign version and the
          ``keys`` written;
        - ``obsm[key_added + "_pred"]``: for models with a prediction head (``config.predict_genes``, whose order its
          columns follow), each spot's expression of those genes predicted from the H&E alone, standardised within
          the section (:func:`~stalign.tl.predict_expression` ``method="head"``), whenever there is an image;
        - ``uns["spatial"][library_id]``, when it holds no image yet: ``scalefactors`` and small ``"lowres"``/``"hires"``
          ``images`` (:func:`stalign.io.to_anndata`'s), so the table plots as it is in ``sc.pl.spatial`` and
          ``sq.pl.spatial_scatter``.

        A section with no image is embedded from its expression alone, with a warning naming the embeddings skipped.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> sta.tl.embed(sdata, show_progress_bar=False)
    >>> table = sdata.tables["table"]
    >>> table.obsm["X_stalign"].shape, table.obsm["X_stalign_image"].shape
    ((3639, 128), (3639, 128))
    >>> table.uns["stalign"]["model"]
    'stalign-base'
    """
    check_key(key_added)
    # checked before the model is loaded (a ~1 s first load): a typo fails at once
    check_int(batch_size, "batch_size", allow_none=True, hint=" (spots per forward pass, e.g. 256)")
    check_int(num_workers, "num_workers", minimum=0, hint=" (0 reads crops in the main process)")
    m, dev = resolve_model(model, device=device)
    if batch_size is None:
        batch_size = default_batch_size(dev)
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
        key_added=key_added,
    )
    record = model_record(m)
    target = copy_data(data, table_key=table_key) if copy else data
    table = get_table(target, table_key=table_key)
    sec = get_section(target, table_key=table_key, image_key=image_key, library_id=library_id)
    write_library_entry(table, sec)  # uns["spatial"] with small images: sc.pl.spatial / sq.pl.spatial_scatter as is
    slots = embedding_keys(key_added=key_added)
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
        **record,
        "stalign_version": package_version(),
        "keys": {k: v for k, v in slots.items() if k in arrays},
    }
    if "pred" in arrays:
        table.uns[uns_key(key_added)]["pred_genes"] = list(m.config.predict_genes)
    logger.info("Embedded %d spots with %s (%s)", table.n_obs, record["model"], ", ".join(sorted(arrays)))
    return target if copy else None
