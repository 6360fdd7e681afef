#!/usr/bin/env bash
# Sibling methods on one benchmark domain, on a CPU with no GPU lent: each trains for a wall-clock
# budget (SIGTERM checkpoints the run; running the script again continues it with `--resume`), then
# `labelforge eval` writes its report under docs/results/DOMAIN/, and `labelforge results` rebuilds
# docs/results/methods.md from every report there is. One torch thread per process, so training and
# evaluation can share a 2-core machine.
#
#   scripts/methods-cpu.sh DOMAIN [MINUTES_PER_METHOD] [METHOD…]      (DOMAIN: digits | faces-m)
#
# Scaled for the CPU, and said so in each report's options: every run reuses the committed simulator of
# its domain (checkpoints/DOMAIN-cpu, c=16; the configs' own S width is 32, so it is set to 16 here)
# instead of fitting its own; infobegan uses width 16 and
# batch 32 (its seed config, width 64 and batch 64, takes ~7 s an iteration here); synthvaegan fits its
# synthetic encoder for 2,000 (digits) / 3,000 (faces-m) steps instead of 5,000 / 20,000 and runs at
# width 16 on faces-m. faces-m runs all use the 10,000 / 1,000-image real split of
# configs/faces-m-cpu.yaml, so every faces-m report shares one pair of cached eval baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
DOMAIN=${1:?usage: scripts/methods-cpu.sh DOMAIN [MINUTES] [METHOD…]}
MINUTES=${2:-20}
shift 2 || shift $#
METHODS=${*:-dcgan labelgan infobegan synthvaegan}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
LF=.venv/bin/labelforge

declare -A EXTRA=(
  [digits/dcgan]="--set simulator_c=16"
  [digits/infobegan]="--set width=16 --set batch_size=32 --set sim_c=16"
  [digits/labelgan]="--set simulator_c=16"
  [digits/synthvaegan]="--set synth_steps=2000"
  [faces-m/dcgan]="--set simulator_c=16"
  [faces-m/infobegan]="--set width=16 --set batch_size=32 --set sim_c=16"
  [faces-m/labelgan]="--set simulator_c=16"
  [faces-m/synthvaegan]="--set synth_steps=3000 --set width=16"
)
FACES_SPLIT='domain_kwargs={real_train_count: 10000, real_test_count: 1000}'

for method in $METHODS; do
  run=runs/$method-$DOMAIN-cpu
  if [ -f "$run/training_options.json" ]; then
    args=(--resume)
  else
    args=(--config "configs/$method-$DOMAIN.yaml" --set "simulator_run=checkpoints/$DOMAIN-cpu"
          ${EXTRA[$DOMAIN/$method]:-})
    [ "$DOMAIN" = faces-m ] && args+=(--set "$FACES_SPLIT")
  fi
  echo "== $method: training for $MINUTES min into $run"
  timeout --signal=TERM --kill-after=120 "${MINUTES}m" \
    "$LF" train "$method" --domain "$DOMAIN" --out "$run" --device cpu "${args[@]}" || true
  echo "== $method: evaluating"
  extra_eval=()
  [ "$DOMAIN/$method" = digits/labelgan ] && extra_eval=(--mean-image)  # the seed's MNIST experiment
  "$LF" eval --run "$run" --device cpu --out "docs/results/$DOMAIN/$method-cpu/report.json" "${extra_eval[@]}" \
    || echo "== $method: no report (see the error above); the next methods go on"
done
"$LF" results docs/results/{digits,faces-m}/*/report.json --out docs/results/methods.md
