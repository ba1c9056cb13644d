from ._genes import gene_index, normalize_symbol

__all__ = ["gene_index", "normalize_symbol"]
