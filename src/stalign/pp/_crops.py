"""Spot and niche crops defined in micrometres, read lazily and resampled in batches.

One module (~540 lines, over the ~450 guideline): the crop boxes, the choice of a pyramid level and the resampling
share the coordinate conventions below; reading image blocks lives in :mod:`stalign.pp._blocks`.

Geometry
--------
A crop of side ``size_um`` centred on a spot covers ``size_um / microns_per_pixel`` full-resolution pixels. To
produce an ``out_px`` crop, the coarsest pyramid level that is at least as fine as ``size_um / out_px`` µm/px is
read (:meth:`stalign._section.Section.level_for`), so a 100 µm crop covers the same tissue on a 0.25 µm/px scan,
a hires PNG and a 12 µm/px lowres PNG alike. A lazy (e.g. zarr-backed) level is read through a bounded cache of
decoded blocks, and when it is 2× or more finer than the crop needs (a single-scale slide), through a factor-2 level
derived from it block by block (:mod:`stalign.pp._blocks`).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import NICHE_UM, SPOT_UM, Key
from .._docs import inject
from .._section import ImageLevel, Section, get_section
from .._utils import save_data
from .._validators import check_key
from ._blocks import LevelReader, level_reader

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

#: Largest window (in pixels of the level read) fetched at once; larger batches are split spatially.
MAX_WINDOW_PX = 4096 * 4096
#: A window larger than this many pixels and than ``SPARSE_RATIO`` times the summed box areas is split in two.
MIN_SPLIT_PX = 256 * 256
SPARSE_RATIO = 2.0
#: Most patch pixels gathered at once (crops x taps², bounds the memory of one resampling pass).
MAX_SAMPLES = 1 << 22
#: Default output size (pixels) of a crop.
DEFAULT_PX = 64
WHITE = 255.0


def _check_size(size_um: float, out_px: int | None = None) -> None:
    if isinstance(size_um, bool) or not (isinstance(size_um, int | float) and np.isfinite(size_um) and size_um > 0):
        msg = f"size_um={size_um!r}; the crop side must be a positive number of micrometres (e.g. 100)."
        raise ValueError(msg)
    if out_px is not None and (isinstance(out_px, bool) or not isinstance(out_px, int | np.integer) or out_px < 1):
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


def _supersample(boxes: np.ndarray, out_px: int) -> np.ndarray:
    """Per-box samples per output pixel along each axis: ``ceil(box side / out_px)`` (roi_align's adaptive ratio)."""
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return np.maximum(1, np.ceil(side / out_px - 1e-6)).astype(np.int64)


def _taps(boxes: np.ndarray) -> np.ndarray:
    """Pixels spanned along an axis by one box's resampling taps: ``ceil(side) + 2`` (the longer side).

    A function of the box alone (never of the batch), so every crop of a given size is computed by the same
    arithmetic whatever other crops share its batch or window.
    """
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return (np.ceil(side - 1e-6) + 2).astype(np.int64)


def _axis_weights(lo: np.ndarray, hi: np.ndarray, out_px: int, k: int, n_taps: int, size: int):
    """Resampling weights along one axis, in absolute level-pixel coordinates.

    Output pixel ``o`` of a box ``[lo, hi)`` averages ``k`` bilinear samples at ``lo + (j + 0.5) / m * (hi - lo)``,
    ``j = o k .. o k + k - 1``, ``m = out_px k`` (pixel ``i`` has its centre at ``i + 0.5``). Taps on pixels outside
    ``[0, size)`` get weight 0, so the weights' row sum is the output pixel's coverage by the image.

    Returns
    -------
    ``start`` ``(n,)`` int64, the first pixel of each box's ``n_taps`` taps, and ``W`` ``(n, out_px, n_taps)``
    float64 with ``crop_axis = W @ pixels[start : start + n_taps]``.
    """
    n, m = len(lo), out_px * k
    t = (np.arange(m, dtype=np.float64) + 0.5) / m
    pos = lo[:, None] + t[None, :] * (hi - lo)[:, None] - 0.5  # pixel-index space: the centre of pixel i is i
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    start = i0[:, 0]
    local = i0 - start[:, None]
    if local[:, -1].max() + 1 >= n_taps:  # pragma: no cover - guarded by _taps
        msg = "internal error: resampling taps exceed the patch size."
        raise RuntimeError(msg)
    w = np.stack([1.0 - frac, frac], axis=-1) / k  # (n, m, 2)
    pix = i0[:, :, None] + np.arange(2)  # absolute pixel of each tap
    w = np.where((pix >= 0) & (pix < size), w, 0.0)
    col = local[:, :, None] + np.arange(2)
    row = np.repeat(np.arange(out_px), k)[None, :, None]
    flat = (np.arange(n)[:, None, None] * out_px + row) * n_taps + col
    W = np.bincount(flat.ravel(), weights=w.ravel(), minlength=n * out_px * n_taps)
    return start, W.reshape(n, out_px, n_taps)


def _sample_patches(
    win: np.ndarray, origin: tuple[int, int], boxes: np.ndarray, out_px: int, shape: tuple[int, int]
) -> np.ndarray:
    """Crops ``(n, 3, out_px, out_px)`` uint8 of level-pixel ``boxes`` (all of one size class) from a window.

    ``win`` is a ``(3, h, w)`` uint8 window of the level whose top-left pixel is ``origin = (x0, y0)`` and which
    holds every in-image pixel the boxes touch. The result of each crop depends only on its box and the level's
    pixels: the window only caches them.
    """
    import torch

    n = len(boxes)
    k = int(_supersample(boxes[:1], out_px)[0])
    P = int(_taps(boxes[:1])[0])
    step = max(1, MAX_SAMPLES // (P * P))
    if n > step:  # bound the memory of the gathered patches
        return np.concatenate(
            [_sample_patches(win, origin, boxes[a : a + step], out_px, shape) for a in range(0, n, step)]
        )
    H, W_ = shape
    x0, y0 = origin
    sx, wx = _axis_weights(boxes[:, 0], boxes[:, 2], out_px, k, P, W_)
    sy, wy = _axis_weights(boxes[:, 1], boxes[:, 3], out_px, k, P, H)
    _, h, w = win.shape
    # taps outside the image have weight 0: clamp them onto the window (any finite value does)
    cols = np.clip(sx[:, None] + np.arange(P), x0, x0 + w - 1) - x0
    rows = np.clip(sy[:, None] + np.arange(P), y0, y0 + h - 1) - y0
    patch = win[:, rows[:, :, None], cols[:, None, :]]  # (3, n, P, P) uint8
    patch = torch.from_numpy(np.ascontiguousarray(patch.transpose(1, 0, 2, 3), dtype=np.float32))
    ty = torch.from_numpy(wy.astype(np.float32))[:, None]  # (n, 1, out, P)
    tx = torch.from_numpy(wx.astype(np.float32))[:, None].transpose(-1, -2)  # (n, 1, P, out)
    with torch.no_grad():
        rgb = torch.matmul(torch.matmul(ty, patch), tx).numpy()
    cov = np.clip(wy.sum(-1)[:, :, None] * wx.sum(-1)[:, None, :], 0.0, 1.0)[:, None]  # (n, 1, out, out)
    rgb = rgb + ((1.0 - cov) * WHITE).astype(np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _plan_windows(shape: tuple[int, int], boxes: np.ndarray, rows: np.ndarray, plan: list) -> None:
    """Append ``(rows, (x0, y0, x1, y1))`` windows covering ``boxes[rows]`` (all of one size class) to ``plan``."""
    h, w = shape
    b = boxes[rows]
    x0 = min(max(math.floor(b[:, 0].min()) - 1, 0), w - 1)
    y0 = min(max(math.floor(b[:, 1].min()) - 1, 0), h - 1)
    x1 = max(min(math.ceil(b[:, 2].max()) + 1, w), x0 + 1)
    y1 = max(min(math.ceil(b[:, 3].max()) + 1, h), y0 + 1)
    area = (x1 - x0) * (y1 - y0)
    box_area = float(np.sum((b[:, 2] - b[:, 0] + 2) * (b[:, 3] - b[:, 1] + 2)))
    sparse_win = area > MIN_SPLIT_PX and area > SPARSE_RATIO * box_area
    if len(rows) > 1 and (area > MAX_WINDOW_PX or sparse_win):
        # too big or mostly empty (sparse spots): split along the longer axis and recurse
        axis = 0 if (x1 - x0) >= (y1 - y0) else 1
        order = np.argsort(b[:, axis] + b[:, axis + 2], kind="stable")
        half = len(order) // 2
        _plan_windows(shape, boxes, rows[order[:half]], plan)
        _plan_windows(shape, boxes, rows[order[half:]], plan)
        return
    # the window holds every in-image pixel the boxes touch; taps outside the image carry weight 0
    plan.append((rows, (x0, y0, x1, y1)))


def _resample(reader: LevelReader, boxes: np.ndarray, out_px: int) -> np.ndarray:
    """Crops ``(n, 3, out_px, out_px)`` uint8 of level-pixel ``boxes``, read through compact windows.

    Each crop is a fixed linear function of the level's pixels under its box (:func:`_axis_weights`), so it is
    identical whatever batch, window or worker reads it. Windows are read in groups of at most
    :data:`MAX_WINDOW_PX` pixels (one :meth:`LevelReader.read` per group).
    """
    out = np.empty((len(boxes), 3, out_px, out_px), dtype=np.uint8)
    plan: list = []
    size_class = _taps(boxes) * 1000 + _supersample(boxes, out_px)
    for c in np.unique(size_class):  # boxes of different sizes: windows per size class
        _plan_windows(reader.shape, boxes, np.flatnonzero(size_class == c), plan)
    a = 0
    while a < len(plan):
        z, px = a, 0
        while z < len(plan) and (z == a or px + _area(plan[z][1]) <= MAX_WINDOW_PX):
            px += _area(plan[z][1])
            z += 1
        wins = reader.read([win for _, win in plan[a:z]])
        for (rows, (x0, y0, _, _)), win in zip(plan[a:z], wins, strict=True):
            out[rows] = _sample_patches(win, (x0, y0), boxes[rows], out_px, reader.shape)
        a = z
    return out


def _area(win: tuple[int, int, int, int]) -> int:
    return (win[2] - win[0]) * (win[3] - win[1])


def read_crops(
    data: AnnData | SpatialData,
    centers_fullres: np.ndarray,
    *,
    size_um: float,
    out_px: int = DEFAULT_PX,
    names: Sequence[str] | None = None,
    return_inside: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Read square crops of side ``size_um`` centred on ``centers_fullres``, resampled to ``out_px`` pixels.

    One window (the union of the batch's boxes, on the level chosen by :meth:`Section.level_for`, or on a factor-2
    level derived from a lazy one that is 2× or more finer than needed) is read and all crops are resampled from it:
    bilinear, ``k x k`` samples per output pixel averaged when downsampling (as
    :func:`torchvision.ops.roi_align` with an adaptive sampling ratio), applied as separable weight matrices
    computed in the level's absolute pixel coordinates. A crop therefore does not depend on which other spots share
    its batch or window (same bytes for any batch size or worker). Pass spatially compact batches (see
    :func:`spatial_order`); very spread-out batches are split into several windows automatically.

    Parameters
    ----------
    data
        A section with an image: SpatialData, or AnnData in the squidpy Visium convention.
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
    numpy.ndarray | tuple[numpy.ndarray, numpy.ndarray]
        uint8 array ``(B, 3, out_px, out_px)``; parts outside the image are white. With ``return_inside=True``, also
        a float32 ``(B,)`` array of inside fractions.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> centres = sdata.tables["table"].obsm["spatial"][:8]  # full-resolution pixels
    >>> crops = sta.pp.read_crops(sdata, centres, size_um=100, out_px=32)
    >>> crops.shape, crops.dtype
    ((8, 3, 32, 32), dtype('uint8'))
    """
    # a view built by the caller (the batch dataset's, without its table) is used as it is
    section = data if isinstance(data, Section) else get_section(data, require_image=True)
    _check_size(size_um, out_px)
    centres = np.asarray(centers_fullres, dtype=np.float64).reshape(-1, 2)
    level = choose_level(section, size_um=size_um, out_px=out_px)
    check_centres_on_image(section, centres, names)
    bfull = boxes_fullres(section, centres, size_um=size_um)
    if len(centres) == 0:
        crops = np.zeros((0, 3, out_px, out_px), dtype=np.uint8)
    else:
        reader = level_reader(section, level, fullres_per_out_px=size_um / out_px / section.microns_per_pixel)
        crops = _resample(reader, bfull / reader.fullres_per_px, out_px)
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

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> xy = sdata.tables["table"].obsm["spatial"]
    >>> order = sta.pp.spatial_order(xy)
    >>> sorted(order) == list(range(len(xy)))  # a permutation of the spots
    True
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
    data: AnnData | SpatialData,
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

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> boxes = sta.pp.crop_boxes(sdata, size_um=100, out_px=32)
    >>> boxes.shape
    (3639, 4)
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
    check_key(key_added)
    _check_size(size_um)
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


@inject
def spot_crops(
    data: AnnData | SpatialData,
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
    {copy}

    Returns
    -------
    AnnData | SpatialData | None
        ``None``, or a copy of ``data`` if ``copy=True``. Writes

        - ``obsm[key_added]``: float ``(n_obs, 4)`` boxes ``(x0, y0, x1, y1)`` in the finest image level's pixels;
        - ``uns[key_added]["params"]``: ``size_um``, the level's name and scale, and how many boxes cross the border.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> sta.pp.spot_crops(sdata, size_um=100)
    >>> sdata.tables["table"].obsm["stalign_spot_bbox"].shape
    (3639, 4)
    """
    return _store_boxes(
        data, size_um=size_um, key_added=key_added, table_key=table_key, image_key=image_key,
        library_id=library_id, copy=copy, kind="spot",
    )  # fmt: skip


def niche_crops(
    data: AnnData | SpatialData,
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
    AnnData | SpatialData | None
        ``None``, or a copy of ``data`` if ``copy=True``. Writes ``obsm[key_added]`` (``(n_obs, 4)`` level-0 pixel
        boxes) and ``uns[key_added]["params"]``.

    Examples
    --------
    >>> import stalign as sta
    >>> sdata = sta.datasets.dlpfc("151673")
    >>> sta.pp.niche_crops(sdata, size_um=200)
    >>> sdata.tables["table"].obsm["stalign_niche_bbox"].shape
    (3639, 4)
    """
    return _store_boxes(
        data, size_um=size_um, key_added=key_added, table_key=table_key, image_key=image_key,
        library_id=library_id, copy=copy, kind="niche",
    )  # fmt: skip
