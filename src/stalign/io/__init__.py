"""Readers and writers: Space Ranger outputs (Visium, Visium HD), Xenium, legacy ST layouts, H&E slides, all into one SpatialData shape.

The shared datasets (``dlpfc``, ``her2st``, ...) live in :mod:`stalign.datasets`; their old names here still work
for one release, with a ``FutureWarning``.
"""

from ._image import read_image
from ._load import concat, load, sample_name, to_anndata
from ._st import read_st
from ._visium import read_visium
from ._visium_hd import read_visium_hd
from ._xenium import read_xenium

__all__ = [
    "concat",
    "load",
    "read_image",
    "read_st",
    "read_visium",
    "read_visium_hd",
    "read_xenium",
    "sample_name",
    "to_anndata",
]

_MOVED_TO_DATASETS = ("dlpfc", "her2st", "stahl_mob", "stutility_mob")


def __getattr__(name: str):
    if name in _MOVED_TO_DATASETS:
        import warnings

        from .. import datasets

        warnings.warn(
            f"stalign.io.{name} moved to stalign.datasets.{name}; this alias will be removed in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(datasets, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(__all__)
