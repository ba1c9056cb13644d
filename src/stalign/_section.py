"""One view of a section, whatever container it came in.

One module (~490 lines, over the ~450 guideline): the view, its image levels and the µm geometry are one convention,
read everywhere through :func:`get_section`.

Every reader returns a :class:`~spatialdata.SpatialData` that follows these conventions, and every function in
:mod:`stalign.pp` / :mod:`stalign.tl` reads its input through :func:`get_section`, so both SpatialData and AnnData in
the scanpy/squidpy Visium convention are accepted everywhere.

Conventions
-----------
- One table (``sdata.tables["table"]``) with raw counts (sparse) in ``X``, gene symbols as ``var_names``,
  ``obs["sample"]`` and ``obsm["spatial"]``: spot centres ``(x, y)`` in **full-resolution image pixels**.
- ``table.uns["spatial"][library_id]["scalefactors"]`` holds ``microns_per_pixel`` (µm per full-resolution pixel),
  ``spot_diameter_fullres`` and, for AnnData images, ``tissue_<res>_scalef``.
- Images are multiscale ``(c, y, x)`` uint8 RGB elements whose transformation to the ``"global"`` coordinate system
  maps image pixels to full-resolution pixels (the spatialdata-io Visium convention).
- Spots are circles (radius in full-resolution pixels) in the ``"global"`` coordinate system.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anndata import AnnData

from ._constants import VISIUM_PITCH_UM, VISIUM_SPOT_UM, Key

logger = logging.getLogger(__name__)


#: Largest value of log1p-normalised data at any usual scale (log1p(1e6) ≈ 13.8); raw counts with non-integer
#: values below it everywhere are taken for normalised data.
_LOG_DATA_MAX = 15.0


def check_raw_counts(X: Any, *, what: str) -> np.ndarray:
    """The stored values of ``X`` if they look like raw counts; a clear error otherwise.

    Raw counts are finite and non-negative. Data whose non-zero values are mostly non-integer and all below 15 is
    log-normalised (``log1p`` of counts per 10k is at most ~9): stalign normalises the counts itself, so that is
    refused with the fix. Non-integer counts above that (e.g. ambient-corrected counts) are accepted.

    Parameters
    ----------
    X
        Dense or sparse counts.
    what
        What the counts are, for the message (e.g. ``"The counts of section 'C2'"``).

    Returns
    -------
    The stored values (``X.data`` for sparse input).
    """
    data = X.data if hasattr(X, "data") and not isinstance(X, np.ndarray) else np.asarray(X)
    data = np.asarray(data)
    if data.size and not np.isfinite(data).all():
        msg = (
            f"{what} contain NaN or infinite values; `X` must hold raw counts (finite, non-negative). Fix or drop "
            "those spots/genes, or put the raw counts in `X`."
        )
        raise ValueError(msg)
    if data.size and (data < 0).any():
        msg = (
            f"{what} contain negative values (scaled or centred data?); `X` must hold raw counts. Put the raw counts "
            "(e.g. `adata.layers['counts']`) in `X`."
        )
        raise ValueError(msg)
    nz = data[data != 0]
    if nz.size and np.issubdtype(nz.dtype, np.floating):
        frac = float(np.mean(nz != np.round(nz)))
        top = float(nz.max())
        if frac > 0.5 and top < _LOG_DATA_MAX:
            msg = (
                f"{what} look log-normalised ({100 * frac:.0f}% of the non-zero values are not integers, the largest "
                f"is {top:.2f}); stalign expects raw counts and normalises them itself. Put the raw counts in `X` "
                "(e.g. `adata.X = adata.layers['counts']`)."
            )
            raise ValueError(msg)
    return data


@dataclass
class ImageLevel:
    """One resolution level of a section image.

    Attributes
    ----------
    data
        Channel-first array ``(c, y, x)``; numpy, dask or xarray (read lazily).
    fullres_per_px
        Full-resolution pixels per pixel of this level (1 for the full-resolution image, 1/scalef otherwise).
    name
        Element / resolution name, for messages.
    """

    data: Any
    fullres_per_px: float
    name: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels of this level."""
        return int(self.data.shape[-2]), int(self.data.shape[-1])


