"""Small shared helpers: device resolution, progress bars, logging writes, tables of SpatialData/AnnData."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._constants import Key

logger = logging.getLogger(__name__)


def package_version() -> str:
    """The installed stalign version (``"0.0.0"`` when the package metadata is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stalign")
    except PackageNotFoundError:  # pragma: no cover
        return "0.0.0"


def resolve_device(device: Any = None):
    """Resolve a device: explicit value, then ``settings.device``, then CUDA if available, else CPU.

    MPS is never picked silently; a warning says how to opt in.
    """
    import torch

    from ._settings import settings

    if device is None:
        device = settings.device
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            warnings.warn(
                "An Apple MPS device is available but not used; pass device='mps' to use it.", UserWarning, stacklevel=3
            )
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        msg = f"Unknown device {device!r}; use 'cpu', 'cuda', 'cuda:0' or a torch.device."
        raise ValueError(msg) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"device={device!r} was requested but CUDA is not available here; use device='cpu' or device=None."
        raise ValueError(msg)
    return dev


def progress_bar(*args: Any, **kwargs: Any):
    """A ``tqdm`` bar: ``tqdm.auto`` (a widget in Jupyter) when ipywidgets is installed, else the text bar.

    ``tqdm.auto`` without ipywidgets warns in Jupyter ("IProgress not found") and falls back to the text bar anyway;
    choosing the text bar upfront gives the same bar without the warning.
    """
    from importlib.util import find_spec

    if find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(*args, **kwargs)


def track(iterable: Iterable, *, desc: str, total: int | None = None, disable: bool = False, **kwargs):
    """Wrap an iterable in a :func:`progress_bar`."""
    return progress_bar(iterable, desc=desc, total=total, disable=disable, **kwargs)


def l2_normalize(X: Any):
    """Row-wise L2 normalisation as float32 (zero rows stay zero): cosine geometry for ``tl`` and the evaluation."""
    import numpy as np

    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


#: Prefix of the temporary folders :func:`atomic_path` writes into, next to the final output.
TMP_PREFIX = ".stalign-tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, move it to ``path`` in one rename.

    The temporary lives in a hidden folder of ``path``'s folder (same filesystem, so the rename is atomic), and is
    removed whatever happens: an interrupted write never leaves a partial file under the final name, and a
    previous output stays as it was until the new one is complete. An existing folder (a ``.zarr``) is moved aside
    first, since a rename cannot replace a non-empty folder, and put back if the rename fails.
    """
    import shutil
    import tempfile

    path = Path(path)
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=path.parent))
    except OSError as e:
        msg = f"Cannot write into the output folder {str(path.parent)!r} ({e.strerror}); choose another output path."
        raise PermissionError(msg) from e
    tmp = tmpdir / path.name
    try:
        yield tmp
        old = None
        if path.is_dir():
            old = tmpdir / f"{path.name}.old"
            os.replace(path, old)
        try:
            os.replace(tmp, path)  # atomic for a file, even over an existing one
        except OSError:
            if old is not None:
                os.replace(old, path)  # put the previous output back
            raise
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def unique_names(names: Iterable[str]) -> list[str]:
    """``names`` made unique in order: a repeat of a name gets ``-2``, ``-3``, …, skipping names already given.

    Deterministic: the same list always gives the same names (``["C2", "C2", "C2-2"]`` → ``["C2", "C2-3", "C2-2"]``).
    """
    names = [str(n) for n in names]
    given, used, out = set(names), set(), []
    for n in names:
        name, k = n, 1
        while name in used or (name != n and name in given):
            k += 1
            name = f"{n}-{k}"
        used.add(name)
        out.append(name)
    return out


def save_data(adata, *, attr: str, key: str, data: Any) -> None:
    """Write ``data`` to ``adata.<attr>[key]`` and log it (squidpy's ``_save_data``)."""
    getattr(adata, attr)[key] = data
    logger.info("Adding `adata.%s[%r]`", attr, key)


def category_colors(n: int) -> list[str]:
    """Scanpy's default colours for ``n`` categories (what ``sc.pl`` stores in ``uns["<key>_colors"]``).

    Matplotlib's colour cycle when it has enough colours, else scanpy's ``default_20``, ``default_28`` or
    ``default_102`` palette, else grey: the rule of scanpy's plotting functions, so stalign, scanpy and squidpy colour
    the same categories alike.
    """
    from matplotlib import colors, rcParams
    from scanpy.plotting import palettes

    cycle = rcParams["axes.prop_cycle"].by_key().get("color", [])
    for palette in (cycle, palettes.default_20, palettes.default_28, palettes.default_102):
        if len(palette) >= n:
            return [colors.to_hex(c) for c in palette[:n]]
    return ["#808080"] * n


def set_category_colors(table, key: str) -> None:
    """Write scanpy's default palette for the categories of ``obs[key]`` into ``uns[f"{key}_colors"]``."""
    n = len(table.obs[key].cat.categories)
    table.uns[f"{key}_colors"] = category_colors(n)
    logger.info("Adding `adata.uns[%r]`", f"{key}_colors")


def get_table(data: Any, *, table_key: str = "table"):
    """The AnnData that results are written to: ``data`` itself, or ``data.tables[table_key]``."""
    from anndata import AnnData

    if isinstance(data, AnnData):
        return data
    tables = getattr(data, "tables", None)
    if tables is None:
        msg = f"Expected a SpatialData or an AnnData, got {type(data).__name__}."
        raise TypeError(msg)
    if table_key not in tables:
        msg = f"table_key {table_key!r} not in sdata.tables; available: {', '.join(tables.keys()) or 'none'}."
        raise KeyError(msg)
    return tables[table_key]


def copy_data(data: Any, *, table_key: str = "table"):
    """A copy to write results into: AnnData copies; SpatialData shares its (read-only) elements, copies the table."""
    from anndata import AnnData

    if isinstance(data, AnnData):
        return data.copy()
    get_table(data, table_key=table_key)  # TypeError / KeyError naming the problem
    return shallow_copy(data, copy_table=table_key)


def shallow_copy(sdata: Any, *, copy_table: str | None = None):
    """A new SpatialData over the same elements (and a copy of ``attrs``); only table ``copy_table`` is copied.

    Elements are shared, not copied: add or replace elements of the copy, never modify a shared one in place.
    """
    from spatialdata import SpatialData

    tables = {k: (v.copy() if k == copy_table else v) for k, v in sdata.tables.items()}
    return SpatialData(
        images=dict(sdata.images),
        labels=dict(sdata.labels),
        points=dict(sdata.points),
        shapes=dict(sdata.shapes),
        tables=tables,
        attrs=dict(sdata.attrs or {}),
    )


def uns_key(key_added: str) -> str:
    """``uns`` key for an ``obsm`` key: ``X_stalign`` → ``stalign`` (scanpy's ``X_<name>`` pattern)."""
    return key_added[2:] if key_added.startswith("X_") else key_added


def _records(table) -> dict[str, dict]:
    """``uns`` entries written by ``tl.embed`` (they hold ``keys`` and ``weights_fingerprint``)."""
    from collections.abc import Mapping

    out = {}
    for k, v in table.uns.items():
        if isinstance(v, Mapping) and isinstance(v.get("keys"), Mapping) and "weights_fingerprint" in v:
            out[str(k)] = v
    return out


def embedding_record(table, use_rep: str | None = None) -> dict | None:
    """The record of the embeddings to use: ``tl.embed(key_added=use_rep)``'s, else the only one present.

    ``None`` when the table holds no stalign embedding. Raises when ``use_rep`` names none, or when several
    embeddings are present and ``use_rep`` is not given.
    """
    recs = _records(table)
    if use_rep is not None:
        uk = uns_key(use_rep)
        if uk not in recs:
            msg = (
                f"use_rep={use_rep!r}: no embedding of tl.embed(key_added={use_rep!r}) in this table "
                f"(embeddings present: {', '.join(f'X_{k}' for k in recs) or 'none'}); run tl.embed first or pass "
                "the key_added it used."
            )
            raise KeyError(msg)
        return recs[uk]
    if not recs:
        return None
    if len(recs) > 1:
        msg = (
            f"The table holds several stalign embeddings ({', '.join(f'X_{k}' for k in recs)}); pass use_rep= "
            "(the key_added of tl.embed) to choose one."
        )
        raise ValueError(msg)
    return next(iter(recs.values()))


#: Embedding kinds and the suffix of their ``obsm`` key (``tl.embed``'s ``key_added`` + suffix).
EMBEDDING_SUFFIXES = {"fused": "", "image": "_image", "gene": "_gene", "niche": "_niche", "pred": "_pred"}


def embedding_keys(record: dict | None = None, *, key_added: str = Key.X) -> dict[str, str]:
    """``{"fused" | "image" | "gene" | "niche" | "pred": obsm key}`` of an embedding record, else those of ``key_added``.

    Without a record (embeddings written by hand) the keys are ``tl.embed``'s: ``key_added`` + each kind's suffix.
    """
    if record is not None:
        return dict(record["keys"])
    return {name: f"{key_added}{suffix}" for name, suffix in EMBEDDING_SUFFIXES.items()}


def default_rep(table, use_rep: str | None = None) -> str:
    """``use_rep`` if given (checked), else the fused embedding of ``tl.embed`` (else its image, else its gene one).

    The keys come from the ``uns`` record of :func:`stalign.tl.embed` (the only one present).
    """
    if use_rep is not None:
        if use_rep not in table.obsm:
            msg = (
                f"use_rep {use_rep!r} not in obsm (available: {', '.join(table.obsm.keys()) or 'none'}); run "
                "tl.embed first."
            )
            raise KeyError(msg)
        return use_rep
    keys = embedding_keys(embedding_record(table))
    for name in ("fused", "image", "gene"):
        if keys.get(name) in table.obsm:
            return keys[name]
    msg = "No stalign embedding in obsm; run stalign.tl.embed first, or pass use_rep= (an obsm key)."
    raise KeyError(msg)


def is_image_path(path: Any) -> bool:
    """Whether ``path`` names an image file ``io.read_image`` reads (by its suffix: SVS, NDPI, TIFF, JPEG, PNG...)."""
    from pathlib import Path

    from ._constants import IMAGE_SUFFIXES

    return Path(str(path)).suffix.lower() in IMAGE_SUFFIXES


def read_table_elem(path: Path, key: str) -> Any:
    """One element of the table stored in an ``.h5ad`` or a SpatialData ``.zarr``, read alone; ``None`` if absent.

    ``key`` is relative to the table (``"obs/sample"``, ``"uns/stalign"``). An unreadable file raises ``OSError``,
    ``KeyError``, ``ValueError`` or ``TypeError``.
    """
    try:
        from anndata.io import read_elem
    except ImportError:  # pragma: no cover - anndata < 0.11
        from anndata.experimental import read_elem
    if Path(path).suffix == ".h5ad":
        import h5py

        with h5py.File(path, "r") as f:
            elem = f.get(key)
            return read_elem(elem) if elem is not None else None
    import zarr

    elem = zarr.open_group(str(path), mode="r").get(f"tables/{Key.table}/{key}")
    return read_elem(elem) if elem is not None else None


def write_data(data: Any, path: Path) -> None:
    """Write ``data`` atomically (never a half-written file): its table as ``.h5ad``, or the SpatialData as ``.zarr``."""
    from anndata import AnnData

    with atomic_path(Path(path)) as tmp:
        if tmp.suffix == ".h5ad":
            get_table(data).write_h5ad(tmp)
        elif isinstance(data, AnnData):
            msg = f"{str(path)!r}: an AnnData can only be written as .h5ad; use an .h5ad path."
            raise ValueError(msg)
        else:
            with _unsharded_tables():
                data.write(tmp)


def _unsharded_tables() -> contextlib.AbstractContextManager:
    """Anndata's zarr v3 tables unsharded (what spatialdata reads everywhere), unless the user chose otherwise.

    anndata asks every array it writes to choose (``anndata.settings.auto_shard_zarr_v3``) and warns while it is
    unset; a SpatialData table then gave one warning per array. A value the user set is kept.
    """
    import anndata

    settings = getattr(anndata, "settings", None)
    if settings is None or getattr(settings, "auto_shard_zarr_v3", False) is not None:
        return contextlib.nullcontext()
    return settings.override(auto_shard_zarr_v3=False)
