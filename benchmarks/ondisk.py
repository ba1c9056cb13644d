"""`tl.embed` on real H&E slides stored on disk as SpatialData zarr and read back lazily, multiscale and single-scale,
next to squidpy `calculate_image_features(features="summary")` on the same spots from the same zarr, and the crop
reader's block cache off (the code path before it) vs on, all in one run.

    .venv/bin/python benchmarks/ondisk.py                          # 10,240² and 20,480² px, 2 torch threads
    .venv/bin/python benchmarks/ondisk.py --sizes 10240 20480 40960 --tmp /big/scratch

Slides: her2st C3's H&E JPG resampled to 0.5 µm/px (a 20x scan), mirrored copies tiled to fill a square of the given
side (built tile by tile as a dask array, never whole in memory), with Visium-like spots over the whole slide (55 µm
discs on a 100 µm hexagonal pitch) and Poisson counts on 2,000 genes of the model's vocabulary. Each slide is written
with `SpatialData.write` in up to three layouts:

- ``multiscale``: `Image2DModel.parse(..., scale_factors=[2, 2, ...])` down to ≤ 512 px (spatialdata's 256² chunks);
- ``single``: `Image2DModel.parse(...)` without `scale_factors`, from 1024²-chunked tiles (a slide built or converted
  lazily, e.g. from a tiled TIFF);
- ``single_auto``: the chunks `Image2DModel.parse(numpy_array)` gives an image decoded into memory, without
  `scale_factors`: dask's automatic chunks of ~128 MiB (6,688² px RGB; built lazily with the same chunks, so the
  slide is never whole in memory).

Every measurement runs in a fresh subprocess: `spatialdata.read_zarr` (lazy) + `tl.embed` with the bundled
`stalign-base` (loaded and warmed up on 300 spots of the same slide, through a cache of its own, before the clock
starts), `--threads` torch threads, block cache on (default) and off (`CACHE_MB = 0`: the crop reader as it was before
the cache and the derived levels; up to `--nocache-max-side`, as it takes ~15 min a run at 40,960²), alternating,
`--repeats` fresh processes each (the fastest kept: other jobs share the machine). Results are written after every
slide, so a run cut short keeps what it measured (marked incomplete). Peak RSS: the high-water mark of the embedding call (reset through `/proc/self/clear_refs` just before it,
machinery of benchmarks/memory.py) and the child's lifetime peak. squidpy runs in its own subprocess on the same
spots at the finest level, as `evaluation.squidpy_features` calls it; squidpy has no lazy reader, so the level is
loaded first (timed separately, not counted in its features-only rate).

Never times beside a training run: waits while `/tmp/stalign_train.lock` exists and checks again before every
measurement. Writes benchmarks/results/ondisk.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# benchmarks/ is on sys.path when a script runs
from _results import TRAIN_LOCK, her2st_c3_image, run_child, time_squidpy_summary, wait_for_training, write_results
from memory import _status_mb, reset_peak
from slide_throughput import _mirror_index

log = logging.getLogger("ondisk")
MPP = 0.5  # µm per full-resolution pixel of the written slides
TILE = 1024
PITCH_UM = 100.0  # Visium centre-to-centre distance
SPOT_UM = 55.0
N_GENES = 2000
LAYOUTS = ("multiscale", "single", "single_auto")


#: seconds spent waiting for training runs to finish
WAITED = [0.0]


def _wait_for_lock(what: str) -> None:
    WAITED[0] += wait_for_training(what, poll_s=120)


def _source(data_dir: Path) -> tuple[np.ndarray, float]:
    """her2st C3's H&E resampled to :data:`MPP` µm/px, and the µm/px of the file."""
    from PIL import Image

    img, mpp = her2st_c3_image(data_dir)
    h, w = (round(s * mpp / MPP) for s in img.shape[:2])
    img = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.LANCZOS))
    return np.ascontiguousarray(img), mpp


