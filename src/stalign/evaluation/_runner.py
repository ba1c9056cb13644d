"""The runner: one call evaluates a model on several tasks (shared sections and embeddings), and writes the results."""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._annotate import eval_annotate
from ._baselines import SQUIDPY_FEATURES
from ._domains import eval_domains
from ._expression import eval_genes
from ._retrieval import eval_retrieval
from ._store import Models, Run

logger = logging.getLogger(__name__)

TASKS = ("domains", "genes", "annotate", "retrieval")


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def run_meta(models: Models) -> dict:
    """What a result depends on: date, stalign version, machine, device and every model (sha256, fingerprint)."""
    import torch

    from .._utils import package_version

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "stalign_version": package_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "cpu": _cpu_name(),
        "device": str(models.device),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "groups": dict(models.groups),
        "models": models.info,
    }


def evaluate(
    tasks: str | Sequence[str],
    *,
    model: Any,
    sections: Any = None,
    query: Any = None,
    reference: Any = None,
    baselines: bool = True,
    ablations: Mapping[str, Any] | None = None,
    markers: Mapping | None = None,
    labels_key: str = "annotation",
    split: str = "section",
    image_features: Sequence[str] = SQUIDPY_FEATURES,
    smooth_um: float | None = None,
    seeds: int | Sequence[int] = 3,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    device: Any = None,
) -> dict:
    """Evaluate a model on one or several tasks, with the baselines of the protocol computed in the same run.

    Every baseline gets the same spatial smoothing as stalign's own output (``smooth_um``), and every quality number
    is a mean ± sd over runs: the clustering / sampling ``seeds``, times the models when ``model`` is a list
    (training seeds of one recipe).

    Parameters
    ----------
    tasks
        One or more of ``"domains"``, ``"genes"``, ``"annotate"``, ``"retrieval"``.
    model
        Registry name (``"stalign-base"``), saved-model path, :class:`~stalign.models.STAlign`, or a list of them
        (training seeds, aggregated).
    sections
        Evaluated sections (specs such as ``"dlpfc:151674"``, paths, or ``{name: SpatialData/AnnData}``). For
        ``"genes"`` without ``query``: leave-one-section-out among them.
    query, reference
        Held-out and reference sections for ``"genes"`` (``query`` also serves the other tasks when ``sections`` is
        not given).
    baselines
        Compute the baselines (and the random-init model of the same architecture).
    ablations
        ``{name: model or path}``: further models evaluated like ``model`` (e.g. spot-only loss).
    markers
        Marker prompts for ``"annotate"`` (default: the bundled dictionaries).
    labels_key
        ``obs`` column of manual labels.
    split
        ``"section"`` or ``"patient"`` (see :func:`eval_genes`).
    image_features
        squidpy feature groups of the image baselines (``summary``, ``histogram``, ``texture``; texture is slow,
        about 10 spots/s).
    smooth_um
        Smoothing radius (µm) of every method of ``"domains"`` and ``"annotate"``; default the ``tl`` defaults.
    seeds
        Number of seeds (``3`` → 0, 1, 2) or a list: clustering seeds of ``"domains"``, sampling seeds of
        ``"annotate"``, batch shufflings of the held-out loss of ``"retrieval"``.
    data_dir
        Data folder for dataset specs (default ``$STALIGN_DATA_DIR``).
    out
        Write the results as JSON to this path and the markdown tables next to it (``.md``).
    device
        Torch device (``None``: CUDA when present).

    Returns
    -------
    ``{"meta": {...}, "<task>": {"sections": {...}, "pooled": {...}}, ...}``.

    Examples
    --------
    The dev-evaluation table of the docs (all four tasks with every baseline, several minutes on a CPU):

    >>> import stalign as sta
    >>> res = sta.evaluation.evaluate(
    ...     "domains", model="stalign-base", sections=["dlpfc:151674"]
    ... )  # doctest: +SKIP
    >>> print(sta.evaluation.format_markdown(res))  # doctest: +SKIP

    One task on one small held-out section, without the baselines:

    >>> from stalign import evaluation
    >>> res = evaluation.evaluate(
    ...     "retrieval", model="stalign-base", sections=["stahl_mob:11"], baselines=False
    ... )
    >>> list(res), res["meta"]["models"]["stalign"]["spec"]
    (['meta', 'retrieval'], 'stalign-base')
    """
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        msg = f"Unknown task(s) {bad}; choose from {TASKS}."
        raise ValueError(msg)
    if sections is None and query is None:
        msg = "Pass sections= (and query=/reference= for 'genes')."
        raise ValueError(msg)
    run = Run(model, ablations=ablations, baselines=baselines, seeds=seeds, data_dir=data_dir, device=device)
    common = {"baselines": baselines, "seeds": run.seeds, "model": None}
    results: dict[str, Any] = {"meta": run_meta(run.models)}
    evaluated = sections if sections is not None else query
    with run.shared():
        _run_tasks(tasks, results, evaluated, query=query, reference=reference, sections=sections, common=common,
                   labels_key=labels_key, image_features=image_features, smooth_um=smooth_um, markers=markers,
                   split=split)  # fmt: skip
    if out is not None:
        write_results(results, out)
    return results


