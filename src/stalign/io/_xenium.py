"""10x Xenium: cells of a Xenium output folder (``read_xenium``), read with spatialdata-io, in stalign's shape.

:func:`spatialdata_io.xenium` reads the folder as it is (cells table, cell and nucleus polygons, cell circles, the
morphology image); stalign adds its conventions: ``obsm["spatial"]`` in image pixels, ``uns["spatial"]`` with the
µm per pixel, ``obs["sample"]``, and, when given, the H&E taken after the run. The morphology image is DAPI (or
other fluorescence), which the model's H&E encoder never reads: without an H&E the cells are embedded from their
genes alone (:func:`stalign.tl.embed` warns once).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._constants import Key

logger = logging.getLogger(__name__)

#: The image element that holds the H&E given to :func:`read_xenium`.
HE_SUFFIX = "_he_image"


def _pixel_size(path: Path) -> float:
    exp = path / "experiment.xenium"
    if not exp.is_file():
        msg = (
            f"{str(path)!r} has no experiment.xenium; pass the output folder of a Xenium run (Xenium Onboard Analysis)."
        )
        raise FileNotFoundError(msg)
    try:
        size = float(json.loads(exp.read_text())["pixel_size"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        msg = f"{str(exp)!r} records no valid 'pixel_size' (µm per morphology pixel): {e}; restore the run's file."
        raise ValueError(msg) from e
    return size


def _check_affine(he_affine: Any) -> np.ndarray:
    """A 3×3 similarity (rotation, isotropic scale, translation) from H&E pixels to morphology pixels."""
    A = np.asarray(he_affine, dtype=np.float64)
    if A.shape == (2, 3):
        A = np.vstack([A, [0.0, 0.0, 1.0]])
    if A.shape != (3, 3) or not np.isfinite(A).all() or not np.allclose(A[2], [0, 0, 1]):
        msg = f"he_affine has shape {A.shape}; pass a 3x3 (or 2x3) affine matrix from H&E pixels (x, y) to morphology pixels."
        raise ValueError(msg)
    lin = A[:2, :2]
    s = np.sqrt(abs(np.linalg.det(lin)))
    if s == 0 or not np.allclose(lin.T @ lin, s * s * np.eye(2), rtol=1e-3, atol=1e-9):
        msg = (
            "he_affine must be a similarity (rotation, one scale for x and y, translation): H&E pixels are square, so "
            "µm per pixel is one number. Register the H&E onto the morphology image first."
        )
        raise ValueError(msg)
    return A


def read_xenium(
    path: str | os.PathLike,
    *,
    he_image: Any = None,
    he_affine: Any = None,
    dataset_id: str | None = None,
):
    """Read a 10x Xenium output folder (cells) into stalign's SpatialData shape.

    The folder is read by :func:`spatialdata_io.xenium` (cells table, cell/nucleus polygons, cell circles, the focus
    morphology image; no transcripts or label rasters). Each cell is a spot: ``obsm["spatial"]`` holds its centroid
    in full-resolution pixels (the morphology image's, 0.2125 µm on Xenium, or the H&E's when one is given).

    Parameters
    ----------
    path
        The Xenium output folder (with ``experiment.xenium`` and ``cell_feature_matrix.h5``).
    he_image
        An H&E of the same section (path or ``(h, w, 3)`` array), already registered to the Xenium frame: its pixels
        are the morphology image's, or mapped onto them by ``he_affine``. Without it the cells have no H&E and
        are embedded from their genes alone: a DAPI image is never read as H&E.
    he_affine
        ``(3, 3)`` similarity from H&E pixels ``(x, y)`` to morphology pixels (the alignment Xenium Explorer
        exports); default identity. The H&E's pixels then become the full-resolution frame.
    dataset_id
        Section name (``obs["sample"]``); default the folder name.

    Returns
    -------
    SpatialData
        SpatialData with table ``"table"`` (raw counts of the gene-expression features, ``obs["sample"]``), the
        morphology image, the H&E as ``"<dataset_id>_he_image"`` when given, and the cells as polygons and circles.

    Examples
    --------
    >>> import os
    >>> import stalign as sta
    >>> path = os.path.join(
    ...     os.environ["STALIGN_DATA_DIR"],
    ...     "xenium_insitupy_ileum",
    ...     "tests",
    ...     "data",
    ...     "Xenium_Prime_Mouse_Ileum_tiny_outs",
    ... )
    >>> sdata = sta.io.read_xenium(path)
    >>> table = sdata.tables["table"]
    >>> (
    ...     table.n_obs,
    ...     table.uns["spatial"]["Xenium_Prime_Mouse_Ileum_tiny_outs"]["scalefactors"][
    ...         "microns_per_pixel"
    ...     ],
    ... )
    (23, 0.2125)
    """
    from spatialdata.transformations import Affine, Sequence, get_transformation, set_transformation
    from spatialdata_io import xenium

    from .._build import build_image
    from ._common import image_array

    if not isinstance(path, str | os.PathLike):
        msg = f"path must be the Xenium output folder (a str or Path), got {type(path).__name__}."
        raise TypeError(msg)
    path = Path(path).expanduser()
    if not path.is_dir():
        msg = f"Xenium folder {str(path)!r} does not exist; pass the output folder of a Xenium run."
        raise FileNotFoundError(msg)
    pixel_um = _pixel_size(path)
    if he_image is None and he_affine is not None:
        msg = "he_affine is given without he_image; pass the H&E image it maps (or drop he_affine)."
        raise ValueError(msg)
    A = np.eye(3) if he_affine is None else _check_affine(he_affine)
    he = None
    if he_image is not None:
        he = image_array(he_image)
        if he.ndim != 3 or he.shape[-1] not in (3, 4):
            msg = f"he_image has shape {he.shape}; an H&E must be an RGB image (height, width, 3)."
            raise ValueError(msg)
    sample = str(dataset_id) if dataset_id is not None else path.resolve().name
    with warnings.catch_warnings():  # spatialdata-io's notes on files it does not read here
        warnings.simplefilter("ignore", UserWarning)
        sdata = xenium(
            path,
            cells_as_circles=True,
            cells_labels=False,
            nucleus_labels=False,
            transcripts=False,
            morphology_mip=False,
            aligned_images=False,
        )
    table = sdata.tables[Key.table]
    xy_px = np.asarray(table.obsm[Key.spatial], dtype=np.float64) / pixel_um  # µm → morphology pixels
    mpp = pixel_um
    if he is not None:
        # full-resolution frame := H&E pixels; every Xenium element reaches it through A⁻¹
        inv = np.linalg.inv(A)
        xy_px = xy_px @ inv[:2, :2].T + inv[:2, 2]
        mpp = pixel_um * float(np.sqrt(abs(np.linalg.det(A[:2, :2]))))
        to_he = Affine(inv, input_axes=("x", "y"), output_axes=("x", "y"))
        for kind in ("images", "shapes"):
            for elem in getattr(sdata, kind).values():
                own = get_transformation(elem, "global")
                set_transformation(elem, Sequence([own, to_he]), "global")
        h, w = he.shape[:2]
        off = (xy_px[:, 0] < 0) | (xy_px[:, 1] < 0) | (xy_px[:, 0] >= w) | (xy_px[:, 1] >= h)
        if off.any():
            msg = (
                f"Xenium {sample!r}: {int(off.sum())} of {len(off)} cells lie outside the {w}x{h} H&E "
                f"(e.g. {table.obs_names[np.flatnonzero(off)[0]]!r}); the H&E is not registered to the Xenium frame: "
                "pass he_affine= (H&E pixels → morphology pixels)."
            )
            raise ValueError(msg)
        sdata.images[f"{sample}{HE_SUFFIX}"] = build_image(
            he, what=f"Xenium {sample!r}: he_image"
        )  # "global" = its pixels
    table.obsm[Key.spatial] = xy_px
    table.obs[Key.sample] = pd.Categorical([sample] * table.n_obs)
    # a cell's "spot" is the disc of its median area (µm²), as the cell circles spatialdata-io draws
    cell_um = float(np.sqrt(np.median(table.obs["cell_area"]) * 4 / np.pi)) if "cell_area" in table.obs else 10.0
    table.uns[Key.spatial] = {
        sample: {
            "scalefactors": {Key.microns_per_pixel: mpp, Key.spot_diameter_fullres: cell_um / mpp},
            "metadata": {"technology": "xenium", "xenium_pixel_size_um": pixel_um},
        }
    }
    logger.info("Xenium %r: %d cells, %d genes, %.4f µm/px", sample, table.n_obs, table.n_vars, mpp)
    return sdata
