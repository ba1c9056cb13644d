"""Crops per second of ``stalign.pp.read_crops`` versus a naive per-spot loop, measured in the same run.

Sections: DLPFC 151673 (600 px lowres PNG, ~12.7 µm/px) and her2st C2 (full-resolution JPG, ~0.7 µm/px), both
through the stalign.io loaders. her2st C2 is also measured with its pyramid held in memory as numpy levels
(squidpy-convention AnnData), which separates crop cost from the cost of a lazily computed dask pyramid.

Baseline: for each spot, slice its box from the same image level (``np.asarray`` of the level array), pad with
white where it leaves the image and resize it with PIL (bilinear), one spot at a time.

Usage: ``.venv/bin/python benchmarks/crops.py [--data-dir DIR] [--out-px 64] [--batch 256] [--max-spots 1024]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch


def naive(section, centres, *, size_um, out_px):
    from PIL import Image

    from stalign.pp._crops import choose_level

    lv = choose_level(section, size_um=size_um, out_px=out_px)
    h, w = lv.shape
    half = 0.5 * size_um / section.microns_per_pixel / lv.fullres_per_px
    out = np.empty((len(centres), 3, out_px, out_px), dtype=np.uint8)
    for i, (x, y) in enumerate(centres / lv.fullres_per_px):
        x0, y0, x1, y1 = math.floor(x - half), math.floor(y - half), math.ceil(x + half), math.ceil(y + half)
        pad = np.full((y1 - y0, x1 - x0, 3), 255, dtype=np.uint8)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        win = np.asarray(lv.data[:3, cy0:cy1, cx0:cx1])
        pad[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = np.moveaxis(win, 0, -1)
        out[i] = np.moveaxis(np.asarray(Image.fromarray(pad).resize((out_px, out_px), Image.BILINEAR)), -1, 0)
    return out


def rate(fn, n_spots):
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    return n_spots / dt, dt


def bench(name, section, *, out_px, batch, max_spots, sizes=(("spot", 100.0), ("niche", 200.0))):
    from stalign.pp import read_crops, spatial_order

    order = spatial_order(section.coords)[:max_spots]
    xy = section.coords[order]
    rows = []
    for kind, size in sizes:
        read_crops(section, xy[:8], size_um=size, out_px=out_px)  # warm-up (imports)

        def vec(xy=xy, size=size):
            for a in range(0, len(xy), batch):
                read_crops(section, xy[a : a + batch], size_um=size, out_px=out_px)

        def loop(xy=xy, size=size):
            naive(section, xy, size_um=size, out_px=out_px)

        r_vec, t_vec = rate(vec, len(xy))
        r_loop, t_loop = rate(loop, len(xy))
        lv = section.level_for(size / out_px)
        row = {
            "section": name, "crop": kind, "size_um": size, "out_px": out_px, "n_spots": len(xy),
            "level": lv.name, "level_um_per_px": round(lv.fullres_per_px * section.microns_per_pixel, 3),
            "read_crops_per_s": round(r_vec, 1), "naive_loop_per_s": round(r_loop, 1),
            "speedup": round(r_vec / r_loop, 2), "read_crops_s": round(t_vec, 3), "naive_s": round(t_loop, 3),
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def in_memory_pyramid(section):
    """AnnData (squidpy convention) with the section's first three levels as numpy arrays."""
    from anndata import AnnData

    from stalign._section import get_section

    img = np.moveaxis(np.asarray(section.images[0].data), 0, -1)
    levels = {"fullres": img}
    sf = {"microns_per_pixel": section.microns_per_pixel, "spot_diameter_fullres": section.spot_diameter_fullres}
    cur = img
    for k, res in ((2, "hires"), (4, "lowres")):
        h, w = (cur.shape[0] // 2) * 2, (cur.shape[1] // 2) * 2
        cur = cur[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
        levels[res] = cur
        sf[f"tissue_{res}_scalef"] = 1.0 / k
    ad = AnnData(shape=(len(section.coords), 0))
    ad.obsm["spatial"] = section.coords
    ad.uns["spatial"] = {section.library_id: {"images": levels, "scalefactors": sf}}
    return get_section(ad)


def main():
    import stalign as sta
    from stalign._section import get_section

    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=os.environ.get("STALIGN_DATA_DIR", "../shared/data"))
    p.add_argument("--out-px", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--max-spots", type=int, default=1024)
    args = p.parse_args()
    torch.set_num_threads(1)
    kw = {"out_px": args.out_px, "batch": args.batch, "max_spots": args.max_spots}
    sec = get_section(sta.datasets.dlpfc("151673", data_dir=args.data_dir))
    bench("dlpfc_151673_lowres", sec, **kw)
    her = get_section(sta.datasets.her2st("C2", data_dir=args.data_dir))
    # the loader's lazily computed dask pyramid is slow to read whatever the method: fewer spots there
    bench("her2st_C2_fullres_lazy_pyramid", her, **{**kw, "max_spots": min(args.max_spots, 32)})
    bench("her2st_C2_fullres_numpy_pyramid", in_memory_pyramid(her), **kw)


if __name__ == "__main__":
    main()
