#!/usr/bin/env bash
# One command for every table of docs/benchmarks.md, from the real data (../shared/data or $STALIGN_DATA_DIR):
#   bash benchmarks/run_all.sh            # CPU; about 30-40 min on 2 free cores (training the ablation included)
# Each step writes benchmarks/results/<name>.{json,md}; make_docs.py then regenerates docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SECTIONS=(dlpfc:151674 stahl_mob:11 dlpfc:151508 dlpfc:151670)
$PY benchmarks/dev_eval.py --model stalign-base --image-features summary histogram
# ablation: L_spot as the only cross-modal term, same data and steps as the bundled recipe (resumes if already trained)
.venv/bin/stalign pretrain --config recipes/ablation_spot_only.toml
.venv/bin/stalign evaluate --task domains --sections "${SECTIONS[@]}" --model stalign-base \
  --ablation spot_only_loss=runs/ablation-spot-only/model --image-features summary \
  --out benchmarks/results/ablations.json
.venv/bin/stalign evaluate --task retrieval --sections dlpfc:151674 her2st:C6 stahl_mob:11 --model stalign-base \
  --ablation spot_only_loss=runs/ablation-spot-only/model --out benchmarks/results/ablations_retrieval.json
$PY benchmarks/throughput.py
$PY benchmarks/memory.py
$PY benchmarks/tiles_quality.py
$PY benchmarks/slide_throughput.py
$PY benchmarks/ondisk.py
$PY benchmarks/import_time.py
$PY benchmarks/make_docs.py
