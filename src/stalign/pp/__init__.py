"""Preprocessing: gene vocabulary, spot/niche crops in micrometres, niche expression and the batch dataset."""

from typing import TYPE_CHECKING

from .._genes import (
    build_vocabulary,
    ensembl_to_symbol,
    gene_coverage,
    gene_index,
    normalize_symbol,
    to_vocabulary_symbols,
)
from .._lazy import lazy_exports
from ._bins import bin, pseudospots
from ._crops import crop_boxes, niche_crops, read_crops, spatial_order, spot_crops
from ._hvg import reference_hvgs
from ._niche import niche_expression, spatial_smooth
from ._normalize import log_normalize
from ._tiles import tile_tissue

if TYPE_CHECKING:  # pragma: no cover
    from ._dataset import SpotDataset

# the batch dataset is a torch Dataset: it loads on first use, so `import stalign` does not import torch
__getattr__, __dir__ = lazy_exports(globals(), {"SpotDataset": "._dataset"})

__all__ = [
    "SpotDataset",
    "bin",
    "build_vocabulary",
    "crop_boxes",
    "ensembl_to_symbol",
    "gene_coverage",
    "gene_index",
    "log_normalize",
    "niche_crops",
    "niche_expression",
    "normalize_symbol",
    "pseudospots",
    "read_crops",
    "reference_hvgs",
    "spatial_order",
    "spatial_smooth",
    "spot_crops",
    "tile_tissue",
    "to_vocabulary_symbols",
]
