"""One entry point for every source (``load``) and conversion to squidpy-convention AnnData (``to_anndata``)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._constants import Key
from .._section import HIRES_MAX_SIDE, library_entry
from .._utils import read_table_elem, unique_names

logger = logging.getLogger(__name__)


def _dataset_spec(text: str) -> bool:
    """Whether ``text`` reads as a ``"<dataset>:<section>"`` spec rather than a path (deprecated in :func:`load`)."""
    return ":" in text and not Path(text).expanduser().exists()


def _deprecated_spec(func: str, text: str) -> None:
    warnings.warn(
        f"stalign.io.{func}({text!r}): dataset specs moved to stalign.datasets.{func}; stalign.io reads paths only. "
        "This alias will be removed in the next release.",
        FutureWarning,
        stacklevel=3,
    )


def _check_spec(spec: Any, what: str) -> str:
    if not isinstance(spec, str | os.PathLike):
        msg = f"{what} must be a path (or, in stalign.datasets, a spec such as 'dlpfc:151673'), got {type(spec).__name__}."
        raise TypeError(msg)
    return str(spec)


def load(path: str | os.PathLike, *, data_dir: str | os.PathLike | None = None):
    """Read a section from a path, whatever its kind.

    Parameters
    ----------
    path
        A Space Ranger ``outs`` folder (:func:`read_visium`; Visium HD: :func:`read_visium_hd`'s 8 µm bins, or a
        ``square_XXXum`` folder's own), a Xenium output folder (:func:`read_xenium`), a ``.zarr`` SpatialData store,
        an ``.h5ad`` file (squidpy-convention AnnData), or an H&E image file (``.svs``, ``.tif``, ``.jpg``, ... read by
        :func:`read_image`, which needs the file to record its µm per pixel; no spots until
        :func:`stalign.pp.tile_tissue`). The shared datasets' ``"<dataset>:<section>"`` specs are read by
        :func:`stalign.datasets.load` (here they still work for one release, with a ``FutureWarning``).
    data_dir
        Deprecated with the dataset specs: the folder that holds the datasets (:func:`stalign.datasets.load`).

    Returns
    -------
    SpatialData (AnnData for ``.h5ad``; an image file gives a SpatialData with the image only).

    Examples
    --------
    >>> import stalign as sta
    >>> sta.io.to_anndata(sta.datasets.stutility_mob("MOB1")).write_h5ad("MOB1.h5ad")
    >>> sta.io.load(
    ...     "MOB1.h5ad"
    ... )  # a path: .h5ad, .zarr, a Space Ranger outs folder or an image file
    AnnData object with n_obs × n_vars = 379 × 1000...
    """
    text = _check_spec(path, "path")
    if _dataset_spec(text):
        from .. import datasets

        _deprecated_spec("load", text)
        return datasets.load(text, data_dir=data_dir)
    path = Path(text).expanduser()
    if not path.exists():
        msg = (
            f"Cannot load {text!r}: not an existing path; pass a Space Ranger outs folder, a .zarr, a .h5ad or an "
            "image file (a dataset spec such as 'dlpfc:151673' is read by stalign.datasets.load)."
        )
        raise FileNotFoundError(msg)
    from .._utils import is_image_path

    if path.is_file() and is_image_path(path):
        from ._image import read_image

        return read_image(path)
    if path.suffix == ".h5ad":
        import anndata as ad

        return ad.read_h5ad(path)
    if path.suffix == ".zarr" or (path / "zmetadata").exists() or (path / "zarr.json").exists():
        return read_zarr(path)
    if path.is_dir():
        from ._visium import read_visium
        from ._visium_hd import is_visium_hd
        from ._xenium import read_xenium

        if is_visium_hd(path):
            from ._visium_hd import read_visium_hd

            return read_visium_hd(path, bin_size_um=None)
        if (path / "experiment.xenium").is_file():
            return read_xenium(path)
        return read_visium(path)
    msg = (
        f"Cannot load {text!r}: unsupported file type {path.suffix!r}; use a .zarr, a .h5ad, a Space Ranger folder or "
        "an image file (.svs, .ndpi, .tif, .tiff, .jpg, .png)."
    )
    raise ValueError(msg)


class _LabelsWithoutSource(logging.Filter):
    """Drops ome-zarr's "no parent found" record of a labels element that names no source image.

    The NGFF spec makes the source optional and spatialdata never writes one (a tissue mask, a segmentation), so the
    record says nothing about the data; spatialdata means to silence it (scverse/spatialdata#400). Any other record
    of ome-zarr passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and str(record.msg).startswith("no parent found for"))


def read_zarr(path: str | os.PathLike):
    """:func:`spatialdata.read_zarr`, without ome-zarr's note on each labels element that names no source image."""
    import spatialdata as sd

    reader_log, drop = logging.getLogger("ome_zarr.reader"), _LabelsWithoutSource()
    reader_log.addFilter(drop)
    try:
        return sd.read_zarr(path)
    finally:
        reader_log.removeFilter(drop)


def to_anndata(sdata: Any, *, table_key: str = Key.table, max_side: int = HIRES_MAX_SIDE):
    """SpatialData (as the readers return) → AnnData in the scanpy/squidpy Visium convention.

    The table is copied; ``uns["spatial"][library]["images"]`` holds ``"lowres"`` and ``"hires"``: the finest pyramid
    levels whose longer side is at most 600 and ``max_side`` pixels (block-averaged from a coarser level when none is
    that small), with matching ``scalefactors["tissue_lowres_scalef"]``/``["tissue_hires_scalef"]`` (image pixels per
    full-resolution pixel), so ``sc.pl.spatial`` and ``sq.pl.spatial_scatter`` plot it as any Visium AnnData.

    Parameters
    ----------
    sdata
        SpatialData with a table and optionally an image.
    table_key
        Table to convert.
    max_side
        Longest side (pixels) of the ``"hires"`` image.

    Returns
    -------
    AnnData with ``obsm["spatial"]`` (full-resolution pixels) and ``uns["spatial"]``.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> adata = sta.io.to_anndata(sdata)
    >>> adata.obsm["spatial"].shape
    (3639, 2)
    >>> list(adata.uns["spatial"])
    ['151673']
    >>> import scanpy as sc
    >>> # scanpy and squidpy read it as any Visium AnnData
    >>> ax = sc.pl.spatial(adata, color="annotation", show=False)
    """
    from .._section import get_section

    _check_max_side(max_side)
    sec = get_section(sdata, table_key=table_key)
    adata = sec.table.copy()
    spatial = adata.uns.setdefault(Key.spatial, {})
    spatial[sec.library_id] = library_entry(sec, max_side=max_side)
    adata.uns.pop("spatialdata_attrs", None)
    return adata


def _check_max_side(max_side: Any) -> None:
    if isinstance(max_side, bool) or not isinstance(max_side, int | np.integer) or max_side < 1:
        msg = f"max_side={max_side!r}; it must be a positive integer number of pixels (e.g. {HIRES_MAX_SIDE})."
        raise ValueError(msg)


def _stored_sample(path: Path) -> str | None:
    """The one value of ``obs["sample"]`` stored in an ``.h5ad`` or a SpatialData ``.zarr``, read alone; else None."""
    try:
        values = read_table_elem(path, f"obs/{Key.sample}")
    except (OSError, KeyError, ValueError, TypeError) as e:
        logger.debug("Cannot read obs['sample'] of %s: %s", path, e)
        return None
    if values is None:
        return None
    import pandas as pd

    uniq = pd.unique(np.asarray(values, dtype=object).astype(str))
    return str(uniq[0]) if len(uniq) == 1 else None


def sample_name(path: str | os.PathLike) -> str:
    """The name of the section a path holds (its ``obs["sample"]``), found without reading the section.

    What :func:`load` would name it: the ``obs["sample"]`` stored in an ``.h5ad`` or ``.zarr`` (else the file name),
    the folder name of a Space Ranger folder (its parent's for ``outs``). Any other path gives its file name without
    the suffix. :func:`stalign.datasets.sample_name` also names the sections of dataset specs.

    Parameters
    ----------
    path
        What :func:`load` accepts.

    Returns
    -------
    The section name.

    Examples
    --------
    >>> import stalign as sta
    >>> sta.io.sample_name("runs/patient7/outs"), sta.io.sample_name("slides/A1.zarr")
    ('patient7', 'A1')
    """
    from ._visium import default_dataset_id

    text = _check_spec(path, "path")
    if _dataset_spec(text):
        from .. import datasets

        _deprecated_spec("sample_name", text)
        return datasets.sample_name(text)
    path = Path(text).expanduser()
    if path.suffix in (".h5ad", ".zarr") and path.exists():
        return _stored_sample(path) or path.stem
    if path.is_dir() or path.name == "outs":
        return default_dataset_id(path)
    return path.stem or path.name


def concat(
    sections: Any,
    *,
    label: str = Key.sample,
    keys: list[str] | None = None,
    join: str = "inner",
    counts: bool = True,
    images: bool = False,
    table_key: str = Key.table,
):
    """Several sections in one AnnData, each keeping its spatial metadata (squidpy's ``library_key`` layout).

    A thin layer over :func:`anndata.concat`: every section's table is stacked, ``obs[label]`` names each spot's
    section, ``uns["spatial"][<name>]`` keeps each section's scalefactors (``microns_per_pixel`` included) and,
    with ``images=True``, a downsampled H&E image; ``obsm["spatial"]`` stays in each section's own full-resolution
    pixels. Spatial functions given ``library_key=label`` then work section by section (:func:`stalign.pp.spatial_smooth`)
    while :func:`stalign.tl.domains` clusters every spot jointly. The stalign embedding record (``uns["stalign"]``) is
    kept when every section was embedded by the same model; embeddings of different models are refused.

    Parameters
    ----------
    sections
        SpatialData or AnnData sections (any iterable, read one at a time), or a mapping name → section.
    label
        ``obs`` column naming each spot's section (replaces a column of that name).
    keys
        One unique name per section; default the mapping's keys, else each section's ``obs[label]`` (when it holds
        one value) or library id, made unique by appending ``-2``, ``-3``, ….
    join
        How genes are joined (:func:`anndata.concat`): ``"inner"`` keeps the genes of every section, ``"outer"``
        all of them.
    counts
        Keep the count matrices; ``False`` gives a table of 0 genes with ``obs``, ``obsm`` (embeddings, positions)
        and the spatial metadata only, small enough for a whole cohort.
    images
        Keep small images of each section in ``uns["spatial"][name]["images"]`` (``"lowres"`` and ``"hires"``, as
        :func:`to_anndata`); ``False`` keeps the scalefactors only (``images`` is then ``{}``: plots draw the spots
        alone).
    table_key
        Table of SpatialData sections.

    Returns
    -------
    AnnData
        AnnData with ``obs[label]`` (categorical, in section order), obs names made unique as ``<obs name>-<name>``,
        the ``obsm`` entries every section holds with the same width, ``uns["spatial"]`` and the embedding record.

    Examples
    --------
    >>> import stalign as sta
    >>> mob1, mob2 = (
    ...     sta.datasets.stutility_mob("MOB1"),
    ...     sta.datasets.stutility_mob("MOB2"),
    ... )
    >>> adata = sta.io.concat([mob1, mob2])
    >>> (
    ...     adata.obs["sample"].value_counts().sort_index().to_dict(),
    ...     sorted(adata.uns["spatial"]),
    ... )
    ({'MOB1': 379, 'MOB2': 407}, ['MOB1', 'MOB2'])
    >>> scalefactors = adata.uns["spatial"]["MOB2"]["scalefactors"]
    >>> scalefactors["microns_per_pixel"]  # doctest: +ELLIPSIS
    4.3...
    >>> smooth = sta.pp.spatial_smooth(
    ...     adata, adata.X, radius_um=250, library_key="sample"
    ... )  # never across sections
    """
    from collections.abc import Mapping

    import anndata as ad
    import pandas as pd

    from .._section import get_section
    from .._validators import check_key

    check_key(label)
    if join not in ("inner", "outer"):
        msg = f"join={join!r}; use 'inner' (genes of every section) or 'outer' (all genes)."
        raise ValueError(msg)
    if isinstance(sections, Mapping):
        if keys is not None:
            msg = "keys= names the sections of a list; a mapping's keys already name them. Pass one or the other."
            raise ValueError(msg)
        keys = [str(k) for k in sections]
        sections = list(sections.values())
    pieces, names, entries = [], [], []
    for i, data in enumerate(sections):
        sec = get_section(data, table_key=table_key)
        t = sec.table
        if counts:
            piece = t.copy()
        else:
            piece = ad.AnnData(obs=t.obs.copy(), obsm={k: v.copy() for k, v in t.obsm.items()})
            piece.uns.update({k: v for k, v in t.uns.items() if k != Key.spatial})
        piece.uns.pop(Key.spatial, None)
        piece.uns.pop("spatialdata_attrs", None)
        if label in piece.obs:
            vals = pd.unique(piece.obs[label].astype(str))
            own = str(vals[0]) if len(vals) == 1 else sec.library_id
            piece.obs = piece.obs.drop(columns=label)
        else:
            own = sec.library_id
        entries.append(library_entry(sec, images=images))
        names.append(own)
        pieces.append(piece)
        del sec, t, data
        logger.debug("concat: section %d (%s), %d spots", i, own, piece.n_obs)
    if not pieces:
        msg = "No sections to concatenate; pass at least one SpatialData or AnnData."
        raise ValueError(msg)
    if keys is not None:
        keys = [str(k) for k in keys]
        if len(keys) != len(pieces) or len(set(keys)) != len(keys):
            msg = f"keys= must hold {len(pieces)} unique names, one per section; got {keys!r}."
            raise ValueError(msg)
        names = keys
    else:
        names = unique_names(names)
    uns = _common_records(pieces, names)
    # keep the obsm entries every section holds with one width (an embedding, positions), drop the others
    common = set(pieces[0].obsm)
    for p in pieces[1:]:
        common &= {k for k in p.obsm if k in pieces[0].obsm and p.obsm[k].shape[1:] == pieces[0].obsm[k].shape[1:]}
    for p in pieces:
        for k in [k for k in p.obsm if k not in common]:
            del p.obsm[k]
        p.uns.clear()
    out = ad.concat(pieces, join=join, label=label, keys=names, index_unique="-")
    out.obs[label] = pd.Categorical(out.obs[label].astype(str), categories=names)
    out.uns[Key.spatial] = dict(zip(names, entries, strict=True))
    out.uns.update(uns)
    return out


def _common_records(pieces: list, names: list[str]) -> dict:
    """The stalign embedding records (``tl.embed``'s ``uns`` entries) shared by every section; refuse mixed models."""
    from .._utils import _records

    per_piece = [_records(p) for p in pieces]
    out = {}
    for key, rec in per_piece[0].items():
        recs = [r.get(key) for r in per_piece]
        if any(r is None for r in recs):
            continue  # not every section holds this embedding: inner concat drops it
        fps = {str(r["weights_fingerprint"]) for r in recs}
        if len(fps) > 1:
            which = ", ".join(f"{n}: {r.get('model')} ({str(r['weights_fingerprint'])[:12]}…)" for n, r in
                              zip(names, recs, strict=True))  # fmt: skip
            msg = (
                f"uns[{key!r}]: the sections were embedded by different models ({which}); their embeddings are not "
                "comparable. Embed every section with the same model (tl.embed(..., model=...))."
            )
            raise ValueError(msg)
        out[key] = rec
    return out
