"""Plotting: spatial plots over the H&E image, embeddings, crop galleries and training curves."""

from ._crops import crops
from ._spatial import domains, embedding, labels, spatial
from ._tiles import tissue_mask
from ._training import training_curves

__all__ = ["crops", "domains", "embedding", "labels", "spatial", "tissue_mask", "training_curves"]


def __dir__() -> list[str]:
    return sorted(__all__)
