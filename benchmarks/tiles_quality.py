"""Tiles vs real spots (issue 16): do pseudo-spots laid by `pp.tile_tissue` over an H&E image give the same domains
and expression maps as the assay's own spots?

    .venv/bin/python benchmarks/tiles_quality.py                       # bundled stalign-base, 100 µm tiles
    .venv/bin/python benchmarks/tiles_quality.py --model path/to/model --spacing 100

1. Domains (Ståhl MOB replicates 01–08, image only, layer labels): each section's JPG is read with
   `io.read_image(..., microns_per_pixel=<the section's>)` and tiled at `--spacing` µm; the spots come from
   `datasets.stahl_mob`. Both get `tl.embed` and the same `tl.domains(n_domains=<labelled layers>, use_rep="X_stalign_image",
   random_state=seed)` call; the tiles' domains are read at each labelled spot's nearest tile. ARI against the layer
   labels for seeds 0, 1, 2. Criterion: |ARI(tiles) - ARI(spots)| <= 0.05, mean of the 3 seeds.
2. Expression (her2st C5 from its H&E, C2–C4 as reference): `tl.predict_expression` (bundled model) on the C5 tiles
   and on the C5 spots, for the references' top-50 HVGs; the tile prediction is read at each spot's nearest tile.
   Mean Pearson r over genes against the measured log-normalised C5 expression. Criterion: the tiles' r is within
   0.02 of the spots' for the default method (retrieval) at 100 µm. Also reported: ridge, and 50 µm spacing
   (overlapping tiles).

Writes benchmarks/results/tiles_quality.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _results import her2st_jpg, write_results  # benchmarks/ is on sys.path when a script runs

log = logging.getLogger("tiles_quality")
MOB = ["01", "02", "03", "04", "05", "06", "07", "08"]
SEEDS = [0, 1, 2]
ARI_TOL = 0.05
PEARSON_TOL = 0.02


def nearest(tile_xy: np.ndarray, spot_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each spot's nearest tile and the distance (full-resolution px)."""
    from scipy.spatial import cKDTree

    d, j = cKDTree(tile_xy).query(spot_xy)
    return j, d


def mob_section(rep: str, root: Path, args) -> dict:
    import stalign as sta
    from stalign.evaluation import clustering_scores

    spots = sta.datasets.stahl_mob(rep, data_dir=root)
    st = spots.tables["table"]
    mpp = float(st.uns["spatial"][rep]["scalefactors"]["microns_per_pixel"])
    jpg = root / "stahl_mob_splotch" / "splotch" / "tutorials" / "olfactory_bulb_st" / "images" / f"{rep}.jpg"
    tiles = sta.io.read_image(jpg, microns_per_pixel=mpp, name=rep)
    sta.pp.tile_tissue(tiles, spacing_um=args.spacing)
    tt = tiles.tables["table"]
    for sd in (spots, tiles):
        sta.tl.embed(sd, model=args.model, show_progress_bar=False)
    labels = st.obs["annotation"]
    k = int(labels.dropna().nunique())
    j, d = nearest(np.asarray(tt.obsm["spatial"]), np.asarray(st.obsm["spatial"]))
    rows = []
    for seed in args.seeds:
        kw = {"n_domains": k, "use_rep": "X_stalign_image", "random_state": seed}
        sta.tl.domains(tiles, **kw)
        sta.tl.domains(spots, **kw)
        a_tiles = clustering_scores(labels.to_numpy(), tt.obs["stalign_domain"].to_numpy()[j])["ari"]
        a_spots = clustering_scores(labels.to_numpy(), st.obs["stalign_domain"].to_numpy())["ari"]
        rows.append({"seed": seed, "ari_tiles": a_tiles, "ari_spots": a_spots})
    t, s = np.mean([r["ari_tiles"] for r in rows]), np.mean([r["ari_spots"] for r in rows])
    out = {
        "n_spots": int(st.n_obs),
        "n_labelled": int(labels.notna().sum()),
        "n_domains": k,
        "n_tiles": int(tt.n_obs),
        "microns_per_pixel": mpp,
        "nearest_tile_um": {"median": float(np.median(d) * mpp), "max": float(d.max() * mpp)},
        "seeds": rows,
        "ari_tiles_mean": float(t),
        "ari_spots_mean": float(s),
        "difference": float(t - s),
        "within_tolerance": bool(abs(t - s) <= ARI_TOL),
    }
    log.info("MOB %s: tiles %.3f spots %.3f (%d tiles)", rep, t, s, tt.n_obs)
    return out


