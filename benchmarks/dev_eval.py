"""The whole evaluation protocol (DESIGN.md §4) on the development sections, in one run, with its "Done when" checks.

    .venv/bin/python benchmarks/dev_eval.py                                   # the bundled weights, 3 seeds
    .venv/bin/python benchmarks/dev_eval.py --models runs/s0 runs/s1 runs/s2  # three training seeds, aggregated
    .venv/bin/python benchmarks/dev_eval.py --image-features summary          # fast development run
    .venv/bin/python benchmarks/dev_eval.py --models random                   # random-init base preset (development)

Every baseline gets the same spatial smoothing as stalign's own output (``--smooth-um``, default the tl default), and
every quality number is a mean ± sd over ``--seeds`` clustering / sampling seeds, times the models when several are
given (training seeds of one recipe).

- domains (tl.domains defaults, k = labelled classes): DLPFC 151674 and Ståhl MOB 11 (fused, its gene / image /
  niche parts, PCA, niche-smoothed PCA, squidpy image features, random init, image+gene average), and the H&E-only
  DLPFC 151508 and 151670 (image embedding vs squidpy features);
- labels (tl.annotate from the bundled marker prompts vs z-scored score_genes on smoothed expression): DLPFC 151674,
  MOB 11, her2st A1, C1, D1;
- genes (tl.predict_expression defaults, ridge and retrieval, vs reference mean, ridge on squidpy features, pixel and
  colour retrieval): her2st C6 held out, C2–C5 reference;
- retrieval and the held-out L_spot: DLPFC 151674, her2st C6, MOB 11.

These sections are evaluation-only: nothing here trains. Writes benchmarks/results/dev_eval.json and .md; the
markdown ends with the "Done when" table (PASS/FAIL of each criterion with the measured numbers).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import torch

from stalign.evaluation import eval_annotate, eval_domains, eval_genes, eval_retrieval, write_results
from stalign.evaluation._baselines import SQUIDPY_FEATURES
from stalign.evaluation._runner import run_meta
from stalign.evaluation._store import Models, Sections, default_smooth_um

HERE = Path(__file__).resolve().parent
DOMAINS = ["dlpfc:151674", "stahl_mob:11", "dlpfc:151508", "dlpfc:151670"]
GENES_QUERY = ["her2st:C6"]
GENES_REFERENCE = ["her2st:C2", "her2st:C3", "her2st:C4", "her2st:C5"]
ANNOTATE = ["dlpfc:151674", "stahl_mob:11", "her2st:A1", "her2st:C1", "her2st:D1"]
RETRIEVAL = ["dlpfc:151674", "her2st:C6", "stahl_mob:11"]


def random_model(store: Sections, seed: int = 0):
    """Random-init base preset over the vocabulary of the evaluated sections (before trained weights exist)."""
    from stalign.models import STAlign, STAlignConfig
    from stalign.pp import build_vocabulary

    names = sorted(set(DOMAINS[:2] + GENES_QUERY + GENES_REFERENCE + ANNOTATE))
    genes = build_vocabulary([store[n].tables["table"] for n in names], min_sections=2)
    torch.manual_seed(seed)
    return STAlign(STAlignConfig.base(genes)).eval()


# ---------------------------------------------------------------------------------------------- done when
def _get(results: dict, task: str, section: str, method: str) -> dict | None:
    return results.get(task, {}).get("sections", {}).get(section, {}).get("methods", {}).get(method)


def _show(r: dict | None, metric: str) -> str:
    if r is None or metric not in r:
        return "missing"
    sd = (r.get("sd") or {}).get(metric)
    return f"{r[metric]:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def _check(criterion: str, measured: str, ok: bool | None) -> dict:
    return {"criterion": criterion, "measured": measured, "pass": bool(ok)}


#: how the criteria name each method
NAMES = {
    ("domains", "stalign"): "tl.domains default",
    ("domains", "pca"): "PCA + same smoothing",
    ("domains", "squidpy"): "squidpy + same smoothing",
    ("annotate", "stalign"): "tl.annotate",
    ("annotate", "score_genes"): "z-scored score_genes + same smoothing",
    ("genes", "stalign"): "predict_expression",
    ("genes", "squidpy_ridge"): "squidpy ridge",
}


def _at_least(results, task, section, metric, method, baseline, margin, label, *, rounded=False) -> dict:
    """``method ≥ baseline + margin`` on the means (``rounded``: compared at 3 decimals, a level check)."""
    a, b = _get(results, task, section, method), _get(results, task, section, baseline)
    ok = None
    if a is not None and b is not None and metric in a and metric in b:
        x, y = a[metric], b[metric] + margin
        ok = round(x, 3) >= round(y, 3) if rounded else x >= y
    plus = f" + {margin:.2f}" if margin else ""
    return _check(
        f"{label} {section}: {NAMES.get((task, method), method)} {metric} ≥ {NAMES.get((task, baseline), baseline)}"
        f"{plus}{' (at 3 decimals)' if rounded else ''}",
        f"{_show(a, metric)} vs {_show(b, metric)}{plus}",
        ok,
    )


def done_when(results: dict) -> list[dict]:
    """The criteria of the issues, checked on the means of this run."""
    out = []
    r = _get(results, "domains", "dlpfc:151674", "stalign")
    out.append(
        _check(
            "Domains dlpfc:151674: tl.domains default ari ≥ 0.45",
            _show(r, "ari"),
            r is not None and r["ari"] >= 0.45,
        )
    )
    out.append(_at_least(results, "domains", "dlpfc:151674", "ari", "stalign", "pca", 0.05, "Domains"))
    out.append(_at_least(results, "domains", "stahl_mob:11", "ari", "stalign", "pca", 0.0, "Domains", rounded=True))
    for sec in ("dlpfc:151674", "stahl_mob:11"):
        fused = _get(results, "domains", sec, "stalign")
        parts = {p: _get(results, "domains", sec, f"stalign_{p}") for p in ("gene", "niche", "image")}
        parts = {p: v for p, v in parts.items() if v is not None}
        is_fused = fused is not None and fused.get("use_rep") == "X_stalign"
        best = max(parts, key=lambda p: parts[p]["ari"]) if parts else None
        out.append(
            _check(
                f"Domains {sec}: fused ari ≥ best of its parts (gene, niche, image)",
                f"{_show(fused, 'ari')} vs {best or 'missing'} {_show(parts.get(best), 'ari')}",
                is_fused and len(parts) == 3 and fused["ari"] >= parts[best]["ari"],
            )
        )
    for sec in ("dlpfc:151508", "dlpfc:151670"):
        out.append(_at_least(results, "domains", sec, "ari", "stalign", "squidpy", 0.05, "Image-only domains"))
    for sec in ("dlpfc:151674", "stahl_mob:11"):
        out.append(_at_least(results, "annotate", sec, "accuracy", "stalign", "score_genes", 0.03, "Labels"))
    for sec in ("her2st:A1", "her2st:C1", "her2st:D1"):
        out.append(_at_least(results, "annotate", sec, "accuracy", "stalign", "score_genes", 0.0, "Labels"))
    for sec in RETRIEVAL:
        r = _get(results, "retrieval", sec, "stalign")
        info = results.get("retrieval", {}).get("sections", {}).get(sec, {})
        target = info.get("l_spot_target", 0.85 * math.log(128))
        out.append(
            _check(
                f"Held-out L_spot {sec} ≤ 0.85 ln 128",
                f"{_show(r, 'l_spot')} vs {target:.3f} (chance {info.get('l_spot_chance', math.log(128)):.3f})",
                r is not None and r.get("l_spot") is not None and r["l_spot"] <= target,
            )
        )
        chance = _get(results, "retrieval", sec, "chance")
        out.append(
            _check(
                f"Retrieval {sec}: i2g R@10 ≥ 5 × chance",
                f"{_show(r, 'i2g_R@10')} vs 5 × {_show(chance, 'i2g_R@10')}",
                r is not None and chance is not None and r["i2g_R@10"] >= 5 * chance["i2g_R@10"],
            )
        )
    q = GENES_QUERY[0]
    out.append(_at_least(results, "genes", q, "pearson", "stalign", "squidpy_ridge", 0.05, "Genes"))
    a, b = _get(results, "genes", q, "stalign"), _get(results, "genes", q, "ref_mean")
    out.append(
        _check(
            f"Genes {q}: predict_expression mse < reference mean mse",
            f"{_show(a, 'mse')} vs {_show(b, 'mse')}",
            a is not None and b is not None and a["mse"] < b["mse"],
        )
    )
    return out


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models",
        "--model",
        nargs="+",
        default=["stalign-base"],
        help="registry names or saved-model folders (several: training seeds, aggregated), or 'random'",
    )
    p.add_argument("--seeds", type=int, default=3, help="clustering / sampling seeds per model")
    p.add_argument("--smooth-um", type=float, default=None, help="smoothing radius of every method (default: tl's)")
    p.add_argument("--image-features", nargs="+", default=list(SQUIDPY_FEATURES), help="squidpy feature groups")
    p.add_argument("--out", default=str(HERE / "results" / "dev_eval.json"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    store = Sections(args.data_dir)
    specs = [random_model(store, seed=i) if m == "random" else m for i, m in enumerate(args.models)]
    seeds = list(range(args.seeds))
    models = Models(specs if len(specs) > 1 else specs[0], random_init=True, device=args.device, seed=seeds[0])
    for member, spec in zip(models.groups["stalign"], args.models, strict=True):
        if spec == "random":
            models.info[member]["spec"] = "random-init base preset (development run, no trained weights)"
    smooth = default_smooth_um() if args.smooth_um is None else args.smooth_um
    kw = {"_models": models, "_store": store, "model": None, "seeds": seeds}
    feats = args.image_features

    results = {"meta": run_meta(models)}
    results["domains"] = eval_domains(DOMAINS, image_features=feats, smooth_um=smooth, **kw)
    results["genes"] = eval_genes(GENES_QUERY, GENES_REFERENCE, image_features=feats, **kw)
    results["annotate"] = eval_annotate(ANNOTATE, smooth_um=args.smooth_um, **kw)
    results["retrieval"] = eval_retrieval(RETRIEVAL, **kw)
    results["done_when"] = done_when(results)
    meta = results["meta"]
    meta["command"] = "python benchmarks/dev_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta["wall_s"] = round(time.perf_counter() - t0, 1)
    meta["torch_threads"] = torch.get_num_threads()
    meta["squidpy_features"] = list(feats)
    meta["seeds"] = seeds
    meta["smooth_um"] = smooth
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(results, out)
    n_pass = sum(c["pass"] for c in results["done_when"])
    logging.getLogger("dev_eval").info(
        "done in %.0f s: %s (%d of %d criteria pass)", meta["wall_s"], out, n_pass, len(results["done_when"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
