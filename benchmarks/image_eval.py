"""The image half's criteria (issue 21) in one run: H&E → genes, image-only domains, retrieval, with their baselines.

    .venv/bin/python benchmarks/image_eval.py --models runs/s0/model runs/s1/model runs/s2/model --out X.json

The subset of ``dev_eval.py`` that the image towers decide, with the same harness, sections and rules (every baseline
smoothed alike, means over training seeds × clustering seeds, the random-init model of the same architecture and
squidpy features through the same ridge protocol as ``tl.predict_expression``):

- genes: her2st C6 held out, C2–C5 reference (``tl.predict_expression`` as a user calls it, and its methods);
- domains from H&E only: DLPFC 151508 and 151670;
- retrieval (image → gene R@10) and the held-out ``L_spot``: DLPFC 151674 and her2st C6.

Evaluation-only sections: nothing here trains. Writes ``--out`` (.json and .md) ending with the "Done when" table.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from dev_eval import GENES_QUERY, GENES_REFERENCE, _at_least, _check, _get, _show

from stalign.evaluation import eval_domains, eval_genes, eval_retrieval, write_results
from stalign.evaluation._runner import run_meta
from stalign.evaluation._store import Run, default_smooth_um

HERE = Path(__file__).resolve().parent
IMAGE_DOMAINS = ["dlpfc:151508", "dlpfc:151670"]
RETRIEVAL = ["dlpfc:151674", "her2st:C6"]


def done_when(results: dict) -> list[dict]:
    """Issue 21's criteria on the means of this run."""
    q = GENES_QUERY[0]
    out = [
        _at_least(results, "genes", q, "pearson", "stalign", base, 0.03, "Genes")
        for base in ("random_init", "squidpy_ridge")
    ]
    for sec in IMAGE_DOMAINS:
        for base in ("squidpy", "random_init"):
            out.append(_at_least(results, "domains", sec, "ari", "stalign", base, 0.05, "Image-only domains"))
    for sec in RETRIEVAL:
        r, chance = _get(results, "retrieval", sec, "stalign"), _get(results, "retrieval", sec, "chance")
        out.append(
            _check(
                f"Retrieval {sec}: i2g R@10 ≥ 4 × chance",
                f"{_show(r, 'i2g_R@10')} vs 4 × {_show(chance, 'i2g_R@10')}",
                r is not None and chance is not None and r["i2g_R@10"] >= 4 * chance["i2g_R@10"],
            )
        )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", "--model", nargs="+", default=["stalign-base"], help="names or saved-model folders")
    p.add_argument("--seeds", type=int, default=3, help="clustering / sampling seeds per model")
    p.add_argument("--tasks", nargs="+", default=["genes", "domains", "retrieval"])
    p.add_argument("--ablation", nargs="*", default=[], help="name=model evaluated like the models (e.g. one seed each)")
    p.add_argument("--out", default=str(HERE / "results" / "image_eval.json"))
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    seeds = list(range(args.seeds))
    specs = args.models if len(args.models) > 1 else args.models[0]
    ablations = dict(a.split("=", 1) for a in args.ablation) or None
    run = Run(specs, ablations=ablations, baselines=True, seeds=seeds, data_dir=None, device=None)
    kw = {"model": specs, "ablations": ablations, "seeds": seeds}
    results = {"meta": run_meta(run.models)}
    with run.shared():  # every task reuses the run's sections and embeddings
        if "genes" in args.tasks:
            results["genes"] = eval_genes(GENES_QUERY, GENES_REFERENCE, **kw)
        if "domains" in args.tasks:
            results["domains"] = eval_domains(IMAGE_DOMAINS, smooth_um=default_smooth_um(), **kw)
        if "retrieval" in args.tasks:
            results["retrieval"] = eval_retrieval(RETRIEVAL, **kw)
    results["done_when"] = done_when(results)
    meta = results["meta"]
    meta["command"] = "python benchmarks/image_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta["wall_s"] = round(time.perf_counter() - t0, 1)
    meta["seeds"] = seeds
    write_results(results, Path(args.out))
    for c in results["done_when"]:
        logging.getLogger("image_eval").info("%s %s: %s", "PASS" if c["pass"] else "FAIL", c["criterion"], c["measured"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