def her2st_c5(root: Path, args) -> dict:
    import stalign as sta
    from stalign.evaluation import expression_scores
    from stalign.pp import log_normalize, reference_hvgs

    refs = [sta.datasets.her2st(s, data_dir=root) for s in ("C2", "C3", "C4")]
    c5 = sta.datasets.her2st("C5", data_dir=root)
    for sd in (*refs, c5):
        sta.tl.embed(sd, model=args.model, show_progress_bar=False)
    truth_table = c5.tables["table"]
    genes = reference_hvgs([r.tables["table"] for r in refs], n_top_genes=50, also_in=[truth_table])
    truth = np.asarray(log_normalize(truth_table.X)[:, truth_table.var_names.get_indexer(genes)].todense())
    mpp = float(truth_table.uns["spatial"]["C5"]["scalefactors"]["microns_per_pixel"])
    jpg = her2st_jpg(root, "C5")
    tiles = {}
    for spacing in args.c5_spacings:
        tiles[spacing] = sta.io.read_image(jpg, microns_per_pixel=mpp, name="C5")
        sta.pp.tile_tissue(tiles[spacing], spacing_um=spacing)
        sta.tl.embed(tiles[spacing], model=args.model, show_progress_bar=False)
    out = {"genes": genes, "microns_per_pixel": mpp, "n_spots": int(truth_table.n_obs), "methods": {}}
    for method in args.c5_methods:
        pred_spots = sta.tl.predict_expression(c5, refs, genes=genes, method=method, model=args.model)
        spots_score = expression_scores(np.asarray(pred_spots.X), truth)
        res = out["methods"][method] = {"spots": spots_score, "tiles": {}}
        for spacing, sd in tiles.items():
            pred = sta.tl.predict_expression(sd, refs, genes=genes, method=method, model=args.model)
            j, d = nearest(np.asarray(pred.obsm["spatial"]), np.asarray(truth_table.obsm["spatial"]))
            score = expression_scores(np.asarray(pred.X)[j], truth)
            res["tiles"][f"{spacing:g}"] = {
                **score,
                "n_tiles": int(pred.n_obs),
                "nearest_tile_um": {"median": float(np.median(d) * mpp), "max": float(d.max() * mpp)},
                "difference": score["pearson"] - spots_score["pearson"],
                "within_tolerance": bool(abs(score["pearson"] - spots_score["pearson"]) <= PEARSON_TOL),
            }
            log.info("C5 %s at %g µm: tiles r=%.3f spots r=%.3f", method, spacing, score["pearson"],
                     spots_score["pearson"])  # fmt: skip
    return out