@dataclass
class Section:
    """A read-only view of one section: table, spot centres, geometry and image levels (finest first).

    ``block_cache`` holds the decoded image blocks that crop reads reuse (:class:`stalign.pp._blocks.BlockCache`,
    created on first read; a :class:`~stalign.pp.SpotDataset` gives its sections one shared cache).
    """

    table: AnnData
    library_id: str
    coords: np.ndarray  # (n_obs, 2) x, y in full-resolution px
    microns_per_pixel: float  # µm per full-resolution px
    spot_diameter_fullres: float
    images: list[ImageLevel] = field(default_factory=list)
    #: image elements that are not RGB H&E (e.g. Xenium's DAPI): never read as images
    other_images: list[str] = field(default_factory=list)
    block_cache: Any = field(default=None, repr=False, compare=False)

    @property
    def has_image(self) -> bool:
        """Whether the section has at least one image level."""
        return len(self.images) > 0

    @property
    def has_expression(self) -> bool:
        """Whether the table holds any measured genes with non-zero counts.

        Raises
        ------
        ValueError
            The counts are not raw counts: NaN, infinite or negative values, or log-normalised data
            (:func:`check_raw_counts`).
        """
        if self.table.n_vars == 0 or self.table.n_obs == 0:
            return False
        X = self.table.X
        if X is None:
            return False
        data = check_raw_counts(X, what=f"The counts of section {self.library_id!r}")
        return bool(data.size and data.any())

    def level_for(self, microns_per_pixel: float) -> ImageLevel:
        """The coarsest image level whose resolution is at least as fine as ``microns_per_pixel``.

        Falls back to the finest level when none is fine enough (the crop is then upsampled).
        """
        if not self.images:
            msg = f"Section {self.library_id!r} has no image; image crops need an H&E image."
            raise ValueError(msg)
        target = microns_per_pixel / self.microns_per_pixel  # full-res px per output px
        ok = [lv for lv in self.images if fine_enough(lv.fullres_per_px, target)]
        if not ok:
            return self.images[0]
        return max(ok, key=lambda lv: lv.fullres_per_px)


def fine_enough(fullres_per_px: float, target_fullres_per_px: float) -> bool:
    """Whether a level of ``fullres_per_px`` is at least as fine as a crop of ``target_fullres_per_px`` needs.

    The one rule for stored levels (:meth:`Section.level_for`) and derived ones (``pp._blocks.level_reader``).
    """
    return fullres_per_px <= target_fullres_per_px * (1 + 1e-6)


#: Longest side (pixels) of the images :func:`library_entry` stores, Space Ranger's sizes: ``"lowres"`` (600) and
#: ``"hires"`` (2000).
LOWRES_MAX_SIDE = 600
HIRES_MAX_SIDE = 2000


