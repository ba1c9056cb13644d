"""``cohort.embed``: many sections in one call, one file each, joint domains; sharded over ``torchrun`` processes.

Layout of an output folder::

    DIR/<sample>.zarr (or .h5ad)   one per section: the section with its embeddings (tl.embed)
    DIR/cohort.h5ad                every spot of every section: obs["sample"], the embeddings, the joint domains
    DIR/manifest.json              sections, spot counts, failures, model name + sha256, stalign version

Under ``torchrun`` the sections are dealt round-robin (in the order given) to the ranks; each rank embeds its own
sections one at a time on its own GPU (``cuda:LOCAL_RANK``) or on the CPU, and writes them. The ranks meet at a
barrier, then rank 0 reads the embeddings back from the files, in the order given, and clusters them jointly: the
result does not depend on the number of processes. The process group (gloo, also on GPUs: only small messages
are exchanged) is created here when ``torchrun`` started the process.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from .._validators import check_int, renamed_arguments
from ..models import DEFAULT_MODEL
from ._collect import collect
from ._plan import FORMATS, MANIFEST_FILE, shared_plan
from ._run import run

logger = logging.getLogger(__name__)

#: How long a rank waits at the barrier for the slowest rank (its last sections) before giving up.
BARRIER_TIMEOUT = timedelta(hours=24)


@renamed_arguments(format="file_format")
def embed(
    sections: Sequence[Any] | Mapping[str, Any],
    out_dir: str | os.PathLike,
    *,
    model: Any = DEFAULT_MODEL,
    n_domains: int | None = None,
    file_format: Literal["zarr", "h5ad"] = "zarr",
    overwrite: bool = False,
    keep_going: bool = False,
    data_dir: str | os.PathLike | None = None,
    loader: Callable[[str], Any] | None = None,
    device: Any = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    progress: Callable[[str], None] | None = None,
    return_manifest: bool = False,
):
    """Embed a cohort: one output file per section, every spot in ``cohort.h5ad``, domains shared by all sections.

    Each section is read, embedded with :func:`stalign.tl.embed` and written to ``out_dir/<sample>.zarr`` (or ``.h5ad``)
    one at a time, so memory holds one section's crops at a time. Then ``out_dir/cohort.h5ad`` gathers every spot
    of every section (``obs["sample"]``, the embeddings, each section's spatial metadata, no counts; see
    :func:`stalign.io.concat`), clustered jointly with :func:`stalign.tl.domains` (``library_key="sample"``: smoothing within
    each section, one clustering for all) when ``n_domains`` is given, and ``out_dir/manifest.json`` records the
    sections, their spot counts, the failures, the model (name, weights sha256 and fingerprint) and the stalign
    version.

    Started by ``torchrun --nproc-per-node N [--nnodes M ...]`` (e.g. ``torchrun -m stalign embed ...``), the
    sections are sharded over the processes: each embeds its own sections on its own GPU when there is one (else
    the CPU) and writes them; after a barrier, rank 0 gathers the embeddings from the files and clusters them. The
    results equal a one-process run. ``out_dir`` must be a folder every node can read.

    Restartable: a section whose output exists and records the same model is skipped (``overwrite=True``
    recomputes it); an output of another model is an error. Every file is written under a temporary name and
    renamed when complete, so an interrupted run never leaves a partial file under a final name.

    Parameters
    ----------
    sections
        What :func:`stalign.datasets.load` accepts (``"dataset:section"``, a Space Ranger ``outs`` folder, a ``.zarr``,
        an ``.h5ad``) and/or SpatialData / AnnData objects (left unchanged); or a mapping name → section. Sections
        are named by their ``obs["sample"]`` (:func:`stalign.datasets.sample_name`), made unique with ``-2``, ``-3``, ….
    out_dir
        Output folder, created if missing.
    model
        A registry name, a path to saved weights, or an :class:`~stalign.models.STAlign` (:func:`stalign.tl.embed`).
    n_domains
        Also cluster every spot of the cohort into this many joint domains (``obs["stalign_domain"]`` of
        ``cohort.h5ad``).
    file_format
        ``"zarr"`` writes each SpatialData whole (image included); ``"h5ad"`` writes its table (AnnData inputs can
        only be written as ``"h5ad"``).
    overwrite
        Recompute and replace sections whose output exists.
    keep_going
        Finish the other sections when one fails, and list the failures in ``manifest.json`` (a warning names them);
        otherwise the first failure raises an error naming the section.
    data_dir
        Folder of the shared datasets, for dataset specs (default ``$STALIGN_DATA_DIR``).
    loader
        Function reading one spec (default :func:`stalign.datasets.load` with ``data_dir``).
    device
        ``None``: each process's GPU (``cuda:LOCAL_RANK``) when CUDA is present, else the CPU.
    batch_size
        Spots per forward pass (``None``: :func:`~stalign.tl.embed`'s default for the device).
    num_workers
        DataLoader worker processes reading crops.
    progress
        Called on rank 0 with one line per section (``"[2/3] her2st:C2  187 spots  0.6 s"``) and a summary line;
        default: the ``stalign`` logger at INFO level.
    return_manifest
        Also return the manifest written to ``manifest.json`` (a dict), as ``(cohort, manifest)``.

    Returns
    -------
    AnnData | tuple[AnnData, dict] | None
        On rank 0 (or in one process), the cohort AnnData written to ``cohort.h5ad``: ``obs["sample"]``, ``obsm``
        embeddings and ``"spatial"``, ``uns["spatial"][<sample>]`` (scalefactors and small ``"lowres"``/``"hires"``
        images: ``sq.pl.spatial_scatter(cohort, library_key="sample", ...)`` plots it as it is) and the embedding
        record, and with ``n_domains`` ``obs["stalign_domain"]`` and its colours (with ``return_manifest``,
        ``(cohort, manifest)``); ``None`` on the other ranks.

    Examples
    --------
    >>> import stalign as sta
    >>> cohort = sta.cohort.embed(
    ...     ["stutility_mob:MOB1", "stutility_mob:MOB2"], "mob_cohort", n_domains=5
    ... )
    >>> cohort.obs["sample"].value_counts().sort_index().to_dict()
    {'MOB1': 379, 'MOB2': 407}
    >>> import os
    >>> sorted(os.listdir("mob_cohort"))
    ['MOB1.zarr', 'MOB2.zarr', 'cohort.h5ad', 'manifest.json']
    >>> shared = cohort.obs.groupby("stalign_domain", observed=True)["sample"].nunique()
    >>> bool((shared == 2).any())  # a domain label means the same tissue in both sections
    True

    On several processes or GPUs, the same from the command line (see the "Embedding a cohort" page):
    ``torchrun --nproc-per-node 4 -m stalign embed her2st:A1 her2st:C1 ... --out cohort --domains 7``.
    """
    from .._distributed import cleanup, init_distributed
    from .._utils import resolve_device
    from ..datasets import load
    from ..models import model_record, resolve_model

    if isinstance(sections, str | os.PathLike) or not isinstance(sections, Sequence | Mapping):
        msg = (
            f"sections must be a list of specs or sections (e.g. ['her2st:A1', 'her2st:C1']), got "
            f"{type(sections).__name__}; wrap a single section in a list."
        )
        raise TypeError(msg)
    names = [str(k) for k in sections] if isinstance(sections, Mapping) else None
    items = list(sections.values()) if isinstance(sections, Mapping) else list(sections)
    if not items:
        msg = "sections is empty; pass at least one spec or section."
        raise ValueError(msg)
    if file_format not in FORMATS:
        msg = f"file_format={file_format!r}; use 'zarr' (whole SpatialData) or 'h5ad' (the table)."
        raise ValueError(msg)
    check_int(n_domains, "n_domains", allow_none=True, hint=" (the number of joint domains, e.g. 7)")
    check_int(batch_size, "batch_size", allow_none=True, hint=" (spots per forward pass, e.g. 256)")
    check_int(num_workers, "num_workers", minimum=0, hint=" (0 reads crops in the main process)")
    out = Path(out_dir).expanduser()
    load_spec = loader if loader is not None else (lambda spec: load(spec, data_dir=data_dir))
    emit = progress if progress is not None else logger.info
    t_start = time.perf_counter()

    dev = resolve_device(device)
    info, dev = init_distributed(dev, backend="gloo", timeout=BARRIER_TIMEOUT)
    try:
        m, dev = resolve_model(model, device=dev)
        record = model_record(m)
        entries = shared_plan(info, items, names, out, file_format, record, overwrite=overwrite, keep_going=keep_going)
        embed_kwargs = {"model": m, "device": dev, "batch_size": batch_size, "num_workers": num_workers}
        statuses = run(info, entries, items, out=out, load=load_spec, emit=emit, keep_going=keep_going,
                       embed_kwargs=embed_kwargs)  # fmt: skip
        if not info.is_main:
            return None
        cohort, manifest = collect(entries, statuses, out, fmt=file_format, n_domains=n_domains, record=record)
    finally:
        cleanup(info)
    by_status = {k: sum(s["status"] == k for s in statuses) for k in ("embedded", "skipped", "failed")}
    emit(
        f"{len(manifest['sections'])} of {len(entries)} sections, {manifest['n_spots']} spots "
        f"({by_status['embedded']} embedded, {by_status['skipped']} skipped, {by_status['failed']} failed) in "
        f"{time.perf_counter() - t_start:.1f} s on {info.world_size} process{'es' if info.enabled else ''}"
        + (f"; {n_domains} joint domains" if n_domains is not None and cohort is not None else "")
    )
    if manifest["failures"]:
        names_failed = ", ".join(f["sample"] for f in manifest["failures"])
        warnings.warn(
            f"{len(manifest['failures'])} of {len(entries)} sections failed ({names_failed}); see 'failures' in "
            f"{out / MANIFEST_FILE}.",
            UserWarning,
            stacklevel=2,
        )
    if cohort is None:
        msg = f"No section could be embedded; the errors are listed in {out / MANIFEST_FILE}. Fix the inputs."
        raise ValueError(msg)
    return (cohort, manifest) if return_manifest else cohort
