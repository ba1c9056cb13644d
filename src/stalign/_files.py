"""Files shared by the readers and the dataset loaders: a required file, an image file into an array."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np


def require_file(path: Path, *, root: Path | None = None, what: str = "file") -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming it and the data directory."""
    if not Path(path).is_file():
        where = f" (data_dir={str(root)!r})" if root is not None else ""
        msg = f"Missing {what}: {str(path)!r}{where}; check the data directory layout (see SOURCES.md)."
        raise FileNotFoundError(msg)
    return Path(path)


@contextlib.contextmanager
def no_pixel_limit():
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our full-resolution H&E scans are legitimately large
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def read_image_array(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into a channels-last array (uint8/uint16/float; converted to uint8 RGB later).

    Palette, CMYK and YCbCr images become RGB; grayscale+alpha keeps the gray channel; 16-bit images stay 16-bit
    (``build_sdata`` rescales them).
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        msg = f"Image file {str(path)!r} not found; pass an existing image path or array."
        raise FileNotFoundError(msg)
    with no_pixel_limit(), Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            im = im.convert("RGBA" if mode == "PA" or (mode == "P" and "transparency" in im.info) else "RGB")
            mode = im.mode
        if mode == "LA":
            im = im.getchannel(0)
        arr = np.asarray(im)
    if arr.dtype == np.int32:  # PIL mode "I" (often 16-bit data)
        arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr.astype(np.float32)
    return arr
