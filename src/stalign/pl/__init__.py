"""Plotting: spatial plots over the H&E image, embeddings, crop galleries and training curves."""

from ._crops import crops
from ._spatial import domains, embedding, labels, spatial
from ._training import training_curves

__all__ = ["crops", "domains", "embedding", "labels", "spatial", "training_curves"]
