"""The one pass of a frozen backbone over a recipe's crops: crops/s, and the minutes it adds to the recipe.

    .venv/bin/python benchmarks/backbone_features.py                          # recipes/lite0.toml, on her2st:C2
    .venv/bin/python benchmarks/backbone_features.py --recipe recipes/lite0.toml --sample her2st:C2 --threads 1

Builds the recipe's model (frozen trunk), times `train._features.compute_features` (crop reading + trunk, spot and
niche crops) on the `--sample` section, counts the spots with an image in the recipe's sections and extrapolates
the feature pass of the whole recipe, in wall-clock minutes and in CPU minutes of this process (with one thread, what
the wall clock would be on an idle machine). Run it when no training shares the machine: wall-clock rates on a
loaded machine are lower bounds. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import stalign as sta
from stalign._section import get_section
from stalign.train._api import _build_config
from stalign.train._features import compute_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/lite0.toml")
    ap.add_argument("--sample", default="her2st:C2", help="section whose feature pass is timed")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = sta.train.read_config(args.recipe)
    specs = recipe["data"]["sections"]
    sample = sta.datasets.load(args.sample)
    cfg = _build_config(dict(recipe["model"]), [sample])
    model = sta.models.STAlign(cfg).eval()
    t0, c0 = time.perf_counter(), time.process_time()
    feats = compute_features(model, [sample], levels=["spot", "niche"])
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    n_crops = sum(len(v) for v in feats.values())
    n_image = 0
    for spec in specs:
        sec = get_section(sta.datasets.load(spec), require_image=False)
        n_image += sec.table.n_obs if sec.has_image else 0
    rate, cpu_rate = n_crops / dt, n_crops / cpu
    out = {
        "recipe": args.recipe,
        "backbone": cfg.spot_encoder,
        "crop_px": cfg.spot_size,
        "threads": args.threads,
        "sample": args.sample,
        "sample_crops": n_crops,
        "crops_per_s": round(rate, 2),
        "crops_per_cpu_s": round(cpu_rate, 2),  # per CPU-second of this process: less sensitive to other load
        "recipe_spots_with_image": n_image,
        "recipe_feature_pass_min": round(2 * n_image / rate / 60, 1),
        "recipe_feature_pass_cpu_min": round(2 * n_image / cpu_rate / 60, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