def _downsample(arr: Any, max_side: int) -> tuple[np.ndarray, int]:
    """(c, y, x) → (c, y', x') by an integer block mean so the longer side is at most ``max_side``."""
    h, w = arr.shape[-2:]
    f = max(1, int(np.ceil(max(h, w) / max_side)))
    if f == 1:
        return np.asarray(arr), 1
    hh, ww = (h // f) * f, (w // f) * f
    c = arr.shape[0]
    out = np.empty((c, hh // f, ww // f), dtype=np.uint8)
    # bands of rows, so a large lazy level is never held whole (nor as float): about 64 MB of float32 at a time
    rows = max(1, int(64e6 // (f * ww * c * 4)))
    for r in range(0, hh // f, rows):
        r1 = min(r + rows, hh // f)
        a = np.asarray(arr[:, r * f : r1 * f, :ww], dtype=np.float32)
        a = a.reshape(c, r1 - r, f, ww // f, f).mean(axis=(2, 4))
        out[:, r:r1] = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return out, f


def _small_image(sec: Section, max_side: int) -> tuple[np.ndarray, float]:
    """``(y, x, 3)`` uint8 image of at most ``max_side`` pixels a side, and its pixels per full-resolution pixel.

    The finest pyramid level that small, read as it is; when none is, the coarsest level block-averaged down (never
    a whole large level: the readers' pyramids reach 512 pixels).
    """
    small = [lv for lv in sec.images if max(lv.shape) <= max_side]
    if small:
        lv = min(small, key=lambda v: v.fullres_per_px)
        arr, f = np.asarray(lv.data), 1
    else:
        lv = sec.images[-1]
        arr, f = _downsample(lv.data, max_side)
    return np.ascontiguousarray(np.moveaxis(np.asarray(arr), 0, -1)), 1.0 / (lv.fullres_per_px * f)


def library_entry(sec: Section, *, images: bool = True, max_side: int = HIRES_MAX_SIDE) -> dict:
    """``uns["spatial"][library_id]`` of a section in the scanpy/squidpy Visium convention (the one writer of it).

    Its ``scalefactors`` (``microns_per_pixel`` and ``spot_diameter_fullres`` included) and its ``images``:
    ``"lowres"`` (at most :data:`LOWRES_MAX_SIDE` pixels a side) and ``"hires"`` (at most ``max_side``), small levels
    of the section's pyramid (never a large one), each with a matching ``scalefactors["tissue_<res>_scalef"]`` (image
    pixels per full-resolution pixel). A section whose image is no larger than a lowres one gets that image under
    both keys, as scanpy and squidpy look for ``"hires"`` first. ``images`` is ``{}`` for a section with no image or
    with ``images=False``, so ``sc.pl.spatial`` and ``sq.pl.spatial_scatter`` draw the spots alone.

    Parameters
    ----------
    sec
        The section (:func:`get_section`).
    images
        Store the images; ``False`` keeps the scalefactors only.
    max_side
        Longest side (pixels) of the ``"hires"`` image.

    Returns
    -------
    The entry: the section's own one (``metadata`` etc.) with ``scalefactors`` and ``images`` set.
    """
    from collections.abc import Mapping

    spatial = sec.table.uns.get(Key.spatial, {})
    own = spatial.get(sec.library_id, {}) if isinstance(spatial, Mapping) else {}
    entry = dict(own) if isinstance(own, Mapping) else {}
    sf = dict(entry.get("scalefactors", {}) or {})
    sf[Key.microns_per_pixel] = sec.microns_per_pixel
    sf[Key.spot_diameter_fullres] = sec.spot_diameter_fullres
    imgs = {}
    if images and sec.images:
        for res, side in (("hires", max(max_side, LOWRES_MAX_SIDE)), ("lowres", LOWRES_MAX_SIDE)):
            imgs[res], sf[f"tissue_{res}_scalef"] = _small_image(sec, side)
    entry["scalefactors"] = sf
    entry["images"] = imgs
    return entry


def write_library_entry(table: AnnData, sec: Section) -> None:
    """Give ``table.uns["spatial"][sec.library_id]`` its :func:`library_entry` unless it already holds images.

    What every writer of a table calls (readers, :func:`stalign.pp.tile_tissue`, :func:`stalign.tl.embed`), so that a
    table stalign hands back plots as it is in ``sc.pl.spatial`` and ``sq.pl.spatial_scatter``.
    """
    from collections.abc import Mapping

    spatial = table.uns.get(Key.spatial)
    own = spatial.get(sec.library_id) if isinstance(spatial, Mapping) else None
    imgs = own.get("images") if isinstance(own, Mapping) else None
    if isinstance(imgs, Mapping) and (imgs or not sec.has_image):
        return
    entry = library_entry(sec)
    if not isinstance(spatial, Mapping):
        table.uns[Key.spatial] = {}
    table.uns[Key.spatial][sec.library_id] = entry


def _scalefactors(table: AnnData, library_id: str | None) -> tuple[str | None, dict]:
    from collections.abc import Mapping

    spatial = table.uns.get(Key.spatial, {})
    if not isinstance(spatial, Mapping):
        msg = (
            f"`uns['spatial']` is a {type(spatial).__name__}; it must be a dict {{library_id: {{'scalefactors': "
            "{...}, 'images': {...}}} (the scanpy/squidpy Visium convention). Fix or delete it."
        )
        raise ValueError(msg)
    if not spatial:
        return library_id, {}
    bad = [k for k, v in spatial.items() if not isinstance(v, Mapping)]
    if bad:
        msg = f"`uns['spatial'][{bad[0]!r}]` is not a dict; each library must be {{'scalefactors': {{...}}, ...}}."
        raise ValueError(msg)
    if library_id is None:
        if len(spatial) > 1:
            msg = (
                f"`uns['spatial']` holds {len(spatial)} libraries ({', '.join(map(str, spatial))}); "
                "pass `library_id=` to choose one."
            )
            raise ValueError(msg)
        library_id = next(iter(spatial))
    if library_id not in spatial:
        msg = f"library_id {library_id!r} not found in `uns['spatial']`; available: {', '.join(map(str, spatial))}."
        raise KeyError(msg)
    return library_id, dict(spatial[library_id].get("scalefactors", {}) or {})


def _scalar(sf: dict, key: str, library_id: Any) -> float | None:
    val = sf.get(key)
    if val is None:
        return None
    try:
        return float(val)
    except (TypeError, ValueError):
        msg = f"scalefactors[{key!r}] of {library_id!r} is {val!r}; it must be a positive number."
        raise ValueError(msg) from None


def visium_microns_per_pixel(xy: Any, array_row: Any, array_col: Any) -> float | None:
    """µm per full-resolution pixel from the Visium array grid (100 µm between neighbouring spots).

    The array is hexagonal: ``array_col`` steps are 50 µm across and ``array_row`` steps 50·√3 µm down, so each
    spot's nearest array neighbour has a known distance in µm; the median of (µm / pixel distance) over the spots
    calibrates the image. ``None`` when the array coordinates are missing, not numeric, or hold fewer than two
    distinct spots.

    ``spot_diameter_fullres`` is no substitute: on the DLPFC sections it spans ~70 µm at this calibration, so the
    nominal 55 µm spot gives a µm/px 22 % too small (crops 78 % of their nominal size).
    """
    from scipy.spatial import cKDTree

    try:
        um = np.column_stack([np.asarray(array_col, dtype=np.float64), np.asarray(array_row, dtype=np.float64)])
        xy = np.asarray(xy, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    um = um * [VISIUM_PITCH_UM / 2, VISIUM_PITCH_UM * np.sqrt(3) / 2]
    ok = np.isfinite(um).all(1) & np.isfinite(xy).all(1)
    um, xy = um[ok], xy[ok]
    if len(np.unique(um, axis=0)) < 2:
        return None
    d_um, j = cKDTree(um).query(um, k=2)
    d_px = np.linalg.norm(xy - xy[j[:, 1]], axis=1)
    good = (d_um[:, 1] > 0) & (d_px > 0)
    if not good.any():
        return None
    return float(np.median(d_um[good, 1] / d_px[good]))


def _grid_microns_per_pixel(table: AnnData | None) -> float | None:
    """µm/px from ``obs["array_row"/"array_col"]`` (Visium, 100 µm pitch) and ``obsm["spatial"]``, if both exist."""
    if table is None or Key.spatial not in table.obsm or not {"array_row", "array_col"} <= set(table.obs.columns):
        return None
    xy = np.asarray(table.obsm[Key.spatial])
    if xy.ndim != 2 or xy.shape[1] < 2:
        return None
    return visium_microns_per_pixel(xy[:, :2], table.obs["array_row"].to_numpy(), table.obs["array_col"].to_numpy())


def _microns_per_pixel(sf: dict, library_id: Any, table: AnnData | None = None) -> tuple[float, float]:
    mpp = _scalar(sf, Key.microns_per_pixel, library_id)
    diam = _scalar(sf, Key.spot_diameter_fullres, library_id)
    if diam is not None and not (np.isfinite(diam) and diam > 0):
        msg = f"scalefactors['spot_diameter_fullres'] of {library_id!r} is {diam!r}; it must be a positive number."
        raise ValueError(msg)
    if mpp is None:
        mpp = _grid_microns_per_pixel(table)
        if mpp is not None:
            logger.info("microns_per_pixel of %r from the 100 µm Visium array pitch: %.4f", library_id, mpp)
        elif diam is not None:
            mpp = VISIUM_SPOT_UM / float(diam)
            logger.info("microns_per_pixel of %r derived from a 55 µm Visium spot: %.4f", library_id, mpp)
        else:
            msg = (
                f"Section {library_id!r} records neither 'microns_per_pixel' nor 'spot_diameter_fullres' in "
                "`uns['spatial'][library_id]['scalefactors']`, and has no Visium array grid (`obs['array_row']`, "
                "`obs['array_col']`); set one of them (Visium: 55 µm spots)."
            )
            raise ValueError(msg)
    if not (np.isfinite(mpp) and mpp > 0):
        msg = f"scalefactors['microns_per_pixel'] of {library_id!r} is {mpp!r}; it must be a positive number."
        raise ValueError(msg)
    if diam is None:
        diam = VISIUM_SPOT_UM / float(mpp)
    return float(mpp), float(diam)


def _no_coords_error(table: AnnData, sdata: Any = None, table_key: str = Key.table) -> KeyError:
    """The error of a table without spot positions: ``obsm["spatial"]`` for an AnnData, the shapes element for SpatialData."""
    if sdata is None:
        msg = (
            "The AnnData has no `obsm['spatial']`: no spot coordinates (spot centres (x, y) in full-resolution "
            "pixels). Set it, or read it with stalign.io."
        )
        return KeyError(msg)
    region = (table.uns.get("spatialdata_attrs") or {}).get("region")
    names = [region] if isinstance(region, str) else list(region) if region is not None else []
    present = [n for n in names if n in sdata.shapes]
    if present:
        msg = (
            f"sdata.tables[{table_key!r}] has no spot coordinates in `obsm['spatial']`; its spots are the shapes "
            f"element sdata.shapes[{present[0]!r}]: set `obsm['spatial']` to their centres in full-resolution pixels "
            "(or read the section with stalign.io)."
        )
    else:
        which = (
            f"the shapes element {names[0]!r} it annotates is missing from sdata.shapes"
            if names
            else ("it annotates no shapes element (no `region` in its spatialdata_attrs)")
        )
        msg = (
            f"sdata.tables[{table_key!r}] has no spot coordinates: `obsm['spatial']` is missing and {which} "
            f"(shapes present: {', '.join(sdata.shapes.keys()) or 'none'}). Add the spots as a shapes element the "
            "table annotates, with their centres in `obsm['spatial']`, or read the section with stalign.io."
        )
    return KeyError(msg)


def _coords(table: AnnData, sdata: Any = None, table_key: str = Key.table) -> np.ndarray:
    if Key.spatial not in table.obsm:
        raise _no_coords_error(table, sdata, table_key)
    try:
        coords = np.asarray(table.obsm[Key.spatial], dtype=np.float64)
    except (TypeError, ValueError) as e:
        msg = f"`obsm['spatial']` is not numeric ({e}); it must hold spot centres (x, y) in full-resolution pixels."
        raise ValueError(msg) from e
    if coords.ndim != 2 or coords.shape[1] < 2:
        msg = f"`obsm['spatial']` has shape {coords.shape}; it must be (n_spots, 2): x, y in full-resolution pixels."
        raise ValueError(msg)
    coords = coords[:, :2]
    if not np.isfinite(coords).all():
        msg = "`obsm['spatial']` holds NaN or infinite spot positions; drop those spots first."
        raise ValueError(msg)
    return coords


def _levels_from_anndata(table: AnnData, library_id: str | None) -> list[ImageLevel]:
    if library_id is None:
        return []
    lib = table.uns[Key.spatial][library_id]
    imgs = lib.get("images", {}) or {}
    sf = lib.get("scalefactors", {}) or {}
    levels = []
    for res, img in imgs.items():
        scalef = 1.0 if res in ("fullres", "full") else sf.get(f"tissue_{res}_scalef")
        if scalef is None or not (np.isfinite(scalef) and scalef > 0):
            msg = (
                f"Image {res!r} of {library_id!r} has no valid scalefactors['tissue_{res}_scalef'] (got {scalef!r}); "
                "set it to the image's pixels per full-resolution pixel, or remove the image from `uns['spatial']`."
            )
            raise ValueError(msg)
        arr = _to_uint8_rgb(np.asarray(img), name=f"uns['spatial'][{library_id!r}]['images'][{res!r}]")
        levels.append(ImageLevel(np.moveaxis(arr, -1, 0), 1.0 / float(scalef), name=str(res)))
    return sorted(levels, key=lambda lv: lv.fullres_per_px)


def _to_uint8_rgb(arr: np.ndarray, *, name: str) -> np.ndarray:
    """Channels-last image → uint8 RGB. Grayscale is replicated, RGBA drops alpha, 16-bit and float are rescaled."""
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        msg = f"{name} has shape {arr.shape}; expected (height, width) or (height, width, 1|3|4) channels."
        raise ValueError(msg)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            msg = f"{name} contains NaN or infinite pixels; clean the image first."
            raise ValueError(msg)
        hi = 1.0 if arr.max() <= 1.0 else 255.0
        return np.clip(np.rint(arr / hi * 255.0), 0, 255).astype(np.uint8)
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr, 0, 255).astype(np.uint8)
    msg = f"{name} has unsupported dtype {arr.dtype}; convert it to uint8 RGB."
    raise ValueError(msg)


def _region_elements(sdata, table: AnnData) -> list[Any]:
    """The elements the table annotates (``uns["spatialdata_attrs"]["region"]``) that the SpatialData holds."""
    region = (table.uns.get("spatialdata_attrs") or {}).get("region")
    names = [region] if isinstance(region, str) else list(region) if region is not None else []
    out = []
    for name in names:
        for kind in ("shapes", "points", "labels"):
            elems = getattr(sdata, kind, {})
            if name in elems:
                out.append(elems[name])
    return out


def _image_to_fullres(sdata, key: str, elem, table: AnnData) -> np.ndarray:
    """Affine ``(3, 3)`` matrix (x, y) from the pixels of image ``key`` to full-resolution pixels.

    Full-resolution pixels are the frame of ``obsm["spatial"]``: the ``"global"`` coordinate system (stalign's and
    spatialdata-io's readers put the spots there unscaled), or else the frame of the spots element the table
    annotates, reached through a coordinate system the image shares with it (spatialdata-io keeps Visium's hires and
    lowres PNGs only in ``"downscaled_hires"``/``"downscaled_lowres"``, next to the spots scaled into them).
    """
    from spatialdata.transformations import get_transformation

    axes = {"input_axes": ("x", "y"), "output_axes": ("x", "y")}
    own = get_transformation(elem, get_all=True) or {}
    if "global" in own:
        return np.asarray(own["global"].to_affine_matrix(**axes), dtype=np.float64)
    for region in _region_elements(sdata, table):
        theirs = get_transformation(region, get_all=True) or {}
        for cs in own:
            if cs in theirs:
                to_cs = np.asarray(own[cs].to_affine_matrix(**axes), dtype=np.float64)
                spots_to_cs = np.asarray(theirs[cs].to_affine_matrix(**axes), dtype=np.float64)
                return np.linalg.solve(spots_to_cs, to_cs)
    msg = (
        f"Image {key!r} is in coordinate system(s) {sorted(own)}, none of which holds the table's spots (full-"
        "resolution pixels); give it a transformation to 'global' or to a coordinate system of the spots element."
    )
    raise ValueError(msg)


def _levels_from_sdata(sdata, image_key: str | None, table: AnnData) -> list[ImageLevel]:
    keys = list(sdata.images.keys()) if image_key is None else [image_key]
    if image_key is not None and image_key not in sdata.images:
        msg = f"image_key {image_key!r} not in sdata.images; available: {', '.join(sdata.images.keys()) or 'none'}."
        raise KeyError(msg)
    levels: list[ImageLevel] = []
    for key in keys:
        elem = sdata.images[key]
        if not is_rgb(elem):
            if image_key is not None:
                msg = (
                    f"Image {image_key!r} has channels {_channels(elem)}, not an RGB H&E; the model's image encoder "
                    "reads H&E only. Pass the H&E as image_key=, or leave image_key=None to embed from genes alone."
                )
                raise ValueError(msg)
            continue
        m = _image_to_fullres(sdata, key, elem, table)
        sx, sy = float(m[0, 0]), float(m[1, 1])
        if abs(m[0, 1]) > 1e-9 or abs(m[1, 0]) > 1e-9 or abs(sx - sy) > 1e-6 * max(sx, sy):
            msg = f"Image {key!r}: only isotropic scale (+ translation) transformations are supported."
            raise ValueError(msg)
        if abs(m[0, 2]) > 1e-6 or abs(m[1, 2]) > 1e-6:
            msg = f"Image {key!r}: translated images are not supported; the image origin must be the full-res origin."
            raise ValueError(msg)
        if hasattr(elem, "children") and len(getattr(elem, "children", {})) > 0:  # DataTree multiscale
            scales = sorted(elem.children)
            base_w = None
            for s in scales:
                da = next(iter(elem[s].ds.data_vars.values()))
                w = int(da.shape[-1])
                base_w = w if base_w is None else base_w
                levels.append(ImageLevel(da.data, sx * base_w / w, name=f"{key}/{s}"))
        else:
            levels.append(ImageLevel(elem.data, sx, name=key))
    return sorted(levels, key=lambda lv: lv.fullres_per_px)


def _channels(elem) -> list:
    """The channel names of an image element (a multiscale DataTree or a DataArray)."""
    if hasattr(elem, "children") and len(getattr(elem, "children", {})) > 0:
        elem = next(iter(elem[sorted(elem.children)[0]].ds.data_vars.values()))
    return [str(c) for c in elem.coords["c"].values] if "c" in elem.coords else [None] * int(elem.shape[0])


def is_rgb(elem) -> bool:
    """Whether an image element is an RGB image (3 channels): what the H&E encoder reads; DAPI/fluorescence is not."""
    return len(_channels(elem)) == 3


def get_section(
    data: Any,
    *,
    table_key: str = Key.table,
    image_key: str | None = None,
    library_id: str | None = None,
    require_image: bool = False,
) -> Section:
    """Read-only section view of a SpatialData (with a table) or an AnnData in the squidpy Visium convention.

    A view (with its table) given again is returned as it is: a caller that already built it passes it on.
    """
    from spatialdata import SpatialData

    if isinstance(data, Section) and data.table is not None:
        return data
    if isinstance(data, SpatialData):
        if table_key not in data.tables:
            msg = f"table_key {table_key!r} not in sdata.tables; available: {', '.join(data.tables.keys()) or 'none'}."
            raise KeyError(msg)
        table = data.tables[table_key]
        levels = _levels_from_sdata(data, image_key, table)
    elif isinstance(data, AnnData):
        table = data
        levels = None
    else:
        msg = f"Expected a SpatialData or an AnnData, got {type(data).__name__}."
        raise TypeError(msg)
    if table.n_obs == 0:
        msg = "The table has no spots (0 observations); select at least one spot before calling stalign."
        raise ValueError(msg)
    coords = _coords(table, data if table is not data else None, table_key)
    lib, sf = _scalefactors(table, library_id)
    if levels is None:
        levels = _levels_from_anndata(table, lib)
    if lib is None:
        samples = table.obs[Key.sample].unique() if Key.sample in table.obs else []
        lib = str(samples[0]) if len(samples) == 1 else "section"
    mpp, diam = _microns_per_pixel(sf, lib, table)
    if require_image and not levels:
        msg = (
            f"Section {lib!r} has no image. Pass a SpatialData with an image element, or an AnnData with "
            "`uns['spatial'][library_id]['images']`."
        )
        raise ValueError(msg)
    return Section(
        table=table,
        library_id=str(lib),
        coords=coords,
        microns_per_pixel=mpp,
        spot_diameter_fullres=diam,
        images=levels,
        other_images=[k for k, v in data.images.items() if not is_rgb(v)] if isinstance(data, SpatialData) else [],
    )
