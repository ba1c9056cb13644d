"""Many sections at once: plan the files, run them sharded over ``torchrun`` ranks (keep going, resume), collect.

A room above :mod:`stalign.tl`, whose one-section tools it calls (``tl`` never imports it): :func:`embed` writes one
file per section, ``cohort.h5ad`` with every spot and the joint domains, and ``manifest.json``.
"""

from ._embed import embed

__all__ = ["embed"]


def __dir__() -> list[str]:
    return sorted(__all__)
