"""Ablations of the retrained `stalign-base` recipe on the development sections, each lever on vs off, in one run.

    .venv/bin/python benchmarks/ablations.py --models seed0=runs/seed0/model seed1=runs/seed1/model ... \\
        [--variant hard_targets=runs/hard/model ...] [--seeds 3]

For every model it reports, on the held-out paired sections (DLPFC 151674, her2st C6, Ståhl MOB 11):

- image → gene alignment: the held-out contrastive ``L_spot`` (fixed batches of 128, 3 shuffles, the model's
  temperature) and image→gene Recall@10 as a multiple of chance;
- zero-shot domains (ARI of a GMM with the number of labelled classes, ``--seeds`` seeds, every representation
  smoothed over 150 µm) of the embedding's parts and of the fusion rules considered for ``X_stalign``: the spot +
  niche expression embeddings averaged (the shipped rule), the ABFN joint spot + niche embeddings averaged (the
  previous rule), the spot image and gene embeddings averaged, all four spot/niche parts concatenated;
- both with the section's own normalisation statistics (the shipped inference) and with the running statistics (the
  inference-time ablation of ``norm_statistics``).

Training-time levers (gene LayerNorm vs BatchNorm, 64 vs 32 px spot crops, soft vs one-hot targets) are compared by
passing models trained without the lever as ``--variant name=path``. Writes benchmarks/results/ablations.json/.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from stalign._utils import l2_normalize
from stalign.tl._domains import DEFAULT_SMOOTH_UM

HERE = Path(__file__).resolve().parent
PAIRED = ["dlpfc:151674", "her2st:C6", "stahl_mob:11"]
LABELLED = ["dlpfc:151674", "stahl_mob:11"]
SMOOTH_UM = DEFAULT_SMOOTH_UM


def embed_all(model, data, *, section_stats: bool) -> dict[str, np.ndarray]:
    """Every per-spot output of ``model.embed``, as tl.embed computes it, normalised with the section's statistics
    (or the running ones): the inference ablation applies to any model, whatever its config asks for."""
    from stalign.tl._embed import embed_arrays

    model.config.norm_statistics = "section" if section_stats else "running"
    return embed_arrays(data, model, outputs=None, show_progress_bar=False)


def alignment(model, E) -> dict[str, float]:
    from stalign.evaluation import recall_at_k, spot_infonce

    n = len(E["image"])
    scale = float(model.logit_scale)
    loss = np.mean(
        [spot_infonce(E["image"], E["gene"], logit_scale=scale, batch_size=128, random_state=s) for s in (0, 1, 2)]
    )
    r10 = recall_at_k(E["image"], E["gene"], ks=(10,))["R@10"]
    return {"L_spot": float(loss), "R@10": float(r10), "R@10_x_chance": float(r10 / (10 / n))}


def representations(E) -> dict[str, np.ndarray]:
    reps = {k: E[k] for k in ("gene", "niche_gene", "image", "niche_image", "niche_joint") if k in E}
    if "gene" in E and "niche_gene" in E:
        reps["fused = avg(gene, niche gene)"] = l2_normalize(E["gene"] + E["niche_gene"])
    if "joint" in E and "niche_joint" in E:
        reps["avg(joint, niche joint) [previous X_stalign]"] = l2_normalize(E["joint"] + E["niche_joint"])
    if "image" in E and "gene" in E:
        reps["avg(image, gene)"] = l2_normalize(E["image"] + E["gene"])
        reps["concat(gene, niche gene, image, niche image)"] = np.hstack(
            [E["gene"], E["niche_gene"], E["image"], E["niche_image"]]
        )
    return reps


def domains(data, X, labels, k, seeds) -> list[float]:
    """ARI of ``tl.domains`` (GMM, k domains) on ``X`` smoothed over ``SMOOTH_UM``, per clustering seed."""
    from stalign.evaluation import clustering_scores
    from stalign.evaluation._domains import cluster

    return [
        clustering_scores(labels, p)["ari"] for p in cluster(data, X, n_domains=k, smooth_um=SMOOTH_UM, seeds=seeds)
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="NAME=PATH of the shipped recipe's training seeds")
    p.add_argument("--variant", nargs="*", default=[], help="NAME=PATH of models trained without one lever")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="ablations", help="results name under benchmarks/results/")
    p.add_argument("--resume", help="log of an interrupted run (its JSON rows are kept and not recomputed)")
    args = p.parse_args()
    done = _rows_of(args.resume) if args.resume else []

    import torch

    torch.set_num_threads(args.threads)
    from _results import write_results  # benchmarks/ is on sys.path when a script runs

    import stalign as sta
    from stalign.models import load

    groups = {"recipe": [m.split("=", 1) for m in args.models]}
    for v in args.variant:
        name, path = v.split("=", 1)
        groups.setdefault(name, []).append((name, path))
    seeds = list(range(args.seeds))
    data = {s: sta.datasets.load(s) for s in sorted(set(PAIRED + LABELLED))}
    results: dict = {"models": {}, "rows": []}
    key = lambda r: (r["model"], r["inference"], r["section"])  # noqa: E731
    kept = {key(r): r for r in done}
    for group, members in groups.items():
        for name, path in members:
            model = load(path)
            results["models"][name] = {"group": group, "path": path, "weights_sha256": model.weights_sha256}
            for stats in (True, False):
                inference = "section statistics" if stats else "running statistics"
                for sec, d in data.items():
                    row = {"group": group, "model": name, "inference": inference, "section": sec}
                    if key(row) in kept:
                        results["rows"].append(kept[key(row)])
                        continue
                    E = embed_all(model, d, section_stats=stats)
                    if sec in PAIRED:
                        row.update(alignment(model, E))
                    if sec in LABELLED:
                        t = d.tables["table"]
                        lab = t.obs["annotation"]
                        k = int(lab.dropna().nunique())
                        for rep, X in representations(E).items():
                            row[f"ari: {rep}"] = float(np.mean(domains(d, X, lab.to_numpy(), k, seeds)))
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
    results["meta"] = {"python": platform.python_version(), "seeds": seeds, "smooth_um": SMOOTH_UM}
    write_results(Path(args.out).stem, results, markdown(results))


def _rows_of(log: str) -> list[dict]:
    """The JSON rows an earlier run printed to ``log`` (other lines are skipped)."""
    rows = []
    for line in Path(log).read_text().splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a row cut off when the run was stopped
                continue
    return rows


def markdown(results: dict) -> str:
    rows = results["rows"]
    lines = ["# Ablations of the stalign-base recipe", ""]
    lines.append(f"Every representation smoothed over {SMOOTH_UM:g} µm; ARI = mean over clustering seeds "
                 f"{results['meta']['seeds']}; each cell: mean ± sd over the models of the group.")  # fmt: skip
    lines.append("")
    keys = sorted({k for r in rows for k in r if k.startswith(("ari:", "L_spot", "R@10_x"))})
    for inference in ("section statistics", "running statistics"):
        lines += [f"## Inference with {inference}", ""]
        cols = [(sec, k) for sec in sorted({r["section"] for r in rows}) for k in keys
                if any(k in r for r in rows if r["section"] == sec)]  # fmt: skip
        lines.append("| group | " + " | ".join(f"{sec} {k}" for sec, k in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for group in dict.fromkeys(r["group"] for r in rows):
            cells = []
            for sec, k in cols:
                v = [r[k] for r in rows if r["group"] == group and r["inference"] == inference
                     and r["section"] == sec and k in r]  # fmt: skip
                cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f} (n={len(v)})" if v else "–")
            lines.append(f"| {group} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
