"""Visium HD consistency on real data (issue 24, item 6): do bins summed back into spots embed like the spots?

    .venv/bin/python benchmarks/hd_consistency.py            # bundled stalign-base, DLPFC 151673

1. DLPFC 151673 (Visium, real counts) is embedded directly (`tl.embed`), and 7 domains (`tl.domains`, GMM) are
   scored against the manual layers (ARI).
2. Its counts are split into the 8 µm bins whose centres lie in each 55 µm spot (a multinomial split,
   `io._visium_hd.write_visium_as_hd`), written in the Space Ranger HD layout (`binned_outputs/square_008um` with
   `feature_slice.h5`, so spatialdata-io reads it) and read back with `io.read_visium_hd(bin_size_um=8)`.
3. Pseudo-spots at the original spot centres (`pp.pseudospots(centers=..., spot_um=55)`) are embedded: per-spot
   cosine against step 1 (criterion: median >= 0.99) and 7 domains against step 1's (criterion: ARI >= 0.9).
4. Pseudo-spots on the hexagonal grid (`pp.pseudospots(spacing_um=50)`) are embedded, 7 domains found and read at
   each Visium spot's nearest pseudo-spot: ARI against the manual layers (criterion: within 0.05 of step 1's).
   Domains use seeds 0, 1, 2; the criteria are on their means.

Writes benchmarks/results/hd_consistency.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import write_results  # benchmarks/ is on sys.path when a script runs

log = logging.getLogger("hd_consistency")
SAMPLE = "151673"
N_DOMAINS = 7
SEEDS = [0, 1, 2]
COSINE_MIN = 0.99
ARI_MIN = 0.9
ARI_TOL = 0.05


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def domains(table, seed: int) -> np.ndarray:
    import stalign as sta

    sta.tl.domains(table, n_domains=N_DOMAINS, random_state=seed)
    return table.obs["stalign_domain"].astype(str).to_numpy()


def main(argv=None) -> dict:
    from scipy.spatial import cKDTree
    from sklearn.metrics import adjusted_rand_score as ari

    import stalign as sta
    from stalign.io._visium_hd import write_visium_as_hd

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="stalign-base")
    ap.add_argument("--spacing", type=float, default=50.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t0 = time.perf_counter()
    vis = sta.datasets.dlpfc(SAMPLE)
    vt = vis.tables["table"]
    sta.tl.embed(vis, model=args.model, show_progress_bar=False)
    labelled = vt.obs["annotation"].notna().to_numpy()
    truth = vt.obs["annotation"].astype(str).to_numpy()[labelled]
    vis_dom = {s: domains(vt, s) for s in SEEDS}
    res: dict = {"sample": SAMPLE, "model": args.model, "n_spots": int(vt.n_obs)}
    res["visium_ari_layers"] = [float(ari(truth, vis_dom[s][labelled])) for s in SEEDS]
    log.info("Visium: ARI vs layers %s", res["visium_ari_layers"])

    # the images are read lazily from the written folder: it lives until the end
    with tempfile.TemporaryDirectory(prefix="stalign-hd-") as tmp:
        outs = write_visium_as_hd(vis, Path(tmp) / "outs", bin_um=8)
        t1 = time.perf_counter()
        hd = sta.io.read_visium_hd(outs, bin_size_um=8, dataset_id=SAMPLE)
        res["read_s"] = time.perf_counter() - t1
        ht = hd.tables["table"]
        res["n_bins"] = int(ht.n_obs)

        # 3. pseudo-spots at the spot centres
        sta.pp.pseudospots(hd, centers=vt.obsm["spatial"], spot_um=55.0, key_added="at_spots")
        at = hd.tables["at_spots"]
        order = at.obs["center_index"].to_numpy()
        res["n_spots_with_bins"] = int(at.n_obs)
        res["bins_per_spot_median"] = float(np.median(at.obs["n_points"]))
        res["counts_equal"] = bool(abs(at.X - vt.X[order]).max() == 0)
        sta.tl.embed(hd, model=args.model, table_key="at_spots", show_progress_bar=False)
        cos = {
            k: cosine_rows(at.obsm[f"X_stalign{k}"], vt.obsm[f"X_stalign{k}"][order]) for k in ("", "_image", "_gene")
        }
        res["cosine_median"] = {k.strip("_") or "fused": float(np.median(v)) for k, v in cos.items()}
        res["cosine_min"] = {k.strip("_") or "fused": float(v.min()) for k, v in cos.items()}
        at_dom = {s: domains(at, s) for s in SEEDS}
        res["at_spots_ari_vs_visium_domains"] = [float(ari(vis_dom[s][order], at_dom[s])) for s in SEEDS]
        log.info(
            "At spot centres: cosine %s, domain ARI vs Visium %s",
            res["cosine_median"],
            res["at_spots_ari_vs_visium_domains"],
        )

        # 4. the hexagonal grid
        sta.pp.pseudospots(hd, spacing_um=args.spacing, key_added="grid")
        grid = hd.tables["grid"]
        res["grid_spacing_um"] = args.spacing
        res["n_grid_pseudospots"] = int(grid.n_obs)
        t2 = time.perf_counter()
        sta.tl.embed(hd, model=args.model, table_key="grid", show_progress_bar=False)
        res["grid_embed_s"] = time.perf_counter() - t2
        _, near = cKDTree(grid.obsm["spatial"]).query(vt.obsm["spatial"])
        grid_dom = {s: domains(grid, s)[near] for s in SEEDS}
        res["grid_ari_layers"] = [float(ari(truth, grid_dom[s][labelled])) for s in SEEDS]
        log.info("Grid %g µm: ARI vs layers %s", args.spacing, res["grid_ari_layers"])

        m = {
            k: float(np.mean(res[k]))
            for k in ("visium_ari_layers", "at_spots_ari_vs_visium_domains", "grid_ari_layers")
        }
        res["criteria"] = {
            "cosine_median_fused>=0.99": res["cosine_median"]["fused"] >= COSINE_MIN,
            "domain_ari_vs_visium>=0.9": m["at_spots_ari_vs_visium_domains"] >= ARI_MIN,
            "grid_ari_within_0.05": abs(m["grid_ari_layers"] - m["visium_ari_layers"]) <= ARI_TOL,
        }
        res["total_s"] = time.perf_counter() - t0
        res["meta"] = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "model": args.model,
            "command": "python benchmarks/hd_consistency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        }
        md = [
            f"Run {res['meta']['date']} · DLPFC {SAMPLE} · model {args.model} · {res['total_s']:.0f} s",
            "",
            f"{res['n_bins']} bins of 8 µm from {res['n_spots']} spots (median {res['bins_per_spot_median']:g} per spot); "
            f"pseudo-spot counts equal the spots' counts: {res['counts_equal']}.",
            "",
            "| check | value | criterion | met |",
            "|---|---|---|---|",
            f"| median cosine, pseudo-spots at spot centres vs Visium (fused / image / gene) | "
            f"{res['cosine_median']['fused']:.4f} / {res['cosine_median']['image']:.4f} / {res['cosine_median']['gene']:.4f}"
            f" | ≥ {COSINE_MIN} | {res['criteria']['cosine_median_fused>=0.99']} |",
            f"| 7-domain ARI, pseudo-spots at centres vs Visium domains (seeds {SEEDS}) | "
            f"{m['at_spots_ari_vs_visium_domains']:.3f} | ≥ {ARI_MIN} | {res['criteria']['domain_ari_vs_visium>=0.9']} |",
            f"| ARI vs manual layers: Visium / {args.spacing:g} µm grid ({res['n_grid_pseudospots']} pseudo-spots) | "
            f"{m['visium_ari_layers']:.3f} / {m['grid_ari_layers']:.3f} | within {ARI_TOL} | "
            f"{res['criteria']['grid_ari_within_0.05']} |",
            "",
            f"Total {res['total_s']:.0f} s (read {res['read_s']:.1f} s, grid embedding {res['grid_embed_s']:.0f} s).",
        ]
    write_results("hd_consistency", res, "\n".join(md))
    log.info("%s", res)
    return res


if __name__ == "__main__":
    main()
