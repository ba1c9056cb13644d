"""Regenerate the Ensembl → symbol tables bundled in ``src/stalign/_data`` from ``../shared/data/reference``.

    python recipes/gene_tables.py [DATA_DIR]

Each source is a Cell Ranger ``features.tsv.gz`` (GRCh38 / mm10; provenance in ``../shared/data/SOURCES.md``). The
bundled table keeps two columns, the Ensembl gene id without its version suffix and the symbol, one row per id (the
first occurrence), so the package maps Ensembl ids on any machine without the data folder.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pandas as pd

SOURCES = {"human": "human_grch38_features.tsv.gz", "mouse": "mouse_mm10_features.tsv.gz"}
OUT = Path(__file__).resolve().parents[1] / "src" / "stalign" / "_data"


def main(data_dir: str) -> None:
    for species, name in SOURCES.items():
        df = pd.read_csv(Path(data_dir) / "reference" / name, sep="\t", header=None, usecols=[0, 1], dtype=str)
        ids = df[0].str.strip().str.replace(r"\.\d+$", "", regex=True)
        table = pd.DataFrame({"gene_id": ids, "symbol": df[1].str.strip()}).drop_duplicates("gene_id")
        path = OUT / f"ensembl_{species}.txt.gz"
        # mtime=0: the same input gives byte-identical output
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write(table.to_csv(sep="\t", index=False, header=False).encode())
        print(f"{path}: {len(table)} ids")  # noqa: T201


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[2] / "shared" / "data"))
