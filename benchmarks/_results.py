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


def time_squidpy_summary(sec, threads: int, unit: str = "spots") -> dict:
    """squidpy's ``summary`` image features on ``sec``'s spots, 100 µm crops from the finest level, timed.

    Returns ``n_<unit>``, the seconds spent loading the finest level (squidpy needs it whole in memory) and in
    ``calculate_image_features``, the rates ``<unit>_per_s`` (features only) and ``<unit>_per_s_with_load``, and the
    process's lifetime peak RSS (MB).
    """
    import resource
    import time
    import warnings

    import squidpy as sq
    import torch

    from stalign.evaluation._baselines import _squidpy_inputs

    t0 = time.perf_counter()
    cont, tmp, lib = _squidpy_inputs(sec, size_um=100.0, level="finest")
    t1 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_num_threads(threads)
        sq.im.calculate_image_features(tmp, cont, layer="image", library_id=lib, features=["summary"], copy=True,
                                       n_jobs=1, show_progress_bar=False)  # fmt: skip
    t2 = time.perf_counter()
    return {
        f"n_{unit}": int(tmp.n_obs),
        "load_finest_level_s": t1 - t0,
        "features_s": t2 - t1,
        f"{unit}_per_s": tmp.n_obs / (t2 - t1),
        f"{unit}_per_s_with_load": tmp.n_obs / (t2 - t0),
        "lifetime_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(script: str, args: list[str], env: dict | None = None) -> dict:
    """Run ``python script *args`` in a fresh process and return the JSON dict it prints last (its stderr on failure)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, script, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        msg = f"child {args} failed ({out.returncode})"
        raise RuntimeError(msg)
    return json.loads(out.stdout.strip().splitlines()[-1])


def her2st_jpg(data_dir: Path, section: str) -> Path:
    """The H&E JPEG of her2st ``section`` (e.g. ``"C3"``) in the shared data folder."""
    return next((data_dir / "her2st" / "data" / "ST-imgs" / section[0] / section).glob("*.jpg"))


def her2st_c3_image(data_dir: Path):
    """her2st C3's H&E JPEG as an RGB array, and its µm/px (from the ST spot grid)."""
    import numpy as np

    import stalign as sta
    from stalign._files import read_image_array

    jpg = her2st_jpg(data_dir, "C3")
    sec = sta.datasets.her2st("C3", data_dir=data_dir, load_image=False)
    mpp = float(sec.tables["table"].uns["spatial"]["C3"]["scalefactors"]["microns_per_pixel"])
    return np.ascontiguousarray(read_image_array(jpg)[..., :3]), mpp


#: Exists while a training run is in progress (the project's convention): timings beside one are meaningless.
TRAIN_LOCK = Path("/tmp/stalign_train.lock")


def wait_for_training(what: str = "timing anything", poll_s: float = 60.0) -> float:
    """Sleep while :data:`TRAIN_LOCK` exists; return the seconds waited."""
    import logging
    import time

    waited = 0.0
    while TRAIN_LOCK.exists():
        logging.getLogger("benchmarks").info("%s exists (a training run): waiting before %s", TRAIN_LOCK, what)
        time.sleep(poll_s)
        waited += poll_s
    return waited
