"""Tools on one section or one table at a time: embed, domains, annotate, predict expression."""

from ._annotate import annotate
from ._domains import domains
from ._embed import embed
from ._predict import predict_expression

__all__ = ["annotate", "domains", "embed", "predict_expression"]


def embed_cohort(*args, **kwargs):
    """Deprecated alias of :func:`stalign.cohort.embed` (removed in the next release)."""
    import warnings

    from .. import cohort  # the one import of the cohort room from tl: this alias, for one release

    warnings.warn(
        "stalign.tl.embed_cohort moved to stalign.cohort.embed; this alias will be removed in the next release.",
        FutureWarning,
        stacklevel=2,
    )
    return cohort.embed(*args, **kwargs)


def __dir__() -> list[str]:
    return sorted(__all__)
