#!/usr/bin/env bash
# The retrained stalign-base, end to end: three training seeds of recipes/base.toml (8-11 min each on 2 CPU
# cores), then the development evaluation over the three (every quality number a mean over training seeds x
# clustering seeds, with its "Done when" table) and the ablations of the recipe's levers.
#   bash benchmarks/seeds.sh            # writes benchmarks/results/dev_eval.{json,md} and ablations.{json,md}
# The bundled weights are seed 0 (the lowest held-out contrastive loss of the three, chosen without labels):
#   python recipes/bundle.py runs/stalign-base-seed0/model
set -euo pipefail
cd "$(dirname "$0")/.."
for s in 0 1 2; do
  .venv/bin/stalign pretrain --config recipes/base.toml --seed "$s" --output-dir "runs/stalign-base-seed$s"
done
MODELS=(runs/stalign-base-seed0/model runs/stalign-base-seed1/model runs/stalign-base-seed2/model)
.venv/bin/python benchmarks/dev_eval.py --models "${MODELS[@]}" --seeds 3
# Training-time levers: the recipe with levers switched off (one training seed each; recipes/ablations/): one-hot
# targets; then also 32 px spot crops; then also per-image GroupNorm instead of BatchNorm; the previous recipe; and one
# lever turned up instead: a three times longer schedule (30 epochs); and the InfoNCE temperature at 0.2.
VARIANTS=()
for v in hard_targets spot32_hard_targets no_batchnorm previous long_schedule temperature_0.2; do
  out="runs/ablation-${v//_/-}"
  .venv/bin/stalign pretrain --config "recipes/ablations/$v.toml" --output-dir "$out"
  VARIANTS+=("$v=$out/model")
done
.venv/bin/python benchmarks/ablations.py --models "seed0=${MODELS[0]}" "seed1=${MODELS[1]}" "seed2=${MODELS[2]}" \
  --variant "${VARIANTS[@]}"
