#!/usr/bin/env bash
# The RenderBEGAN ablation of issue 4 on the digits domain, on a CPU with no GPU lent: content features
# label-aware vs vgg16 (random init: no ImageNet weights can be downloaded here) vs none, and the
# content weight w_c ∈ {0.03, 0.1, 0.3} with label-aware features (plus w_c = 1, beyond the issue's
# range, run when 0.3 was still improving, and L_c on the label-aware net's feature map instead of its label
# read-out at w_c = 1; neither in the default ORDER). Every arm trains the same number of
# iterations from the same seed on configs/digits-cpu.yaml, reusing the committed digits simulator and
# (label-aware arms) content net of checkpoints/digits-cpu, so the arms differ only in the ablated
# field. Each is evaluated by `labelforge eval` into docs/results/ablation-digits/<arm>/, and
# `labelforge results --vary content --vary w_c` builds docs/results/ablation-digits.md.
#
#   scripts/ablation-digits-cpu.sh [ITERATIONS] [ARM…]     (arms: see ARMS below)
#
# Scaled for the CPU, and said so: c=16 (configs/digits-cpu.yaml), a few thousand iterations instead of
# 50,000, and VGG16 on the 32-px images as they are (vgg_upsample=1) instead of ×7, which would cost
# ~25 s an iteration on one core (with random weights the ImageNet scale buys nothing anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS=${1:-1000}
shift || true
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
LF=.venv/bin/labelforge

declare -A ARMS=(
  [label-aware-wc0.1]="--set content=label-aware --set w_c=0.1"
  [none]="--set content=none"
  [label-aware-wc0.3]="--set content=label-aware --set w_c=0.3"
  [label-aware-wc0.03]="--set content=label-aware --set w_c=0.03"
  [vgg16-wc0.1]="--set content=vgg16 --set w_c=0.1 --set vgg_upsample=1"
  [label-aware-wc1]="--set content=label-aware --set w_c=1.0"
  [label-aware-features-wc1]="--set content=label-aware --set w_c=1.0 --set label_aware_layer=features"
)
ORDER=${*:-label-aware-wc0.1 none label-aware-wc0.3 label-aware-wc0.03 vgg16-wc0.1}

for arm in $ORDER; do
  run=runs/ablation-digits/$arm
  report=docs/results/ablation-digits/$arm/report.json
  if [ -f "$run/training_options.json" ]; then
    args=(--resume)
  else
    args=(--config configs/digits-cpu.yaml --set simulator_run=checkpoints/digits-cpu
          --set content_run=checkpoints/digits-cpu ${ARMS[$arm]})
  fi
  echo "== $arm: training to iteration $ITERATIONS in $run"
  "$LF" train renderbegan --domain digits --out "$run" --device cpu --iterations "$ITERATIONS" "${args[@]}"
  echo "== $arm: evaluating"
  "$LF" eval --run "$run" --device cpu --out "$report" || echo "== $arm: no report (see the error above)"
done
"$LF" results docs/results/ablation-digits/*/report.json --vary content --vary label_aware_layer --vary w_c \
  --out docs/results/ablation-digits.md
