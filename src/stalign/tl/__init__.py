from ._annotate import annotate
from ._domains import DEFAULT_SMOOTH_UM, domains
from ._embed import embed
from ._predict import predict_expression

__all__ = ["DEFAULT_SMOOTH_UM", "annotate", "domains", "embed", "predict_expression"]
