"""Visium HD at slide scale (issue 24, item 5): a 6.5 mm HD slide read, binned, pseudo-spotted and embedded.

    .venv/bin/python benchmarks/hd_scale.py                  # 6.5 mm, 8 µm bins, 100 µm pseudo-spots, 2 threads
    .venv/bin/python benchmarks/hd_scale.py --size-mm 1      # a quick run (not the target)

The slide is made from real data: her2st C3's H&E, upsampled to 0.27 µm/px (Visium HD's full resolution) and
mirrored to a ``size``² pyramidal OME-TIFF (``slide_throughput.write_slide``); every 8 µm bin of the square (about
660,000 at 6.5 mm) gets counts drawn (multinomial, Poisson depth of mean ``--depth`` UMIs, like Visium HD's 8 µm
bins) from the expression of the real C3 spot nearest the place of the H&E it lies on. The bins are written in the
Space Ranger HD layout (``binned_outputs/square_008um``, hires PNG) with the OME-TIFF as the full-resolution image.

Timed in one fresh process, after its imports: ``io.read_visium_hd(fullres_image=)``, ``pp.bin(bin_um=16)``,
``pp.pseudospots(spacing_um=100)`` and ``tl.embed`` of the pseudo-spots (end to end, target < 120 s on 2 cores,
peak RSS < 8 GB), then per-bin embedding at 16 µm (each of ``--n-bins16`` bins with the 55 µm disc of bins around
it, ``pp.pseudospots(centers=...)``) in bins/s, and squidpy's ``summary`` image features on the same pseudo-spots.
Waits while a training run holds ``/tmp/stalign_train.lock``.

Writes benchmarks/results/hd_scale.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import her2st_c3_image, run_child, time_squidpy_summary, wait_for_training, write_results
from memory import _status_mb, reset_peak
from slide_throughput import _mirror_index, write_slide

log = logging.getLogger("hd_scale")
HD_MPP = 0.27
BIN_UM = 8
TARGET_S = 120.0
TARGET_RSS_MB = 8192.0


def child_make(work: str, size_mm: float, depth: float, data_dir: str | None) -> dict:
    """Write the synthetic slide (OME-TIFF + Space Ranger HD layout) under ``work``."""
    from PIL import Image
    from scipy import sparse
    from scipy.spatial import cKDTree

    import stalign as sta
    from stalign.datasets._common import resolve_root
    from stalign.io._visium_hd import write_visium_hd

    t0 = time.perf_counter()
    root = resolve_root(data_dir)
    src, src_mpp = her2st_c3_image(root)
    f = src_mpp / HD_MPP
    up = np.asarray(Image.fromarray(src).resize((round(src.shape[1] * f), round(src.shape[0] * f)), Image.BILINEAR))
    side = int(round(size_mm * 1000 / HD_MPP))
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    tif = work / "fullres.ome.tif"
    slide = write_slide(tif, up, side, HD_MPP)
    # bins: the 8 µm grid over the square; each takes the expression of the C3 spot under its (mirrored) H&E pixel
    n = int(size_mm * 1000 // BIN_UM)
    rows, cols = np.divmod(np.arange(n * n), n)
    xy_px = np.column_stack([(cols + 0.5) * BIN_UM, (rows + 0.5) * BIN_UM]) / HD_MPP
    fold_x = _mirror_index(int(xy_px[:, 0].max()) + 1, up.shape[1])[xy_px[:, 0].astype(np.int64)]
    fold_y = _mirror_index(int(xy_px[:, 1].max()) + 1, up.shape[0])[xy_px[:, 1].astype(np.int64)]
    c3 = sta.datasets.her2st("C3", data_dir=root, load_image=False).tables["table"]
    _, spot = cKDTree(np.asarray(c3.obsm["spatial"])).query(np.column_stack([fold_x, fold_y]) / f)
    X = sparse.csr_matrix(c3.X, dtype=np.float64)
    totals = np.asarray(X.sum(1)).ravel()
    # every spot's cumulative gene proportions, shifted by its index: one searchsorted draws all the UMIs at once
    cum = np.asarray((sparse.diags(1 / np.maximum(totals, 1)) @ X).todense()).cumsum(1)
    cum[totals == 0] = np.linspace(1 / X.shape[1], 1, X.shape[1])
    cum /= cum[:, [-1]]
    cum += np.arange(X.shape[0])[:, None]
    rng = np.random.default_rng(0)
    n_umi = rng.poisson(depth, size=len(spot))
    unit_bin = np.repeat(np.arange(len(spot)), n_umi)
    unit_spot = spot[unit_bin]
    flat = np.searchsorted(cum.ravel(), unit_spot + rng.random(len(unit_bin)) * (1 - 1e-12))
    unit_gene = np.minimum(flat - unit_spot * X.shape[1], X.shape[1] - 1)
    B = sparse.csr_matrix((np.ones(len(unit_bin), np.float32), (unit_bin, unit_gene)), shape=(len(spot), X.shape[1]))
    B.sum_duplicates()
    hires = np.asarray(Image.open(tif).convert("RGB")) if side <= 4000 else None
    scalef = 1.0
    if hires is None:  # a ~4k px hires PNG, as Space Ranger writes, from the pyramid's level near it
        import tifffile

        with tifffile.TiffFile(tif) as tf:
            levels = tf.series[0].levels
            lv = min(levels, key=lambda lv: abs(max(lv.shape[:2]) - 4000))
            hires = lv.asarray()
        scalef = hires.shape[1] / side
    outs = work / "outs"
    write_visium_hd(outs, counts=B, array_row=rows, array_col=cols, xy_fullres=xy_px, gene_ids=c3.var_names,
                    gene_names=c3.var_names, bin_size_um=BIN_UM, microns_per_pixel=HD_MPP, hires_image=hires,
                    hires_scalef=scalef)  # fmt: skip
    return {
        "side_px": side,
        "slide": slide,
        "n_bins": int(B.shape[0]),
        "n_genes": int(B.shape[1]),
        "umis_per_bin_mean": float(B.sum() / B.shape[0]),
        "source_microns_per_pixel": src_mpp,
        "make_s": time.perf_counter() - t0,
        "outs": str(outs),
        "fullres": str(tif),
    }


def child_time(outs: str, fullres: str, threads: int, model: str, n_bins16: int, spacing: float) -> dict:
    import torch

    import stalign as sta
    from stalign._section import get_section

    torch.set_num_threads(threads)
    before = _status_mb("VmRSS")
    peak_reset = reset_peak()
    t = [time.perf_counter()]
    hd = sta.io.read_visium_hd(outs, bin_size_um=BIN_UM, dataset_id="slide", fullres_image=fullres)
    t.append(time.perf_counter())
    sta.pp.bin(hd, bin_um=16)
    t.append(time.perf_counter())
    sta.pp.pseudospots(hd, spacing_um=spacing)
    t.append(time.perf_counter())
    sta.tl.embed(hd, model=model, table_key="pseudospots", show_progress_bar=False)
    t.append(time.perf_counter())
    peak = _status_mb("VmHWM") if peak_reset else None
    ps = hd.tables["pseudospots"]
    # per-bin embedding at 16 µm: a contiguous patch of bins, each with the 55 µm disc of 8 µm bins around it
    b16 = hd.tables["square_016um"]
    centre = np.median(b16.obsm["spatial"], axis=0)
    idx = np.argsort(np.linalg.norm(b16.obsm["spatial"] - centre, axis=1))[:n_bins16]
    t16 = time.perf_counter()
    sta.pp.pseudospots(hd, centers=b16.obsm["spatial"][idx], spot_um=55.0, key_added="bins16")
    sta.tl.embed(hd, model=model, table_key="bins16", show_progress_bar=False)
    t16 = time.perf_counter() - t16
    sq = time_squidpy_summary(get_section(hd, table_key="pseudospots"), threads, unit="pseudospots")
    return {
        "n_bins8": int(hd.tables["table"].n_obs),
        "n_bins16": int(b16.n_obs),
        "n_pseudospots": int(ps.n_obs),
        "seconds": {
            "read_visium_hd": t[1] - t[0],
            "bin_16um": t[2] - t[1],
            "pseudospots": t[3] - t[2],
            "embed": t[4] - t[3],
            "total": t[4] - t[0],
        },
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "lifetime_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "per_bin_16um": {"n_bins": int(len(idx)), "seconds": t16, "bins_per_s": len(idx) / t16},
        "squidpy_summary": sq,
        "finite": bool(np.isfinite(ps.obsm["X_stalign"]).all()),
    }


def markdown(res: dict) -> str:
    s, m = res["timed"]["seconds"], res["made"]
    met = res["criteria"]
    return "\n".join(
        [
            f"Run {res['date']} · {res['size_mm']:g} mm slide · model {res['model']} · torch threads {res['threads']}",
            "",
            f"{m['n_bins']:,} bins of 8 µm ({m['umis_per_bin_mean']:.0f} UMIs/bin, {m['n_genes']} genes) on a "
            f"{m['side_px']:,}² px pyramidal OME-TIFF at 0.27 µm/px (her2st C3's H&E, mirrored).",
            "",
            "| step | seconds |",
            "|---|---|",
            *(f"| {k} | {v:.1f} |" for k, v in s.items()),
            "",
            f"{res['timed']['n_pseudospots']:,} pseudo-spots of 55 µm every {res['spacing_um']:g} µm embedded end to end "
            f"in **{s['total']:.0f} s** (target < {TARGET_S:.0f} s: {met['time']}), peak RSS "
            f"**{res['timed']['peak_rss_mb'] or res['timed']['lifetime_peak_rss_mb']:.0f} MB** (target < "
            f"{TARGET_RSS_MB:.0f} MB: {met['rss']}).",
            f"Per-bin embedding at 16 µm: {res['timed']['per_bin_16um']['bins_per_s']:.1f} bins/s "
            f"({res['timed']['per_bin_16um']['n_bins']} bins). squidpy `summary` features on the same pseudo-spots: "
            f"{res['timed']['squidpy_summary']['pseudospots_per_s']:.1f} pseudo-spots/s (features only), "
            f"{res['timed']['squidpy_summary']['pseudospots_per_s_with_load']:.1f} with loading the level.",
            "",
            f"Command: `{res['command']}`; {res['machine']}.",
        ]
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mm", type=float, default=6.5)
    p.add_argument("--depth", type=float, default=60.0, help="mean UMIs per 8 µm bin")
    p.add_argument("--spacing", type=float, default=100.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="stalign-base")
    p.add_argument("--n-bins16", type=int, default=2000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--work", default=None, help="folder for the slide (default: a temporary one)")
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    p.add_argument("--child", choices=["make", "time"], default=None)
    p.add_argument("--outs", default=None)
    p.add_argument("--fullres", default=None)
    args = p.parse_args(argv)
    if args.child == "make":
        sys.stdout.write(json.dumps(child_make(args.work, args.size_mm, args.depth, args.data_dir)) + "\n")
        return 0
    if args.child == "time":
        res = child_time(args.outs, args.fullres, args.threads, args.model, args.n_bins16, args.spacing)
        sys.stdout.write(json.dumps(res) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="stalign-hd-scale-") as tmp:
        work = args.work or tmp
        made = run_child(__file__, ["--child", "make", "--work", work, "--size-mm", str(args.size_mm),
                                    "--depth", str(args.depth), *(["--data-dir", args.data_dir] if args.data_dir else [])])  # fmt: skip
        log.info("made %s", made)
        waited = wait_for_training("timing the HD slide")
        timed = run_child(__file__, ["--child", "time", "--outs", made["outs"], "--fullres", made["fullres"],
                                     "--threads", str(args.threads), "--model", args.model,
                                     "--n-bins16", str(args.n_bins16), "--spacing", str(args.spacing)])  # fmt: skip
    peak = timed["peak_rss_mb"] or timed["lifetime_peak_rss_mb"]
    res = {
        "size_mm": args.size_mm,
        "spacing_um": args.spacing,
        "threads": args.threads,
        "model": args.model,
        "made": made,
        "timed": timed,
        "waited_for_training_s": waited,
        "criteria": {"time": timed["seconds"]["total"] < TARGET_S, "rss": peak < TARGET_RSS_MB},
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": "python benchmarks/hd_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} torch threads",
    }
    res["meta"] = {"date": res["date"], "model": args.model, "command": res["command"]}
    log.info("%s", json.dumps(res, indent=1))
    if not args.no_write:
        write_results("hd_scale", res, markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
