"""Markdown tables of evaluation results: one table per task and metric, methods as rows, sections as columns."""

from __future__ import annotations

import logging
from collections.abc import Mapping

logger = logging.getLogger(__name__)

#: metrics shown per task (in order) and whether higher is better
_METRICS: dict[str, list[tuple[str, bool]]] = {
    "domains": [("ari", True), ("nmi", True)],
    "genes": [("pearson", True), ("mse", False)],
    "annotate": [("accuracy", True), ("macro_f1", True)],
    "retrieval": [("l_spot", False)] + [(f"{d}_R@{k}", True) for d in ("i2g", "g2i") for k in (1, 5, 10)],
}
_TITLES = {
    "domains": "Zero-shot spatial domains (tl.domains, GMM, k = number of labelled classes)",
    "genes": "H&E-only expression prediction (top-50 reference HVGs, log1p-normalised)",
    "annotate": "Zero-shot annotation from marker prompts",
    "retrieval": "Cross-modal retrieval and held-out L_spot within held-out sections",
}


def _num(v) -> str:
    try:
        return f"{float(v):.3f}"
    except (TypeError, ValueError):
        return str(v)


def _fmt(v, sd=None) -> str:
    """``mean ± sd`` (plain value for a single run)."""
    if v is None:
        return "–"
    return _num(v) if sd is None else f"{_num(v)} ± {_num(sd)}"


def _runs_note(res: Mapping) -> str:
    """How the runs of a task are made (seeds, smoothing)."""
    parts = []
    if res.get("smooth_um") is not None:
        parts.append(f"every method smoothed over {float(res['smooth_um']):g} µm")
    if res.get("seeds"):
        parts.append(f"seeds {', '.join(map(str, res['seeds']))}")
    if not parts:
        return ""
    return "_" + "; ".join(parts) + "; mean ± sd over runs (seeds × models), one value where a method has one run._\n"


def _table(task: str, res: Mapping, metric: str, higher: bool) -> str:
    sections = list(res.get("sections", {}))
    pooled = res.get("pooled", {})
    methods = list(dict.fromkeys([m for s in sections for m in res["sections"][s]["methods"]] + list(pooled)))
    cols = [*sections, "pooled"] if len(sections) > 1 else sections
    head = f"| {metric} ({'↑' if higher else '↓'}) | " + " | ".join(cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    rows = [head, sep]
    best = {}
    for c in cols:
        vals = {m: (pooled if c == "pooled" else res["sections"][c]["methods"]).get(m, {}).get(metric) for m in methods}
        vals = {m: v for m, v in vals.items() if v is not None and v == v}  # NaN is never best
        if vals:
            best[c] = (max if higher else min)(vals.values())
    for m in methods:
        cells = []
        for c in cols:
            src = pooled if c == "pooled" else res["sections"][c]["methods"]
            r = src.get(m, {})
            v = r.get(metric)
            s = _fmt(v, (r.get("sd") or {}).get(metric))
            cells.append(f"**{s}**" if v is not None and best.get(c) == v else s)
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def format_markdown(results: Mapping) -> str:
    """Render :func:`~stalign.evaluation.evaluate` results as markdown (best value per column in bold).

    Parameters
    ----------
    results
        The dict returned by :func:`~stalign.evaluation.evaluate` (or read back from its JSON).

    Returns
    -------
    str
        Markdown text: a header with the run's metadata, then one table per task and metric (``mean ± sd`` over runs),
        and the ``"done_when"`` checks of the results, if any, as a final table.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.evaluate(
    ...     "retrieval", model="stalign-base", sections=["stahl_mob:11"], baselines=False
    ... )
    >>> print(evaluation.format_markdown(res))  # doctest: +ELLIPSIS
    Run ... · stalign ... · device cpu
    - model `stalign`: stalign-base (4,702,392 parameters; sha256 ..., fingerprint ...)
    <BLANKLINE>
    ### Cross-modal retrieval and held-out L_spot within held-out sections
    ...
    """
    out = []
    meta = results.get("meta", {})
    if meta:
        cpu = f" ({meta['cpu']})" if meta.get("cpu") else ""
        out.append(
            f"Run {meta.get('date', '?')} · stalign {meta.get('stalign_version', '?')} · {meta.get('machine', '?')}"
            f"{cpu} · device {meta.get('device', '?')}"
        )
        for name, info in meta.get("models", {}).items():
            fp = info.get("weights_fingerprint")
            sha = info.get("weights_sha256")
            ids = ", ".join(
                x for x in (f"sha256 {sha[:12]}…" if sha else "", f"fingerprint {fp[:12]}…" if fp else "") if x
            )
            out.append(
                f"- model `{name}`: {info.get('spec')} ({info.get('n_parameters', 0):,} parameters"
                + (f"; {ids})" if ids else ")")
            )
        out.append("")
    for task, metrics in _METRICS.items():
        res = results.get(task)
        if not res:
            continue
        out.append(f"### {_TITLES[task]}\n")
        note = _runs_note(res)
        if note:
            out.append(note)
        if task == "genes":
            for q, r in res["sections"].items():
                note = " (same patient: section-level split)" if r.get("patient_overlap") else ""
                out.append(f"- held out `{q}`, reference {', '.join(f'`{x}`' for x in r['reference'])}{note}")
            out.append("")
        if task == "annotate":
            for s, r in res["sections"].items():
                if r.get("excluded_labels"):
                    out.append(f"- `{s}`: labels without a prompt, not scored: {', '.join(r['excluded_labels'])}")
            if any(r.get("excluded_labels") for r in res["sections"].values()):
                out.append("")
        if task == "retrieval" and res.get("l_spot_chance") is not None:
            out.append(
                f"L_spot: chance ln(B) = {res['l_spot_chance']:.3f}, target 0.85 ln(B) = {res['l_spot_target']:.3f} "
                f"(B = {next(iter(res['sections'].values()), {}).get('batch_size', 128)} spots per batch).\n"
            )
        for metric, higher in metrics:
            if any(metric in v for s in res["sections"].values() for v in s["methods"].values()):
                out.append(_table(task, res, metric, higher))
                out.append("")
    checks = results.get("done_when")
    if checks:
        out.append("### Done when\n")
        out.append("| criterion | measured | result |")
        out.append("|---|---|---|")
        for c in checks:
            out.append(f"| {c['criterion']} | {c['measured']} | {'PASS' if c['pass'] else '**FAIL**'} |")
        n_pass = sum(bool(c["pass"]) for c in checks)
        out.append(f"\n{n_pass} of {len(checks)} criteria pass.")
    return "\n".join(out).rstrip() + "\n"
