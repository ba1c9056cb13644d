#!/usr/bin/env bash
# One command for every table of docs/benchmarks.md, from the real data ($STALIGN_DATA_DIR):
#   bash benchmarks/run_all.sh            # CPU; about 3.7 h on 2 free cores (nine training runs included)
# Each step writes benchmarks/results/<name>.{json,md}; make_docs.py then regenerates docs/benchmarks.md.
# Timing steps (throughput, memory, slide_throughput, cohort) must not share the machine with a training run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# three training seeds of recipes/base.toml + the ablation recipes, then dev_eval (3 seeds) and ablations
bash benchmarks/seeds.sh
$PY benchmarks/throughput.py
$PY benchmarks/memory.py
$PY benchmarks/tiles_quality.py
$PY benchmarks/slide_throughput.py
$PY benchmarks/cohort.py --repeats 3
$PY benchmarks/ondisk.py
$PY benchmarks/import_time.py
$PY benchmarks/make_docs.py
