"""Building blocks of :class:`~stalign.models.STAlign`: image, gene and fusion modules, projection heads."""

from ._fusion import ABFN, PredictionHead, ProjectionHead
from ._gene import GeneEncoder
from ._image import ImageEncoder, create_trunk, load_trunk_weights

__all__ = ["ABFN", "GeneEncoder", "ImageEncoder", "PredictionHead", "ProjectionHead", "create_trunk", "load_trunk_weights"]
