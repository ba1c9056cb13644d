"""Import time of `import stalign` next to `import scanpy`, in fresh interpreters, in one run.

    .venv/bin/python benchmarks/import_time.py              # 5 runs each, alternating
    .venv/bin/python benchmarks/import_time.py --repeats 9

Each run is a new `python -X importtime -c "import <pkg>"` process (the parent's imports never help it), stalign and
scanpy alternating so that load from other jobs falls on both alike. Reported per package: the median over the runs of
the package's cumulative import time from `-X importtime` and of the process's wall clock (interpreter start
included), and whether torch was imported (`import stalign` must not import it: the models load torch on first use).
The markdown also lists the largest contributors of stalign's median run (every top-level package imported on the
way, by cumulative time), whether or not the 1.5 s target is met: the margin is small on a shared machine.

Never times beside a training run: waits while `/tmp/stalign_train.lock` exists. Writes
benchmarks/results/import_time.json and .md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np
from _results import TRAIN_LOCK, wait_for_training, write_results  # benchmarks/ is on sys.path when a script runs

log = logging.getLogger("import_time")
TARGET_S = 1.5
PACKAGES = ("stalign", "scanpy")
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def parse_importtime(stderr: str) -> list[dict]:
    """The ``-X importtime`` lines as ``{"module", "self_s", "cumulative_s", "depth"}`` (in import order)."""
    rows = []
    for line in stderr.splitlines():
        m = _LINE.match(line)
        if m:
            rows.append({
                "module": m.group(4),
                "self_s": int(m.group(1)) / 1e6,
                "cumulative_s": int(m.group(2)) / 1e6,
                "depth": (len(m.group(3)) - 1) // 2,
            })  # fmt: skip
    return rows


def one_run(package: str) -> dict:
    code = f"import sys; import {package}; sys.stdout.write(str('torch' in sys.modules))"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        msg = f"`import {package}` failed ({out.returncode})"
        raise RuntimeError(msg)
    rows = parse_importtime(out.stderr)
    top = next(r for r in rows if r["module"] == package)
    return {"import_s": top["cumulative_s"], "wall_s": wall, "torch": out.stdout.strip() == "True", "rows": rows}


def contributors(rows: list[dict], package: str, n: int = 12) -> list[dict]:
    """Top-level packages imported on the way (not ``package`` itself), by cumulative time of their first import."""
    first: dict[str, dict] = {}
    for r in rows:
        name = r["module"]
        if "." in name or name == package or name.startswith("_"):
            continue
        if name not in first or r["cumulative_s"] > first[name]["cumulative_s"]:
            first[name] = r
    return sorted(first.values(), key=lambda r: -r["cumulative_s"])[:n]


def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [
        f"Run {m['date']} · {m['machine']} (load average {m['load_average_at_start'][1]:.1f} at the start, "
        f"{m['load_average_at_end'][1]:.1f} at the end, over 5 min; `{TRAIN_LOCK}` absent) · Python {m['python']} · "
        f"{m['repeats']} fresh interpreters per package, alternating",
        "",
        "| package | import (s, median of `-X importtime` cumulative) | runs (s) | process wall clock (s, median) | "
        "imports torch |",
        "|---|---|---|---|---|",
    ]
    for pkg in PACKAGES:
        r = res["packages"][pkg]
        runs = ", ".join(f"{v:.2f}" for v in r["import_s_runs"])
        lines.append(
            f"| `import {pkg}` | **{r['import_s']:.2f}** | {runs} | {r['wall_s']:.2f} | "
            f"{'yes' if r['torch'] else 'no'} |"
        )
    s = res["packages"]["stalign"]
    sc = res["packages"]["scanpy"]
    lines += [
        "",
        f"`import stalign` takes {s['import_s'] / sc['import_s']:.2f}× `import scanpy`; target ≤ {TARGET_S} s: "
        f"**{'met' if s['import_s'] <= TARGET_S else 'not met'}**; torch imported: "
        f"**{'yes' if s['torch'] else 'no'}**.",
    ]
    # listed whether or not the target is met: the margin is small on a shared machine
    lines += [
        "",
        "Largest contributors to the median `import stalign` run (top-level packages imported on the way, by "
        "cumulative time; nested packages count in their importer's time too):",
        "",
        "| package | cumulative (s) | share of `import stalign` | nesting depth |",
        "|---|---|---|---|",
    ]
    for c in s["contributors"]:
        lines.append(
            f"| `{c['module']}` | {c['cumulative_s']:.2f} | {100 * c['cumulative_s'] / s['import_s']:.0f} % | "
            f"{c['depth']} |"
        )
    lines += ["", f"Command: `{m['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s import_time: %(message)s")
    wait_for_training(poll_s=120)
    load_start = os.getloadavg()
    runs: dict[str, list[dict]] = {pkg: [] for pkg in PACKAGES}
    for pkg in PACKAGES:  # once each, untimed: the files are in the page cache for every timed run
        one_run(pkg)
    for i in range(args.repeats):
        for pkg in PACKAGES if i % 2 == 0 else PACKAGES[::-1]:
            runs[pkg].append(one_run(pkg))
            log.info("%s: %.2f s (torch imported: %s)", pkg, runs[pkg][-1]["import_s"], runs[pkg][-1]["torch"])
    res: dict = {"packages": {}}
    for pkg, rs in runs.items():
        times = [r["import_s"] for r in rs]
        median_run = rs[int(np.argsort(times)[len(times) // 2])]
        res["packages"][pkg] = {
            "import_s": float(np.median(times)),
            "import_s_runs": times,
            "wall_s": float(np.median([r["wall_s"] for r in rs])),
            "torch": any(r["torch"] for r in rs),
            "contributors": contributors(median_run["rows"], pkg),
        }
    res["target_s"] = TARGET_S
    res["meets_target"] = res["packages"]["stalign"]["import_s"] <= TARGET_S
    res["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs)",
        "python": platform.python_version(),
        "repeats": args.repeats,
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "command": "python benchmarks/import_time.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out = write_results("import_time", res, markdown(res))
    log.info("wrote %s", out)
    sys.stdout.write(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
