"""Mean ± sd over runs (clustering seeds × training seeds) and pooling over sections.

A method's result holds the mean of each metric under the metric's name (what tables and thresholds read), and
``sd`` (sample standard deviation over runs, ``None`` for one run), ``values`` (one per run) and ``runs`` (which
model and seed each value comes from: ``[model, seed]`` pairs, ``None`` where a run has no model or no seed; a dict
by metric when metrics have different runs, e.g. Recall@k one per model, the held-out loss one per model and seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _mean(v: Sequence[float]) -> float:
    a = np.asarray([np.nan if x is None else x for x in v], dtype=np.float64)
    ok = np.isfinite(a)
    return float(a[ok].mean()) if ok.any() else float("nan")


def _sd(v: Sequence[float]) -> float | None:
    a = np.asarray([np.nan if x is None else x for x in v], dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.std(ddof=1)) if len(a) > 1 else None


def summarise(runs: Sequence[Mapping[str, float]], labels: Sequence[Any], **extra: Any) -> dict:
    """Aggregate per-run metric dicts: ``{metric: mean, "sd": {...}, "values": {...}, "runs": labels, **extra}``."""
    metrics = list(dict.fromkeys(k for r in runs for k in r))
    values = {m: [r.get(m) for r in runs] for m in metrics}
    out: dict[str, Any] = {m: _mean(v) for m, v in values.items()}
    out["sd"] = {m: _sd(v) for m, v in values.items()}
    out["values"] = values
    out["runs"] = [list(x) if isinstance(x, tuple) else x for x in labels]
    out.update(extra)
    return out


def merge(*parts: Mapping[str, Any]) -> dict:
    """One result from :func:`summarise` outputs of disjoint metrics (their runs may differ)."""
    out: dict[str, Any] = {}
    sd: dict[str, Any] = {}
    values: dict[str, Any] = {}
    runs: dict[str, list] = {}
    for p in parts:
        sd.update(p.get("sd", {}))
        values.update(p.get("values", {}))
        runs.update(dict.fromkeys(p.get("values", {}), p.get("runs")))
        out.update({k: v for k, v in p.items() if k not in ("sd", "values", "runs")})
    labels = list(runs.values())
    out["sd"], out["values"] = sd, values
    out["runs"] = labels[0] if labels and all(x == labels[0] for x in labels) else runs
    return out


def runs_of(result: Mapping[str, Any], metric: str) -> list | None:
    """The run labels of ``metric`` in a method's result."""
    runs = result.get("runs")
    return runs.get(metric) if isinstance(runs, Mapping) else runs


def pooled(per_section: Mapping[str, Mapping[str, Any]], metrics: Sequence[str]) -> dict:
    """Each method's metrics averaged over the sections where it ran, run by run (then mean ± sd over runs).

    When a method's runs differ between sections, the section means are averaged and ``sd`` is ``None``.
    """
    out: dict[str, dict] = {}
    methods = dict.fromkeys(m for res in per_section.values() for m in res["methods"])
    for m in methods:
        results = [res["methods"][m] for res in per_section.values() if m in res["methods"]]
        parts = []
        for k in metrics:
            with_k = [r for r in results if k in r]
            if not with_k:
                continue
            runs = [runs_of(r, k) for r in with_k]
            if all(r is not None and r == runs[0] for r in runs) and all("values" in r for r in with_k):
                per_run = [{k: _mean([r["values"][k][i] for r in with_k])} for i in range(len(runs[0]))]
                parts.append(summarise(per_run, runs[0]))
            else:
                parts.append({k: _mean([r[k] for r in with_k]), "sd": {k: None}, "values": {k: []}, "runs": None})
        out[m] = {**merge(*parts), "n_sections": len(results)}
    return out
