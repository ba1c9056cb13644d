"""Development evaluation of issue 4 in one run, every number next to its baselines (DESIGN.md §4).

    .venv/bin/python benchmarks/dev_eval.py --model stalign-base            # the bundled weights
    .venv/bin/python benchmarks/dev_eval.py --model runs/base/final         # a saved model folder
    .venv/bin/python benchmarks/dev_eval.py --model random                  # random-init base preset (development)

- DLPFC 151674: domains from the fused embedding (7 clusters) vs PCA and niche-smoothed PCA of expression;
- DLPFC 151508, 151670 (image only): domains from the image embedding vs squidpy image features + PCA;
- her2st C6 held out, C2–C5 reference: H&E-only prediction (mean Pearson over the top-50 reference HVGs, MSE)
  vs the reference mean, ridge on squidpy features and retrieval with raw pixel / colour-histogram features;
- Ståhl MOB replicate 11: layer ARI vs PCA (and niche-smoothed PCA) of expression;
- extras (cheap once embedded): marker-prompt annotation on DLPFC 151674 and her2st A1/C1/D1 vs score_genes,
  and image↔gene Recall@k on 151674, C6 and MOB 11.

These sections are evaluation-only: nothing here trains. The random-init model of the same architecture is a
baseline in every task. Writes benchmarks/results/dev_eval.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from stalign.evaluation import write_results
from stalign.evaluation._tasks import (
    SQUIDPY_FEATURES,
    _meta,
    _Models,
    _pooled,
    _Sections,
    eval_annotate,
    eval_domains,
    eval_genes,
    eval_retrieval,
)

HERE = Path(__file__).resolve().parent
DOMAINS_FUSED = ["dlpfc:151674", "stahl_mob:11"]
DOMAINS_IMAGE = ["dlpfc:151508", "dlpfc:151670"]
GENES_QUERY = ["her2st:C6"]
GENES_REFERENCE = ["her2st:C2", "her2st:C3", "her2st:C4", "her2st:C5"]
ANNOTATE = ["dlpfc:151674", "her2st:A1", "her2st:C1", "her2st:D1"]
RETRIEVAL = ["dlpfc:151674", "her2st:C6", "stahl_mob:11"]


def random_model(store: _Sections, seed: int = 0):
    """Random-init base preset over the vocabulary of the evaluated sections (before trained weights exist)."""
    from stalign.models import STAlign, STAlignConfig
    from stalign.pp import build_vocabulary

    names = sorted(set(DOMAINS_FUSED + GENES_QUERY + GENES_REFERENCE + ANNOTATE))
    genes = build_vocabulary([store[n].tables["table"] for n in names], min_sections=2)
    torch.manual_seed(seed)
    return STAlign(STAlignConfig.base(genes)).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="stalign-base", help="registry name, saved-model path, or 'random'")
    p.add_argument("--out", default=str(HERE / "results" / "dev_eval.json"))
    p.add_argument("--image-features", nargs="+", default=list(SQUIDPY_FEATURES), help="squidpy feature groups")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-extras", action="store_true", help="skip the annotation and retrieval extras")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    store = _Sections(args.data_dir)
    model = random_model(store) if args.model == "random" else args.model
    models = _Models(model, ablations=None, random_init=True, device=args.device, seed=0)
    if args.model == "random":
        models.info["stalign"]["spec"] = "random-init base preset (development run, no trained weights)"
    kw = {"_models": models, "_store": store, "model": None}
    feats = args.image_features

    res_fused = eval_domains(DOMAINS_FUSED, image_features=(), **kw)
    res_image = eval_domains(DOMAINS_IMAGE, use="image", image_features=feats, **kw)
    dom = {**res_fused["sections"], **res_image["sections"]}
    results = {"meta": _meta(models), "domains": {"sections": dom, "pooled": _pooled(dom, ("ari", "nmi"))}}
    results["genes"] = eval_genes(GENES_QUERY, GENES_REFERENCE, image_features=feats, **kw)
    if not args.no_extras:
        results["annotate"] = eval_annotate(ANNOTATE, **kw)
        results["retrieval"] = eval_retrieval(RETRIEVAL, **kw)
    results["meta"]["command"] = "python benchmarks/dev_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results["meta"]["wall_s"] = round(time.perf_counter() - t0, 1)
    results["meta"]["torch_threads"] = torch.get_num_threads()
    results["meta"]["squidpy_features"] = list(feats)
    write_results(results, args.out)
    logging.getLogger("dev_eval").info("done in %.0f s: %s", results["meta"]["wall_s"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
