"""Helpers shared by the readers: an image path or array, the spot pitch."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._files import read_image_array


def image_array(image: Any) -> np.ndarray | None:
    """A path or an array → array (``None`` passes through)."""
    if image is None:
        return None
    if isinstance(image, str | os.PathLike):
        return read_image_array(image)
    return np.asarray(image)


def nn_distance(xy: np.ndarray, array_xy: np.ndarray | None = None) -> float:
    """Spot pitch in pixels: median pixel distance from each spot to its nearest neighbour.

    With ``array_xy`` (the array coordinates), the neighbour is chosen on the array grid and its *pixel* distance
    is taken; this avoids the downward bias of a pixel-space minimum over jittered spot detections.
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) < 2:
        msg = "Cannot derive the spot pitch from fewer than 2 spots; pass microns_per_pixel= explicitly."
        raise ValueError(msg)
    if array_xy is not None:
        _, j = cKDTree(np.asarray(array_xy, dtype=np.float64)).query(np.asarray(array_xy, dtype=np.float64), k=2)
        nn = np.linalg.norm(xy - xy[j[:, 1]], axis=1)
    else:
        d, _ = cKDTree(xy).query(xy, k=2)
        nn = d[:, 1]
    nn = nn[nn > 0]
    if nn.size == 0:
        msg = "All spot positions coincide; cannot derive the spot pitch. Pass microns_per_pixel= explicitly."
        raise ValueError(msg)
    return float(np.median(nn))
