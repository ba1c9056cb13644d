"""Evaluation harness: the protocol of DESIGN.md §4 (domains, genes, annotate, retrieval) with baselines."""

from ._baselines import expression_pca, pixel_features, squidpy_features, standardized_pca
from ._markers import DLPFC_LAYER_MARKERS, HER2ST_REGION_MARKERS, MARKERS, STAHL_MOB_LAYER_MARKERS
from ._metrics import (
    classification_scores,
    clustering_scores,
    expression_scores,
    pearson_per_gene,
    recall_at_k,
)
from ._report import format_markdown
from ._tasks import (
    TASKS,
    eval_annotate,
    eval_domains,
    eval_genes,
    eval_retrieval,
    evaluate,
    patient_of,
    score_genes_labels,
    write_results,
)

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
    "squidpy_features",
    "standardized_pca",
    "write_results",
]
