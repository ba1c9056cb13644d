"""Evaluation harness: the protocol of DESIGN.md §4 (domains, genes, annotate, retrieval) with baselines.

One module per task (``_domains``, ``_expression``, ``_annotate``, ``_retrieval``), the sections and models of a run
(``_store``) and the runner (``_runner``). The harness uses only the public ``tl``, ``pp`` and ``models`` API, so it
scores what a user gets.
"""

from ._annotate import eval_annotate, score_genes_labels
from ._baselines import expression_pca, pixel_features, squidpy_features, standardized_pca
from ._domains import eval_domains
from ._expression import eval_genes
from ._markers import DLPFC_LAYER_MARKERS, HER2ST_REGION_MARKERS, MARKERS, STAHL_MOB_LAYER_MARKERS
from ._metrics import (
    classification_scores,
    clustering_scores,
    expression_scores,
    pearson_per_gene,
    recall_at_k,
    spot_infonce,
)
from ._report import format_markdown
from ._retrieval import eval_retrieval
from ._runner import TASKS, evaluate, write_results
from ._store import patient_of

__all__ = [
    "DLPFC_LAYER_MARKERS",
    "HER2ST_REGION_MARKERS",
    "MARKERS",
    "STAHL_MOB_LAYER_MARKERS",
    "TASKS",
    "classification_scores",
    "clustering_scores",
    "eval_annotate",
    "eval_domains",
    "eval_genes",
    "eval_retrieval",
    "evaluate",
    "expression_pca",
    "expression_scores",
    "format_markdown",
    "patient_of",
    "pearson_per_gene",
    "pixel_features",
    "recall_at_k",
    "score_genes_labels",
    "spot_infonce",
    "squidpy_features",
    "standardized_pca",
    "write_results",
]


def __dir__() -> list[str]:
    return sorted(__all__)
