"""Collecting a cohort on rank 0: ``cohort.h5ad`` from the section files, the joint domains, ``manifest.json``."""

from __future__ import annotations

import json
from pathlib import Path

from .._constants import Key
from .._utils import atomic_path
from ._plan import COHORT_FILE, MANIFEST_FILE, PROGRESS_DIR


def collect(plan: list[dict], statuses: list[dict], out: Path, *, fmt: str, n_domains: int | None, record: dict):
    """Rank 0, after the barrier: ``cohort.h5ad`` from the section files (in plan order), joint domains, manifest."""
    import shutil

    from .._utils import package_version
    from ..io import concat, load
    from ..tl import domains

    by_index = {st["index"]: st for st in statuses}
    done = [e for e in plan if by_index[e["index"]]["status"] in ("embedded", "skipped")]
    cohort = None
    if done:
        # read back one section at a time, keeping obs, embeddings and spatial metadata only
        sections = (load(out / e["file"]) for e in done)
        cohort = concat(sections, keys=[e["sample"] for e in done], counts=False, join="outer", images=True)
        if n_domains is not None:
            domains(cohort, n_domains=n_domains, library_key=Key.sample)
        with atomic_path(out / COHORT_FILE) as tmp:
            cohort.write_h5ad(tmp)
    counts = cohort.obs[Key.sample].value_counts().to_dict() if cohort is not None else {}
    manifest = {
        "stalign_version": package_version(),
        "model": {
            "name": record["model"],
            "weights_sha256": record["weights_sha256"],
            "weights_fingerprint": record["weights_fingerprint"],
        },
        "format": fmt,
        "n_domains": n_domains,
        "n_spots": int(sum(counts.values())),
        "cohort": COHORT_FILE if cohort is not None else None,
        "sections": [
            {k: e[k] for k in ("spec", "sample", "file")}
            | {"n_spots": int(counts[e["sample"]]), "status": by_index[e["index"]]["status"]}
            for e in done
        ],
        "failures": [
            {"spec": e["spec"], "sample": e["sample"], "error": by_index[e["index"]]["error"]}
            for e in plan
            if by_index[e["index"]]["status"] == "failed"
        ],
    }
    with atomic_path(out / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out / PROGRESS_DIR, ignore_errors=True)
    return cohort, manifest
