"""Readers: Space Ranger outputs, legacy ST layouts and the shared datasets, all into one SpatialData shape."""

from ._image import read_image
from ._load import load, to_anndata
from ._st import her2st, read_st, stahl_mob, stutility_mob
from ._visium import dlpfc, read_visium

__all__ = [
    "dlpfc",
    "her2st",
    "load",
    "read_image",
    "read_st",
    "read_visium",
    "stahl_mob",
    "stutility_mob",
    "to_anndata",
]
