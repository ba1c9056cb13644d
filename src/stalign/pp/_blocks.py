"""Window reads of image levels: lazy levels through a bounded cache of decoded blocks, and derived coarser levels.

Reading a crop window from a lazy (dask, e.g. zarr-backed) level decodes every stored chunk under it. Batches of
neighbouring spots (:func:`stalign.pp.spatial_order`) and the spot and niche windows of one batch share chunks, so
without a cache each chunk is decompressed again for every batch that touches it. And a slide stored at a single
scale (what ``Image2DModel.parse`` gives without ``scale_factors``) has no level near the model's crop resolution
(100 µm → 32 px is ~3 µm/px, a 0.5 µm/px scan is 6× finer), so every batch read and resampled full-resolution
windows, ~40× the pixels the crops need.

:class:`LevelReader` fixes both:

- A lazy level is read in **blocks** (whole stored chunks, grouped to at least :data:`MIN_BLOCK` px a side) kept in a
  :class:`BlockCache`, a least-recently-used store bounded in bytes (:data:`CACHE_MB`); a window is assembled from
  its blocks, so a chunk is decoded once while it stays in the cache.
- When the crop's resolution is 2× or more coarser than the best stored level, the reader reads a **derived level**
  instead: successive factor-2 rounded block means (:func:`stalign._build._block_mean`, the arithmetic of the lazy
  pyramids of :func:`stalign._build.extend_pyramid`) of the stored level, computed block by block from the stored
  chunks under each block and cached like any block. Only blocks under the crops are ever derived, so memory stays
  bounded by the cache whatever the slide's size.

A derived level is what a factor-2 pyramid of the file would hold, so crops read from it differ from crops resampled
straight from full resolution about as much as crops from a stored pyramid do: on real H&E at 0.5 µm/px (her2st C2,
``tests/pp/test_blocks.py``) a mean absolute difference of 2.0 (100 µm crops) / 2.7 (200 µm) of 255, 99th percentile
14 / 16, where spatialdata's own pyramid of the same image gives 2.2 / 2.9; and at most 3 from the crops of that
pyramid (spatialdata truncates its block means, these are rounded). Crops stay a function of the level's pixels
alone: the same bytes for any batch, chunking or cache size. In-memory (numpy) levels are sliced directly, as before.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._build import _block_mean
from .._section import ImageLevel, Section, fine_enough

logger = logging.getLogger(__name__)

#: Default budget of a :class:`BlockCache` in MB (one per :class:`~stalign.pp.SpotDataset`, shared by its sections;
#: one per :class:`~stalign._section.Section` otherwise). 0 turns caching and derived levels off.
CACHE_MB = 64
#: Smallest side (px of its level) of a cached block: small stored chunks (256² in spatialdata's pyramids) are grouped.
MIN_BLOCK = 512

Window = tuple[int, int, int, int]


class BlockCache:
    """Least-recently-used store of decoded image blocks, bounded in bytes.

    Parameters
    ----------
    max_mb
        Budget in MB (default :data:`CACHE_MB`); a block larger than the whole budget is never stored.

    Notes
    -----
    Safe to share between threads. Pickles empty (a :class:`~torch.utils.data.DataLoader` worker starts with a cold
    cache of the same budget), so sending a dataset to workers never copies decoded pixels.
    """

    def __init__(self, max_mb: float | None = None) -> None:
        self.max_bytes = int(max(0.0, float(CACHE_MB if max_mb is None else max_mb)) * 2**20)
        self._blocks: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        #: keys of the levels crops are read from: their blocks are stored; blocks of the intermediate levels that a
        #: derived level is computed through are used once and dropped
        self.read_levels: set[Any] = set()
        self.reported: set[Any] = set()  # levels whose blocks do not fit, already logged

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"] / 2**20)

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def enabled(self) -> bool:
        """Whether the budget is above 0."""
        return self.max_bytes > 0

    def get(self, key: Any) -> np.ndarray | None:
        """The block stored under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            block = self._blocks.get(key)
            if block is None:
                self.misses += 1
                return None
            self._blocks.move_to_end(key)
            self.hits += 1
            return block

    def put(self, key: Any, block: np.ndarray) -> None:
        """Store ``block``, evicting the least recently used blocks beyond the budget."""
        size = int(block.nbytes)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._blocks.pop(key, None)
            if old is not None:
                self.nbytes -= int(old.nbytes)
            while self._blocks and self.nbytes + size > self.max_bytes:
                _, dropped = self._blocks.popitem(last=False)
                self.nbytes -= int(dropped.nbytes)
            self._blocks[key] = block
            self.nbytes += size

    def clear(self) -> None:
        """Drop every block (the budget and the counters stay)."""
        with self._lock:
            self._blocks.clear()
            self.nbytes = 0


