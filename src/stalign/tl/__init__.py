from ._annotate import annotate
from ._cohort import embed_cohort
from ._domains import domains
from ._embed import embed
from ._predict import predict_expression

__all__ = ["annotate", "domains", "embed", "embed_cohort", "predict_expression"]
