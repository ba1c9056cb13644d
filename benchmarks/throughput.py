"""Throughput, as ratios measured in one run: `tl.embed` spots/s end to end vs squidpy image features and vs the
`large` preset; crop reading (crops/s); training pairs/s.

    .venv/bin/python benchmarks/throughput.py                        # CPU, bundled stalign-base (else random base)
    .venv/bin/python benchmarks/throughput.py --model random         # random-init base preset
    .venv/bin/python benchmarks/throughput.py --device cuda --tag gpu   # a GPU column (throughput_gpu.json)

Sections: her2st C2 (full-resolution JPG, ~0.69 µm/px) and DLPFC 151673 (lowres PNG, ~12.7 µm/px). `tl.embed`
includes everything a user waits for: crop reading from the image pyramid, niche expression, the forward pass.
squidpy `calculate_image_features` reads 100 µm crops of the finest image level (the model's spot view) with
`summary`, and with `summary`+`histogram`+`texture` (texture is slow, so it runs on a spot subset). The `large`
preset (ResNet-50 + ViT-L/16 at 224 px) runs on a small spot subset. Rates are spots per wall-clock second, and
per CPU-second of this process (less sensitive to other load on a shared machine).
Writes benchmarks/results/throughput[_<tag>].json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _results import write_results  # benchmarks/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
SECTIONS = ["her2st:C2", "dlpfc:151673"]
log = logging.getLogger("throughput")


def subset(sdata, n, seed=0):
    from spatialdata import SpatialData

    t = sdata.tables["table"]
    if n >= t.n_obs:
        return sdata
    keep = np.sort(np.random.default_rng(seed).choice(t.n_obs, size=n, replace=False))
    return SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": t[keep].copy()})


#: torch threads to time with; squidpy's calculate_image_features resets torch's thread count (to the number of
#: cores), so it is set again before every timed call
THREADS = [2]


def timed(fn, n):
    """(spots/s wall, spots/s per CPU-second, seconds) of ``fn()`` over ``n`` spots."""
    torch.set_num_threads(THREADS[0])
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    w, c = time.perf_counter() - w0, time.process_time() - c0
    return {"spots_per_s": n / w, "spots_per_cpu_s": n / max(c, 1e-9), "seconds": w, "n_spots": n}


def get_model(spec, sections, device):
    from stalign.models import STAlign, STAlignConfig, available_models
    from stalign.pp import build_vocabulary
    from stalign.tl._embed import resolve_model

    if spec == "auto":
        spec = "stalign-base" if "stalign-base" in available_models() else "random"
    if spec == "random":
        torch.manual_seed(0)
        genes = build_vocabulary([s.tables["table"] for s in sections])
        return resolve_model(STAlign(STAlignConfig.base(genes)), device=device)[0], "random-init base preset"
    return resolve_model(spec, device=device)[0], str(spec)


def bench_section(name, sdata, model, large, args):
    import stalign as sta
    from stalign._section import get_section
    from stalign.evaluation import squidpy_features
    from stalign.pp import SpotDataset

    n = sdata.tables["table"].n_obs
    res = {"n_spots": n}
    sec = get_section(sdata)
    res["microns_per_pixel"] = sec.microns_per_pixel
    # warm-up (torch kernels, first image read)
    torch.set_num_threads(THREADS[0])
    sta.tl.embed(subset(sdata, 64), model=model, device=args.device, show_progress_bar=False, copy=True)
    res["embed_base"] = timed(
        lambda: sta.tl.embed(sdata, model=model, device=args.device, show_progress_bar=False, copy=True), n
    )
    # crop reading alone: the inference dataset (spot + niche crops + expression), no model
    ds = SpotDataset.from_config([sdata], model.config, batch_size=256, inference=True)

    def read_all():
        for _ in ds.dataloader(num_workers=0):
            pass

    r = timed(read_all, n)
    res["crops"] = {**r, "crops_per_s": 2 * r["spots_per_s"], "note": "one spot + one niche crop per spot"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res["squidpy_summary"] = timed(lambda: squidpy_features(sdata, features=["summary"]), n)
        sub = subset(sdata, min(n, args.texture_spots))
        res["squidpy_full"] = timed(
            lambda: squidpy_features(sub, features=["summary", "histogram", "texture"]), sub.tables["table"].n_obs
        )
    if large is not None:
        sub = subset(sdata, min(n, args.large_spots))
        torch.set_num_threads(THREADS[0])
        sta.tl.embed(subset(sdata, 2), model=large, device=args.device, show_progress_bar=False, copy=True)
        res["embed_large"] = timed(
            lambda: sta.tl.embed(sub, model=large, device=args.device, show_progress_bar=False, copy=True),
            sub.tables["table"].n_obs,
        )
    base = res["embed_base"]["spots_per_s"]
    res["ratios"] = {
        "embed_base_vs_squidpy_summary": base / res["squidpy_summary"]["spots_per_s"],
        "embed_base_vs_squidpy_full": base / res["squidpy_full"]["spots_per_s"],
    }
    if large is not None:
        res["ratios"]["embed_base_vs_large"] = base / res["embed_large"]["spots_per_s"]
    log.info("%s: %s", name, {k: round(v, 2) for k, v in res["ratios"].items()})
    return res


def bench_training(sections, model, args):
    from stalign.train import pretrain

    torch.set_num_threads(THREADS[0])
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(
            sections,
            model.config,
            output_dir=tmp,
            epochs=1,
            batch_size=args.train_batch,
            max_steps=args.train_steps,
            device=args.device,
            show_progress_bar=False,
            checkpoint_every=None,
            resume=False,
        )
        rows = [json.loads(line) for line in Path(tmp, "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["pairs_per_s"] for r in rows[1:] if "pairs_per_s" in r] or [r["pairs_per_s"] for r in rows]
    return {
        "pairs_per_s": float(np.median(rates)),
        "batch_size": args.train_batch,
        "steps": len(rows),
        "note": "median over steps after the first",
    }


def markdown(res) -> str:
    m = res["meta"]
    lines = [
        f"Run {m['date']} · {m['machine']} · device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else ""),
        f"· torch threads {m['torch_threads']} · model: {m['model']}",
        "",
        "| section | spots | tl.embed base spots/s | squidpy summary spots/s | squidpy summary+histogram+texture "
        "spots/s | large preset spots/s | crops/s | base ÷ summary | base ÷ full | base ÷ large | "
        "base ÷ summary per CPU-s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["sections"].items():
        g = r["ratios"]
        large = r.get("embed_large", {}).get("spots_per_s")
        lines.append(
            f"| {name} ({r['microns_per_pixel']:.2f} µm/px) | {r['n_spots']} | {r['embed_base']['spots_per_s']:.0f} | "
            f"{r['squidpy_summary']['spots_per_s']:.0f} | {r['squidpy_full']['spots_per_s']:.1f} "
            f"(n={r['squidpy_full']['n_spots']}) | "
            + (f"{large:.2f} (n={r['embed_large']['n_spots']})" if large else "–")
            + f" | {r['crops']['crops_per_s']:.0f} | {g['embed_base_vs_squidpy_summary']:.1f}× | "
            f"{g['embed_base_vs_squidpy_full']:.1f}× | "
            + (f"{g['embed_base_vs_large']:.0f}×" if "embed_base_vs_large" in g else "–")
            + f" | {r['embed_base']['spots_per_cpu_s'] / r['squidpy_summary']['spots_per_cpu_s']:.1f}× "
            f"({r['embed_base']['spots_per_cpu_s']:.0f} vs {r['squidpy_summary']['spots_per_cpu_s']:.0f}) |"
        )
    if "training" in res:
        t = res["training"]
        lines += ["", f"Training (base preset, batch {t['batch_size']}): {t['pairs_per_s']:.0f} pairs/s."]
    lines += [
        "",
        f"Peak RSS of the run: {m['peak_rss_mb']:.0f} MB. Spots per CPU-second count this process's CPU time "
        "(all its threads), so they are less sensitive than wall-clock rates to other jobs on a shared machine.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="auto", help="registry name, path, 'random', or 'auto' (bundled else random)")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--texture-spots", type=int, default=200, help="spots for squidpy summary+histogram+texture")
    p.add_argument("--large-spots", type=int, default=32, help="spots for the large preset")
    p.add_argument("--no-large", action="store_true")
    p.add_argument("--train-steps", type=int, default=8)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--tag", default=None, help="suffix of the output files (e.g. gpu)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--shared", action="store_true", help="say in the results that other jobs loaded the machine")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    THREADS[0] = args.threads
    torch.set_num_threads(args.threads)

    import stalign as sta
    from stalign.models import STAlign, STAlignConfig
    from stalign.tl._embed import resolve_model

    sections = {s: sta.datasets.load(s, data_dir=args.data_dir) for s in SECTIONS}
    model, model_desc = get_model(args.model, list(sections.values()), args.device)
    large = None
    if not args.no_large:
        torch.manual_seed(0)
        large = resolve_model(STAlign(STAlignConfig.large(model.config.genes)), device=args.device)[0]
    res = {"sections": {}}
    for name, sd in sections.items():
        res["sections"][name] = bench_section(name, sd, model, large, args)
    del large
    train_secs = [subset(sections["dlpfc:151673"], 512), subset(sections["her2st:C2"], 256)]
    res["training"] = bench_training(train_secs, model, args)
    dev = next(model.parameters()).device
    res["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}"
        + (", shared with other jobs)" if args.shared else ")"),
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
        "torch_threads": THREADS[0],
        "model": model_desc,
        "stalign_version": sta.__version__,
        "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    out = write_results(f"throughput_{args.tag}" if args.tag else "throughput", res, markdown(res))
    log.info("wrote %s", out)
    sys.stdout.write(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