def section_cache(section: Section) -> BlockCache:
    """The block cache of ``section`` (created with the default budget on first use)."""
    if section.block_cache is None:
        section.block_cache = BlockCache()
    return section.block_cache


def is_lazy(data: Any) -> bool:
    """Whether a level's pixels are computed on read (a dask array)."""
    import dask.array as da

    return isinstance(data, da.Array)


def read_direct(data: Any, windows: Sequence[Window]) -> list[np.ndarray]:
    """``(3, y1-y0, x1-x0)`` uint8 RGB of windows ``(x0, y0, x1, y1)`` that lie inside ``data`` ``(c, y, x)``.

    A lazy level is read with one synchronous ``dask.compute`` for all windows: building and running a dask graph
    costs milliseconds, which dominated reading the many small windows of a sparse legacy-ST grid.
    """
    slices = [data[:3, y0:y1, x0:x1] for x0, y0, x1, y1 in windows]
    if any(hasattr(a, "compute") for a in slices):
        import dask

        slices = dask.compute(*slices, scheduler="synchronous")
    return [np.asarray(a).astype(np.uint8, copy=False) for a in slices]


def _chunk_side(data: Any, axis: int) -> int:
    chunks = getattr(data, "chunks", None)
    if not chunks or not isinstance(chunks[axis], tuple):
        return int(data.shape[axis])
    return int(max(chunks[axis]))


def _grouped(chunk: int) -> int:
    """Block side: whole stored chunks, as many as make at least :data:`MIN_BLOCK` px."""
    return chunk * max(1, math.ceil(MIN_BLOCK / chunk))


def _halved(parent_block: int) -> int:
    """Block side of a derived level: whole parent blocks under every block.

    Half the parent's side (one parent block each) while that is at least :data:`MIN_BLOCK`, else the parent's side
    (2x2 parent blocks each).
    """
    return parent_block // 2 if parent_block % 2 == 0 and parent_block // 2 >= MIN_BLOCK else parent_block


