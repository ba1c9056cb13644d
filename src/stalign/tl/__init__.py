from ._annotate import annotate
from ._domains import domains
from ._embed import embed
from ._predict import predict_expression

__all__ = ["annotate", "domains", "embed", "predict_expression"]
