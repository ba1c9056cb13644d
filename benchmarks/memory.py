"""Peak RSS of `tl.embed` on synthetic slides of growing size (5k² to 40k² px), lazily backed, fixed spot count.

    .venv/bin/python benchmarks/memory.py                 # sizes 5000 10000 20000 40000, 2000 spots
    .venv/bin/python benchmarks/memory.py --sizes 5000 40000 --spots 1000

Each slide is a dask array whose 1024² tiles are generated on demand (``da.map_blocks``: a deterministic
H&E-like pattern per tile), wrapped as a single-scale SpatialData image at 0.5 µm/px with Visium-like 55 µm spots on
a regular grid spanning the whole slide and Poisson counts. A 40k² RGB slide would take 4.8 GB in memory; only
the tiles under the crops are ever generated. Each size runs in its own subprocess. Reported per size: the RSS
before `tl.embed` (imports, model, slide set-up, one warm-up call), the peak RSS of the embedding call itself (Linux:
the high-water mark is reset through ``/proc/self/clear_refs`` just before the call and read from
``/proc/self/status`` after it), and the child's lifetime peak (``ru_maxrss``).
Writes benchmarks/results/memory.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _results import write_results  # benchmarks/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
MPP = 0.5  # µm per full-resolution pixel
TILE = 1024


_TEXTURE: np.ndarray | None = None


def _texture() -> np.ndarray:
    """One 1024² H&E-like texture (nuclei blobs on an eosin background), made once per process."""
    global _TEXTURE
    if _TEXTURE is None:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:TILE, 0:TILE]
        img = np.array([230, 170, 200], dtype=np.float32)[:, None, None] + 15 * np.sin(yy / 37.0) * np.cos(xx / 53.0)
        img = img + rng.normal(0, 8, size=(3, TILE, TILE)).astype(np.float32)
        for cy, cx in rng.integers(0, TILE, size=(TILE * TILE // 4000, 2)):
            img[:, max(0, cy - 3) : cy + 3, max(0, cx - 3) : cx + 3] = np.array([90, 60, 150])[:, None, None]
        _TEXTURE = np.clip(img, 0, 255).astype(np.uint8)
    return _TEXTURE


def _tile(block_info=None):
    """The tile of one block, generated on demand: the texture shifted by the block's position."""
    (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    t = np.roll(_texture(), shift=((y0 // TILE) * 131 % TILE, (x0 // TILE) * 197 % TILE), axis=(1, 2))
    return np.ascontiguousarray(t[:, : y1 - y0, : x1 - x0])


def synthetic_slide(size: int, n_spots: int, genes: list[str], seed: int = 0):
    """Lazily backed SpatialData: a ``size``² image, ``n_spots`` spots on a grid, Poisson counts."""
    import anndata as ad
    import dask.array as da
    import pandas as pd
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel

    img = da.map_blocks(
        _tile,
        dtype=np.uint8,
        chunks=((3,), *(tuple([TILE] * (size // TILE) + ([size % TILE] if size % TILE else [])),) * 2),
    )
    image = Image2DModel.parse(img, dims=("c", "y", "x"))
    side = int(np.ceil(np.sqrt(n_spots)))
    margin = 300
    g = np.linspace(margin, size - margin, side)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)[:n_spots]
    rng = np.random.default_rng(seed)
    X = sparse.csr_matrix(rng.poisson(1.0, size=(n_spots, len(genes))).astype(np.float32))
    obs = pd.DataFrame({"sample": "synthetic"}, index=[f"s{i}" for i in range(n_spots)])
    table = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=genes))
    table.obsm["spatial"] = xy
    table.uns["spatial"] = {
        "synthetic": {"scalefactors": {"microns_per_pixel": MPP, "spot_diameter_fullres": 55.0 / MPP}}
    }
    return SpatialData(images={"synthetic_image": image}, tables={"table": table})


def rss_mb() -> float:
    """Lifetime peak RSS of this process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the RSS high-water mark (VmHWM) of this process; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(size: int, n_spots: int, threads: int, model_spec: str) -> dict:
    import torch

    import stalign as sta
    from stalign.models import STAlign, STAlignConfig, available_models

    torch.set_num_threads(threads)
    if model_spec == "auto":
        model_spec = "stalign-base" if "stalign-base" in available_models() else "random"
    if model_spec == "random":
        torch.manual_seed(0)
        genes = [f"GENE{i}" for i in range(200)]
        model = STAlign(STAlignConfig.base(genes)).eval()
    else:
        model = sta.models.load(model_spec)
        genes = list(model.config.genes[:200])
    sd = synthetic_slide(size, n_spots, genes)
    sta.tl.embed(synthetic_slide(2048, 16, genes), model=model, show_progress_bar=False)  # warm-up
    before = _status_mb("VmRSS")
    peak_reset = reset_peak()
    t0 = time.perf_counter()
    sta.tl.embed(sd, model=model, show_progress_bar=False)
    wall = time.perf_counter() - t0
    embed_peak = _status_mb("VmHWM") if peak_reset else None
    emb = sd.tables["table"].obsm["X_stalign"]
    return {
        "size_px": size,
        "image_gb_if_dense": 3 * size * size / 1e9,
        "n_spots": n_spots,
        "model": model_spec,
        "rss_before_embed_mb": before,
        "embed_peak_rss_mb": embed_peak,
        "lifetime_peak_rss_mb": rss_mb(),
        "embed_s": wall,
        "spots_per_s": n_spots / wall,
        "finite": bool(np.isfinite(emb).all()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 40000])
    p.add_argument("--spots", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="auto", help="'auto' (bundled else random), 'random', a name or a path")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        sys.stdout.write(json.dumps(child(args.child, args.spots, args.threads, args.model)) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s memory: %(message)s")
    runs = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--spots", str(args.spots)]
        cmd += ["--threads", str(args.threads), "--model", args.model]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-3000:])
            return out.returncode
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        logging.info("%s", runs[-1])
    key = "embed_peak_rss_mb" if all(r["embed_peak_rss_mb"] for r in runs) else "lifetime_peak_rss_mb"
    first, last = runs[0], runs[-1]
    growth = (last[key] - first[key]) / first[key]
    worst = max(r[key] for r in runs) / first[key] - 1
    res = {
        "runs": runs,
        "peak_key": key,
        "peak_rss_growth": growth,
        "max_peak_rss_growth": worst,
        "target": "< 10 % from the smallest to the largest slide",
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs)",
            "command": "python benchmarks/memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "model": runs[0]["model"],
            "microns_per_pixel": MPP,
        },
    }
    lines = [
        f"Run {res['meta']['date']} · {res['meta']['machine']} · model {runs[0]['model']} · {args.spots} spots, "
        f"{MPP} µm/px, single-scale image of 1024² lazily generated tiles · torch threads {args.threads}",
        "",
        "| slide (px) | dense size (GB) | RSS before embed (MB) | peak RSS during embed (MB) | "
        "lifetime peak RSS (MB) | embed spots/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        ep = f"{r['embed_peak_rss_mb']:.0f}" if r["embed_peak_rss_mb"] else "–"
        lines.append(
            f"| {r['size_px']:,}² | {r['image_gb_if_dense']:.2f} | {r['rss_before_embed_mb']:.0f} | {ep} | "
            f"{r['lifetime_peak_rss_mb']:.0f} | {r['spots_per_s']:.0f} |"
        )
    what = "peak RSS during embed" if key == "embed_peak_rss_mb" else "lifetime peak RSS"
    lines += [
        "",
        f"Growth of the {what} {first['size_px']:,}² → {last['size_px']:,}²: {100 * growth:+.1f} % "
        f"(largest over all sizes {100 * worst:+.1f} %; target < 10 %).",
    ]
    write_results("memory", res, "\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
