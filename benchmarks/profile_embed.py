"""Profile `tl.embed` end to end (pyinstrument) on real sections, as a user calls it: ``model="stalign-base"``.

    .venv/bin/pip install -c constraints.txt pyinstrument
    .venv/bin/python benchmarks/profile_embed.py                      # her2st C2 and DLPFC 151673
    .venv/bin/python benchmarks/profile_embed.py --sections her2st:C2 --repeat 3

Each section is loaded once (loading is not part of `tl.embed`), embedded once to warm up, then embedded
``--repeat`` times under the profiler. Writes the text profile of each section to
benchmarks/results/profile_<section>.txt (not committed; the summary goes into profile.md by hand).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", default=["her2st:C2", "dlpfc:151673"])
    p.add_argument("--model", default="stalign-base")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.001)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch
    from pyinstrument import Profiler

    import stalign as sta

    torch.set_num_threads(args.threads)
    for name in args.sections:
        sd = sta.datasets.load(name)
        n = sd.tables["table"].n_obs
        sta.tl.embed(sd, model=args.model, show_progress_bar=False, copy=True)  # warm-up
        prof = Profiler(interval=args.interval)
        t0 = time.perf_counter()
        prof.start()
        for _ in range(args.repeat):
            sta.tl.embed(sd, model=args.model, show_progress_bar=False, copy=True)
        prof.stop()
        wall = (time.perf_counter() - t0) / args.repeat
        sys.stdout.write(f"{name}: {n} spots, {wall:.3f} s per call, {n / wall:.0f} spots/s\n")
        out = HERE / "results" / f"profile_{name.replace(':', '_')}.txt"
        out.write_text(prof.output_text(unicode=True, color=False, show_all=False))
        sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
