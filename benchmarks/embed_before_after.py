"""`tl.embed` end to end, before vs after a change, as ratios measured in one run on the same machine.

    .venv/bin/python benchmarks/embed_before_after.py --before e67e350                # vs HEAD
    .venv/bin/python benchmarks/embed_before_after.py --before e67e350 --after HEAD --rounds 3 --threads 1

The ``src/`` of both commits is extracted with ``git archive`` into a temporary folder (the repository and the
working tree, with anybody's uncommitted edits, are not touched). Worker processes alternate (before, after, before, after, ...; ``--rounds`` pairs) so that changes in
the load of a shared machine hit both sides alike. Each worker loads the sections, warms up, then times
``tl.embed`` ``--reps`` times per variant:

- ``instance``: ``tl.embed(sdata, model=<STAlign loaded once>)`` (crop reading, niche expression, forward);
- ``by name``: ``tl.embed(sdata, model="stalign-base")``, as a user calls it (model resolution included).

Rates are spots per wall-clock second (median over all repetitions) and per CPU-second of the worker.
Writes benchmarks/results/embed_before_after.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import write_results  # benchmarks/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECTIONS = ["her2st:C2", "dlpfc:151673"]
log = logging.getLogger("before_after")


def worker(src: str, threads: int, reps: int, model: str) -> dict:
    sys.path.insert(0, src)
    import torch

    import stalign as sta

    if not str(Path(sta.__file__).resolve()).startswith(str(Path(src).resolve())):
        msg = f"stalign imported from {sta.__file__}, not from {src}"
        raise RuntimeError(msg)
    torch.set_num_threads(threads)
    loaded = sta.models.load(model)
    out = {}
    for name in SECTIONS:
        sd = sta.datasets.load(name)
        n = sd.tables["table"].n_obs
        res = {"n_spots": n}
        for variant, spec in (("instance", loaded), ("by_name", model)):
            sta.tl.embed(sd, model=spec, show_progress_bar=False, copy=True)  # warm-up
            walls, cpus = [], []
            for _ in range(reps):
                w0, c0 = time.perf_counter(), time.process_time()
                sta.tl.embed(sd, model=spec, show_progress_bar=False, copy=True)
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
            res[variant] = {"wall_s": walls, "cpu_s": cpus}
        out[name] = res
    return out


def extract(ref: str, dest: Path) -> Path:
    """``src/`` of commit ``ref`` under ``dest`` (git archive: the repository and working tree are untouched)."""
    dest.mkdir(parents=True, exist_ok=True)
    tar = dest / "src.tar"
    with open(tar, "wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"], stdout=f, check=True)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest / "src"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="git commit of the 'before' code")
    p.add_argument("--after", default="HEAD", help="git commit of the 'after' code")
    p.add_argument("--rounds", type=int, default=2, help="(before, after) worker pairs")
    p.add_argument("--reps", type=int, default=2, help="timed calls per variant and worker")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="stalign-base")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        sys.stdout.write(json.dumps(worker(args.worker, args.threads, args.reps, args.model)) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s before_after: %(message)s")
    before_sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.before], capture_output=True, text=True, check=True
    ).stdout.strip()
    after_sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.after], capture_output=True, text=True, check=True
    ).stdout.strip()
    runs: dict[str, list] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        srcs = {side: extract(ref, Path(tmp, side)) for side, ref in (("before", args.before), ("after", args.after))}
        for r in range(args.rounds):
            for side in ("before", "after"):
                cmd = [sys.executable, __file__, "--before", args.before, "--worker", str(srcs[side])]
                cmd += ["--threads", str(args.threads), "--reps", str(args.reps), "--model", args.model]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    sys.stderr.write(out.stderr[-3000:])
                    return out.returncode
                runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
                log.info("round %d %s done", r, side)
    table = {}
    for name in SECTIONS:
        row = {"n_spots": runs["after"][0][name]["n_spots"]}
        for variant in ("instance", "by_name"):
            for side in ("before", "after"):
                walls = [w for run in runs[side] for w in run[name][variant]["wall_s"]]
                cpus = [c for run in runs[side] for c in run[name][variant]["cpu_s"]]
                row[f"{variant}_{side}"] = {
                    "spots_per_s": row["n_spots"] / float(np.median(walls)),
                    "spots_per_cpu_s": row["n_spots"] / float(np.median(cpus)),
                    "wall_s": walls,
                    "cpu_s": cpus,
                }
            row[f"{variant}_ratio"] = row[f"{variant}_after"]["spots_per_s"] / row[f"{variant}_before"]["spots_per_s"]
            row[f"{variant}_cpu_ratio"] = (
                row[f"{variant}_after"]["spots_per_cpu_s"] / row[f"{variant}_before"]["spots_per_cpu_s"]
            )
        table[name] = row
    res = {
        "sections": table,
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs)",
            "before": before_sha,
            "after": after_sha,
            "torch_threads": args.threads,
            "rounds": args.rounds,
            "reps": args.reps,
            "command": "python benchmarks/embed_before_after.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
        },
    }
    m = res["meta"]
    lines = [
        f"Run {m['date']} · {m['machine']} · torch threads {m['torch_threads']} · before `{m['before']}`, after "
        f"`{m['after']}` · {m['rounds']} alternating worker pairs × {m['reps']} calls each (medians)",
        "",
        "| section | spots | variant | before spots/s | after spots/s | after ÷ before | "
        "before spots/CPU-s | after spots/CPU-s | after ÷ before (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in table.items():
        for variant, label in (("instance", "model instance"), ("by_name", 'model="stalign-base"')):
            b, a = row[f"{variant}_before"], row[f"{variant}_after"]
            lines.append(
                f"| {name} | {row['n_spots']} | {label} | {b['spots_per_s']:.0f} | {a['spots_per_s']:.0f} | "
                f"{row[f'{variant}_ratio']:.2f}× | {b['spots_per_cpu_s']:.0f} | {a['spots_per_cpu_s']:.0f} | "
                f"{row[f'{variant}_cpu_ratio']:.2f}× |"
            )
    write_results("embed_before_after", res, "\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
