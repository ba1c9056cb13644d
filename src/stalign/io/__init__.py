"""Readers: Space Ranger outputs (Visium, Visium HD), Xenium, legacy ST layouts, H&E slides and the shared datasets, all into one SpatialData shape."""

from ._image import read_image
from ._load import concat, load, sample_name, to_anndata
from ._st import her2st, read_st, stahl_mob, stutility_mob
from ._visium import dlpfc, read_visium
from ._visium_hd import read_visium_hd
from ._xenium import read_xenium

__all__ = [
    "concat",
    "dlpfc",
    "her2st",
    "load",
    "read_image",
    "read_st",
    "read_visium",
    "read_visium_hd",
    "read_xenium",
    "sample_name",
    "stahl_mob",
    "stutility_mob",
    "to_anndata",
]
