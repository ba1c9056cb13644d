"""Where every benchmark writes its result: ``benchmarks/results/<stem>.json`` and the markdown table ``<stem>.md``."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(stem: str, res: dict, markdown: str) -> Path:
    """Write ``res`` as JSON and ``markdown`` next to it (what ``make_docs.py`` reads); return the JSON path."""
    out = RESULTS / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown.rstrip("\n") + "\n")
    return out
