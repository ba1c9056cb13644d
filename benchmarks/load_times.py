"""Load time per dataset section through the stalign.io loaders (real data in $STALIGN_DATA_DIR).

Usage: .venv/bin/python benchmarks/load_times.py [--all]
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

import stalign as sta
from stalign._section import get_section

logging.getLogger("stalign").setLevel(logging.WARNING)
warnings.filterwarnings("ignore")

SECTIONS = [
    ("dlpfc", "151673"),
    ("dlpfc", "151507"),
    ("her2st", "A1"),
    ("her2st", "C2"),
    ("stutility_mob", "MOB1"),
    ("stahl_mob", "11"),
    ("stahl_mob", "01"),
]


def main() -> None:
    data_dir = Path(os.environ.get("STALIGN_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    rows = []
    try:  # warm-up: first-call imports (spatialdata, dask, ...) are not part of a section's load time
        sta.datasets.load("stahl_mob:01", data_dir=data_dir)
    except (FileNotFoundError, ValueError):
        pass
    for name, section in SECTIONS:
        t0 = time.perf_counter()
        try:
            sdata = sta.datasets.load(f"{name}:{section}", data_dir=data_dir)
        except (FileNotFoundError, ValueError) as e:
            rows.append((name, section, "-", "-", "-", "-", f"skipped: {e}"))
            continue
        dt = time.perf_counter() - t0
        sec = get_section(sdata)
        img = "x".join(map(str, sec.images[0].shape)) if sec.images else "none"
        t = sec.table
        rows.append((name, section, f"{t.n_obs}x{t.n_vars}", img, f"{sec.microns_per_pixel:.3f}", f"{dt:.2f}", ""))
    head = ("dataset", "section", "spots x genes", "image (h x w)", "um/px", "load s", "")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        sys.stdout.write("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")


if __name__ == "__main__":
    main()
