"""Preprocessing: gene vocabulary, spot/niche crops in micrometres, niche expression and the batch dataset."""

from ._crops import crop_boxes, niche_crops, read_crops, spatial_order, spot_crops
from ._dataset import SpotDataset
from ._genes import (
    build_vocabulary,
    ensembl_to_symbol,
    gene_coverage,
    gene_index,
    normalize_symbol,
    to_vocabulary_symbols,
)
from ._niche import niche_expression
from ._tiles import tile_tissue

__all__ = [
    "SpotDataset",
    "build_vocabulary",
    "crop_boxes",
    "ensembl_to_symbol",
    "gene_coverage",
    "gene_index",
    "niche_crops",
    "niche_expression",
    "normalize_symbol",
    "read_crops",
    "spatial_order",
    "spot_crops",
    "tile_tissue",
    "to_vocabulary_symbols",
]
