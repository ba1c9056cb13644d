"""A tiny synthetic section and model, so that the tests of pure logic run without the shared data folder.

:func:`toy_sdata` builds, with the package's own builder (:func:`stalign._build.build_sdata`), a Visium-like
section: spots on a hexagonal grid (100 µm pitch, 55 µm spots), a small RGB H&E-like image with its multiscale
pyramid, Poisson counts over :data:`GENES` (mouse gene symbols) and µm/px recorded. Three vertical zones
(``obs["zone"]``) differ in colour and expression, so embeddings and domains have something to find. The image is
at 0.8 µm/px, not 1, so that a test mixing up micrometres and pixels fails.

The fixtures of ``tests/conftest.py`` wrap these builders (``toy_sdata``, ``toy_adata``, ``toy_embedded``,
``toy_model`` and the factory ``toy_section``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: 30 mouse gene symbols (olfactory bulb and brain markers, two housekeeping genes)
GENES = [
    "Actb", "Gapdh", "Mbp", "Plp1", "Snap25", "Gad1", "Slc17a7", "Pcp4", "Penk", "Cck",
    "Sst", "Vip", "Apod", "Gfap", "Aqp4", "Olig2", "Mog", "Nrgn", "Calb2", "Th",
    "Doc2g", "Kctd12", "Cdhr1", "Omp", "S100a5", "Fabp7", "Sox11", "Dcx", "Tbr1", "Reln",
]  # fmt: skip

#: µm per full-resolution pixel, spot pitch and spot diameter (Visium's)
MICRONS_PER_PIXEL = 0.8
PITCH_UM = 100.0
SPOT_DIAMETER_UM = 55.0
#: image margin around the outermost spot centres, in µm
MARGIN_UM = 100.0

_ZONE_RGB = np.array([[214, 140, 180], [170, 90, 160], [120, 60, 140]])  # light pink → purple


def hex_grid(n_rows: int, n_cols: int, *, pitch_px: float) -> np.ndarray:
    """``(n_rows * n_cols, 2)`` spot centres ``(x, y)`` in pixels: odd rows shifted by half a pitch (Visium)."""
    r, c = np.divmod(np.arange(n_rows * n_cols), n_cols)
    return np.column_stack([(c + 0.5 * (r % 2)) * pitch_px, r * pitch_px * np.sqrt(3) / 2])


def toy_sdata(
    *,
    n_rows: int = 6,
    n_cols: int = 10,
    n_genes: int = len(GENES),
    image: bool = True,
    sample: str = "toy",
    seed: int = 0,
):
    """A synthetic section of ``n_rows * n_cols`` spots (60 by default), as the readers return it.

    Parameters
    ----------
    n_rows, n_cols
        Grid size.
    n_genes
        Genes measured (the first ``n_genes`` of :data:`GENES`); 0 for an image-only section without counts.
    image
        Whether the section has an image (False: expression only).
    sample
        Section name (library id, element-name prefix).
    seed
        Seed of the image noise and of the counts.
    """
    from stalign._build import build_sdata

    rng = np.random.default_rng(seed)
    pitch_px = PITCH_UM / MICRONS_PER_PIXEL
    margin_px = MARGIN_UM / MICRONS_PER_PIXEL
    xy = hex_grid(n_rows, n_cols, pitch_px=pitch_px) + margin_px
    w = int(np.ceil(xy[:, 0].max() + margin_px))
    h = int(np.ceil(xy[:, 1].max() + margin_px))
    zone = np.minimum((3 * (xy[:, 0] - margin_px) / max(w - 2 * margin_px, 1)).astype(int), 2)
    obs_names = [f"r{r}c{c}" for r, c in zip(*np.divmod(np.arange(len(xy)), n_cols), strict=True)]
    obs = pd.DataFrame({"zone": pd.Categorical([f"z{z}" for z in zone])}, index=obs_names)

    counts = var_names = None
    if n_genes:
        rates = rng.gamma(0.8, 4.0, size=(3, n_genes))
        counts = rng.poisson(rates[zone])
        empty = counts.sum(axis=1) == 0
        counts[empty, 0] = 1  # every spot has expression
        var_names = GENES[:n_genes]

    img = None
    if image:
        px_zone = np.minimum((3 * (np.arange(w) - margin_px) / max(w - 2 * margin_px, 1)).astype(int), 2).clip(0)
        img = np.repeat(_ZONE_RGB[px_zone][None], h, axis=0).astype(np.int16)
        img += rng.integers(-25, 26, size=(h, w, 1), dtype=np.int16)  # texture, the same in the three channels
        img = img.clip(0, 255).astype(np.uint8)
    return build_sdata(
        sample=sample,
        coords_fullres=xy,
        obs_names=obs_names,
        microns_per_pixel=MICRONS_PER_PIXEL,
        spot_diameter_fullres=SPOT_DIAMETER_UM / MICRONS_PER_PIXEL,
        counts=counts,
        var_names=var_names,
        obs=obs,
        image=img,
    )


def toy_config(genes, **overrides):
    """The config of a tiny random STAlign over ``genes`` (16 px crops, 8-dimensional embeddings): fast on CPU."""
    from stalign.models import STAlignConfig

    params = {
        "spot_size": 16,
        "niche_size": 16,
        "spot_encoder_kwargs": {"channels": [8, 8, 8, 8], "stem_width": 8},
        "niche_encoder_kwargs": {"channels": [8, 8, 8, 8], "stem_width": 8},
        "n_tokens": 2,
        "token_dim": 8,
        "n_heads": 2,
        "gene_dim": 8,
        "embed_dim": 8,
        **overrides,
    }
    return STAlignConfig.base(list(genes), **params)


def toy_model(genes=GENES, *, seed: int = 0):
    """A tiny random-init STAlign over ``genes``, in eval mode."""
    import torch

    from stalign.models import STAlign

    torch.manual_seed(seed)
    return STAlign(toy_config(genes)).eval()