def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [
        f"Run {m['date']} · model {m['model']} · tiles every {m['spacing_um']:g} µm (hexagonal) · "
        f"torch threads {m['torch_threads']} · {m['seconds']:.0f} s",
        "",
        "**Domains from tiles** (Ståhl MOB, H&E only, `tl.domains(n_domains=<labelled layers>, "
        'use_rep="X_stalign_image")` on the tiles and on the real spots; tiles read at each labelled spot\'s nearest '
        f"tile; ARI, mean ± sd over seeds {', '.join(map(str, m['seeds']))}; tolerance ±{ARI_TOL} on the means)",
        "",
        "| replicate | spots | tiles | domains | nearest tile, median / max (µm) | ARI tiles | ARI spots | tiles − spots |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rep, r in res["mob"]["sections"].items():
        sd_t = np.std([x["ari_tiles"] for x in r["seeds"]])
        sd_s = np.std([x["ari_spots"] for x in r["seeds"]])
        lines.append(
            f"| {rep} | {r['n_spots']} | {r['n_tiles']} | {r['n_domains']} | {r['nearest_tile_um']['median']:.0f} / "
            f"{r['nearest_tile_um']['max']:.0f} | {r['ari_tiles_mean']:.3f} ± {sd_t:.3f} | "
            f"{r['ari_spots_mean']:.3f} ± {sd_s:.3f} | {r['difference']:+.3f}{'' if r['within_tolerance'] else ' ✗'} |"
        )
    s = res["mob"]["summary"]
    lines += [
        f"| **mean 01–08** | | | | | **{s['ari_tiles_mean']:.3f}** | **{s['ari_spots_mean']:.3f}** | "
        f"**{s['difference']:+.3f}** |",
        "",
        f"Mean over the 8 replicates within ±{ARI_TOL}: **{'yes' if s['within_tolerance'] else 'no'}**; replicates "
        f"within ±{ARI_TOL} on their own: {s['n_sections_within']} of {len(res['mob']['sections'])}.",
        "",
        "**Expression maps from tiles** (her2st C5 from its H&E, C2–C4 as reference, `tl.predict_expression` "
        "(retrieval and ridge), the references' top-50 HVGs; mean Pearson r over genes against measured log-normalised C5)",
        "",
        "| method | prediction at | n | Pearson r | MSE | tiles − spots |",
        "|---|---|---|---|---|---|",
    ]
    c5 = res["c5"]
    for method, mres in c5["methods"].items():
        sp = mres["spots"]
        lines.append(f"| {method} | C5 spots | {c5['n_spots']} | {sp['pearson']:.3f} | {sp['mse']:.3f} | |")
        for spacing, r in mres["tiles"].items():
            lines.append(
                f"| {method} | nearest of {r['n_tiles']} tiles at {spacing} µm (median "
                f"{r['nearest_tile_um']['median']:.0f} µm away) | {c5['n_spots']} | {r['pearson']:.3f} | "
                f"{r['mse']:.3f} | {r['difference']:+.3f}{'' if r['within_tolerance'] else ' ✗'} |"
            )
    lines += [
        "",
        f"Criterion (tolerance ±{PEARSON_TOL}) on `predict_expression`'s default (retrieval) at "
        f"{m['spacing_um']:g} µm. The agreement says that tiles reproduce the spot-level prediction, not that the "
        "prediction is good: at the real spots the mean r against the measured expression is "
        + ", ".join(f"{k} {v['spots']['pearson']:.3f}" for k, v in c5["methods"].items())
        + ".",
        "",
        f"Command: `{m['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="stalign-base")
    p.add_argument("--spacing", type=float, default=100.0, help="tile spacing (µm) for the MOB domains")
    p.add_argument("--c5-spacings", type=float, nargs="+", default=[100.0, 50.0])
    p.add_argument("--c5-methods", nargs="+", default=["retrieval", "ridge"])
    p.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    p.add_argument("--mob", nargs="+", default=MOB)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    import stalign as sta
    from stalign.datasets._common import resolve_root as data_dir

    root = data_dir(args.data_dir)
    t0 = time.perf_counter()
    sections = {rep: mob_section(rep, root, args) for rep in args.mob}
    t = float(np.mean([r["ari_tiles_mean"] for r in sections.values()]))
    s = float(np.mean([r["ari_spots_mean"] for r in sections.values()]))
    mob = {
        "sections": sections,
        "summary": {
            "ari_tiles_mean": t,
            "ari_spots_mean": s,
            "difference": t - s,
            "within_tolerance": bool(abs(t - s) <= ARI_TOL),
            "n_sections_within": int(sum(r["within_tolerance"] for r in sections.values())),
        },
    }
    c5 = her2st_c5(root, args)
    from stalign.models._registry import REGISTRY

    res = {
        "mob": mob,
        "c5": c5,
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "model": args.model,
            "weights_sha256": REGISTRY.get(args.model, {}).get("sha256"),
            "spacing_um": args.spacing,
            "seeds": args.seeds,
            "torch_threads": args.threads,
            "stalign_version": sta.__version__,
            "seconds": time.perf_counter() - t0,
            "cpus": os.cpu_count(),
            "command": "python benchmarks/tiles_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        },
    }
    out = write_results("tiles_quality", res, markdown(res))
    log.info("wrote %s", out)
    sys.stdout.write(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
