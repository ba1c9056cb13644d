"""Model speed: forward spots/s of `base` vs `large` (same run, same device) and training pairs/s of `base`.

    .venv/bin/python benchmarks/model_speed.py --threads 2            # CPU
    .venv/bin/python benchmarks/model_speed.py --device cuda --amp    # GPU

Every rate is also given per CPU-second of this process (``*_per_cpu_s``, from ``time.process_time``): on a
shared, overloaded machine that number is far less sensitive to the other load than wall-clock rates.

Synthetic uint8 crops and log-normalised expression at each preset's native crop sizes; crop reading is not
included (see the `tl.embed` benchmark for end-to-end numbers).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import torch

from stalign._batch import BatchKey as K
from stalign.models import STAlign, STAlignConfig


def make_batch(cfg: STAlignConfig, n: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    V = cfg.n_genes
    expr = torch.log1p(torch.rand(n, V, generator=g) * 20 * (torch.rand(n, V, generator=g) < 0.2))
    b = {
        K.spot_image: torch.randint(0, 256, (n, 3, cfg.spot_size, cfg.spot_size), generator=g, dtype=torch.uint8),
        K.niche_image: torch.randint(0, 256, (n, 3, cfg.niche_size, cfg.niche_size), generator=g, dtype=torch.uint8),
        K.spot_expr: expr,
        K.niche_expr: torch.log1p(torch.rand(n, V, generator=g) * 5),
        K.has_image: torch.ones(n, dtype=torch.bool),
        K.has_expr: torch.ones(n, dtype=torch.bool),
    }
    return {k: v.to(device) for k, v in b.items()}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_rate(model, batch, *, seconds: float, amp: bool, image_only: bool = False) -> tuple[float, float]:
    device = model.device
    if image_only:
        batch = {k: v for k, v in batch.items() if k not in (K.spot_expr, K.niche_expr)}
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()
    model.eval()
    n = 0
    with torch.inference_mode(), ctx:
        model.embed(batch)  # warm-up
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds or n == 0:
            model.embed(batch)
            n += batch[K.has_image].shape[0]
        _sync(device)
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def train_rate(model, batch, *, seconds: float, amp: bool) -> tuple[float, float]:
    device = model.device
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx:
            out = model.loss(batch)
        out.loss.backward()
        opt.step()

    step()
    _sync(device)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or n == 0:
        step()
        n += batch[K.has_image].shape[0]
    _sync(device)
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--genes", type=int, default=5000, help="vocabulary size")
    p.add_argument("--batch", type=int, default=256, help="batch for base")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--large-batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--skip-large", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)
    genes = [f"G{i}" for i in range(a.genes)]
    res: dict = {
        "device": str(device),
        "threads": a.threads,
        "genes": a.genes,
        "amp": a.amp,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)

    base_cfg = STAlignConfig.base(genes)
    base = STAlign(base_cfg).to(device)
    res["base_params_M"] = sum(p.numel() for p in base.parameters()) / 1e6
    b = make_batch(base_cfg, a.batch, device)
    res["base_forward_spots_per_s"], res["base_forward_spots_per_cpu_s"] = forward_rate(
        base, b, seconds=a.seconds, amp=a.amp
    )
    res["base_forward_image_only_spots_per_s"], res["base_forward_image_only_spots_per_cpu_s"] = forward_rate(
        base, b, seconds=a.seconds, amp=a.amp, image_only=True
    )
    tb = make_batch(base_cfg, a.train_batch, device)
    res["base_train_pairs_per_s"], res["base_train_pairs_per_cpu_s"] = train_rate(
        base, tb, seconds=a.seconds, amp=a.amp
    )
    print(json.dumps(res), flush=True)

    if not a.skip_large:
        large_cfg = STAlignConfig.large(genes)
        large = STAlign(large_cfg).to(device)
        res["large_params_M"] = sum(p.numel() for p in large.parameters()) / 1e6
        lb = make_batch(large_cfg, a.large_batch, device)
        res["large_forward_spots_per_s"], res["large_forward_spots_per_cpu_s"] = forward_rate(
            large, lb, seconds=a.seconds, amp=a.amp
        )
        res["base_over_large_forward"] = res["base_forward_spots_per_s"] / res["large_forward_spots_per_s"]
        res["base_over_large_forward_cpu_s"] = (
            res["base_forward_spots_per_cpu_s"] / res["large_forward_spots_per_cpu_s"]
        )
        if device.type == "cuda":
            res["large_train_pairs_per_s"], _ = train_rate(large, lb, seconds=a.seconds, amp=a.amp)
    print(json.dumps(res, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
