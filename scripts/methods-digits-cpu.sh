#!/usr/bin/env bash
# Every sibling method on the digits domain, on a CPU with no GPU lent: each trains for a wall-clock
# budget (SIGTERM checkpoints the run; `--resume` continues it toward its config's iterations later),
# then `labelforge eval` writes its report under docs/results/digits/, and `labelforge results`
# rebuilds docs/results/methods.md. One torch thread per process, so training and evaluation can share
# a 2-core machine with a RenderBEGAN run.
#
#   scripts/methods-digits-cpu.sh [MINUTES_PER_METHOD] [METHOD…]
#
# Scaled for the CPU, and said so in each report's options: every run reuses the committed digits
# simulator (checkpoints/digits-cpu, c=16) instead of fitting its own; infobegan uses width 16 and
# batch 32 (its seed config, width 64 and batch 64, takes ~7 s an iteration here); synthvaegan fits
# its synthetic encoder for 2,000 steps instead of 5,000 (5,000 took over 7 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-20}
shift || true
METHODS=${*:-dcgan labelgan infobegan synthvaegan}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
LF=.venv/bin/labelforge

declare -A EXTRA=(
  [infobegan]="--set width=16 --set batch_size=32"
  [synthvaegan]="--set synth_steps=2000"
)

for method in $METHODS; do
  run=runs/$method-digits-cpu
  if [ -f "$run/training_options.json" ]; then
    args=(--resume)
  else
    args=(--config "configs/$method-digits.yaml" --set simulator_run=checkpoints/digits-cpu ${EXTRA[$method]:-})
  fi
  echo "== $method: training for $MINUTES min into $run"
  timeout --signal=TERM --kill-after=120 "${MINUTES}m" \
    "$LF" train "$method" --domain digits --out "$run" --device cpu "${args[@]}" || true
  echo "== $method: evaluating"
  "$LF" eval --run "$run" --device cpu --out "docs/results/digits/$method-cpu/report.json" \
    || echo "== $method: no report (see the error above); the next methods go on"
done
"$LF" results docs/results/*/*/report.json --out docs/results/methods.md