@dataclass
class _Source:
    """One level as blocks: stored (``data``, read through dask) or derived (one halving of ``parent``)."""

    key: Any
    shape: tuple[int, int]
    block: tuple[int, int]
    data: Any = None
    parent: _Source | None = None

    def bounds(self, iy: int, ix: int) -> Window:
        by, bx = self.block
        return ix * bx, iy * by, min((ix + 1) * bx, self.shape[1]), min((iy + 1) * by, self.shape[0])

    def blocks_under(self, win: Window) -> list[tuple[int, int]]:
        x0, y0, x1, y1 = win
        by, bx = self.block
        return [(iy, ix) for iy in range(y0 // by, (y1 - 1) // by + 1) for ix in range(x0 // bx, (x1 - 1) // bx + 1)]


def _stored(level: ImageLevel) -> _Source:
    data = level.data
    key = ("level", data.name)
    h, w = level.shape
    return _Source(key, (h, w), (_grouped(_chunk_side(data, -2)), _grouped(_chunk_side(data, -1))), data=data)


def _derive(parent: _Source) -> _Source:
    h, w = parent.shape
    block = (_halved(parent.block[0]), _halved(parent.block[1]))
    key = ("halved", parent.key)
    return _Source(key, (h // 2, w // 2), block, parent=parent)


def _assemble(source: _Source, win: Window, blocks: dict) -> np.ndarray:
    """Window ``win`` of ``source`` out of its ``blocks`` (``{(iy, ix): (3, by, bx)}``); a view when it lies in one."""
    x0, y0, x1, y1 = win
    under = source.blocks_under(win)
    if len(under) == 1:
        bx0, by0, _, _ = source.bounds(*under[0])
        return blocks[under[0]][:, y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
    out = np.empty((3, y1 - y0, x1 - x0), dtype=np.uint8)
    for iy, ix in under:
        bx0, by0, bx1, by1 = source.bounds(iy, ix)
        a0, a1, b0, b1 = max(x0, bx0), min(x1, bx1), max(y0, by0), min(y1, by1)
        out[:, b0 - y0 : b1 - y0, a0 - x0 : a1 - x0] = blocks[iy, ix][:, b0 - by0 : b1 - by0, a0 - bx0 : a1 - bx0]
    return out


def _load(source: _Source, wanted: Sequence[tuple[int, int]], cache: BlockCache) -> dict:
    """Blocks ``wanted`` of ``source``: from the cache, else decoded (stored) or derived from the parent's blocks."""
    keep = source.key in cache.read_levels
    out, missing = {}, []
    for ij in dict.fromkeys(wanted):
        block = cache.get((source.key, ij)) if keep else None
        if block is None:
            missing.append(ij)
        else:
            out[ij] = block
    if not missing:
        return out
    if source.parent is None:
        made = read_direct(source.data, [source.bounds(*ij) for ij in missing])
    else:  # one block at a time: the transient is the stored chunks under one block, however many are missing
        made = [_derived_block(source, ij, cache) for ij in missing]
    for ij, block in zip(missing, made, strict=True):
        out[ij] = block
        if keep:
            cache.put((source.key, ij), block)
    return out


def _derived_block(source: _Source, ij: tuple[int, int], cache: BlockCache) -> np.ndarray:
    """Block ``ij`` of a derived level: the rounded 2x2 block mean of the parent region under it."""
    parent = source.parent
    x0, y0, x1, y1 = source.bounds(*ij)
    ph, pw = parent.shape
    region = (2 * x0, 2 * y0, min(2 * x1, pw), min(2 * y1, ph))  # whole parent blocks, from an even pixel
    up = _assemble(parent, region, _load(parent, parent.blocks_under(region), cache))
    return np.ascontiguousarray(np.moveaxis(_block_mean(np.moveaxis(up, 0, -1), y1 - y0, x1 - x0), -1, 0))


@dataclass
class LevelReader:
    """Reads windows of the level a crop is resampled from: a stored level, or a level derived from one.

    Attributes
    ----------
    shape
        ``(height, width)`` of the level read, in its pixels.
    fullres_per_px
        Full-resolution pixels per pixel of the level read.
    """

    shape: tuple[int, int]
    fullres_per_px: float
    _level: ImageLevel
    _source: _Source | None = None
    _cache: BlockCache | None = None

    def read(self, windows: Sequence[Window]) -> list[np.ndarray]:
        """``(3, y1-y0, x1-x0)`` uint8 RGB of windows ``(x0, y0, x1, y1)`` that lie inside the level."""
        if self._source is None:
            return read_direct(self._level.data, windows)
        blocks = _load(self._source, [b for win in windows for b in self._source.blocks_under(win)], self._cache)
        return [_assemble(self._source, win, blocks) for win in windows]


def level_reader(section: Section, level: ImageLevel, *, fullres_per_out_px: float | None) -> LevelReader:
    """The reader of ``level`` (chosen by :meth:`Section.level_for`) for crops of ``fullres_per_out_px``.

    A lazy level goes through the section's :class:`BlockCache` (:func:`section_cache`); when the crop's resolution is
    at least 2× coarser, the reader reads the coarsest factor-2 derived level that is still at least as fine.
    In-memory levels, a cache of budget 0 and stored chunks larger than the budget are read directly.
    """
    direct = LevelReader(level.shape, level.fullres_per_px, level)
    cache = section_cache(section)
    if not cache.enabled or not is_lazy(level.data):
        return direct
    source, factor = _stored(level), 1
    if fullres_per_out_px is not None:
        while min(source.shape) >= 2 and fine_enough(level.fullres_per_px * factor * 2, fullres_per_out_px):
            source, factor = _derive(source), factor * 2
    if 3 * source.block[0] * source.block[1] > cache.max_bytes:
        if source.key not in cache.reported:
            cache.reported.add(source.key)
            logger.info(
                "Level %r: blocks of %dx%d px do not fit the %d MB block cache (chunks that large are decoded at "
                "every read); store the image in smaller chunks.", level.name, source.block[1], source.block[0],
                cache.max_bytes >> 20,
            )  # fmt: skip
        if factor == 1:
            return direct
    cache.read_levels.add(source.key)
    return LevelReader(source.shape, level.fullres_per_px * factor, level, source, cache)
