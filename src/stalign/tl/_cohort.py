"""``tl.embed_cohort``: many sections in one call, one file each, joint domains; sharded over ``torchrun`` processes.

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

import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from .._constants import Key
from .._utils import TMP_PREFIX, atomic_path, get_table, read_table_elem, unique_names, write_data
from .._validators import check_int
from ._common import DEFAULT_MODEL, model_record, resolve_model

logger = logging.getLogger(__name__)

#: Files of an output folder besides the sections.
COHORT_FILE, MANIFEST_FILE = "cohort.h5ad", "manifest.json"
#: Hidden folder where ranks other than 0 report finished sections, for rank 0's progress lines.
PROGRESS_DIR = ".stalign-progress"
FORMATS = ("zarr", "h5ad")
#: How long a rank waits at the barrier for the slowest rank (its last sections) before giving up.
BARRIER_TIMEOUT = timedelta(hours=24)


def _is_spec(item: Any) -> bool:
    return isinstance(item, str | os.PathLike)


def _label(item: Any, name: str) -> str:
    return str(item) if _is_spec(item) else name


def _safe_name(name: str) -> str:
    """A section name usable as a file name (no separators, no leading dot)."""
    name = re.sub(r"[^\w.+-]", "_", str(name)).lstrip(".")
    return name or "section"


def _object_name(item: Any, index: int) -> str:
    from .._section import get_section

    table = get_table(item)
    if Key.sample in table.obs:
        values = table.obs[Key.sample].astype(str).unique()
        if len(values) == 1:
            return str(values[0])
    try:
        return get_section(item).library_id
    except (ValueError, KeyError, TypeError):
        return f"section{index + 1}"


def _read_record(path: Path) -> dict | None:
    """``uns["stalign"]`` (the record of tl.embed) stored in an output file, read alone; None if unreadable."""
    try:
        return read_table_elem(path, f"uns/{Key.uns}")
    except (OSError, KeyError, ValueError, TypeError) as e:
        logger.debug("Cannot read the embedding record of %s: %s", path, e)
        return None


def _same_model(record: dict | None, model: dict) -> bool:
    if not isinstance(record, Mapping):
        return False
    return str(record.get("weights_fingerprint")) == str(model["weights_fingerprint"]) and str(
        record.get("weights_sha256")
    ) == str(model["weights_sha256"])


def _plan(
    items: list, names: list[str] | None, out: Path, fmt: str, model: dict, *, overwrite: bool, keep_going: bool
) -> list[dict]:
    """One entry per section: its name, file and what to do (``embed``, ``skip`` or ``fail``). Runs on rank 0."""
    from anndata import AnnData

    from ..io import sample_name

    errors: dict[int, str] = {}
    if names is None:
        names = []
        for i, item in enumerate(items):
            try:
                names.append(sample_name(item) if _is_spec(item) else _object_name(item, i))
            except (ValueError, TypeError, KeyError, OSError) as e:
                if not keep_going:
                    msg = f"Section {i + 1} of {len(items)} ({_label(item, '?')}): {e}"
                    raise type(e)(msg) from e
                errors[i] = f"{type(e).__name__}: {e}"
                names.append(f"section{i + 1}")
    names = unique_names([_safe_name(n) for n in names])
    if fmt == "zarr":
        tables = [
            _label(it, n)
            for it, n in zip(items, names, strict=True)
            if isinstance(it, AnnData) or (_is_spec(it) and str(it).endswith(".h5ad"))
        ]
        if tables:
            msg = (
                f"{', '.join(tables)}: an AnnData (.h5ad) input can only be written as .h5ad, not as a SpatialData "
                ".zarr; pass --format h5ad (format='h5ad'), or give SpatialData inputs."
            )
            raise ValueError(msg)
    plan, conflicts = [], []
    for i, (item, name) in enumerate(zip(items, names, strict=True)):
        entry = {"index": i, "spec": str(item) if _is_spec(item) else None, "label": _label(item, name)}
        entry |= {"sample": name, "file": f"{name}.{fmt}", "action": "embed"}
        path = out / entry["file"]
        if i in errors:
            entry |= {"action": "fail", "error": errors[i]}
        elif path.exists() and not overwrite:
            record = _read_record(path)
            if _same_model(record, model):
                entry["action"] = "skip"
            else:
                who = (
                    f"model {record.get('model')!r} (weights sha256 {str(record.get('weights_sha256'))[:12]}…)"
                    if isinstance(record, Mapping)
                    else "no readable stalign embedding"
                )
                conflicts.append(f"{path} ({who})")
        plan.append(entry)
    if conflicts:
        msg = (
            f"{len(conflicts)} output(s) exist with other content than this model's embeddings: "
            f"{'; '.join(conflicts)}. Pass --overwrite (overwrite=True) to replace them, or choose another output "
            "folder."
        )
        raise FileExistsError(msg)
    return plan


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        msg = f"Output {str(out)!r} is a file; a cohort is written into a folder: choose a folder path."
        raise NotADirectoryError(msg)


def _prepare_folder(out: Path) -> None:
    """Create the output folder, check it can be written, remove what an interrupted run left behind."""
    import shutil
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        msg = f"Output folder {str(out)!r} cannot be written ({e.strerror}); choose a folder you can write to."
        raise PermissionError(msg) from e
    for p in [*out.glob(f"{TMP_PREFIX}*"), out / PROGRESS_DIR]:
        shutil.rmtree(p, ignore_errors=True)  # temporaries of an interrupted run: never under a final name
    (out / PROGRESS_DIR).mkdir()


def _embed_one(entry: dict, item: Any, *, load: Callable, out: Path, embed_kwargs: dict) -> dict:
    """Read, embed and write one section; its status (``embedded``, ``n_spots``, ``seconds``)."""
    from ._embed import embed

    t0 = time.perf_counter()
    if _is_spec(item):
        data = load(item)
        embed(data, show_progress_bar=False, **embed_kwargs)
    else:
        data = embed(item, copy=True, show_progress_bar=False, **embed_kwargs)  # never write into the caller's object
    write_data(data, out / entry["file"])  # the file's suffix is the format's; AnnData inputs were checked upfront
    return {"status": "embedded", "n_spots": int(get_table(data).n_obs), "seconds": time.perf_counter() - t0}


class _Progress:
    """Rank 0's progress lines: one per section, ``[k/n]`` in the order sections finish, on any rank.

    In a multi-process run a background thread reports, as they arrive, the sections the other ranks finished
    (the small status files they post, :func:`_post`).
    """

    def __init__(self, plan: list[dict], emit: Callable[[str], None], folder: Path):
        import threading

        self.plan, self.emit, self.folder = plan, emit, folder
        self.seen: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def report(self, status: dict) -> None:
        with self._lock:
            i = status["index"]
            if i in self.seen:
                return
            self.seen.add(i)
            entry = self.plan[i]
            head = f"[{len(self.seen)}/{len(self.plan)}] {entry['label']}"
            if status["status"] == "embedded":
                self.emit(f"{head}  {status['n_spots']} spots  {status['seconds']:.1f} s")
            elif status["status"] == "skipped":
                self.emit(f"{head}  skipped: {entry['file']} exists, same model")
            else:
                self.emit(f"{head}  FAILED: {status['error']}")

    def drain(self) -> None:
        """Report the sections other ranks finished since the last call (their status files)."""
        found = []
        for p in self.folder.glob("*.json"):
            try:
                found.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # being written: next time
                continue
        for st in sorted(found, key=lambda s: s.get("finished", 0.0)):
            self.report(st)

    def start(self, interval: float = 0.5) -> None:
        import threading

        def loop() -> None:
            while not self._stop.wait(interval):
                self.drain()

        self._thread = threading.Thread(target=loop, name="stalign-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.drain()


def _post(folder: Path, status: dict) -> None:
    """A rank other than 0 tells rank 0 a section is done (a small file, renamed into place)."""
    path = folder / f"{status['index']:06d}.json"
    tmp = folder / f".{path.name}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)
    except OSError as e:  # progress only: rank 0 gets every status at the barrier anyway
        logger.debug("Cannot post progress to %s: %s", folder, e)


def _gather(info, mine: list[dict]) -> list[dict]:
    """Every rank's statuses on every rank (rank order); the gather waits for every rank, as a barrier would."""
    import torch.distributed as dist

    if not info.enabled:
        return mine
    everyone: list[Any] = [None] * info.world_size
    dist.all_gather_object(everyone, mine)
    return [st for part in everyone for st in part]