def _run_tasks(tasks, results, evaluated, *, query, reference, sections, common, labels_key, image_features,
               smooth_um, markers, split) -> None:  # fmt: skip
    for task in tasks:
        logger.info("Evaluating %s", task)
        if task == "domains":
            results[task] = eval_domains(
                evaluated, labels_key=labels_key, image_features=image_features, smooth_um=smooth_um, **common
            )
        elif task == "genes":
            results[task] = eval_genes(
                query,
                reference,
                sections=sections if query is None else None,
                split=split,
                image_features=image_features,
                **common,
            )
        elif task == "annotate":
            results[task] = eval_annotate(
                evaluated, markers=markers, labels_key=labels_key, smooth_um=smooth_um, **common
            )
        else:
            results[task] = eval_retrieval(evaluated, **common)


def write_results(results: Mapping, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``results`` as JSON to ``out`` and the markdown tables to ``out`` with suffix ``.md``.

    Parameters
    ----------
    results
        What :func:`evaluate` (or a task function) returned.
    out
        Path of the JSON file; its folder must exist.

    Returns
    -------
    The paths of the JSON and markdown files.

    Examples
    --------
    >>> from stalign import evaluation
    >>> res = evaluation.evaluate(
    ...     "retrieval", model="stalign-base", sections=["stahl_mob:11"], baselines=False
    ... )
    >>> evaluation.write_results(res, "retrieval.json")
    (PosixPath('retrieval.json'), PosixPath('retrieval.md'))
    """
    from ._report import format_markdown

    path = Path(out)
    if not path.parent.exists():
        msg = f"Output folder {str(path.parent)!r} does not exist; create it first."
        raise FileNotFoundError(msg)
    results = _finite_or_none(results)
    path.write_text(json.dumps(results, indent=1, default=_json_default, allow_nan=False))
    md = path.with_suffix(".md")
    md.write_text(format_markdown(results))
    logger.info("Wrote %s and %s", path, md)
    return path, md


def _finite_or_none(o: Any) -> Any:
    """``o`` with every non-finite float as ``None``.

    An undefined metric (e.g. the Pearson r of a constant prediction) becomes ``null`` in the JSON, which stays
    standard, and "–" in the markdown.
    """
    if isinstance(o, np.ndarray):
        o = o.tolist()
    if isinstance(o, Mapping):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite_or_none(v) for v in o]
    if isinstance(o, float | np.floating) and not np.isfinite(o):
        return None
    return o


def _json_default(o: Any):
    """Convert NumPy scalars to Python numbers (arrays are lists already, :func:`_finite_or_none`), and anything else to text."""
    if isinstance(o, np.generic):
        return o.item()
    return str(o)
