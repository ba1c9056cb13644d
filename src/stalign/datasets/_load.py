"""The ``"<dataset>:<section>"`` specs of the command line: one loader per dataset, any other spec is a path."""

from __future__ import annotations

import os
from pathlib import Path


def _loaders() -> dict:
    from ._dlpfc import dlpfc
    from ._st import her2st, stahl_mob, stutility_mob

    return {"dlpfc": dlpfc, "her2st": her2st, "stutility_mob": stutility_mob, "stahl_mob": stahl_mob}


def _check_spec(spec) -> str:
    if not isinstance(spec, str | os.PathLike):
        msg = f"spec must be a dataset spec such as 'dlpfc:151673' or a path, got {type(spec).__name__}."
        raise TypeError(msg)
    return str(spec)


def dataset_spec(spec: str | os.PathLike) -> tuple[str, str] | None:
    """``(dataset, section)`` of a ``"<dataset>:<section>"`` spec, ``None`` for a path (or a spec naming no dataset).

    An existing path wins over a spec of the same spelling; a spec without its section is an error.
    """
    text = _check_spec(spec)
    name, sep, section = text.partition(":")
    if not (sep and name in _loaders() and not Path(text).exists()):
        return None
    if not section:
        msg = f"Spec {text!r} has no section; use e.g. '{name}:<section>'."
        raise ValueError(msg)
    return name, section


def load(spec: str | os.PathLike, *, data_dir: str | os.PathLike | None = None):
    """Load a section from a short spec or a path, as the command line does.

    Parameters
    ----------
    spec
        ``"<dataset>:<section>"`` for the shared datasets (``"dlpfc:151673"``, ``"her2st:C2"``,
        ``"stutility_mob:MOB1"``, ``"stahl_mob:11"``), or any path :func:`stalign.io.load` reads (a Space Ranger
        ``outs`` folder, a ``.zarr`` SpatialData store, an ``.h5ad`` file, an H&E image file).
    data_dir
        For a dataset spec, the folder of the datasets (default ``$STALIGN_DATA_DIR``).

    Returns
    -------
    What the dataset's loader returns (a SpatialData), or what :func:`stalign.io.load` reads from the path.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.load(
    ...     "stutility_mob:MOB1"
    ... )  # "<dataset>:<section>", as on the command line
    >>> sdata.tables["table"].n_obs
    379
    >>> sta.io.to_anndata(sdata).write_h5ad("MOB1.h5ad")
    >>> sta.datasets.load(
    ...     "MOB1.h5ad"
    ... )  # a path: .h5ad, .zarr or a Space Ranger outs folder
    AnnData object with n_obs × n_vars = 379 × 1000...
    """
    from .. import io

    ds = dataset_spec(spec)
    if ds is not None:
        return _loaders()[ds[0]](ds[1], data_dir=data_dir)
    text = str(spec)
    if ":" in text and not Path(text).expanduser().exists():
        msg = (
            f"Cannot load {text!r}: not an existing path and not a dataset spec; use one of "
            f"{', '.join(f'{k}:<section>' for k in _loaders())}, a Space Ranger outs folder, a .zarr or a .h5ad path."
        )
        raise ValueError(msg)
    return io.load(spec)


def sample_name(spec: str | os.PathLike) -> str:
    """The name of the section a spec reads (its ``obs["sample"]``), found without reading the section.

    What :func:`load` would name it: the section of a dataset spec (as the dataset's loader writes it), else what
    :func:`stalign.io.sample_name` gives the path. Used to name one output per section before any section is read
    (:func:`stalign.cohort.embed`).

    Parameters
    ----------
    spec
        A dataset spec or a path, as :func:`load` takes.

    Returns
    -------
    The section name (``obs["sample"]`` of what :func:`load` returns).

    Examples
    --------
    >>> import stalign as sta
    >>> [
    ...     sta.datasets.sample_name(s)
    ...     for s in ("her2st:C2", "stahl_mob:1", "runs/patient7/outs")
    ... ]
    ['C2', '01', 'patient7']
    """
    from .. import io
    from ._st import stahl_replicate

    ds = dataset_spec(spec)
    if ds is None:
        return io.sample_name(spec)
    name, section = ds
    return stahl_replicate(section) if name == "stahl_mob" else section