def _tiles(src: np.ndarray, side: int):
    """A lazy ``(3, side, side)`` uint8 dask array of mirrored copies of ``src``, 1024² tiles made on demand."""
    import dask.array as da

    def block(block_info=None):
        (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        ri = _mirror_index(y1, src.shape[0])[y0:]
        ci = _mirror_index(x1, src.shape[1])[x0:]
        return np.ascontiguousarray(np.moveaxis(src[np.ix_(ri, ci)], -1, 0))

    chunks = ((3,), *(tuple([TILE] * (side // TILE) + ([side % TILE] if side % TILE else [])),) * 2)
    return da.map_blocks(block, dtype=np.uint8, chunks=chunks)


def _spots(side: int) -> np.ndarray:
    """Visium-like hexagonal grid of spot centres (full-resolution px) over the whole slide."""
    pitch = PITCH_UM / MPP
    margin = PITCH_UM / MPP
    ys = np.arange(margin, side - margin, pitch * np.sqrt(3) / 2)
    rows = []
    for i, y in enumerate(ys):
        xs = np.arange(margin + (pitch / 2 if i % 2 else 0.0), side - margin, pitch)
        rows.append(np.column_stack([xs, np.full(len(xs), y)]))
    return np.concatenate(rows)


def child_write(path: str, side: int, layout: str, data_dir: str | None) -> dict:
    """Write one slide in its own process (the parent stays small, so its RSS does not leak into the children)."""
    import warnings

    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    import stalign as sta
    from stalign._build import pyramid_scale_factors, spot_elements
    from stalign.datasets._common import resolve_root as resolve

    src, src_mpp = _source(resolve(data_dir))
    img = _tiles(src, side)
    kw = {"dims": ("c", "y", "x"), "c_coords": ["r", "g", "b"], "transformations": {"global": Identity()}}
    if layout == "multiscale":
        image = Image2DModel.parse(img, scale_factors=pyramid_scale_factors(side, side), **kw)
    elif layout == "single":
        image = Image2DModel.parse(img, **kw)
    else:  # what parse() gives a numpy array: dask's automatic chunks
        import dask.array as da

        auto = da.core.normalize_chunks("auto", img.shape, dtype=img.dtype)
        image = Image2DModel.parse(img.rechunk(auto), **kw)
    xy = _spots(side)
    genes = list(sta.models.load("stalign-base").config.genes[:N_GENES])
    counts = np.random.default_rng(0).poisson(0.5, size=(len(xy), len(genes))).astype(np.float32)
    region, circles, table = spot_elements(
        sample="slide", coords_fullres=xy, obs_names=[f"s{i}" for i in range(len(xy))], microns_per_pixel=MPP,
        spot_diameter_fullres=SPOT_UM / MPP, counts=counts, var_names=genes,
    )  # fmt: skip
    sdata = SpatialData(images={"slide_image": image}, shapes={region: circles}, tables={"table": table})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(path, overwrite=True)
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    node = image["scale0"]["image"] if layout == "multiscale" else image
    return {
        "seconds": time.perf_counter() - t0,
        "bytes": size,
        "n_spots": len(xy),
        "levels": len(image.children) if layout == "multiscale" else 1,
        "chunk_px": [int(c[0]) for c in node.data.chunks[1:]],
        "source_microns_per_pixel": src_mpp,
    }


def child_stalign(path: str, threads: int, cache: bool) -> dict:
    # imports are paid once per session, not per slide: done before the clock starts
    import spatialdata
    import torch

    import stalign as sta
    import stalign.pp._blocks as blocks

    torch.set_num_threads(threads)
    if not cache:
        blocks.CACHE_MB = 0  # the crop reader as it was: every window read straight from the stored level
    model = sta.models.load("stalign-base")
    warm = spatialdata.read_zarr(path)
    t = warm.tables["table"]
    del warm.tables["table"]
    warm.tables["table"] = t[:300].copy()
    sta.tl.embed(warm, model=model, show_progress_bar=False)  # torch kernels for full and partial batches
    del warm, t
    before = _status_mb("VmRSS")
    peak_reset = reset_peak()
    c0, t0 = time.process_time(), time.perf_counter()
    sdata = spatialdata.read_zarr(path)
    t1 = time.perf_counter()
    sta.tl.embed(sdata, model=model, show_progress_bar=False)
    t2 = time.perf_counter()
    cpu = time.process_time() - c0
    peak = _status_mb("VmHWM") if peak_reset else None
    table = sdata.tables["table"]
    n = table.n_obs
    out = Path(path).with_suffix(f".{'cache' if cache else 'nocache'}.npy")
    np.save(out, np.asarray(table.obsm["X_stalign"]))
    return {
        "n_spots": n,
        "seconds": {"read_zarr": t1 - t0, "embed": t2 - t1, "total": t2 - t0},
        "spots_per_s": n / (t2 - t0),
        "spots_per_cpu_s": n / cpu,
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "peak_rss_above_start_mb": None if peak is None else peak - before,
        "lifetime_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "finite": bool(np.isfinite(table.obsm["X_stalign"]).all()),
        "embedding_file": str(out),
        "load_average_1min_after": os.getloadavg()[0],
    }


def child_squidpy(path: str, threads: int) -> dict:

    import spatialdata

    from stalign._section import get_section

    sdata = spatialdata.read_zarr(path)
    return time_squidpy_summary(get_section(sdata), threads, unit="spots")


def _embedding_agreement(a_file: str, b_file: str) -> dict:
    a, b = np.load(a_file), np.load(b_file)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "cosine_min": float(cos.min()),
        "cosine_median": float(np.median(cos)),
        "max_abs": float(np.abs(a - b).max()),
    }


def _ratio(on: dict, off: dict) -> str:
    return f"{on['spots_per_s'] / off['spots_per_s']:.1f}× ({on['spots_per_cpu_s'] / off['spots_per_cpu_s']:.1f}×)"


def markdown(res: dict) -> str:
    m = res["meta"]
    loads = [
        x["load_average_1min_after"]
        for r in res["runs"]
        for x in r["stalign"].values()
        if x.get("load_average_1min_after") is not None
    ]
    lines = [
        f"Run {m['date']} · {m['machine']} (load average {m['load_average_at_start'][1]:.1f} at the start, "
        f"{m['load_average_at_end'][1]:.1f} at the end, over 5 min; 1-min load after each stalign run "
        f"{min(loads, default=0):.1f}–{max(loads, default=0):.1f}; no training run: `{TRAIN_LOCK}` absent before every "
        f"measurement, {m.get('waited_for_lock_s', 0) / 60:.0f} min spent waiting for it) · model {m['model']} · "
        f"torch threads {m['threads']} · block cache {m['cache_mb']} MB · fastest of {m.get('repeats', 1)} fresh "
        "processes per setting" + ("" if m.get("complete", True) else " · **incomplete run** (cut short)"),
        "",
        f"Slides: her2st C3's H&E resampled to {MPP} µm/px, mirrored copies tiled to fill the square, written with "
        "`SpatialData.write` and read back with `spatialdata.read_zarr`; Visium-like spots (55 µm, 100 µm hexagonal "
        "pitch) over the whole slide with Poisson counts. Layouts: **multiscale** = `Image2DModel.parse(..., "
        "scale_factors=[2, 2, ...])` (256² chunks); **single** = no `scale_factors`, 1024²-chunked; **single, auto** = "
        "no `scale_factors`, the chunks `Image2DModel.parse(numpy_array)` gives (dask's automatic ~128 MiB chunks, "
        "6,688² px).",
        "",
        "| slide (px) | layout | file (MB) | spots | **spots/s, cache on** (runs) | spots/s, cache off (before) | "
        "on ÷ off (per CPU-s) | "
        "peak RSS above start, on / off (MB) | squidpy summary spots/s: features / with loading the level | "
        "stalign (on) ÷ squidpy: features / with load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        on, off, q = r["stalign"].get("cache"), r["stalign"].get("nocache"), r.get("squidpy")

        def rate(s):
            if not s:
                return "–"
            return f"{s['spots_per_s']:.0f} ({', '.join(f'{v:.0f}' for v in s['repeats_spots_per_s'])})"

        def peak(s):
            return f"{s['peak_rss_above_start_mb']:+.0f}" if s and s["peak_rss_above_start_mb"] is not None else "–"

        ratio = _ratio(on, off) if on and off else "–"
        sq = f"{q['spots_per_s']:.0f} / {q['spots_per_s_with_load']:.0f}" if q else "–"
        vs = (
            f"{on['spots_per_s'] / q['spots_per_s']:.1f}× / {on['spots_per_s'] / q['spots_per_s_with_load']:.1f}×"
            if q and on
            else "–"
        )
        lines.append(
            f"| {r['side']:,}² | {r['layout'].replace('_', ', ')} | "
            f"{r['file']['bytes'] / 1e6:.0f} | {r['file']['n_spots']:,} | **{rate(on).replace(' (', '** (', 1)} | "
            f"{rate(off)} | {ratio} | "
            f"{peak(on)} / {peak(off)} | {sq} | {vs} |"
        )
    lines += [""]
    for layout in LAYOUTS:
        rs = {r["side"]: r["stalign"] for r in res["runs"] if r["layout"] == layout}
        if len(rs) < 2 or not all("cache" in v for v in rs.values()):
            continue
        a, b = rs[min(rs)]["cache"], rs[max(rs)]["cache"]
        if a["peak_rss_above_start_mb"] is not None and b["peak_rss_above_start_mb"] is not None:
            lines.append(
                f"- {layout.replace('_', ' ')}, cache on: the embedding call's peak above its start RSS goes from "
                f"{a['peak_rss_above_start_mb']:+.0f} MB ({min(rs):,}²) to {b['peak_rss_above_start_mb']:+.0f} MB "
                f"({max(rs):,}²) while the slide grows {(max(rs) / min(rs)) ** 2:.0f}× in area (block cache budget "
                f"{m['cache_mb']} MB)."
            )
    for r in res["runs"]:
        if "single_vs_multiscale" in r:
            a = r["single_vs_multiscale"]
            lines.append(
                f"- {r['side']:,}², {r['layout'].replace('_', ' ')} vs multiscale (cache on): cosine of `X_stalign` "
                f"min {a['cosine_min']:.5f}, median {a['cosine_median']:.6f}."
            )
        if "cache_vs_nocache" in r:
            a = r["cache_vs_nocache"]
            lines.append(
                f"- {r['side']:,}², {r['layout'].replace('_', ' ')}: cache on vs off, cosine of `X_stalign` min "
                f"{a['cosine_min']:.5f}, median {a['cosine_median']:.6f}."
            )
    lines += [
        "",
        "Spots/s count `read_zarr` + `tl.embed` (crop reading, niche expression, the forward pass) after the imports "
        "and the model load. Cache off is the crop reader before the block cache: every batch read its windows from "
        "the stored level, a single-scale slide at full resolution. The peak is the embedding call's own RSS "
        "high-water mark above the RSS it started from. squidpy's first rate counts `calculate_image_features` alone; "
        "the second includes loading the finest level, which it needs whole in memory.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10240, 20480])
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="stalign runs per setting (fresh processes, fastest kept)")
    p.add_argument("--no-cache-run", dest="nocache", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the reader with the block cache off (the code path before it)")  # fmt: skip
    p.add_argument(
        "--nocache-max-side",
        type=int,
        default=20480,
        help="largest slide timed with the cache off too (the path before it takes ~15 min a run at 40,960²)",
    )
    p.add_argument("--squidpy-max-side", type=int, default=20480, help="largest slide squidpy runs on (loads it whole)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tmp", default=None, help="folder for the slides (default: a temporary folder)")
    p.add_argument("--child", choices=["write", "stalign", "squidpy"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--side", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--layout", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "write":
        sys.stdout.write(json.dumps(child_write(args.path, args.side, args.layout, args.data_dir)) + "\n")
        return 0
    if args.child == "stalign":
        sys.stdout.write(json.dumps(child_stalign(args.path, args.threads, bool(args.cache))) + "\n")
        return 0
    if args.child == "squidpy":
        sys.stdout.write(json.dumps(child_squidpy(args.path, args.threads)) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ondisk: %(message)s")
    import stalign as sta
    import stalign.pp._blocks as blocks

    _wait_for_lock("starting")
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs)",
        "load_average_at_start": os.getloadavg(),
        "threads": args.threads,
        "repeats": args.repeats,
        "model": "stalign-base",
        "cache_mb": blocks.CACHE_MB,
        "microns_per_pixel": MPP,
        "source": "her2st C3 H&E JPG",
        "stalign_version": sta.__version__,
        "command": "python benchmarks/ondisk.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    runs: list[dict] = []

    def save(complete: bool) -> Path:  # after every slide: a run cut short keeps what it measured
        meta.update(load_average_at_end=os.getloadavg(), complete=complete, waited_for_lock_s=WAITED[0])
        return write_results("ondisk", {"runs": runs, "meta": meta}, markdown({"runs": runs, "meta": meta}))

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for side in sorted(args.sizes):
            for layout in args.layouts:
                path = Path(tmp) / f"slide_{side}_{layout}.zarr"
                extra = ["--data-dir", args.data_dir] if args.data_dir else []
                file = run_child(__file__, ["--child", "write", "--path", str(path), "--side", str(side), "--layout", layout,
                                   *extra])  # fmt: skip
                log.info("wrote %s: %s", path.name, file)
                common = ["--path", str(path), "--threads", str(args.threads)]
                settings = (1, 0) if args.nocache and side <= args.nocache_max_side else (1,)
                reps: dict[str, list] = {}
                for _ in range(args.repeats):  # on and off alternating: other jobs' load falls on both alike
                    for cache in settings:
                        _wait_for_lock("timing")
                        r = run_child(__file__, ["--child", "stalign", *common, "--cache", str(cache)])
                        reps.setdefault("cache" if cache else "nocache", []).append(r)
                        log.info("stalign %d² %s cache=%d: %s", side, layout, cache, r)
                st = {
                    k: {**max(v, key=lambda r: r["spots_per_s"]), "repeats_spots_per_s": [r["spots_per_s"] for r in v]}
                    for k, v in reps.items()
                }
                run = {"side": side, "layout": layout, "file": file, "stalign": st}
                if side <= args.squidpy_max_side:
                    _wait_for_lock("timing")
                    run["squidpy"] = run_child(__file__, ["--child", "squidpy", *common])
                    log.info("squidpy %d² %s: %s", side, layout, run["squidpy"])
                if "nocache" in st:
                    run["cache_vs_nocache"] = _embedding_agreement(
                        st["cache"]["embedding_file"], st["nocache"]["embedding_file"]
                    )
                ms = next((r for r in runs if r["side"] == side and r["layout"] == "multiscale"), None)
                if ms is not None and layout != "multiscale":
                    run["single_vs_multiscale"] = _embedding_agreement(
                        st["cache"]["embedding_file"], ms["stalign"]["cache"]["embedding_file"]
                    )
                runs.append(run)
                save(complete=False)
            for f in Path(tmp).glob(f"slide_{side}_*"):
                if f.is_dir():
                    shutil.rmtree(f)
    out = save(complete=True)
    log.info("wrote %s", out)
    sys.stdout.write(markdown({"runs": runs, "meta": meta}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
