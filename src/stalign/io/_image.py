"""``io.read_image``: an H&E slide without spots (SVS, NDPI, OME-TIFF, TIFF, JPEG, PNG) as a multiscale SpatialData.

Readers
-------
- TIFF family (``.svs``, ``.ndpi``, ``.scn``, ``.bif``, ``.tif``, ``.tiff``, ``.ome.tif``): :mod:`tiffslide`, a pure
  Python reader on top of :mod:`tifffile` (installs from PyPI with no system library, unlike OpenSlide, and reads the
  vendors' metadata: Aperio ``MPP``, Leica, Philips, Hamamatsu). Its levels are zarr arrays over the file's own
  tiles, so a window read decodes only the tiles under it and the full-resolution level is never loaded whole.
  A file without a pyramid gets one built lazily (:func:`stalign._build.extend_pyramid`).
- JPEG / PNG: no random access exists in these formats, so the file is decoded once (its pixels bound the memory)
  and its factor-2 pyramid is computed in memory; use a tiled TIFF for slides larger than memory.

Scale (µm per full-resolution pixel), first found of: ``microns_per_pixel=``; OME ``PhysicalSizeX`` with its unit;
the vendor's calibration (Aperio ``MPP``, Leica / Philips metadata); the TIFF ``XResolution`` + ``ResolutionUnit``
tags, JPEG JFIF density or PNG ``pHYs`` (a resolution coarser than :data:`MAX_TAG_MICRONS_PER_PIXEL` is the 72/96 dpi
placeholder that image libraries write, not a calibration, and is ignored). Nothing found is an error.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._build import CHUNK, extend_pyramid, image_key, multiscale_image
from .._constants import IMAGE_SUFFIXES, SLIDE_SUFFIXES, Key
from .._validators import check_number

logger = logging.getLogger(__name__)

#: A resolution tag / dpi giving more µm per pixel than this is a placeholder (72 dpi = 352.8 µm/px), not a scan's
#: calibration: a 100 µm spot would span 2 pixels.
MAX_TAG_MICRONS_PER_PIXEL = 50.0
#: A stored chunk larger than this (pixels) is a single-strip / single-block image: read it through a memory map
#: when uncompressed, else decode it once rather than at every window read.
MAX_CHUNK_PX = 4096 * 4096
#: µm per unit of the OME ``PhysicalSizeXUnit`` values.
_UNIT_UM = {"pm": 1e-6, "nm": 1e-3, "µm": 1.0, "μm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "dm": 1e5, "m": 1e6}


def _default_name(path: Path) -> str:
    name = path.name
    for suffix in sorted((*IMAGE_SUFFIXES, ".ome"), key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    name = name[:-4] if name.lower().endswith(".ome") else name
    return re.sub(r"[^0-9A-Za-z_.-]", "_", name) or "slide"


def _ome_microns_per_pixel(xml: str | None) -> float | None:
    """``PhysicalSizeX`` of the first OME ``Pixels`` element, in µm (``None`` when absent)."""
    if not xml:
        return None
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        logger.warning("The OME-XML metadata does not parse; ignoring it.")
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Pixels":
            size = el.get("PhysicalSizeX")
            if size is None:
                return None
            unit = el.get("PhysicalSizeXUnit", "µm")
            if unit not in _UNIT_UM:
                logger.warning("OME PhysicalSizeXUnit %r is not a length unit; ignoring PhysicalSizeX.", unit)
                return None
            return float(size) * _UNIT_UM[unit]
    return None


def _plausible_tag(mpp: float | None, *, what: str) -> float | None:
    """A resolution-tag µm/px, or ``None`` when it is absent or a placeholder (see the module docstring)."""
    if mpp is None or not np.isfinite(mpp) or mpp <= 0:
        return None
    if mpp > MAX_TAG_MICRONS_PER_PIXEL:
        logger.info(
            "%s gives %.1f µm/px (%.0f dpi): a placeholder, not a calibration; ignored.", what, mpp, 25400 / mpp
        )
        return None
    return float(mpp)


def _lazy_rgb(arr, axes: str, *, what: str):
    """A lazy ``(c, y, x)`` uint8 RGB view of a level stored with ``axes`` (``YXS``, ``CYX`` or ``YX``)."""
    import dask.array as da

    if axes == "YXS":
        arr = arr.transpose(2, 0, 1)
    elif axes == "YX":
        arr = arr[None]
    elif axes != "CYX":
        msg = f"{what}: images with axes {axes!r} are not supported; expected RGB (YXS/CYX) or grayscale (YX)."
        raise ValueError(msg)
    c = arr.shape[0]
    if c in (1, 2):  # gray (+ alpha)
        arr = da.concatenate([arr[:1]] * 3, axis=0)
    elif c >= 3:
        arr = arr[:3]
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        msg = f"{what}: pixel type {arr.dtype} is not supported; save the slide as 8- or 16-bit RGB."
        raise ValueError(msg)
    return arr


def _chunks(shape: tuple[int, ...], stored: tuple[int, ...] | None, axes: str) -> tuple[int, ...]:
    """Dask chunks: the stored tiles, grown to at least 512 px (fewer tasks) but aligned to them."""
    yx = [axes.index("Y"), axes.index("X")]
    out = list(shape)
    for ax in yx:
        tile = int(stored[ax]) if stored is not None and stored[ax] else CHUNK
        out[ax] = min(shape[ax], tile * max(1, -(-(CHUNK // 2) // tile)))
    return tuple(out)


def _stored_chunks(z) -> tuple[int, ...] | None:
    try:
        return tuple(int(c) for c in z.metadata.chunk_grid.chunk_shape)
    except AttributeError:
        return tuple(z.chunks) if getattr(z, "chunks", None) else None


def _read_slide(path: Path) -> tuple[list, dict[str, Any]]:
    """Lazy levels ``(c, y, x)`` (finest first) of a TIFF-based slide and what its metadata says about scale."""
    import dask.array as da
    import tifffile
    import tiffslide

    try:
        slide = tiffslide.TiffSlide(path)
        props = slide.properties
        group = slide.zarr_group
    except (tifffile.TiffFileError, NotImplementedError, ValueError, KeyError, IndexError, OSError) as e:
        msg = f"Cannot read {str(path)!r} as a TIFF-based slide ({type(e).__name__}: {e}); is it a valid SVS/TIFF file?"
        raise ValueError(msg) from e
    what = f"Slide {str(path)!r}"
    tf = slide.ts_tifffile
    axes = props.get("tiffslide.series-axes", "YXS")
    series_index = int(props.get("tiffslide.series-index", 0) or 0)
    series = tf.series[series_index]
    levels = []
    for i in range(slide.level_count):
        z = group[str(i)]
        stored = _stored_chunks(z)
        shape = tuple(int(s) for s in z.shape)
        if stored is not None and int(np.prod([stored[axes.index(a)] for a in "YX"])) > MAX_CHUNK_PX:
            page = series.levels[i].keyframe
            if page.is_memmappable:
                arr = tifffile.memmap(path, series=series_index, level=i, mode="r")
                logger.info("%s level %d is one uncompressed block: read through a memory map.", what, i)
            else:
                logger.warning(
                    "%s level %d is stored as one compressed block of %dx%d px, so any window needs all of it: "
                    "decoding it once. Save the slide as a tiled pyramidal TIFF to read it lazily.",
                    what, i, shape[axes.index("X")], shape[axes.index("Y")],
                )  # fmt: skip
                arr = np.asarray(z[...])
            levels.append(_lazy_rgb(da.from_array(arr, chunks=_chunks(shape, None, axes)), axes, what=what))
        else:
            levels.append(_lazy_rgb(da.from_array(z, chunks=_chunks(shape, stored, axes)), axes, what=what))
    fmt = "ome-tiff" if tf.is_ome else str(props.get("tiffslide.vendor") or "generic-tiff")
    meta = {"format": fmt, "levels_in_file": len(levels)}
    ome = _ome_microns_per_pixel(tf.ome_metadata) if tf.is_ome else None
    mpp = props.get("tiffslide.mpp-x")
    if ome is not None and np.isfinite(ome) and ome > 0:
        meta["microns_per_pixel"], meta["source"] = ome, "OME PhysicalSizeX"
    elif mpp is not None and "tiff.XResolution" not in props:  # the vendor's own calibration (Aperio MPP, ...)
        meta["microns_per_pixel"], meta["source"] = float(mpp), f"{meta['format']} metadata"
    elif _plausible_tag(None if mpp is None else float(mpp), what=f"{what}: XResolution") is not None:
        meta["microns_per_pixel"], meta["source"] = float(mpp), "TIFF XResolution/ResolutionUnit"
    return levels, meta


def _read_flat(path: Path) -> tuple[list, dict[str, Any]]:
    """The decoded pixels of a JPEG/PNG (one level) and its dpi, if any."""
    from PIL import Image, UnidentifiedImageError

    from .._files import no_pixel_limit, read_image_array

    try:
        with no_pixel_limit(), Image.open(path) as im:
            info, fmt = dict(im.info), im.format
        arr = read_image_array(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        msg = f"Cannot read {str(path)!r} as an image ({type(e).__name__}: {e}); is it a valid JPEG/PNG file?"
        raise ValueError(msg) from e
    meta: dict[str, Any] = {"format": str(fmt or path.suffix.lstrip(".")).lower(), "levels_in_file": 1}
    dpi = info.get("dpi")
    if dpi is not None:
        try:
            mpp = _plausible_tag(25400.0 / float(dpi[0]), what=f"Image {str(path)!r}: dpi")
        except (TypeError, ValueError, ZeroDivisionError, IndexError):
            mpp = None
        if mpp is not None:
            meta["microns_per_pixel"], meta["source"] = mpp, f"{meta['format'].upper()} dpi"
    return [arr], meta


def read_image(path: str | os.PathLike, *, microns_per_pixel: float | None = None, name: str | None = None):
    """Read an H&E slide with no spots into a SpatialData with one multiscale image and its µm per pixel.

    Whole-slide and pyramidal files (SVS, NDPI, SCN, OME-TIFF, TIFF) are read lazily through :mod:`tiffslide`:
    only the tiles under a window are ever decoded, and a file without a pyramid gets one built lazily. JPEG and
    PNG have no random access and are decoded once. Follow with :func:`stalign.pp.tile_tissue` to lay pseudo-spots
    over the tissue, after which :func:`stalign.tl.embed`, :func:`stalign.tl.domains` and
    :func:`stalign.tl.predict_expression` work as on any section.

    Parameters
    ----------
    path
        An ``.svs``, ``.ndpi``, ``.scn``, ``.bif``, ``.tif``/``.tiff``/``.ome.tif``, ``.jpg``/``.jpeg`` or ``.png``
        file.
    microns_per_pixel
        µm per pixel of the full-resolution level; overrides the file's metadata. Without it, the file must record
        its scale: OME ``PhysicalSizeX``, the vendor's ``MPP``, or a resolution (TIFF tags, JPEG/PNG dpi) with a
        unit that is not a 72/96 dpi placeholder.
    name
        Section name (element prefix, later ``obs["sample"]``); default the file name without its suffixes.

    Returns
    -------
    SpatialData
        SpatialData with the image ``"<name>_image"`` (levels ``(c, y, x)`` uint8 RGB, finest first; ``"global"`` is
        the full-resolution level's pixel frame) and ``attrs["stalign"]`` holding ``microns_per_pixel``, its source,
        ``name``, ``image_key``, the file path and format.

    Examples
    --------
    >>> import os
    >>> import stalign as sta
    >>> splotch = os.path.join(
    ...     os.environ["STALIGN_DATA_DIR"], "stahl_mob_splotch", "splotch", "tutorials"
    ... )
    >>> jpg = os.path.join(splotch, "olfactory_bulb_st", "images", "01.jpg")
    >>> # the JPG records no scale: pass it
    >>> sdata = sta.io.read_image(jpg, microns_per_pixel=6200 / 2318)
    >>> list(sdata.images), round(sdata.attrs["stalign"]["microns_per_pixel"], 3)
    (['01_image'], 2.675)
    """
    from spatialdata import SpatialData

    if not isinstance(path, str | os.PathLike):
        msg = f"path must be a file path (str or os.PathLike), got {type(path).__name__}."
        raise TypeError(msg)
    path = Path(path).expanduser()
    if microns_per_pixel is not None:
        microns_per_pixel = check_number(
            microns_per_pixel, "microns_per_pixel", hint=f" (µm per full-resolution pixel of {path.name!r})"
        )
    if name is not None and (not isinstance(name, str) or not name):
        msg = f"name must be a non-empty string (the section name), got {name!r}."
        raise TypeError(msg) if not isinstance(name, str) else ValueError(msg)
    if not path.is_file():
        msg = f"Image file {str(path)!r} not found; pass an existing slide or image file."
        raise FileNotFoundError(msg)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        msg = f"Cannot read {str(path)!r}: unsupported suffix {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}."
        raise ValueError(msg)
    levels, meta = _read_slide(path) if suffix in SLIDE_SUFFIXES else _read_flat(path)
    if microns_per_pixel is not None:
        if "microns_per_pixel" in meta:
            logger.info("microns_per_pixel=%g overrides the file's %g (%s).", microns_per_pixel,
                        meta["microns_per_pixel"], meta["source"])  # fmt: skip
        meta["microns_per_pixel"], meta["source"] = float(microns_per_pixel), "argument"
    if "microns_per_pixel" not in meta:
        msg = (
            f"{str(path)!r} does not record its scale (no OME PhysicalSizeX, no vendor MPP, no resolution with a unit "
            "other than a 72/96 dpi placeholder); pass microns_per_pixel= (e.g. 0.25 for a 40x scan, 0.5 for 20x)."
        )
        raise ValueError(msg)
    name = name or _default_name(path)
    if suffix in SLIDE_SUFFIXES:
        tree = multiscale_image(extend_pyramid(levels))
    else:
        from .._build import build_image

        tree = build_image(levels[0], what=f"Image {str(path)!r}")
    key = image_key(name)
    h, w = (int(s) for s in tree["scale0"]["image"].shape[-2:])
    attrs = {
        Key.microns_per_pixel: float(meta["microns_per_pixel"]),
        "microns_per_pixel_source": meta["source"],
        "name": name,
        "image_key": key,
        "path": str(path.resolve()),
        "format": meta["format"],
        "levels_in_file": int(meta["levels_in_file"]),
    }
    sdata = SpatialData(images={key: tree}, attrs={Key.uns: attrs})
    logger.info("Read %s: %dx%d px, %.4f µm/px (%s), %d levels", path.name, w, h, attrs[Key.microns_per_pixel],
                attrs["microns_per_pixel_source"], len(tree.children))  # fmt: skip
    return sdata
