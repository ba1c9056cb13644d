"""Readers: Space Ranger outputs, legacy ST layouts and the shared datasets, all into one SpatialData shape."""

from ._visium import dlpfc, read_visium

__all__ = ["dlpfc", "read_visium"]
