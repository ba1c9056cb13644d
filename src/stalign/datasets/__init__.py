"""The shared datasets, one loader per dataset (built on :mod:`stalign.io`'s readers), and the command line's specs."""

from ._dlpfc import dlpfc
from ._load import load, sample_name
from ._st import her2st, stahl_mob, stutility_mob

__all__ = ["dlpfc", "her2st", "load", "sample_name", "stahl_mob", "stutility_mob"]


def __dir__() -> list[str]:
    return sorted(__all__)
