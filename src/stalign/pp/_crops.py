"""Spot and niche crops defined in micrometres, read lazily and resampled in batches.

Geometry
--------
A crop of side ``size_um`` centred on a spot covers ``size_um / microns_per_pixel`` full-resolution pixels. To
produce an ``out_px`` crop, the coarsest pyramid level that is at least as fine as ``size_um / out_px`` µm/px is
read (:meth:`stalign._section.Section.level_for`), so a 100 µm crop covers the same tissue on a 0.25 µm/px scan,
a hires PNG and a 12 µm/px lowres PNG alike.

Coordinates are continuous pixel coordinates: pixel ``i`` covers ``[i, i + 1)`` and its centre is ``i + 0.5``;
boxes are ``(x0, y0, x1, y1)``.

Border policy
-------------
Parts of a crop outside the image are filled with white (255, the colour of glass) by blending with a coverage
channel, so the transition is as smooth as the resampling. The fraction of each crop that lies inside the image
is returned by :func:`read_crops` (``return_inside=True``). A spot whose *centre* lies outside the image is an
error that names the spot.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._constants import NICHE_UM, SPOT_UM, Key
from .._section import ImageLevel, Section, get_section
from .._utils import save_data

logger = logging.getLogger(__name__)

#: Largest window (in pixels of the level read) fetched at once; larger batches are split spatially.
MAX_WINDOW_PX = 4096 * 4096
#: A window larger than this many pixels and than ``SPARSE_RATIO`` times the summed box areas is split in two.
MIN_SPLIT_PX = 256 * 256
SPARSE_RATIO = 2.0
#: Most bilinear samples taken in one grid_sample call (bounds memory when supersampling).
MAX_SAMPLES = 1 << 22
#: Default output size (pixels) of a crop.
DEFAULT_PX = 64
WHITE = 255.0


def _check_size(size_um: float, out_px: int | None = None) -> None:
    if not (isinstance(size_um, int | float) and np.isfinite(size_um) and size_um > 0):
        msg = f"size_um={size_um!r}; the crop side must be a positive number of micrometres (e.g. 100)."
        raise ValueError(msg)
    if out_px is not None and (not isinstance(out_px, int | np.integer) or out_px < 1):
        msg = f"out_px={out_px!r}; the crop size must be a positive integer number of pixels (e.g. 64)."
        raise ValueError(msg)


def choose_level(section: Section, *, size_um: float, out_px: int | None) -> ImageLevel:
    """Image level read for a ``size_um`` crop resampled to ``out_px`` pixels (finest level if ``out_px`` is None)."""
    if not section.has_image:
        msg = f"Section {section.library_id!r} has no image; image crops need an H&E image."
        raise ValueError(msg)
    if out_px is None:
        return section.images[0]
    return section.level_for(size_um / out_px)


def _image_extent_fullres(section: Section) -> tuple[float, float]:
    lv = section.images[0]
    h, w = lv.shape
    return w * lv.fullres_per_px, h * lv.fullres_per_px


def check_centres_on_image(section: Section, centres: np.ndarray, names: Sequence[str] | None = None) -> None:
    """Raise a ValueError naming the first spot whose centre lies outside the image."""
    W, H = _image_extent_fullres(section)
    x, y = centres[:, 0], centres[:, 1]
    off = ~((x >= 0) & (y >= 0) & (x < W) & (y < H))
    if off.any():
        i = int(np.flatnonzero(off)[0])
        name = repr(str(names[i])) if names is not None else f"#{i}"
        msg = (
            f"Section {section.library_id!r}: {int(off.sum())} spot centre(s) lie outside the {W:.0f}x{H:.0f} "
            f"full-resolution image, e.g. spot {name} at ({x[i]:.1f}, {y[i]:.1f}); check `obsm['spatial']` and the "
            "image scale factor, or drop those spots."
        )
        raise ValueError(msg)


def boxes_fullres(section: Section, centres: np.ndarray, *, size_um: float) -> np.ndarray:
    """``(n, 4)`` boxes ``(x0, y0, x1, y1)`` in full-resolution pixels of side ``size_um`` centred on ``centres``."""
    half = 0.5 * size_um / section.microns_per_pixel
    c = np.asarray(centres, dtype=np.float64)
    return np.concatenate([c - half, c + half], axis=1)


def inside_fraction(section: Section, boxes_full: np.ndarray) -> np.ndarray:
    """Fraction of each full-resolution box that lies inside the image."""
    W, H = _image_extent_fullres(section)
    iw = np.clip(np.minimum(boxes_full[:, 2], W) - np.maximum(boxes_full[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(boxes_full[:, 3], H) - np.maximum(boxes_full[:, 1], 0), 0, None)
    area = (boxes_full[:, 2] - boxes_full[:, 0]) * (boxes_full[:, 3] - boxes_full[:, 1])
    return (iw * ih / area).astype(np.float32)


def _compute(arr: Any) -> np.ndarray:
    if hasattr(arr, "compute"):
        import dask

        (arr,) = dask.compute(arr, scheduler="synchronous")
    return np.asarray(arr)


def _read_window(level: ImageLevel, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """``(4, y1-y0, x1-x0)`` float32 RGB + coverage; zero (coverage 0) outside the image."""
    h, w = level.shape
    out = np.zeros((4, y1 - y0, x1 - x0), dtype=np.float32)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 > cx0 and cy1 > cy0:
        win = _compute(level.data[:3, cy0:cy1, cx0:cx1])
        out[:3, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = win
        out[3, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = 1.0
    return out


def _supersample(boxes_w: np.ndarray, out_px: int) -> np.ndarray:
    """Per-box samples per output pixel along each axis: ``ceil(box side / out_px)`` (roi_align's adaptive ratio)."""
    side = np.maximum(boxes_w[:, 2] - boxes_w[:, 0], boxes_w[:, 3] - boxes_w[:, 1])
    return np.maximum(1, np.ceil(side / out_px - 1e-6)).astype(np.int64)


def _sample_window(win: np.ndarray, boxes_w: np.ndarray, out_px: int) -> np.ndarray:
    """Resample ``boxes_w`` (window pixel coordinates) of a ``(4, h, w)`` window to ``(n, 4, out_px, out_px)``.

    Bilinear sampling at ``k x k`` points per output pixel, averaged (``k`` as in roi_align's adaptive
    ``sampling_ratio``), in one :func:`torch.nn.functional.grid_sample` call over all crops.
    """
    import torch
    import torch.nn.functional as F

    n = len(boxes_w)
    _, h, w = win.shape
    ks = _supersample(boxes_w, out_px)
    if len(np.unique(ks)) > 1:  # boxes of different sizes: one call per sampling ratio
        res = np.empty((n, win.shape[0], out_px, out_px), dtype=np.float32)
        for k in np.unique(ks):
            sel = ks == k
            res[sel] = _sample_window(win, boxes_w[sel], out_px)
        return res
    k = int(ks[0])
    m = out_px * k
    step = max(1, MAX_SAMPLES // (m * m))
    if n > step:  # bound the memory of the sampling grid
        return np.concatenate([_sample_window(win, boxes_w[a : a + step], out_px) for a in range(0, n, step)])
    t = (np.arange(m, dtype=np.float64) + 0.5) / m  # sample positions within the box, in [0, 1]
    bx = boxes_w[:, 0:1] + t[None] * (boxes_w[:, 2:3] - boxes_w[:, 0:1])  # (n, m) window pixel coords
    by = boxes_w[:, 1:2] + t[None] * (boxes_w[:, 3:4] - boxes_w[:, 1:2])
    gx = bx / w * 2.0 - 1.0  # align_corners=False: -1 / 1 are the window's outer edges
    gy = by / h * 2.0 - 1.0
    grid = np.empty((n, m, m, 2), dtype=np.float32)
    grid[..., 0] = gx[:, None, :]
    grid[..., 1] = gy[:, :, None]
    inp = torch.from_numpy(win)[None]
    g = torch.from_numpy(grid).reshape(1, n * m, m, 2)
    with torch.no_grad():
        res = F.grid_sample(inp, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        res = res.reshape(4, n, m, m).permute(1, 0, 2, 3)
        if k > 1:
            res = F.avg_pool2d(res, kernel_size=k, stride=k)
    return res.numpy()


def _resample(level: ImageLevel, boxes: np.ndarray, out_px: int) -> np.ndarray:
    """Crops ``(n, 3, out_px, out_px)`` uint8 of level-pixel ``boxes`` from one window read."""
    x0 = max(math.floor(boxes[:, 0].min()) - 1, -1)
    y0 = max(math.floor(boxes[:, 1].min()) - 1, -1)
    h, w = level.shape
    x1 = min(math.ceil(boxes[:, 2].max()) + 1, w + 1)
    y1 = min(math.ceil(boxes[:, 3].max()) + 1, h + 1)
    area = (x1 - x0) * (y1 - y0)
    box_area = float(np.sum((boxes[:, 2] - boxes[:, 0] + 2) * (boxes[:, 3] - boxes[:, 1] + 2)))
    sparse_win = area > MIN_SPLIT_PX and area > SPARSE_RATIO * box_area
    if len(boxes) > 1 and (area > MAX_WINDOW_PX or sparse_win):
        # too big or mostly empty (sparse spots): split along the longer axis and recurse
        axis = 0 if (x1 - x0) >= (y1 - y0) else 1
        order = np.argsort(boxes[:, axis] + boxes[:, axis + 2], kind="stable")
        half = len(order) // 2
        out = np.empty((len(boxes), 3, out_px, out_px), dtype=np.uint8)
        out[order[:half]] = _resample(level, boxes[order[:half]], out_px)
        out[order[half:]] = _resample(level, boxes[order[half:]], out_px)
        return out
    # the window holds the batch's boxes (clipped to the image) plus one pixel of coverage-0 margin outside the
    # image; samples beyond it read zeros (grid_sample's padding), so coverage is exact everywhere
    win = _read_window(level, x0, y0, x1, y1)
    res = _sample_window(win, boxes - np.array([x0, y0, x0, y0], dtype=np.float64), out_px)
    rgb, cov = res[:, :3], np.clip(res[:, 3:4], 0.0, 1.0)
    rgb = rgb + (1.0 - cov) * WHITE
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def read_crops(
    section: Section,
    centers_fullres: np.ndarray,
    *,
    size_um: float,
    out_px: int = DEFAULT_PX,
    names: Sequence[str] | None = None,
    return_inside: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Read square crops of side ``size_um`` centred on ``centers_fullres``, resampled to ``out_px`` pixels.

    One window (the union of the batch's boxes, on the level chosen by :meth:`Section.level_for`) is read and all
    crops are resampled at once (bilinear, ``k x k`` samples per output pixel averaged when downsampling, as
    :func:`torchvision.ops.roi_align` with an adaptive sampling ratio; one :func:`torch.nn.functional.grid_sample`
    call). Pass spatially compact batches (see :func:`spatial_order`); very spread-out batches are split
    into several windows automatically.

    Parameters
    ----------
    section
        Section view from :func:`stalign._section.get_section`, with an image.
    centers_fullres
        ``(B, 2)`` crop centres ``(x, y)`` in full-resolution pixels.
    size_um
        Side of the square crop in micrometres.
    out_px
        Side of the returned crops in pixels.
    names
        Spot names, for error messages.
    return_inside
        Also return the fraction of each crop that lies inside the image.

    Returns
    -------
    uint8 array ``(B, 3, out_px, out_px)``; parts outside the image are white. With ``return_inside=True``, also
    a float32 ``(B,)`` array of inside fractions.
    """
    _check_size(size_um, out_px)
    centres = np.asarray(centers_fullres, dtype=np.float64).reshape(-1, 2)
    level = choose_level(section, size_um=size_um, out_px=out_px)
    check_centres_on_image(section, centres, names)
    bfull = boxes_fullres(section, centres, size_um=size_um)
    if len(centres) == 0:
        crops = np.zeros((0, 3, out_px, out_px), dtype=np.uint8)
    else:
        crops = _resample(level, bfull / level.fullres_per_px, out_px)
    if return_inside:
        return crops, inside_fraction(section, bfull)
    return crops


def _hilbert_index(ix: np.ndarray, iy: np.ndarray, order: int) -> np.ndarray:
    """Position along a Hilbert curve of side ``2**order`` (vectorised)."""
    x, y = ix.astype(np.int64).copy(), iy.astype(np.int64).copy()
    n = 1 << order
    d = np.zeros_like(x)
    s = n >> 1
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        flip = ~ry & rx
        x[flip] = n - 1 - x[flip]
        y[flip] = n - 1 - y[flip]
        swap = ~ry
        x[swap], y[swap] = y[swap], x[swap].copy()
        s >>= 1
    return d


def spatial_order(coords: np.ndarray, *, cell: float | None = None, offset: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """Permutation of spots along a Hilbert curve, so that consecutive chunks of spots are spatially compact.

    Parameters
    ----------
    coords
        ``(n, 2)`` spot centres.
    cell
        Grid cell size in the units of ``coords`` (default: median nearest-neighbour spacing).
    offset
        Shift of the grid (a random shift gives different, still compact, chunks per epoch).

    Returns
    -------
    ``int64`` permutation of ``range(n)``: ``coords[order]`` walks the spots along the curve.
    """
    c = np.asarray(coords, dtype=np.float64)
    n = len(c)
    if n <= 1:
        return np.arange(n)
    if cell is None:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(c).query(c, k=2)
        cell = float(np.median(d[:, 1])) or 1.0
    g = np.floor((c - c.min(axis=0) + np.asarray(offset, dtype=np.float64)) / cell).astype(np.int64)
    order = max(1, int(math.ceil(math.log2(max(int(g.max()) + 1, 2)))))
    h = _hilbert_index(g[:, 0], g[:, 1], order)
    return np.lexsort((c[:, 0], c[:, 1], h))


def crop_boxes(
    data: Any,
    *,
    size_um: float,
    out_px: int | None = None,
    table_key: str = Key.table,
    image_key: str | None = None,
    library_id: str | None = None,
) -> np.ndarray:
    """Per-spot square boxes of side ``size_um`` µm in pixels of an image level.

    Parameters
    ----------
    data
        SpatialData with a table, or AnnData in the squidpy Visium convention.
    size_um
        Side of the square in micrometres.
    out_px
        Crop size the boxes will be resampled to; selects the level with :meth:`Section.level_for`. ``None``
        returns boxes in the finest level (level 0).
    table_key, image_key, library_id
        Which table / image / library of ``data`` to use.

    Returns
    -------
    float64 array ``(n_obs, 4)``: ``(x0, y0, x1, y1)`` in intrinsic pixel coordinates of the chosen level.
    """
    _check_size(size_um, out_px)
    section = get_section(data, table_key=table_key, image_key=image_key, library_id=library_id, require_image=True)
    level = choose_level(section, size_um=size_um, out_px=out_px)
    check_centres_on_image(section, section.coords, section.table.obs_names)
    return boxes_fullres(section, section.coords, size_um=size_um) / level.fullres_per_px


def _writable_table(data: Any, table_key: str, copy: bool):
    """(object to return or None, AnnData to write into); the copy shares every element but the table."""
    from .._utils import copy_data, get_table

    target = copy_data(data, table_key=table_key) if copy else data
    return (target if copy else None), get_table(target, table_key=table_key)


def _store_boxes(
    data: Any, *, size_um: float, key_added: str, table_key: str, image_key: str | None, library_id: str | None,
    copy: bool, kind: str,
) -> Any:  # fmt: skip
    section = get_section(data, table_key=table_key, image_key=image_key, library_id=library_id, require_image=True)
    boxes = crop_boxes(data, size_um=size_um, table_key=table_key, image_key=image_key, library_id=library_id)
    inside = inside_fraction(section, boxes_fullres(section, section.coords, size_um=size_um))
    level0 = section.images[0]
    params = {
        "kind": kind,
        "size_um": float(size_um),
        "size_px_level0": float(size_um / section.microns_per_pixel / level0.fullres_per_px),
        "image": level0.name,
        "fullres_per_px": float(level0.fullres_per_px),
        "microns_per_pixel": float(section.microns_per_pixel),
        "library_id": section.library_id,
        "n_partly_outside": int((inside < 1).sum()),
    }
    ret, table = _writable_table(data, table_key, copy)
    save_data(table, attr="obsm", key=key_added, data=boxes)
    save_data(table, attr="uns", key=key_added, data={"params": params})
    return ret


def spot_crops(
    data: Any,
    *,
    size_um: float = SPOT_UM,
    key_added: str = Key.spot_bbox,
    table_key: str = Key.table,
    image_key: str | None = None,
    library_id: str | None = None,
    copy: bool = False,
) -> Any:
    """Store each spot's crop box (side ``size_um`` µm) as level-0 pixel coordinates.

    Pixel crops are never stored; read them lazily with :func:`read_crops` or :class:`stalign.pp.SpotDataset`.

    Parameters
    ----------
    data
        SpatialData with a table (written into ``data.tables[table_key]``), or AnnData in the squidpy convention.
    size_um
        Side of the square spot crop in micrometres.
    key_added
        Key in ``obsm`` and ``uns``.
    table_key, image_key, library_id
        Which table / image / library to use.
    copy
        Return a modified copy instead of writing in place (for SpatialData: a new SpatialData sharing every
        element but a copied table).

    Returns
    -------
    ``None``, or a copy of ``data`` if ``copy=True``. Writes

    - ``obsm[key_added]``: float ``(n_obs, 4)`` boxes ``(x0, y0, x1, y1)`` in the finest image level's pixels;
    - ``uns[key_added]["params"]``: ``size_um``, the level's name and scale, and how many boxes cross the border.
    """
    return _store_boxes(
        data, size_um=size_um, key_added=key_added, table_key=table_key, image_key=image_key,
        library_id=library_id, copy=copy, kind="spot",
    )  # fmt: skip


def niche_crops(
    data: Any,
    *,
    size_um: float = NICHE_UM,
    key_added: str = Key.niche_bbox,
    table_key: str = Key.table,
    image_key: str | None = None,
    library_id: str | None = None,
    copy: bool = False,
) -> Any:
    """Store each spot's niche crop box (side ``size_um`` µm, centred on the spot) as level-0 pixel coordinates.

    Parameters
    ----------
    data
        SpatialData with a table (written into ``data.tables[table_key]``), or AnnData in the squidpy convention.
    size_um
        Side of the square niche crop in micrometres.
    key_added
        Key in ``obsm`` and ``uns``.
    table_key, image_key, library_id
        Which table / image / library to use.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None``, or a copy of ``data`` if ``copy=True``. Writes ``obsm[key_added]`` (``(n_obs, 4)`` level-0 pixel
    boxes) and ``uns[key_added]["params"]``.
    """
    return _store_boxes(
        data, size_um=size_um, key_added=key_added, table_key=table_key, image_key=image_key,
        library_id=library_id, copy=copy, kind="niche",
    )  # fmt: skip
