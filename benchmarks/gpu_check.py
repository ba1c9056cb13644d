"""The GPU path in one command: `tl.embed` on CUDA (bf16) against the CPU, pretraining with AMP, torchrun, and a
batch-size sweep that says where the time goes.

On a machine with a GPU, from a fresh checkout (about 4 minutes on one H100):

    python3 -m venv .venv && .venv/bin/pip install -U pip && .venv/bin/pip install -c constraints.txt -e '.[dev]'
    STALIGN_DATA_DIR=/path/to/shared/data .venv/bin/python benchmarks/gpu_check.py

It prints one Markdown table and writes it to benchmarks/results/gpu.md (the numbers to gpu.json):

1. `tl.embed` of DLPFC 151673 and her2st C2 (bundled `stalign-base`) on CUDA and on the CPU: spots/s of each, and
   the cosine between the two embeddings of every spot (median and min; bf16 on CUDA, float32 on the CPU);
2. 50 pretraining steps (base preset, AMP on CUDA) on those sections: step time, whether every loss is finite,
   peak GPU memory;
3. with more than one GPU, the same pretraining under `torchrun --nproc-per-node <GPUs>` for a few steps;
4. a sweep of `tl.embed` over the batch size (256 ... 4096) on an H&E-only tiling of DLPFC 151673 (tens of
   thousands of pseudo-spots, crops from the in-memory image), with `num_workers` DataLoader workers reading
   crops, next to the rate of crop reading alone and of the model alone: the lower of the two is where the time
   goes.

Every part is one function that takes the device; CUDA and the CPU run the same code. Without CUDA the script runs
the CPU half (smaller sizes, so it finishes in a few minutes on 2 cores), says that no GPU was found, and exits 0.
`--quick` runs everything on small subsets in well under a minute (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _results import RESULTS, write_results  # benchmarks/ is on sys.path when a script runs

import stalign as sta

log = logging.getLogger("gpu_check")
SECTIONS = ["dlpfc:151673", "her2st:C2"]
MODEL = "stalign-base"

#: Sizes of each run: "cuda" (the GPU check), "cpu" (the CPU half, a few minutes on 2 cores), "quick" (the test).
SIZES = {
    "cuda": {"spots": None, "steps": 50, "train_batch": 256, "ddp_steps": 10, "tile_um": 25.0,
             "batch_sizes": [256, 512, 1024, 2048, 4096], "model_repeats": 20},
    "cpu": {"spots": None, "steps": 10, "train_batch": 128, "ddp_steps": 0, "tile_um": 60.0,
            "batch_sizes": [256, 1024], "model_repeats": 3},
    "quick": {"spots": 300, "steps": 2, "train_batch": 32, "ddp_steps": 2, "tile_um": 200.0,
              "batch_sizes": [64, 256], "model_repeats": 1},
}  # fmt: skip


def sync(device: torch.device) -> None:
    """Wait for the device (a timer must not stop while CUDA kernels are still queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def subset(sdata, n: int | None, seed: int = 0):
    """``sdata`` with a random subset of ``n`` spots in its table (all when ``n`` is None)."""
    from spatialdata import SpatialData

    t = sdata.tables["table"]
    if n is None or n >= t.n_obs:
        return sdata
    keep = np.sort(np.random.default_rng(seed).choice(t.n_obs, size=n, replace=False))
    return SpatialData(images=dict(sdata.images), shapes=dict(sdata.shapes), tables={"table": t[keep].copy()})


def embed(sdata, device: torch.device, *, batch_size: int | None = None, num_workers: int = 0) -> tuple[dict, float]:
    """``tl.embed`` of ``sdata`` on ``device`` (bf16 on CUDA): the embeddings and spots/s (crop reading included)."""
    sync(device)
    t0 = time.perf_counter()
    out = sta.tl.embed(sdata, model=MODEL, device=device, batch_size=batch_size, num_workers=num_workers,
                       show_progress_bar=False, copy=True)  # fmt: skip
    sync(device)
    dt = time.perf_counter() - t0
    table = out.tables["table"]
    return {k: np.asarray(table.obsm[k]) for k in ("X_stalign", "X_stalign_image")}, table.n_obs / dt


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def check_embed(sections: dict, devices: list[torch.device]) -> list[dict]:
    """Part 1: spots/s per section and device, and the cosine of each spot's embeddings on the first two devices."""
    rows = []
    for name, sdata in sections.items():
        n = sdata.tables["table"].n_obs
        for d in devices:  # warm-up: model load, CUDA context, cuDNN autotuning
            embed(subset(sdata, 64), d)
        res = {d.type: embed(sdata, d) for d in devices}
        row = {"section": name, "spots": n, **{f"{d}_spots_per_s": r[1] for d, r in res.items()}}
        if len(devices) > 1:
            (a, _), (b, _) = res[devices[0].type], res[devices[1].type]
            for key, label in (("X_stalign", "fused"), ("X_stalign_image", "image")):
                c = cosine(a[key], b[key])
                row[f"cos_{label}_median"], row[f"cos_{label}_min"] = float(np.median(c)), float(c.min())
        rows.append(row)
        log.info("embed %s: %s", name, row)
    return rows


def pretrain(sections: list, device: torch.device, *, steps: int, batch_size: int, num_workers: int, out: Path) -> dict:
    """Part 2: ``steps`` pretraining steps of the base preset (AMP on CUDA): step time, finite losses, peak memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    sta.train.pretrain(sections, "base", output_dir=out, epochs=1000, max_steps=steps, batch_size=batch_size,
                       device=device, amp="auto", num_workers=num_workers, checkpoint_every=None,
                       show_progress_bar=False)  # fmt: skip
    return {**train_metrics(out, batch_size), "wall_s": time.perf_counter() - t0,
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None}  # fmt: skip


def train_metrics(out: Path, batch_size: int) -> dict:
    """Steps, median step time (after the first 3 steps, warm-up) and finiteness of every logged loss."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    dts = [batch_size / r["pairs_per_s"] for r in rows]  # pairs_per_s counts the global batch: world x local
    losses = [v for r in rows for k, v in r.items() if k.startswith("loss")]
    steady = dts[3:] or dts
    return {"steps": len(rows), "step_s": float(np.median(steady)), "pairs_per_s": float(np.median(
        [r["pairs_per_s"] for r in rows[3:] or rows])), "losses_finite": bool(np.isfinite(losses).all()),
        "last_loss": rows[-1]["loss"]}  # fmt: skip


def torchrun(n_procs: int, *, steps: int, batch_size: int, num_workers: int, out: Path, spots: int | None) -> dict:
    """Part 3: the same pretraining under ``torchrun --nproc-per-node n_procs`` (this script's ``--ddp-child``)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n_procs}", __file__,
           "--ddp-child", str(out), "--steps", str(steps), "--batch-size", str(batch_size),
           "--num-workers", str(num_workers), *(["--spots", str(spots)] if spots else [])]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"ok": False, "error": res.stderr[-2000:]}
    # every rank runs batch_size spots: the global batch is n_procs x batch_size
    return {"ok": True, "world_size": n_procs, **train_metrics(out, batch_size * n_procs),
            "wall_s": time.perf_counter() - t0}  # fmt: skip


def batches(sdata, model, *, batch_size: int):
    """The batches ``tl.embed`` reads for ``model`` (its crop sizes in µm and px, its genes), in inference order."""
    cfg = model.config
    return sta.pp.SpotDataset([sdata], genes=cfg.genes, spot_um=cfg.spot_um, niche_um=cfg.niche_um,
                              niche_radius_um=cfg.niche_radius_um, spot_px=cfg.spot_size, niche_px=cfg.niche_size,
                              batch_size=batch_size, inference=True)  # fmt: skip


def read_rate(sdata, model, device: torch.device, *, batch_size: int, num_workers: int) -> float:
    """Spots/s of crop reading alone: the batches ``tl.embed`` reads, through a DataLoader, no model."""
    ds = batches(sdata, model, batch_size=batch_size)
    t0 = time.perf_counter()
    n = sum(len(b["index"]) for b in ds.dataloader(num_workers=num_workers, pin_memory=device.type == "cuda"))
    return n / (time.perf_counter() - t0)


def model_rate(sdata, model, device: torch.device, *, batch_size: int, repeats: int) -> float:
    """Spots/s of the model alone: one batch already on ``device``, embedded ``repeats`` times (bf16 on CUDA)."""
    from stalign._batch import inputs_to

    batch = inputs_to(batches(sdata, model, batch_size=batch_size)[0], device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        model.embed(batch)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.embed(batch)
        sync(device)
    return repeats * len(batch["index"]) / (time.perf_counter() - t0)


def sweep(sdata, device: torch.device, *, batch_sizes: list[int], num_workers: int, repeats: int) -> list[dict]:
    """Part 4: ``tl.embed`` spots/s per batch size, next to crop reading alone and the model alone."""
    model = sta.models.load(MODEL, device=device, cache=True)
    rows = []
    for bs in batch_sizes:
        _, rate = embed(sdata, device, batch_size=bs, num_workers=num_workers)
        read = read_rate(sdata, model, device, batch_size=bs, num_workers=num_workers)
        fwd = model_rate(sdata, model, device, batch_size=bs, repeats=repeats)
        rows.append({"batch_size": bs, "num_workers": num_workers, "embed_spots_per_s": rate,
                     "read_spots_per_s": read, "model_spots_per_s": fwd,
                     "bound_by": "reading crops" if read < fwd else "model"})  # fmt: skip
        log.info("sweep %s", rows[-1])
    return rows


def tiles(sdata, spacing_um: float):
    """An H&E-only section: pseudo-spots every ``spacing_um`` over the tissue of ``sdata``'s image."""
    from spatialdata import SpatialData

    from stalign._constants import Key
    from stalign._section import get_section

    sec = get_section(sdata)
    (key,) = sdata.images
    img = SpatialData(images={key: sdata.images[key]})
    img.attrs[Key.uns] = {Key.microns_per_pixel: sec.microns_per_pixel, "image_key": key, "name": sec.library_id}
    return sta.pp.tile_tissue(img, spacing_um=spacing_um, inplace=False)


def markdown(res: dict) -> str:
    """The one table of the run (and the lines that say what ran)."""

    def f(v, fmt="{:.0f}"):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    m = res["meta"]
    lines = [f"Run {m['date']} · {m['machine']} · {m['gpu'] or 'no GPU'} · torch {m['torch']} · mode {m['mode']}", ""]
    if not m["gpu"]:
        lines += ["**No GPU was found (torch.cuda.is_available() is False): the CPU half ran, CUDA was skipped.**", ""]
    lines += ["| part | what | value |", "|---|---|---|"]
    for r in res["embed"]:
        what = f"tl.embed {r['section']} ({r['spots']} spots)"
        val = f"CPU {f(r.get('cpu_spots_per_s'))} spots/s"
        if "cuda_spots_per_s" in r:
            val += (f" · CUDA bf16 {f(r['cuda_spots_per_s'])} spots/s · cosine CPU↔CUDA fused median "
                    f"{f(r['cos_fused_median'], '{:.4f}')} (min {f(r['cos_fused_min'], '{:.4f}')}), image median "
                    f"{f(r['cos_image_median'], '{:.4f}')} (min {f(r['cos_image_min'], '{:.4f}')})")  # fmt: skip
        lines.append(f"| 1 embed | {what} | {val} |")
    p = res["pretrain"]
    lines.append(
        f"| 2 pretrain | {p['steps']} steps, base preset, batch {p['batch_size']}, {p['device']}"
        f"{', AMP' if p['device'].startswith('cuda') else ''} | {f(p['step_s'] * 1000)} ms/step · "
        f"{f(p['pairs_per_s'])} pairs/s · losses finite: {p['losses_finite']} · peak GPU memory "
        f"{f(p['peak_gpu_memory_gb'], '{:.2f}')} GB |"
    )
    d = res["torchrun"]
    if d.get("ok"):
        val = f"{f(d['step_s'] * 1000)} ms/step · {f(d['pairs_per_s'])} pairs/s · losses finite: {d['losses_finite']}"
        lines.append(f"| 3 torchrun | {d['world_size']} processes on {d['device']}, {d['steps']} steps | {val} |")
    elif "skipped" in d:
        lines.append(f"| 3 torchrun | multi-GPU pretraining | skipped: {d['skipped']} |")
    else:
        error = repr(d["error"][-300:]).replace("|", "/")
        lines.append(f"| 3 torchrun | multi-GPU pretraining | FAILED: {error} |")
    for r in res["sweep"]:
        lines.append(
            f"| 4 sweep | tl.embed {res['sweep_section']}, batch {r['batch_size']}, {r['num_workers']} workers, "
            f"{res['sweep_device']} | {f(r['embed_spots_per_s'])} spots/s · reading alone {f(r['read_spots_per_s'])} · "
            f"model alone {f(r['model_spots_per_s'])} · bound by {r['bound_by']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small subsets: checks that every part runs (the test)")
    ap.add_argument("--out", default=None, help="markdown file (default benchmarks/results/gpu.md; JSON next to it)")
    ap.add_argument("--ddp-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--num-workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--spots", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    warnings.filterwarnings("ignore", category=UserWarning)

    if args.ddp_child:  # one rank of part 3 (started by torchrun): device None is cuda:LOCAL_RANK
        secs = [subset(sta.datasets.load(s), args.spots) for s in SECTIONS]
        sta.train.pretrain(secs, "base", output_dir=args.ddp_child, epochs=1000, max_steps=args.steps,
                           batch_size=args.batch_size, amp="auto", num_workers=args.num_workers,
                           checkpoint_every=None, show_progress_bar=False)  # fmt: skip
        return 0

    cuda = torch.cuda.is_available()
    mode = "quick" if args.quick else ("cuda" if cuda else "cpu")
    size = SIZES[mode]
    n_gpus = torch.cuda.device_count() if cuda else 0
    if not cuda:
        print("No GPU found (torch.cuda.is_available() is False): running the CPU half only; CUDA parts skipped.")
    host, dev = torch.device("cpu"), torch.device("cuda") if cuda else torch.device("cpu")
    devices = [host, dev] if cuda else [host]
    # crops are read by worker processes on a GPU machine; on the CPU they would compete with the model's threads
    workers = min(8, max((os.cpu_count() or 1) - 2, 0)) if cuda else 0
    sections = {s: subset(sta.datasets.load(s), size["spots"]) for s in SECTIONS}
    res: dict = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "mode": mode, "torch": torch.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "gpu": f"{n_gpus}x {torch.cuda.get_device_name(0)}" if cuda else None, "stalign": sta.__version__,
    }}  # fmt: skip
    t_start = time.perf_counter()
    res["embed"] = check_embed(sections, devices)
    with tempfile.TemporaryDirectory() as tmp:
        secs = list(sections.values())
        res["pretrain"] = {"device": str(dev), "batch_size": size["train_batch"], **pretrain(
            secs, dev, steps=size["steps"], batch_size=size["train_batch"], num_workers=workers, out=Path(tmp, "p"))}  # fmt: skip
        # one process per GPU; --quick without GPUs launches 2 CPU processes (gloo), to check the launch itself
        n_procs = n_gpus if n_gpus > 1 else (2 if mode == "quick" else 0)
        if n_procs and size["ddp_steps"]:
            res["torchrun"] = torchrun(n_procs, steps=size["ddp_steps"], batch_size=size["train_batch"],
                                       num_workers=workers, out=Path(tmp, "ddp"), spots=size["spots"])  # fmt: skip
            res["torchrun"]["device"] = "cuda" if n_gpus > 1 else "cpu (gloo)"
        else:
            res["torchrun"] = {"skipped": f"{n_gpus} GPU(s) found; needs more than one"}
    tiled = tiles(sections["dlpfc:151673"], size["tile_um"])
    res["sweep_section"] = f"dlpfc:151673 H&E tiles every {size['tile_um']:g} µm ({tiled.tables['table'].n_obs} spots)"
    res["sweep_device"] = str(dev)
    res["sweep"] = sweep(tiled, dev, batch_sizes=size["batch_sizes"], num_workers=workers,
                         repeats=size["model_repeats"])  # fmt: skip
    res["meta"]["wall_s"] = time.perf_counter() - t_start
    md = markdown(res)
    print(md)
    out = Path(args.out) if args.out else RESULTS / "gpu.md"
    if args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(md)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    else:
        write_results("gpu", res, md)
    log.info("wrote %s in %.0f s", out, res["meta"]["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