def _broadcast(info, obj: Any) -> Any:
    import torch.distributed as dist

    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def embed_cohort(
    sections: Sequence[Any] | Mapping[str, Any],
    out_dir: str | os.PathLike,
    *,
    model: Any = DEFAULT_MODEL,
    n_domains: int | None = None,
    format: Literal["zarr", "h5ad"] = "zarr",
    overwrite: bool = False,
    keep_going: bool = False,
    data_dir: str | os.PathLike | None = None,
    loader: Callable[[str], Any] | None = None,
    device: Any = None,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: Callable[[str], None] | None = None,
):
    """Embed a cohort: one output file per section, every spot in ``cohort.h5ad``, domains shared by all sections.

    Each section is read, embedded with :func:`embed` and written to ``out_dir/<sample>.zarr`` (or ``.h5ad``)
    one at a time, so memory holds one section's crops at a time. Then ``out_dir/cohort.h5ad`` gathers every spot
    of every section (``obs["sample"]``, the embeddings, each section's spatial metadata, no counts; see
    :func:`stalign.io.concat`), clustered jointly with :func:`domains` (``library_key="sample"``: smoothing within
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
        What :func:`stalign.io.load` accepts (``"dataset:section"``, a Space Ranger ``outs`` folder, a ``.zarr``,
        an ``.h5ad``) and/or SpatialData / AnnData objects (left unchanged); or a mapping name → section. Sections
        are named by their ``obs["sample"]`` (:func:`stalign.io.sample_name`), made unique with ``-2``, ``-3``, ….
    out_dir
        Output folder, created if missing.
    model
        A registry name, a path to saved weights, or an :class:`~stalign.models.STAlign` (:func:`embed`).
    n_domains
        Also cluster every spot of the cohort into this many joint domains (``obs["stalign_domain"]`` of
        ``cohort.h5ad``).
    format
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
        Function reading one spec (default :func:`stalign.io.load` with ``data_dir``).
    device
        ``None``: each process's GPU (``cuda:LOCAL_RANK``) when CUDA is present, else the CPU.
    batch_size
        Spots per forward pass.
    num_workers
        DataLoader worker processes reading crops.
    progress
        Called on rank 0 with one line per section (``"[2/3] her2st:C2  187 spots  0.6 s"``) and a summary line;
        default: the ``stalign`` logger at INFO level.

    Returns
    -------
    AnnData | None
        On rank 0 (or in one process), the cohort AnnData written to ``cohort.h5ad``: ``obs["sample"]``, ``obsm``
        embeddings and ``"spatial"``, ``uns["spatial"][<sample>]`` (scalefactors and small ``"lowres"``/``"hires"``
        images: ``sq.pl.spatial_scatter(cohort, library_key="sample", ...)`` plots it as it is) and the embedding record,
        and with ``n_domains`` ``obs["stalign_domain"]`` and its colours; ``None`` on the other ranks.

    Examples
    --------
    >>> import stalign as sta
    >>> cohort = sta.tl.embed_cohort(
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
    from ..io import load

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
    if format not in FORMATS:
        msg = f"format={format!r}; use 'zarr' (whole SpatialData) or 'h5ad' (the table)."
        raise ValueError(msg)
    check_int(n_domains, "n_domains", allow_none=True, hint=" (the number of joint domains, e.g. 7)")
    check_int(batch_size, "batch_size", hint=" (spots per forward pass, e.g. 256)")
    check_int(num_workers, "num_workers", minimum=0, hint=" (0 reads crops in the main process)")
    out = Path(out_dir).expanduser()
    load_spec = loader if loader is not None else (lambda spec: load(spec, data_dir=data_dir))
    emit = progress if progress is not None else logger.info
    t_start = time.perf_counter()

    dev = resolve_device(device)
    info, dev = init_distributed(dev, backend="gloo", timeout=BARRIER_TIMEOUT)
    reporter = None
    try:
        m, dev = resolve_model(model, device=dev)
        record = model_record(m)
        plan: Any = None
        if info.is_main:
            try:
                _check_folder(out)
                plan = _plan(items, names, out, format, record, overwrite=overwrite, keep_going=keep_going)
                _prepare_folder(out)
            except Exception as e:  # told to the other ranks, then raised here
                _broadcast(info, ("error", f"{type(e).__name__}: {e}"))
                raise
        plan = _broadcast(info, plan)
        if isinstance(plan, tuple):
            msg = f"Rank 0 refused the cohort: {plan[1]}"
            raise ValueError(msg)
        # what rank 0 knows before any work: the skipped sections, and those it could not even name
        known = [_planned_status(e) for e in plan if e["action"] != "embed"] if info.is_main else []
        if info.is_main:
            reporter = _Progress(plan, emit, out / PROGRESS_DIR)
            for st in known:
                reporter.report(st)
            if info.enabled:
                reporter.start()
        embed_kwargs = {"model": m, "device": dev, "batch_size": batch_size, "num_workers": num_workers}
        todo = [e for e in plan if e["action"] == "embed"][info.rank :: info.world_size]
        mine = []
        for entry in todo:  # one section at a time: memory holds one section's crops
            st = _run_section(entry, items[entry["index"]], load=load_spec, out=out,
                              embed_kwargs=embed_kwargs, keep_going=keep_going, n=len(plan))  # fmt: skip
            st |= {"index": entry["index"], "rank": info.rank, "finished": time.time()}
            mine.append(st)
            if reporter is not None:
                reporter.report(st)
            else:
                _post(out / PROGRESS_DIR, st)
        statuses = known + _gather(info, mine)
        if reporter is not None:
            reporter.stop()
            reporter = None  # stopped once; the finally clause only stops it after an error
        if not info.is_main:
            return None
        cohort, manifest = _finish(plan, statuses, out, fmt=format, n_domains=n_domains, record=record)
        by_status = {k: sum(s["status"] == k for s in statuses) for k in ("embedded", "skipped", "failed")}
        emit(
            f"{len(manifest['sections'])} of {len(plan)} sections, {manifest['n_spots']} spots "
            f"({by_status['embedded']} embedded, {by_status['skipped']} skipped, {by_status['failed']} failed) in "
            f"{time.perf_counter() - t_start:.1f} s on {info.world_size} process{'es' if info.enabled else ''}"
            + (f"; {n_domains} joint domains" if n_domains is not None and cohort is not None else "")
        )
        if manifest["failures"]:
            names_failed = ", ".join(f["sample"] for f in manifest["failures"])
            warnings.warn(
                f"{len(manifest['failures'])} of {len(plan)} sections failed ({names_failed}); see 'failures' in "
                f"{out / MANIFEST_FILE}.",
                UserWarning,
                stacklevel=2,
            )
        if cohort is None:
            msg = f"No section could be embedded; the errors are listed in {out / MANIFEST_FILE}. Fix the inputs."
            raise ValueError(msg)
        return cohort
    finally:
        if reporter is not None:
            reporter.stop()
        cleanup(info)


def _planned_status(entry: dict) -> dict:
    st = {"index": entry["index"], "status": "skipped" if entry["action"] == "skip" else "failed"}
    if entry["action"] == "fail":
        st["error"] = entry["error"]
    return st


def _run_section(entry: dict, item: Any, *, keep_going: bool, n: int, **kwargs) -> dict:
    """:func:`_embed_one`, with a failure named (raised, or a ``failed`` status with ``keep_going``)."""
    try:
        return _embed_one(entry, item, **kwargs)
    except Exception as e:  # a failing section is named (and skipped with keep_going)
        if not keep_going:
            msg = f"Section {entry['label']!r} ({entry['index'] + 1} of {n}) failed: {e}"
            try:
                err = type(e)(msg)
            except Exception:  # noqa: BLE001 - an exception type with another signature
                err = RuntimeError(msg)
            raise err from e
        logger.warning("Section %r failed: %s", entry["label"], e)
        return {"status": "failed", "error": f"{type(e).__name__}: {e}"}


def _finish(plan: list[dict], statuses: list[dict], out: Path, *, fmt: str, n_domains: int | None, record: dict):
    """Rank 0, after the barrier: ``cohort.h5ad`` from the section files (in plan order), joint domains, manifest."""
    import shutil

    from .._utils import package_version
    from ..io import concat, load
    from ._domains import domains

    by_index = {st["index"]: st for st in statuses}
    done = [e for e in plan if by_index[e["index"]]["status"] in ("embedded", "skipped")]
    cohort = None
    if done:
        # read back one section at a time, keeping obs, embeddings and spatial metadata only
        sections = (load(out / e["file"]) for e in done)
        cohort = concat(sections, keys=[e["sample"] for e in done], counts=False, join="outer", images=True)
        if n_domains is not None:
            domains(cohort, n_domains=n_domains, library_key=Key.sample)
        with atomic_path(out / COHORT_FILE) as tmp:
            cohort.write_h5ad(tmp)
    counts = cohort.obs[Key.sample].value_counts().to_dict() if cohort is not None else {}
    manifest = {
        "stalign_version": package_version(),
        "model": {
            "name": record["model"],
            "weights_sha256": record["weights_sha256"],
            "weights_fingerprint": record["weights_fingerprint"],
        },
        "format": fmt,
        "n_domains": n_domains,
        "n_spots": int(sum(counts.values())),
        "cohort": COHORT_FILE if cohort is not None else None,
        "sections": [
            {k: e[k] for k in ("spec", "sample", "file")}
            | {"n_spots": int(counts[e["sample"]]), "status": by_index[e["index"]]["status"]}
            for e in done
        ],
        "failures": [
            {"spec": e["spec"], "sample": e["sample"], "error": by_index[e["index"]]["error"]}
            for e in plan
            if by_index[e["index"]]["status"] == "failed"
        ],
    }
    with atomic_path(out / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out / PROGRESS_DIR, ignore_errors=True)
    return cohort, manifest
